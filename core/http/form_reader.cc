#include "http/form_reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>

#include "http/header_text.h"
#include "http/multipart.h"
#include "http/url.h"
#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet::http {

namespace {

constexpr size_t kMaxBlock = 1 << 20;         // bytes per disk write
constexpr uint64_t kKickBytes = 32ull << 20;  // with sync: start writeback every 32 MiB, so the final fsync
                                              // of a multi-GB file does not flush it all at once

constexpr std::string_view kSpoolPrefix = "upload-";

std::string random_name() {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof v)) {
    std::random_device rd;
    v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*s%016llx", static_cast<int>(kSpoolPrefix.size()), kSpoolPrefix.data(),
                static_cast<unsigned long long>(v));
  return buf;
}

bool is_spool_name(std::string_view name) {
  if (name.size() != kSpoolPrefix.size() + 16 || name.substr(0, kSpoolPrefix.size()) != kSpoolPrefix) return false;
  return std::all_of(name.begin() + kSpoolPrefix.size(), name.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Absolute, and no empty, "." or ".." component: the caller already confined it, this keeps it literal.
bool dest_valid(std::string_view p) {
  if (p.size() < 2 || p.front() != '/' || p.back() == '/' || p.find('\0') != std::string_view::npos) return false;
  p.remove_prefix(1);
  while (!p.empty()) {
    size_t slash = p.find('/');
    std::string_view c = p.substr(0, slash);
    if (c.empty() || c == "." || c == "..") return false;
    p = slash == std::string_view::npos ? std::string_view() : p.substr(slash + 1);
  }
  return true;
}

struct MoveResult {
  cl_status_t status = CL_OK;
  int err = 0;
  const char* step = "";
};

// Renames src to dst without ever replacing dst. Plain syscalls: runs on the loop (metadata only) or on a
// worker (with sync_dir, which waits for the disk).
MoveResult move_noreplace(const std::string& src, const std::string& dst, bool sync_dir) {
  for (size_t pos = dst.find('/', 1); pos != std::string::npos; pos = dst.find('/', pos + 1)) {
    std::string dir = dst.substr(0, pos);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return {CL_EIO, errno, "creating its directory"};
  }
  if (renameat2(AT_FDCWD, src.c_str(), AT_FDCWD, dst.c_str(), RENAME_NOREPLACE) != 0) {
    int e = errno;
    if (e == EINVAL || e == ENOSYS || e == EOPNOTSUPP) {
      // The filesystem cannot rename without replacing: link() fails on an existing name just the same.
      if (link(src.c_str(), dst.c_str()) != 0) {
        e = errno;
      } else {
        unlink(src.c_str());
        e = 0;
      }
    }
    if (e == EEXIST) return {CL_EEXIST, e, "renaming"};
    if (e != 0) return {CL_EIO, e, "renaming"};
  }
  if (sync_dir) {
    std::string parent = dst.substr(0, std::max<size_t>(dst.rfind('/'), 1));
    int fd = open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return {CL_EIO, errno, "syncing its directory"};
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return {CL_EIO, e, "syncing its directory"};
  }
  return {};
}

std::string move_message(const MoveResult& r, const std::string& dst) {
  if (r.status == CL_OK) return {};
  if (r.status == CL_EEXIST) return "destination exists: " + dst;
  return fmt::format("moving upload to {}: {}: {}", dst, r.step, std::strerror(r.err));
}

}  // namespace

struct FormReader::Impl : std::enable_shared_from_this<Impl> {
  struct FileState {
    int fd = -1;
    bool on_disk = false;  // created by us and neither deleted nor moved away
    bool keep = false;     // taken, released or being moved: never deleted by us
    uint64_t queued_offset = 0;
    uint64_t kicked = 0;
  };
  struct Block {
    std::unique_ptr<char[]> data;
    size_t len = 0;
  };
  enum class OpType { open, write, close };
  // One disk operation. The worker touches only this struct; the loop reads the results afterwards.
  struct Op {
    OpType type = OpType::open;
    size_t file = 0;
    Block block;
    uint64_t offset = 0, kick_from = 0, kick_len = 0;
    bool sync = false;
    int fd = -1;
    std::string path;  // open: the spool directory in, the created file out
    int err = 0;
  };
  enum class Part { none, field, file, lazy_file };

  explicit Impl(Loop& l) : loop(l) {}

  Loop& loop;
  FormKind kind = FormKind::none;
  FormLimits limits;
  std::string spool_dir;
  size_t block_size = kMaxBlock;
  cl_status_t status = CL_OK;
  std::string error;
  bool finishing = false, finished_ok = false, aborted = false;
  DoneFn done;
  std::function<void()> resume;
  bool paused = false;

  Fields fields;
  size_t fields_bytes = 0;
  std::string body;  // urlencoded, parsed at finish()
  std::unique_ptr<MultipartParser> parser;

  std::vector<FormFile> files;
  std::vector<FileState> fstate;
  Part part = Part::none;
  PartHeaders lazy;  // a file part with an empty filename: its file is created on its first byte
  Block current;     // file data not yet handed to a write
  uint64_t file_bytes = 0;
  uint64_t queued = 0;  // bytes accepted for disk and not yet written
  std::vector<std::unique_ptr<char[]>> free_blocks;
  std::deque<Op> ops;
  bool op_running = false;

  cl_status_t fail(cl_status_t st, std::string message) {
    if (status != CL_OK) return status;
    status = st;
    error = std::move(message);
    log::debug("http", "form read failed: {}", error);
    drop_queue();
    cleanup();
    return status;
  }

  bool add_field_bytes(size_t n) {
    if (n > limits.max_fields_bytes - fields_bytes) {
      fail(CL_ETOOBIG, fmt::format("form fields exceed {} bytes", limits.max_fields_bytes));
      return false;
    }
    fields_bytes += n;
    return true;
  }

  // ---- multipart callbacks ----

  cl_status_t part_begin(const PartHeaders& h) {
    if (h.has_filename) {
      if (files.size() >= limits.max_files) {
        return fail(CL_ETOOBIG, fmt::format("too many files in form (limit {})", limits.max_files));
      }
      if (h.filename.empty()) {
        lazy = h;
        part = Part::lazy_file;
      } else {
        start_file(h);
      }
      return CL_OK;
    }
    if (fields.size() >= limits.max_fields) {
      return fail(CL_ETOOBIG, fmt::format("too many form fields (limit {})", limits.max_fields));
    }
    if (!add_field_bytes(h.name.size())) return status;
    fields.emplace_back(h.name, std::string());
    part = Part::field;
    return CL_OK;
  }

  cl_status_t part_data(std::string_view d) {
    switch (part) {
      case Part::field:
        if (!add_field_bytes(d.size())) return status;
        fields.back().second.append(d);
        return CL_OK;
      case Part::lazy_file:
        start_file(lazy);
        [[fallthrough]];
      case Part::file:
        if (d.size() > limits.max_file_bytes - file_bytes) {
          return fail(CL_ETOOBIG, fmt::format("uploaded files exceed {} bytes", limits.max_file_bytes));
        }
        file_bytes += d.size();
        append_file_data(d);
        return CL_OK;
      case Part::none:
        break;
    }
    return CL_OK;
  }

  cl_status_t part_end() {
    if (part == Part::file) {
      flush_block();
      Op op;
      op.type = OpType::close;
      op.file = files.size() - 1;
      ops.push_back(std::move(op));
      pump();
    }
    part = Part::none;
    return CL_OK;
  }

  void start_file(const PartHeaders& h) {
    files.push_back(FormFile{h.name, h.filename, h.content_type, std::string(), 0});
    fstate.emplace_back();
    Op op;
    op.type = OpType::open;
    op.file = files.size() - 1;
    ops.push_back(std::move(op));
    part = Part::file;
    pump();
  }

  void append_file_data(std::string_view d) {
    while (!d.empty()) {
      if (!current.data) {
        if (free_blocks.empty()) {
          current.data = std::make_unique_for_overwrite<char[]>(block_size);
        } else {
          current.data = std::move(free_blocks.back());
          free_blocks.pop_back();
        }
        current.len = 0;
      }
      size_t k = std::min(block_size - current.len, d.size());
      std::memcpy(current.data.get() + current.len, d.data(), k);
      current.len += k;
      queued += k;
      d.remove_prefix(k);
      if (current.len == block_size) flush_block();
    }
  }

  void flush_block() {
    if (current.len == 0) return;
    size_t idx = files.size() - 1;
    FileState& fs = fstate[idx];
    Op op;
    op.type = OpType::write;
    op.file = idx;
    op.offset = fs.queued_offset;
    fs.queued_offset += current.len;
    if (limits.sync && fs.queued_offset - fs.kicked >= kKickBytes) {
      op.kick_from = fs.kicked;
      op.kick_len = fs.queued_offset - fs.kicked;
      fs.kicked = fs.queued_offset;
    }
    op.block = std::move(current);
    current = Block();
    ops.push_back(std::move(op));
    pump();
  }

  void recycle(Block& b) {
    if (b.data && free_blocks.size() < limits.pause_bytes / block_size + 2) free_blocks.push_back(std::move(b.data));
    b = Block();
  }

  void drop_queue() {
    for (Op& op : ops) {
      queued -= op.block.len;
      recycle(op.block);
    }
    ops.clear();
    queued -= current.len;
    recycle(current);
  }

  // ---- disk operations, one at a time ----

  void pump() {
    if (op_running || ops.empty() || aborted || status != CL_OK) return;
    auto op = std::make_shared<Op>(std::move(ops.front()));
    ops.pop_front();
    if (op->type == OpType::open) {
      op->path = spool_dir;
    } else {
      op->fd = fstate[op->file].fd;
    }
    op->sync = limits.sync;
    op_running = true;
    Op* raw = op.get();
    loop.queue_work([raw] { run_op(*raw); },
                    [self = shared_from_this(), op](bool cancelled) { self->op_done(*op, cancelled); });
  }

  // Worker thread.
  static void run_op(Op& op) {
    switch (op.type) {
      case OpType::open:
        // Random names never collide in practice; O_EXCL makes sure, and a few retries cover bad luck.
        for (int attempt = 0; attempt < 8; attempt++) {
          std::string path = op.path + "/" + random_name();
          op.fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
          if (op.fd >= 0) {
            op.path = std::move(path);
            op.err = 0;
            return;
          }
          op.err = errno;
          if (op.err != EEXIST) return;
        }
        return;
      case OpType::write: {
        size_t done = 0;
        while (done < op.block.len) {
          ssize_t n =
              pwrite(op.fd, op.block.data.get() + done, op.block.len - done, static_cast<off_t>(op.offset + done));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            op.err = n < 0 ? errno : EIO;
            return;
          }
          done += static_cast<size_t>(n);
        }
        if (op.kick_len > 0) {
          sync_file_range(op.fd, static_cast<off_t>(op.kick_from), static_cast<off_t>(op.kick_len),
                          SYNC_FILE_RANGE_WRITE);
        }
        return;
      }
      case OpType::close:
        if (op.sync && fsync(op.fd) != 0) op.err = errno;
        if (close(op.fd) != 0 && op.err == 0 && errno != EINTR) op.err = errno;
        return;
    }
  }

  void op_done(Op& op, bool cancelled) {
    op_running = false;
    int err = cancelled ? ECANCELED : op.err;
    FileState& fs = fstate[op.file];
    switch (op.type) {
      case OpType::open:
        if (!cancelled && op.fd >= 0) {
          fs.fd = op.fd;
          fs.on_disk = true;
          files[op.file].path = op.path;
        }
        if (err != 0) fail(CL_EIO, fmt::format("cannot create a spool file in {}: {}", spool_dir, std::strerror(err)));
        break;
      case OpType::write:
        queued -= op.block.len;
        if (err == 0) files[op.file].size += op.block.len;
        recycle(op.block);
        if (err != 0) {
          log::warn("http", "writing upload {}: {}", files[op.file].path, std::strerror(err));
          fail(CL_EIO, fmt::format("writing upload: {}", std::strerror(err)));
        }
        break;
      case OpType::close:
        if (!cancelled) fs.fd = -1;  // closed even when close() reports an error
        if (err != 0) {
          log::warn("http", "closing upload {}: {}", files[op.file].path, std::strerror(err));
          fail(CL_EIO, fmt::format("writing upload: {}", std::strerror(err)));
        }
        break;
    }
    after_op();
  }

  void after_op() {
    if (aborted) {
      cleanup();
      return;
    }
    if (status != CL_OK) {
      cleanup();
      if (finishing) {
        call_done();
      } else if (paused) {
        paused = false;  // let the server feed again and learn the error
        call_resume();
      }
      return;
    }
    pump();
    if (finishing) {
      if (!op_running) {
        finished_ok = true;
        call_done();
      }
      return;
    }
    if (paused && queued <= limits.pause_bytes / 2) {
      paused = false;
      call_resume();
    }
  }

  void call_done() {
    DoneFn fn = std::move(done);
    done = nullptr;
    if (fn) fn(status, error);
  }

  void call_resume() {
    auto fn = resume;  // a copy: the callback may replace or drop it
    if (fn) fn();
  }

  // Closes every open spool fd and deletes every spooled file we still own, on a worker (unlinking a
  // multi-GB file can take a while). Waits for the running operation, which calls back here.
  void cleanup() {
    if (op_running) return;
    struct Targets {
      std::vector<int> fds;
      std::vector<std::string> paths;
      void run() {
        for (int fd : fds) close(fd);
        for (const auto& p : paths) unlink(p.c_str());
      }
    };
    auto t = std::make_shared<Targets>();
    for (size_t i = 0; i < fstate.size(); i++) {
      FileState& fs = fstate[i];
      if (fs.fd >= 0) {
        t->fds.push_back(fs.fd);
        fs.fd = -1;
      }
      if (fs.on_disk && !fs.keep) {
        t->paths.push_back(files[i].path);
        fs.on_disk = false;
      }
    }
    if (t->fds.empty() && t->paths.empty()) return;
    loop.queue_work([t] { t->run(); },
                    [t](bool cancelled) {
                      if (cancelled) t->run();  // never leak files, even at the price of a blocking moment
                    });
  }

  void abort() {
    if (aborted) return;
    aborted = true;
    if (status == CL_OK) {
      status = CL_ECANCELED;
      error = "form read aborted";
    }
    done = nullptr;
    resume = nullptr;
    drop_queue();
    cleanup();
  }

  cl_status_t check_file(size_t index) const {
    if (aborted || !finished_ok) return CL_ESTATE;
    if (index >= files.size() || fstate[index].keep || !fstate[index].on_disk) return CL_ENOENT;
    return CL_OK;
  }
};

FormKind FormReader::kind_of(std::string_view content_type) {
  std::string_view type = media_type(content_type);
  if (iequals(type, "application/x-www-form-urlencoded")) return FormKind::urlencoded;
  if (iequals(type, "multipart/form-data")) return FormKind::multipart;
  return FormKind::none;
}

FormReader::FormReader(Loop& loop, std::string_view content_type, std::string spool_dir, FormLimits limits)
    : impl_(std::make_shared<Impl>(loop)) {
  Impl& s = *impl_;
  s.limits = limits;
  s.kind = kind_of(content_type);
  while (spool_dir.size() > 1 && spool_dir.back() == '/') spool_dir.pop_back();
  s.spool_dir = std::move(spool_dir);
  s.block_size = std::clamp<size_t>(limits.pause_bytes / 4, 4096, kMaxBlock);
  if (s.kind == FormKind::none) {
    s.status = CL_EINVAL;
    s.error = "request body is not a form (expected application/x-www-form-urlencoded or multipart/form-data)";
    return;
  }
  if (s.kind != FormKind::multipart) return;
  if (s.spool_dir.empty() || s.spool_dir.front() != '/') {
    log::error("http", "form spool directory is not absolute: '{}'", s.spool_dir);
    s.status = CL_EIO;
    s.error = "upload spool directory is not configured";
    return;
  }
  std::string boundary;
  if (!MultipartParser::boundary_from_content_type(content_type, &boundary)) {
    s.status = CL_EINVAL;
    s.error = "multipart/form-data without a valid boundary parameter";
    return;
  }
  Impl* self = impl_.get();  // the parser lives inside *self
  MultipartParser::Callbacks cb;
  cb.part_begin = [self](const PartHeaders& h) { return self->part_begin(h); };
  cb.part_data = [self](std::string_view d) { return self->part_data(d); };
  cb.part_end = [self] { return self->part_end(); };
  s.parser = std::make_unique<MultipartParser>(boundary, std::move(cb),
                                               MultipartLimits{limits.max_part_header_bytes, limits.max_parts});
}

FormReader::~FormReader() { impl_->abort(); }

FormKind FormReader::kind() const { return impl_->kind; }
cl_status_t FormReader::status() const { return impl_->status; }
const std::string& FormReader::error() const { return impl_->error; }
const FormReader::Fields& FormReader::fields() const { return impl_->fields; }
const std::vector<FormFile>& FormReader::files() const { return impl_->files; }
uint64_t FormReader::queued_bytes() const { return impl_->queued; }
void FormReader::set_resume(std::function<void()> resume) { impl_->resume = std::move(resume); }
void FormReader::abort() { impl_->abort(); }

bool FormReader::wants_pause() const {
  const Impl& s = *impl_;
  return s.status == CL_OK && !s.finishing && s.queued > s.limits.pause_bytes;
}

cl_status_t FormReader::feed(std::string_view chunk) {
  Impl& s = *impl_;
  if (s.status != CL_OK) return s.status;
  if (s.finishing) return CL_ESTATE;
  if (s.kind == FormKind::urlencoded) {
    if (chunk.size() > s.limits.max_fields_bytes - s.body.size()) {
      return s.fail(CL_ETOOBIG, fmt::format("form fields exceed {} bytes", s.limits.max_fields_bytes));
    }
    s.body.append(chunk);
    return CL_OK;
  }
  cl_status_t st = s.parser->feed(chunk);
  if (st != CL_OK) return s.fail(st, s.parser->error());  // a no-op when a callback already failed
  if (s.queued > s.limits.pause_bytes) {
    s.flush_block();  // a partial block must reach the disk too, or the queue could never drain
    s.paused = true;
  }
  return CL_OK;
}

void FormReader::finish(DoneFn done) {
  Impl& s = *impl_;
  if (s.aborted) return;
  if (s.finishing) {
    s.loop.defer([done = std::move(done)] {
      if (done) done(CL_ESTATE, "finish() called twice");
    });
    return;
  }
  s.finishing = true;
  s.paused = false;
  s.done = std::move(done);
  if (s.status == CL_OK && s.kind == FormKind::urlencoded) {
    Fields parsed;
    if (!parse_query(s.body, &parsed)) {
      s.fail(CL_EINVAL, "malformed percent-escape in form body");
    } else if (parsed.size() > s.limits.max_fields) {
      s.fail(CL_ETOOBIG, fmt::format("too many form fields (limit {})", s.limits.max_fields));
    } else {
      s.fields = std::move(parsed);
    }
    std::string().swap(s.body);
  } else if (s.status == CL_OK && s.kind == FormKind::multipart) {
    if (cl_status_t st = s.parser->finish(); st != CL_OK) s.fail(st, s.parser->error());
  }
  if (s.status != CL_OK || (!s.op_running && s.ops.empty())) {
    // Nothing left to write: report from a clean stack, never inside the caller's frame.
    s.loop.defer([self = impl_] {
      if (self->aborted) return;
      if (self->status == CL_OK) self->finished_ok = true;
      self->call_done();
    });
  }
}

cl_status_t FormReader::take_file(size_t index, const std::string& dest_abs, std::string* error) {
  Impl& s = *impl_;
  if (cl_status_t st = s.check_file(index); st != CL_OK) return st;
  if (!dest_valid(dest_abs)) {
    if (error) *error = "invalid destination path";
    return CL_EINVAL;
  }
  MoveResult r = move_noreplace(s.files[index].path, dest_abs, false);
  if (r.status != CL_OK) {
    if (error) *error = move_message(r, dest_abs);
    return r.status;
  }
  s.fstate[index].keep = true;
  s.fstate[index].on_disk = false;
  return CL_OK;
}

void FormReader::take_file_async(size_t index, std::string dest_abs, DoneFn done) {
  Impl& s = *impl_;
  cl_status_t st = s.check_file(index);
  if (st == CL_OK && !dest_valid(dest_abs)) st = CL_EINVAL;
  if (st != CL_OK) {
    s.loop.defer([st, done = std::move(done)] {
      if (done) done(st, st == CL_EINVAL ? "invalid destination path" : "no such uploaded file");
    });
    return;
  }
  s.fstate[index].keep = true;  // in transit: cleanup must not touch it
  struct Job {
    std::string src, dst;
    bool sync;
    MoveResult result;
  };
  auto job = std::make_shared<Job>(Job{s.files[index].path, std::move(dest_abs), s.limits.sync, {}});
  s.loop.queue_work([job] { job->result = move_noreplace(job->src, job->dst, job->sync); },
                    [self = impl_, job, index, done = std::move(done)](bool cancelled) {
                      if (cancelled) job->result = {CL_EIO, ECANCELED, "queueing"};
                      auto& fs = self->fstate[index];
                      if (job->result.status == CL_OK) {
                        fs.on_disk = false;
                      } else {
                        fs.keep = false;  // still ours: deleted with the rest
                      }
                      if (self->aborted) {
                        self->cleanup();
                        return;
                      }
                      if (done) done(job->result.status, move_message(job->result, job->dst));
                    });
}

int FormReader::sweep_spool(const std::string& spool_dir) {
  int dfd = open(spool_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  DIR* dir = fdopendir(dfd);
  if (!dir) {
    close(dfd);
    return -1;
  }
  int removed = 0;
  while (dirent* e = readdir(dir)) {
    struct stat st;
    if (!is_spool_name(e->d_name) || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    if (unlinkat(dfd, e->d_name, 0) == 0) removed++;
  }
  closedir(dir);  // closes dfd
  if (removed > 0) log::info("http", "removed {} stale upload(s) from {}", removed, spool_dir);
  return removed;
}

cl_status_t FormReader::release_file(size_t index) {
  Impl& s = *impl_;
  if (cl_status_t st = s.check_file(index); st != CL_OK) return st;
  s.fstate[index].keep = true;
  s.fstate[index].on_disk = false;
  return CL_OK;
}

}  // namespace cloudlet::http
