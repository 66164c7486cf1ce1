#include "store/store.h"

#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet {
namespace {

// The schema version lives in a collection no caller can name ("\x01" is not a valid name character), so it
// never shows up in a scan or collides with a document.
constexpr char kMetaKeyBytes[] = "\x01meta\0schema_version";
constexpr std::string_view kMetaKey{kMetaKeyBytes, sizeof(kMetaKeyBytes) - 1};
constexpr const char* kLockFile = "store.lock";

// One LMDB transaction carries at most this much; more would risk MDB_TXN_FULL and delays the first durable.
constexpr size_t kGroupMaxBatches = 1024;
constexpr size_t kGroupMaxBytes = 32u << 20;
// A scan copies this much out of LMDB per read transaction, then calls back with no lock held.
constexpr size_t kScanChunk = 256;
constexpr size_t kScanChunkBytes = 1u << 20;
constexpr uint64_t kMapStep = 1u << 20;

struct Write {
  std::string key;  // encoded: collection '\0' key
  bool del = false;
  std::string value;
};

// A committed transaction. Immutable once queued: the loop reads it through the overlay while the writer
// thread applies it.
struct Batch {
  uint64_t seq = 0;
  std::vector<Write> writes;
  size_t bytes = 0;
};

// The writer's report: with rc == 0 every batch up to seq is durable; otherwise batch seq failed with rc.
struct Settled {
  uint64_t seq;
  int rc;
};

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

std::string encode(std::string_view coll, std::string_view key) {
  std::string out;
  out.reserve(coll.size() + 1 + key.size());
  out.append(coll);
  out.push_back('\0');
  out.append(key);
  return out;
}

MDB_val mdb_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view view(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

cl_status_t status_of(int rc) {
  switch (rc) {
    case 0:
      return CL_OK;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
      return CL_ETOOBIG;
    case ENOMEM:
      return CL_ENOMEM;
    default:
      return CL_EIO;
  }
}

bool valid_prefix(std::string_view p) { return p.size() <= Store::kMaxKey && p.find('\0') == std::string_view::npos; }

// Makes a new directory entry survive power loss (LMDB syncs its files, never the directory holding them).
void sync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  if (fsync(fd) != 0) log::warn("store", "fsync of directory {} failed: {}", path, std::strerror(errno));
  ::close(fd);
}

// "256 KiB", "12 MiB": map sizes in log lines.
std::string size_text(uint64_t bytes) {
  if (bytes % (1u << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} KiB", bytes >> 10);
}

std::string parent_of(const std::string& path) {
  auto end = path.find_last_not_of('/');
  if (end == std::string::npos) return "/";
  auto slash = path.rfind('/', end);
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

struct Store::Txn::State {
  std::shared_ptr<Store::Impl> impl;
  std::map<std::string, std::optional<std::string>, std::less<>> writes;  // nullopt: delete
  size_t bytes = 0;
  int schema_version = 0;
};

struct Store::Impl : std::enable_shared_from_this<Impl> {
  Impl(Loop& l, Options o) : loop(l), opts(std::move(o)) {}

  bool open_env(std::string* error);
  void start();
  void shutdown();

  cl_status_t lookup(std::string_view ekey, std::string* out);
  int read_disk(std::string_view ekey, std::string* out, bool* found);
  int read_range(const std::string& from, bool exclusive, std::string_view prefix,
                 std::vector<std::pair<std::string, std::string>>* out, bool* end);
  void enqueue(std::shared_ptr<Batch> batch, DurableFn durable, int schema_version);
  void hand_over();
  void retry_later();
  void unoverlay(const Batch& b);
  void drain();

  // Writer thread.
  void writer_main();
  void write_group(const std::vector<std::shared_ptr<const Batch>>& group);
  int apply(const std::shared_ptr<const Batch>* batches, size_t n);
  bool grow(size_t need);
  void report(uint64_t seq, int rc);

  Loop& loop;
  const Options opts;

  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  MDB_txn* rtxn = nullptr;  // the loop's read transaction, reset between reads
  int lock_fd = -1;
  // Held by the loop for the duration of one read and by the writer while it resizes the map: LMDB requires
  // that no transaction is active during mdb_env_set_mapsize.
  std::mutex map_mu;
  std::atomic<uint64_t> map_size{0};

  // ---- loop thread only ----
  struct Pending {
    std::shared_ptr<const Batch> batch;
    DurableFn durable;
    int schema_version;  // recorded by this batch, 0 if none
  };
  struct Entry {
    uint64_t seq;        // the newest pending batch writing this key
    const Write* write;  // points into that batch
  };
  bool closed = false;
  bool draining = false;
  Txn::State* open_txn = nullptr;
  uint64_t next_seq = 1;
  uint64_t settled_seq = 0;
  std::deque<Pending> pending;
  std::map<std::string, Entry, std::less<>> overlay;
  std::deque<std::pair<uint64_t, std::function<void()>>> flushes;
  int stored_version = 0;  // including committed, not yet durable changes
  int disk_version = 0;
  std::vector<std::shared_ptr<const Batch>> outbox;  // committed, not yet in the queue (mu was busy)
  Loop::TimerId retry_timer = 0;

  // ---- shared with the writer thread, guarded by mu. The loop only ever try_locks it: the writer may be
  // preempted while holding it, and the loop must not wait for that (work is retried on a later turn). ----
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<const Batch>> queue;
  std::deque<Settled> settled;
  std::atomic<uint64_t> discard_below{0};  // the writer drops batches below this (already failed by the loop)
  bool stop = false;
  bool writer_idle = false;
  bool tick_posted = false;
  std::thread writer;

  // test_hold_writer_lock()
  std::thread holder;
  std::atomic<bool> holder_release{false};
};

// ---------------------------------------------------------------------------------------------------------------
// Opening and closing

bool Store::Impl::open_env(std::string* error) {
  auto fail = [&](std::string msg) {
    if (error) *error = std::move(msg);
    return false;
  };
  const std::string& dir = opts.dir;
  bool created = false;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return fail(fmt::format("store: cannot use {}: {}", dir, std::strerror(errno)));
    if (::mkdir(dir.c_str(), 0700) != 0)
      return fail(fmt::format("store: cannot create directory {}: {}", dir, std::strerror(errno)));
    created = true;
  } else if (!S_ISDIR(st.st_mode)) {
    return fail(fmt::format("store: {} exists and is not a directory", dir));
  }

  // One process, one writer: the overlay assumes nobody else writes. LMDB's own lock file allows several
  // processes, so take an exclusive lock of our own (released by the kernel when the process dies).
  std::string lock_path = dir + "/" + kLockFile;
  lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) return fail(fmt::format("store: cannot open {}: {}", lock_path, std::strerror(errno)));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return fail(fmt::format("store: {} is already open (by another cloudletd, or twice in this process)", dir));
    return fail(fmt::format("store: cannot lock {}: {}", lock_path, std::strerror(errno)));
  }
  bool new_file = ::access((dir + "/data.mdb").c_str(), F_OK) != 0;

  int rc = mdb_env_create(&env);
  if (rc != 0) return fail(fmt::format("store: mdb_env_create: {}", mdb_strerror(rc)));
  rc = mdb_env_set_mapsize(env, opts.map_size);
  if (rc == 0) rc = mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0600);
  if (rc != 0) return fail(fmt::format("store: cannot open the LMDB environment in {}: {}", dir, mdb_strerror(rc)));
  // LMDB opens its data file without close-on-exec: every program the server or a plugin starts would
  // inherit the store (found by the proc_spawn conformance test). Mark it before anything can spawn.
  mdb_filehandle_t data_fd;
  if (mdb_env_get_fd(env, &data_fd) == 0) fcntl(data_fd, F_SETFD, fcntl(data_fd, F_GETFD) | FD_CLOEXEC);
  if (static_cast<size_t>(mdb_env_get_maxkeysize(env)) < kMaxCollection + 1 + kMaxKey)
    return fail(fmt::format("store: this LMDB allows keys of {} bytes, {} are needed", mdb_env_get_maxkeysize(env),
                            kMaxCollection + 1 + kMaxKey));
  MDB_envinfo info;
  mdb_env_info(env, &info);
  map_size = info.me_mapsize;

  rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &rtxn);
  if (rc == 0) rc = mdb_dbi_open(rtxn, nullptr, 0, &dbi);
  if (rc != 0) return fail(fmt::format("store: cannot read {}: {}", dir, mdb_strerror(rc)));

  MDB_val k = mdb_val(kMetaKey), v;
  rc = mdb_get(rtxn, dbi, &k, &v);
  bool fresh = false;
  if (rc == 0) {
    std::string_view text = view(v);
    int version = -1;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
    if (ec != std::errc() || end != text.data() + text.size() || version < 0)
      return fail(fmt::format("store: {} has a corrupt schema version record", dir));
    stored_version = disk_version = version;
  } else if (rc == MDB_NOTFOUND) {
    // No version record: a new database, or data from before versions were recorded (version 0).
    MDB_cursor* c = nullptr;
    rc = mdb_cursor_open(rtxn, dbi, &c);
    if (rc != 0) return fail(fmt::format("store: cannot read {}: {}", dir, mdb_strerror(rc)));
    MDB_val ck, cv_;
    rc = mdb_cursor_get(c, &ck, &cv_, MDB_FIRST);
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND) return fail(fmt::format("store: cannot read {}: {}", dir, mdb_strerror(rc)));
    fresh = rc == MDB_NOTFOUND;
    stored_version = disk_version = 0;
  } else {
    return fail(fmt::format("store: cannot read {}: {}", dir, mdb_strerror(rc)));
  }
  mdb_txn_reset(rtxn);

  if (stored_version > opts.schema_version)
    return fail(fmt::format(
        "store: {} holds schema version {} but this cloudletd knows versions up to {}: refusing to run on data "
        "written by a newer version",
        dir, stored_version, opts.schema_version));

  if (new_file) sync_dir(dir);
  if (created) sync_dir(parent_of(dir));

  start();
  if (fresh) {
    // Recorded through the writer like any commit, so open() never waits for an fsync.
    auto b = std::make_shared<Batch>();
    b->writes.push_back(Write{std::string(kMetaKey), false, std::to_string(opts.schema_version)});
    b->bytes = kMetaKey.size() + b->writes[0].value.size();
    enqueue(std::move(b), nullptr, opts.schema_version);
  } else if (stored_version < opts.schema_version) {
    log::warn("store", "{} holds schema version {}, this cloudletd expects {}: migration needed", dir, stored_version,
              opts.schema_version);
  }
  log::info("store", "opened {} (map {}, schema version {})", dir, size_text(map_size.load()), stored_version);
  return true;
}

void Store::Impl::start() {
  writer = std::thread([this] { writer_main(); });
  pthread_setname_np(writer.native_handle(), "cl-store");
}

void Store::Impl::shutdown() {
  if (closed) return;
  closed = true;
  if (holder.joinable()) {
    holder_release = true;
    holder.join();
  }
  if (writer.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu);  // shutdown may wait
      for (auto& b : outbox) queue.push_back(std::move(b));
      stop = true;
    }
    outbox.clear();
    cv.notify_one();
    writer.join();  // applies everything queued first: shutdown loses nothing committed
  }
  if (retry_timer) loop.timer_stop(retry_timer);
  retry_timer = 0;
  drain();
  if (!draining) {
    // Nothing can settle any more; whoever waits for a flush must not wait forever.
    auto waiters = std::move(flushes);
    flushes.clear();
    for (auto& [seq, fn] : waiters) fn();
  }
  if (rtxn) mdb_txn_abort(rtxn);
  rtxn = nullptr;
  if (env) mdb_env_close(env);
  env = nullptr;
  if (lock_fd >= 0) ::close(lock_fd);
  lock_fd = -1;
}

// ---------------------------------------------------------------------------------------------------------------
// Reads (loop thread)

int Store::Impl::read_disk(std::string_view ekey, std::string* out, bool* found) {
  std::lock_guard<std::mutex> lk(map_mu);
  int rc = mdb_txn_renew(rtxn);
  if (rc != 0) return rc;
  MDB_val k = mdb_val(ekey), v;
  rc = mdb_get(rtxn, dbi, &k, &v);
  *found = rc == 0;
  if (rc == 0 && out) out->assign(static_cast<const char*>(v.mv_data), v.mv_size);
  if (rc == MDB_NOTFOUND) rc = 0;
  mdb_txn_reset(rtxn);
  return rc;
}

cl_status_t Store::Impl::lookup(std::string_view ekey, std::string* out) {
  if (closed) return CL_ECLOSING;
  auto it = overlay.find(ekey);
  if (it != overlay.end()) {
    if (it->second.write->del) return CL_ENOENT;
    if (out) *out = it->second.write->value;
    return CL_OK;
  }
  bool found = false;
  int rc = read_disk(ekey, out, &found);
  if (rc != 0) {
    log::error("store", "{}: read failed: {}", opts.dir, mdb_strerror(rc));
    return CL_EIO;
  }
  return found ? CL_OK : CL_ENOENT;
}

int Store::Impl::read_range(const std::string& from, bool exclusive, std::string_view prefix,
                            std::vector<std::pair<std::string, std::string>>* out, bool* end) {
  std::lock_guard<std::mutex> lk(map_mu);
  int rc = mdb_txn_renew(rtxn);
  if (rc != 0) return rc;
  MDB_cursor* c = nullptr;
  rc = mdb_cursor_open(rtxn, dbi, &c);
  if (rc != 0) {
    mdb_txn_reset(rtxn);
    return rc;
  }
  *end = true;
  size_t bytes = 0;
  MDB_val k = mdb_val(from), v;
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    std::string_view key = view(k);
    if (!starts_with(key, prefix)) break;
    if (exclusive && key == from) {
      rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
      continue;
    }
    if (out->size() >= kScanChunk || bytes >= kScanChunkBytes) {
      *end = false;
      break;
    }
    out->emplace_back(key, view(v));
    bytes += k.mv_size + v.mv_size;
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) rc = 0;
  mdb_cursor_close(c);
  mdb_txn_reset(rtxn);
  return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// Commits and their settlement (loop thread)

void Store::Impl::enqueue(std::shared_ptr<Batch> batch, DurableFn durable, int schema_version) {
  batch->seq = next_seq++;
  for (const Write& w : batch->writes) overlay.insert_or_assign(w.key, Entry{batch->seq, &w});
  if (schema_version) stored_version = schema_version;
  pending.push_back(Pending{batch, std::move(durable), schema_version});
  outbox.push_back(std::move(batch));
  hand_over();
}

void Store::Impl::hand_over() {
  if (outbox.empty()) return;
  std::unique_lock<std::mutex> lk(mu, std::try_to_lock);
  if (!lk.owns_lock()) {
    retry_later();
    return;
  }
  for (auto& b : outbox) queue.push_back(std::move(b));
  bool wake = writer_idle;
  lk.unlock();
  outbox.clear();
  if (wake) cv.notify_one();
}

// The lock is only busy while the writer is inside a short critical section, or was preempted there: retry
// after a millisecond rather than spinning the loop, which would compete with the writer for the CPU.
void Store::Impl::retry_later() {
  if (retry_timer) return;
  retry_timer = loop.timer_start(1, 0, [self = shared_from_this()] {
    self->retry_timer = 0;
    self->hand_over();
    self->drain();
  });
}

void Store::Impl::unoverlay(const Batch& b) {
  for (const Write& w : b.writes) {
    auto it = overlay.find(w.key);
    // A newer pending batch that wrote the same key keeps its entry.
    if (it != overlay.end() && it->second.seq == b.seq) overlay.erase(it);
  }
}

void Store::Impl::drain() {
  // Not re-entrant: a callback that closes the store (which drains) leaves the rest to this loop, in order.
  if (draining) return;
  draining = true;
  auto self = shared_from_this();  // a callback may destroy the Store
  for (;;) {
    Settled s;
    {
      std::unique_lock<std::mutex> lk(mu, std::try_to_lock);
      if (!lk.owns_lock()) {
        retry_later();  // tick_posted stays set: the retry drains
        break;
      }
      if (settled.empty()) {
        tick_posted = false;
        break;
      }
      s = settled.front();
      settled.pop_front();
    }
    // Update all state first, then run callbacks: they may read, commit or close.
    std::vector<std::pair<DurableFn, cl_status_t>> calls;
    if (s.rc == 0) {
      while (!pending.empty() && pending.front().batch->seq <= s.seq) {
        Pending& p = pending.front();
        unoverlay(*p.batch);
        if (p.schema_version) disk_version = p.schema_version;
        calls.emplace_back(std::move(p.durable), CL_OK);
        pending.pop_front();
      }
      settled_seq = s.seq;
    } else {
      cl_status_t st = status_of(s.rc);
      log::error("store", "{}: writing a committed transaction failed ({}); it and {} later one(s) are dropped",
                 opts.dir, mdb_strerror(s.rc), pending.empty() ? 0 : pending.size() - 1);
      // Batches committed since the failed one may have been computed from its writes: they fail too, and the
      // writer skips them. Reads revert to what is on disk.
      for (Pending& p : pending) {
        unoverlay(*p.batch);
        calls.emplace_back(std::move(p.durable), p.batch->seq == s.seq ? st : CL_ECANCELED);
      }
      pending.clear();
      stored_version = disk_version;
      settled_seq = next_seq - 1;
      outbox.clear();
      discard_below = next_seq;
    }
    std::vector<std::function<void()>> done;
    while (!flushes.empty() && flushes.front().first <= settled_seq) {
      done.push_back(std::move(flushes.front().second));
      flushes.pop_front();
    }
    for (auto& [fn, st] : calls)
      if (fn) fn(st);
    for (auto& fn : done) fn();
  }
  draining = false;
}

// ---------------------------------------------------------------------------------------------------------------
// The writer thread

void Store::Impl::writer_main() {
  std::vector<std::shared_ptr<const Batch>> group;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu);
      for (;;) {
        while (!queue.empty() && queue.front()->seq < discard_below) queue.pop_front();
        if (!queue.empty()) break;
        if (stop) return;
        writer_idle = true;
        cv.wait(lk);
        writer_idle = false;
      }
      // Everything waiting goes into one LMDB transaction (one fdatasync), within bounds.
      size_t bytes = 0;
      while (!queue.empty() && group.size() < kGroupMaxBatches) {
        auto& b = queue.front();
        if (b->seq < discard_below) {
          queue.pop_front();
          continue;
        }
        if (!group.empty() && bytes + b->bytes > kGroupMaxBytes) break;
        bytes += b->bytes;
        group.push_back(std::move(b));
        queue.pop_front();
      }
    }
    write_group(group);
    group.clear();
  }
}

void Store::Impl::write_group(const std::vector<std::shared_ptr<const Batch>>& group) {
  int rc = apply(group.data(), group.size());
  if (rc == 0) {
    report(group.back()->seq, 0);
    return;
  }
  if (group.size() > 1) {
    // Find the batch at fault: alone, each batch is applied or fails on its own.
    uint64_t ok = 0;
    for (const auto& b : group) {
      rc = apply(&b, 1);
      if (rc != 0) {
        if (ok) report(ok, 0);
        report(b->seq, rc);
        return;
      }
      ok = b->seq;
    }
    report(ok, 0);
    return;
  }
  report(group.front()->seq, rc);
}

int Store::Impl::apply(const std::shared_ptr<const Batch>* batches, size_t n) {
  size_t bytes = 0, writes = 0;
  for (size_t i = 0; i < n; i++) {
    bytes += batches[i]->bytes;
    writes += batches[i]->writes.size();
  }
  if (writes == 0) return 0;
  for (;;) {
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env, nullptr, 0, &txn);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
      for (const Write& w : batches[i]->writes) {
        MDB_val k = mdb_val(w.key);
        if (w.del) {
          rc = mdb_del(txn, dbi, &k, nullptr);
          if (rc == MDB_NOTFOUND) rc = 0;
        } else {
          MDB_val v = mdb_val(w.value);
          rc = mdb_put(txn, dbi, &k, &v, 0);
        }
        if (rc != 0) break;
      }
    }
    if (rc == 0) {
      rc = mdb_txn_commit(txn);  // writes the pages, fdatasync, then the meta page
    } else {
      mdb_txn_abort(txn);
    }
    if (rc == MDB_MAP_FULL && grow(bytes)) continue;
    return rc;
  }
}

bool Store::Impl::grow(size_t need) {
  uint64_t cur = map_size.load();
  if (cur >= opts.max_map_size) {
    log::error("store", "{}: the map is full at its maximum size ({})", opts.dir, size_text(cur));
    return false;
  }
  uint64_t next = std::max<uint64_t>(cur * 2, cur + 2 * static_cast<uint64_t>(need));
  next = (next + kMapStep - 1) / kMapStep * kMapStep;
  next = std::min(next, opts.max_map_size);
  int rc;
  {
    // No write transaction is open here (apply() ended it); the mutex keeps the loop's reads out.
    std::lock_guard<std::mutex> lk(map_mu);
    rc = mdb_env_set_mapsize(env, next);
  }
  if (rc != 0) {
    log::error("store", "{}: growing the map to {} failed: {}", opts.dir, size_text(next), mdb_strerror(rc));
    return false;
  }
  MDB_envinfo info;
  mdb_env_info(env, &info);
  map_size = info.me_mapsize;
  log::info("store", "{}: map grown from {} to {}", opts.dir, size_text(cur), size_text(info.me_mapsize));
  return true;
}

void Store::Impl::report(uint64_t seq, int rc) {
  bool post;
  {
    std::lock_guard<std::mutex> lk(mu);
    settled.push_back(Settled{seq, rc});
    // After a failure nothing more is applied until the loop has failed everything committed so far.
    if (rc != 0) discard_below = std::numeric_limits<uint64_t>::max();
    post = !tick_posted;
    tick_posted = true;
  }
  // If the loop is already closing, the post is refused and close() drains instead.
  if (post) loop.post([self = shared_from_this()] { self->drain(); });
}

// ---------------------------------------------------------------------------------------------------------------
// Public interface

Store::Store(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() {
  if (impl_) impl_->shutdown();
}

std::unique_ptr<Store> Store::open(Loop& loop, const Options& opts, std::string* error) {
  auto fail = [&](std::string msg) -> std::unique_ptr<Store> {
    if (error) *error = std::move(msg);
    return nullptr;
  };
  if (opts.dir.empty()) return fail("store: no directory given");
  if (opts.schema_version < 1) return fail(fmt::format("store: invalid schema version {}", opts.schema_version));
  if (opts.map_size == 0 || opts.max_map_size < opts.map_size)
    return fail(fmt::format("store: invalid map size {} (maximum {})", opts.map_size, opts.max_map_size));
  auto impl = std::make_shared<Impl>(loop, opts);
  if (!impl->open_env(error)) {
    impl->shutdown();
    return nullptr;
  }
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

bool Store::valid_collection(std::string_view coll) {
  if (coll.empty() || coll.size() > kMaxCollection) return false;
  for (char c : coll) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == ':' || c == '/' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool Store::plugin_collection(std::string_view plugin, std::string_view coll, std::string* out) {
  auto lower_digit_us = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; };
  if (plugin.empty() || plugin.size() > 32 || coll.empty() || coll.size() > 64) return false;
  if (!std::all_of(plugin.begin(), plugin.end(), lower_digit_us)) return false;
  if (!std::all_of(coll.begin(), coll.end(), [&](char c) { return lower_digit_us(c) || c == '.' || c == '-'; }))
    return false;
  *out = fmt::format("plugin:{}/{}", plugin, coll);
  return true;
}

bool Store::valid_key(std::string_view key) {
  return !key.empty() && key.size() <= kMaxKey && key.find('\0') == std::string_view::npos;
}

cl_status_t Store::get(std::string_view coll, std::string_view key, std::string* out) {
  assert(impl_->loop.on_loop_thread());
  if (!valid_collection(coll) || !valid_key(key)) return CL_EINVAL;
  return impl_->lookup(encode(coll, key), out);
}

cl_status_t Store::scan(std::string_view coll, std::string_view prefix, const ScanFn& fn) {
  assert(impl_->loop.on_loop_thread());
  if (!valid_collection(coll) || !valid_prefix(prefix)) return CL_EINVAL;
  Impl& s = *impl_;
  const size_t base = coll.size() + 1;
  const std::string start = encode(coll, prefix);
  std::string from = start;
  bool exclusive = false;
  std::vector<std::pair<std::string, std::string>> disk;
  std::vector<std::pair<std::string, std::optional<std::string>>> over;
  for (;;) {
    // Checked per chunk: fn may have closed the store.
    if (s.closed) return CL_ECLOSING;
    disk.clear();
    over.clear();
    bool end = true;
    int rc = s.read_range(from, exclusive, start, &disk, &end);
    if (rc != 0) {
      log::error("store", "{}: scan failed: {}", s.opts.dir, mdb_strerror(rc));
      return CL_EIO;
    }
    // The overlay's part of the same key range, copied: fn may commit, which changes the overlay.
    auto it = exclusive ? s.overlay.upper_bound(from) : s.overlay.lower_bound(from);
    for (; it != s.overlay.end() && starts_with(it->first, start); ++it) {
      if (!end && it->first > disk.back().first) break;
      const Write* w = it->second.write;
      over.emplace_back(it->first, w->del ? std::nullopt : std::optional<std::string>(w->value));
    }
    size_t d = 0, o = 0;
    while (d < disk.size() || o < over.size()) {
      std::string_view key, value;
      if (o < over.size() && (d == disk.size() || over[o].first <= disk[d].first)) {
        if (d < disk.size() && over[o].first == disk[d].first) d++;  // the overlay is newer
        auto& entry = over[o++];
        if (!entry.second) continue;  // deleted
        key = entry.first;
        value = *entry.second;
      } else {
        key = disk[d].first;
        value = disk[d].second;
        d++;
      }
      if (!fn(key.substr(base), value)) return CL_OK;
    }
    if (end) return CL_OK;
    from = disk.back().first;
    exclusive = true;
  }
}

std::unique_ptr<Store::Txn> Store::begin(cl_status_t* status) {
  assert(impl_->loop.on_loop_thread());
  cl_status_t st = CL_OK;
  if (impl_->closed) st = CL_ECLOSING;
  else if (impl_->open_txn) st = CL_EBUSY;
  if (status) *status = st;
  if (st != CL_OK) return nullptr;
  auto state = std::make_unique<Txn::State>();
  state->impl = impl_;
  impl_->open_txn = state.get();
  return std::unique_ptr<Txn>(new Txn(std::move(state)));
}

cl_status_t Store::commit(std::unique_ptr<Txn> txn, DurableFn durable) {
  assert(impl_->loop.on_loop_thread());
  if (!txn || txn->state_->impl != impl_) return CL_EINVAL;
  if (impl_->closed) return CL_ECLOSING;
  Txn::State& st = *txn->state_;
  auto b = std::make_shared<Batch>();
  b->writes.reserve(st.writes.size() + (st.schema_version ? 1 : 0));
  while (!st.writes.empty()) {
    auto node = st.writes.extract(st.writes.begin());
    std::optional<std::string>& value = node.mapped();
    b->writes.push_back(Write{std::move(node.key()), !value, value ? std::move(*value) : std::string()});
  }
  b->bytes = st.bytes;
  if (st.schema_version) {
    b->writes.push_back(Write{std::string(kMetaKey), false, std::to_string(st.schema_version)});
    b->bytes += kMetaKey.size() + b->writes.back().value.size();
  }
  impl_->open_txn = nullptr;
  impl_->enqueue(std::move(b), std::move(durable), st.schema_version);
  return CL_OK;
}

void Store::flush(std::function<void()> done) {
  assert(impl_->loop.on_loop_thread());
  if (impl_->pending.empty()) {
    impl_->loop.defer(std::move(done));
    return;
  }
  impl_->flushes.emplace_back(impl_->next_seq - 1, std::move(done));
}

void Store::close() { impl_->shutdown(); }

void Store::test_hold_writer_lock(bool on) {
  Impl& s = *impl_;
  if (on && !s.holder.joinable() && !s.closed) {
    s.holder_release = false;
    std::atomic<bool> locked{false};
    s.holder = std::thread([&s, &locked] {
      std::lock_guard<std::mutex> lk(s.mu);
      locked = true;
      while (!s.holder_release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    while (!locked) std::this_thread::yield();
  } else if (!on && s.holder.joinable()) {
    s.holder_release = true;
    s.holder.join();
  }
}
bool Store::closed() const { return impl_->closed; }
int Store::schema_version() const { return impl_->opts.schema_version; }
int Store::stored_schema_version() const { return impl_->stored_version; }
size_t Store::pending() const { return impl_->pending.size(); }
uint64_t Store::map_size() const { return impl_->map_size.load(); }
const std::string& Store::dir() const { return impl_->opts.dir; }

// ---------------------------------------------------------------------------------------------------------------
// Transactions

Store::Txn::Txn(std::unique_ptr<State> state) : state_(std::move(state)) {}

Store::Txn::~Txn() {
  // Without commit this is the abort: the writes are simply forgotten.
  if (state_->impl->open_txn == state_.get()) state_->impl->open_txn = nullptr;
}

cl_status_t Store::Txn::get(std::string_view coll, std::string_view key, std::string* out) {
  if (!valid_collection(coll) || !valid_key(key)) return CL_EINVAL;
  if (state_->impl->closed) return CL_ECLOSING;
  std::string k = encode(coll, key);
  auto it = state_->writes.find(k);
  if (it != state_->writes.end()) {
    if (!it->second) return CL_ENOENT;
    if (out) *out = *it->second;
    return CL_OK;
  }
  return state_->impl->lookup(k, out);
}

cl_status_t Store::Txn::put(std::string_view coll, std::string_view key, std::string_view value) {
  if (!valid_collection(coll) || !valid_key(key)) return CL_EINVAL;
  if (state_->impl->closed) return CL_ECLOSING;
  if (value.size() > kMaxValue) return CL_ETOOBIG;
  std::string k = encode(coll, key);
  auto it = state_->writes.find(k);
  size_t old = it == state_->writes.end() ? 0 : k.size() + (it->second ? it->second->size() : 0);
  size_t bytes = state_->bytes - old + k.size() + value.size();
  if (bytes > kMaxTxnBytes) return CL_ETOOBIG;
  state_->writes.insert_or_assign(std::move(k), std::string(value));
  state_->bytes = bytes;
  return CL_OK;
}

cl_status_t Store::Txn::del(std::string_view coll, std::string_view key) {
  if (!valid_collection(coll) || !valid_key(key)) return CL_EINVAL;
  if (state_->impl->closed) return CL_ECLOSING;
  std::string k = encode(coll, key);
  auto it = state_->writes.find(k);
  size_t old = it == state_->writes.end() ? 0 : k.size() + (it->second ? it->second->size() : 0);
  size_t bytes = state_->bytes - old + k.size();
  if (bytes > kMaxTxnBytes) return CL_ETOOBIG;
  state_->writes.insert_or_assign(std::move(k), std::nullopt);
  state_->bytes = bytes;
  return CL_OK;
}

cl_status_t Store::Txn::set_schema_version(int version) {
  if (state_->impl->closed) return CL_ECLOSING;
  if (version < 1 || version > state_->impl->opts.schema_version) return CL_EINVAL;
  state_->schema_version = version;
  return CL_OK;
}

size_t Store::Txn::size() const { return state_->writes.size(); }
size_t Store::Txn::bytes() const { return state_->bytes; }

}  // namespace cloudlet
