#include "virt/event_impl.h"

#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "log/log.h"
#include "virt/fork_guard.h"

namespace cloudlet::virt {
namespace {

// What libvirt asked for. Guarded by State::mu; erased when libvirt removes the watch.
struct Watch {
  bool timer = false;
  int libvirt_fd = -1;  // the fd libvirt registered (passed back to its callback)
  int poll_fd = -1;     // our dup of it until the loop's uv side takes it over
  int events = 0;       // handles: VIR_EVENT_HANDLE_* wanted
  int frequency = -1;   // timeouts: -1 disabled, 0 every iteration, N ms
  virEventHandleCallback handle_cb = nullptr;
  virEventTimeoutCallback timeout_cb = nullptr;
  void* opaque = nullptr;
  virFreeCallback ff = nullptr;
};

// The loop side of one watch. Loop thread only; freed when all of its uv handles have closed.
struct UvSide {
  int id = 0;
  bool timer = false;
  int fd = -1;  // the dup polled (handles); closed once the poll handle is closed
  uv_poll_t poll;
  uv_timer_t tick;   // timeouts with frequency > 0
  uv_idle_t every;   // timeouts with frequency 0: once per loop iteration
  int open_handles = 0;
  int active_events = 0;      // uv events the poll handle runs with (0 = stopped)
  int active_frequency = -1;  // what the timer/idle run with
};

struct State {
  std::mutex mu;
  Loop* loop = nullptr;  // guarded by mu
  bool accepting = false;
  bool registered = false;
  int next_id = 1;
  std::unordered_map<int, Watch> watches;
  std::vector<std::pair<virFreeCallback, void*>> orphan_frees;  // removed while no loop could run them
  size_t frees_pending = 0;
  std::atomic<uint64_t> dispatched{0};
  std::atomic<size_t> uv_count{0};
  // Loop thread only.
  std::unordered_map<int, UvSide*> sides;
};

// Never destroyed: libvirt may call into the implementation during process exit.
State& st() {
  static State* s = new State;
  return *s;
}

void on_poll(uv_poll_t* h, int status, int events);
void on_tick(uv_timer_t* h);
void on_every(uv_idle_t* h);

void side_handle_closed(uv_handle_t* h) {
  auto* side = static_cast<UvSide*>(h->data);
  if (--side->open_handles > 0) return;
  if (side->fd >= 0) ::close(side->fd);
  st().uv_count--;
  delete side;
}

void side_close(UvSide* side) {
  if (side->timer) {
    uv_close(reinterpret_cast<uv_handle_t*>(&side->tick), side_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&side->every), side_handle_closed);
  } else {
    uv_close(reinterpret_cast<uv_handle_t*>(&side->poll), side_handle_closed);
  }
}

int uv_events_for(int vir_events) {
  int e = 0;
  if (vir_events & VIR_EVENT_HANDLE_READABLE) e |= UV_READABLE;
  if (vir_events & VIR_EVENT_HANDLE_WRITABLE) e |= UV_WRITABLE;
  if (e) e |= UV_DISCONNECT;  // hang-ups are always reported to libvirt, as poll() does
  return e;
}

// Loop thread: make the uv side of `id` match libvirt's latest wish (create, restart, stop or close it).
void sync(Loop& loop, int id) {
  State& s = st();
  bool exists = false;
  Watch want;
  int take_fd = -1;
  auto side_it = s.sides.find(id);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.watches.find(id);
    if (it != s.watches.end() && s.accepting && s.loop == &loop) {
      exists = true;
      want = it->second;
      if (side_it == s.sides.end() && !want.timer) {
        take_fd = it->second.poll_fd;  // the uv side owns the dup from now on
        it->second.poll_fd = -1;
      }
    }
  }
  if (!exists) {
    if (side_it != s.sides.end()) {
      UvSide* side = side_it->second;
      s.sides.erase(side_it);
      side_close(side);
    }
    return;
  }
  UvSide* side;
  if (side_it == s.sides.end()) {
    side = new UvSide;
    side->id = id;
    side->timer = want.timer;
    if (want.timer) {
      uv_timer_init(loop.uv(), &side->tick);
      uv_idle_init(loop.uv(), &side->every);
      side->tick.data = side;
      side->every.data = side;
      side->open_handles = 2;
    } else {
      // uv_poll_init makes the descriptor non-blocking, and O_NONBLOCK is shared with libvirt's fd through
      // the dup: put the flags back as libvirt had them.
      int flags = fcntl(take_fd, F_GETFL);
      int rc = uv_poll_init(loop.uv(), &side->poll, take_fd);
      if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(take_fd, F_SETFL, flags);
      if (rc != 0) {
        log::error("virt", "libvirt handle {} (fd {}) cannot be polled: {}", id, want.libvirt_fd, uv_strerror(rc));
        ::close(take_fd);
        delete side;
        return;
      }
      side->fd = take_fd;
      side->poll.data = side;
      side->open_handles = 1;
    }
    s.sides.emplace(id, side);
    s.uv_count++;
  } else {
    side = side_it->second;
  }
  if (side->timer) {
    // Every update restarts the period from now, as libvirt's own implementation does.
    uv_timer_stop(&side->tick);
    uv_idle_stop(&side->every);
    if (want.frequency > 0) {
      uv_timer_start(&side->tick, on_tick, static_cast<uint64_t>(want.frequency),
                     static_cast<uint64_t>(want.frequency));
    } else if (want.frequency == 0) {
      // Not a 0 ms uv timer: libuv 1.44 would re-run a timer re-armed with 0 within the same pass forever.
      uv_idle_start(&side->every, on_every);
    }
    side->active_frequency = want.frequency;
  } else {
    int ev = uv_events_for(want.events);
    if (ev == 0) {
      uv_poll_stop(&side->poll);
    } else if (ev != side->active_events || !uv_is_active(reinterpret_cast<uv_handle_t*>(&side->poll))) {
      uv_poll_start(&side->poll, ev, on_poll);
    }
    side->active_events = ev;
  }
}

// Runs sync on the loop now (loop thread) or soon (other threads). False if the loop no longer takes posts.
bool schedule(Loop* loop, int id) {
  if (loop->on_loop_thread()) {
    sync(*loop, id);
    return true;
  }
  return loop->post([loop, id] { sync(*loop, id); });
}

// Dispatch: read the callback under the lock (the watch may have been removed meanwhile), call it unlocked.
bool lookup(int id, Watch* out) {
  State& s = st();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.watches.find(id);
  if (it == s.watches.end()) return false;
  *out = it->second;
  return true;
}

void on_poll(uv_poll_t* h, int status, int events) {
  auto* side = static_cast<UvSide*>(h->data);
  Watch w;
  if (!lookup(side->id, &w) || !w.handle_cb) return;
  int vir = 0;
  if (status < 0) {
    // libuv stopped the handle; it starts again when libvirt updates the events.
    vir = VIR_EVENT_HANDLE_ERROR;
    side->active_events = 0;
  } else {
    if (events & UV_READABLE) vir |= VIR_EVENT_HANDLE_READABLE;
    if (events & UV_WRITABLE) vir |= VIR_EVENT_HANDLE_WRITABLE;
    if (events & UV_DISCONNECT) vir |= VIR_EVENT_HANDLE_HANGUP;
  }
  st().dispatched++;
  w.handle_cb(side->id, w.libvirt_fd, vir, w.opaque);
}

void fire_timeout(UvSide* side) {
  Watch w;
  if (!lookup(side->id, &w) || !w.timeout_cb || w.frequency < 0) return;
  st().dispatched++;
  w.timeout_cb(side->id, w.opaque);
}

void on_tick(uv_timer_t* h) { fire_timeout(static_cast<UvSide*>(h->data)); }
void on_every(uv_idle_t* h) { fire_timeout(static_cast<UvSide*>(h->data)); }

// Hands a free callback to the loop for a later, clean stack.
void schedule_free(Loop* loop, virFreeCallback ff, void* opaque) {
  if (!ff) return;
  State& s = st();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.frees_pending++;
  }
  auto run = [ff, opaque] {
    ff(opaque);
    std::lock_guard<std::mutex> lock(st().mu);
    st().frees_pending--;
  };
  if (loop && loop->on_loop_thread()) {
    loop->defer(run);
    return;
  }
  if (loop && loop->post([loop, run] { loop->defer(run); })) return;
  // No loop runs any more: keep it for event_impl_shutdown() or the next bound loop.
  std::lock_guard<std::mutex> lock(s.mu);
  s.frees_pending--;
  s.orphan_frees.emplace_back(ff, opaque);
}

int add_watch(Watch w) {
  State& s = st();
  Loop* loop;
  int id;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.accepting || !s.loop) return -1;
    loop = s.loop;
    id = s.next_id++;
    if (s.next_id == INT32_MAX) s.next_id = 1;  // ids stay positive; 2^31 adds in one process is not a concern
    s.watches.emplace(id, w);
  }
  if (!schedule(loop, id)) log::debug("virt", "libvirt watch {} added while the loop closes", id);
  return id;
}

int add_handle(int fd, int events, virEventHandleCallback cb, void* opaque, virFreeCallback ff) {
  if (fd < 0 || !cb) return -1;
  // Poll our own descriptor: libvirt may close (and the process reuse) its fd number as soon as remove returns,
  // while the loop has not yet applied the removal.
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) {
    log::error("virt", "cannot watch libvirt fd {}: dup failed: {}", fd, strerror(errno));
    return -1;
  }
  Watch w;
  w.libvirt_fd = fd;
  w.poll_fd = dup_fd;
  w.events = events;
  w.handle_cb = cb;
  w.opaque = opaque;
  w.ff = ff;
  int id = add_watch(w);
  if (id < 0) ::close(dup_fd);
  return id;
}

int add_timeout(int frequency, virEventTimeoutCallback cb, void* opaque, virFreeCallback ff) {
  if (!cb) return -1;
  Watch w;
  w.timer = true;
  w.frequency = frequency < 0 ? -1 : frequency;
  w.timeout_cb = cb;
  w.opaque = opaque;
  w.ff = ff;
  return add_watch(w);
}

void update(int id, bool timer, int value) {
  State& s = st();
  Loop* loop;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.watches.find(id);
    if (it == s.watches.end() || it->second.timer != timer || !s.loop) return;
    if (timer) it->second.frequency = value < 0 ? -1 : value;
    else it->second.events = value;
    loop = s.loop;
  }
  schedule(loop, id);
}

void update_handle(int id, int events) { update(id, false, events); }
void update_timeout(int id, int frequency) { update(id, true, frequency); }

int remove_watch(int id, bool timer) {
  State& s = st();
  Loop* loop;
  virFreeCallback ff;
  void* opaque;
  int unused_fd;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.watches.find(id);
    if (it == s.watches.end() || it->second.timer != timer) return -1;
    ff = it->second.ff;
    opaque = it->second.opaque;
    unused_fd = it->second.poll_fd;  // still ours if the loop never created the uv side
    s.watches.erase(it);
    loop = s.loop;
  }
  if (unused_fd >= 0) ::close(unused_fd);
  if (loop) schedule(loop, id);
  // Never inside this call: libvirt may hold locks the free callback takes.
  schedule_free(loop, ff, opaque);
  return 0;
}

int remove_handle(int id) { return remove_watch(id, false); }
int remove_timeout(int id) { return remove_watch(id, true); }

void quiet_error(void*, virErrorPtr err) {
  // Callers fetch errors with virGetLastError; libvirt's default handler would print each one to stderr.
  if (err && err->message) log::debug("virt", "libvirt: {}", err->message);
}

}  // namespace

bool event_impl_register(Loop& loop) {
  State& s = st();
  std::vector<std::pair<virFreeCallback, void*>> orphans;
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.loop == &loop && s.accepting) return true;
    if (s.loop && s.accepting) return false;
    s.loop = &loop;
    s.accepting = true;
    orphans.swap(s.orphan_frees);
    first = !s.registered;
    s.registered = true;
  }
  if (first) {
    if (!fork_guard_install() || !fork_guard_intact())
      log::warn("virt", "low fds are not reserved: libvirt may fail to start QEMU (see virt/fork_guard.h)");
    // Initialize libvirt here, on the loop thread, before any worker opens a connection.
    if (virInitialize() < 0) log::error("virt", "libvirt failed to initialize");
    virSetErrorFunc(nullptr, quiet_error);
    virEventRegisterImpl(add_handle, update_handle, remove_handle, add_timeout, update_timeout, remove_timeout);
  }
  for (auto& [ff, opaque] : orphans) schedule_free(&loop, ff, opaque);
  return true;
}

void event_impl_shutdown() {
  State& s = st();
  Loop* loop;
  std::vector<std::pair<virFreeCallback, void*>> frees;
  std::vector<int> fds;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    loop = s.loop;
    if (!loop) return;
    s.accepting = false;
    for (auto& [id, w] : s.watches) {
      if (w.ff) frees.emplace_back(w.ff, w.opaque);
      if (w.poll_fd >= 0) fds.push_back(w.poll_fd);
    }
    if (!s.watches.empty()) log::debug("virt", "event impl shutdown with {} watches left", s.watches.size());
    s.watches.clear();
    for (auto& o : s.orphan_frees) frees.push_back(o);
    s.orphan_frees.clear();
  }
  for (int fd : fds) ::close(fd);
  for (auto& [id, side] : s.sides) side_close(side);
  s.sides.clear();
  for (auto& [ff, opaque] : frees) schedule_free(loop, ff, opaque);
  std::lock_guard<std::mutex> lock(s.mu);
  s.loop = nullptr;
}

EventImplStats event_impl_stats() {
  State& s = st();
  EventImplStats out;
  std::lock_guard<std::mutex> lock(s.mu);
  for (auto& [id, w] : s.watches) (w.timer ? out.timeouts : out.handles)++;
  out.uv_handles = s.uv_count.load();
  out.frees_pending = s.frees_pending;
  out.dispatched = s.dispatched.load();
  return out;
}

}  // namespace cloudlet::virt
