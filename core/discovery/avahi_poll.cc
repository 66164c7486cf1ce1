#include "discovery/avahi_poll.h"

#include <avahi-common/timeval.h>

#include <vector>

#include "log/log.h"

namespace cloudlet {

struct AvahiUvPoll::Tracker {
  size_t open = 0;  // uv handles initialised and not yet through their close callback
  std::function<void()> done;

  void closed() {
    if (--open == 0 && done) {
      auto fn = std::move(done);
      done = nullptr;
      fn();
    }
  }
};

struct AvahiUvPoll::Watch {
  FdPoll* poll;
  int events;       // AvahiWatchEvent bits the owner asked for
  int revents = 0;  // set only while its callback runs (watch_get_events)
  AvahiWatchCallback cb;
  void* userdata;
  bool dead = false;
};

struct AvahiUvPoll::FdPoll {
  uv_poll_t handle;
  int fd;
  AvahiUvPoll* owner;  // valid while not closing
  std::shared_ptr<Tracker> tracker;
  std::vector<Watch*> watches;  // dead ones stay until no dispatch is running (or until the close callback)
  int dispatching = 0;
  bool closing = false;
  int uv_events = 0;  // what the handle currently polls for; 0 = stopped
};

struct AvahiUvPoll::Timeout {
  uv_timer_t timer;
  AvahiUvPoll* owner;
  std::shared_ptr<Tracker> tracker;
  AvahiTimeoutCallback cb;
  void* userdata;
  bool dead = false;
};

namespace {

// The avahi types are opaque C structs; ours live in the cloudlet namespace and are cast at the boundary.
AvahiUvPoll::Watch* as_watch(AvahiWatch* w) { return reinterpret_cast<AvahiUvPoll::Watch*>(w); }
AvahiUvPoll::Timeout* as_timeout(AvahiTimeout* t) { return reinterpret_cast<AvahiUvPoll::Timeout*>(t); }
AvahiUvPoll* owner_of(const AvahiPoll* api) { return static_cast<AvahiUvPoll*>(api->userdata); }

int to_uv_events(int avahi_events) {
  int e = 0;
  if (avahi_events & AVAHI_WATCH_IN) e |= UV_READABLE;
  if (avahi_events & AVAHI_WATCH_OUT) e |= UV_WRITABLE;
  // poll(2) always reports hang-ups; only an explicit HUP request maps to EPOLLRDHUP (half-close).
  if (avahi_events & AVAHI_WATCH_HUP) e |= UV_DISCONNECT;
  return e;
}

int to_avahi_events(int uv_events) {
  int e = 0;
  if (uv_events & UV_READABLE) e |= AVAHI_WATCH_IN;
  if (uv_events & UV_WRITABLE) e |= AVAHI_WATCH_OUT;
  if (uv_events & UV_DISCONNECT) e |= AVAHI_WATCH_HUP;
  return e;
}

void fd_poll_sync(AvahiUvPoll::FdPoll* p);

void on_poll(uv_poll_t* h, int status, int events) {
  auto* p = static_cast<AvahiUvPoll::FdPoll*>(h->data);
  if (p->closing) return;
  int happened;
  if (status < 0) {
    // libuv stopped the handle (POLLERR). Report the error like poll(2) would; polling resumes only on the
    // owner's next watch_new/update, so a persistent error cannot spin the loop.
    p->uv_events = 0;
    happened = AVAHI_WATCH_ERR;
  } else {
    happened = to_avahi_events(events);
  }
  ++p->dispatching;
  // Index loop: callbacks may add watches (push_back) or free any watch, including this one.
  size_t n = p->watches.size();
  for (size_t i = 0; i < n && !p->closing; ++i) {
    AvahiUvPoll::Watch* w = p->watches[i];
    if (w->dead) continue;
    int ev = happened & (w->events | AVAHI_WATCH_ERR | AVAHI_WATCH_HUP);
    if (ev == 0) continue;
    w->revents = ev;
    w->cb(reinterpret_cast<AvahiWatch*>(w), p->fd, static_cast<AvahiWatchEvent>(ev), w->userdata);
    w->revents = 0;  // still allocated even if freed: memory goes only after dispatch or in the close callback
  }
  --p->dispatching;
  if (p->dispatching == 0 && !p->closing) {
    std::erase_if(p->watches, [](AvahiUvPoll::Watch* w) {
      if (!w->dead) return false;
      delete w;
      return true;
    });
  }
}

// Polls for the union of the live watches' events.
void fd_poll_sync(AvahiUvPoll::FdPoll* p) {
  int want = 0;
  for (auto* w : p->watches)
    if (!w->dead) want |= to_uv_events(w->events);
  if (want == p->uv_events) return;
  if (want == 0) {
    uv_poll_stop(&p->handle);
  } else if (int rc = uv_poll_start(&p->handle, want, on_poll); rc != 0) {
    log::error("discovery", "polling fd {} failed: {}", p->fd, uv_strerror(rc));
    want = 0;
  }
  p->uv_events = want;
}

void on_timer(uv_timer_t* h) {
  auto* t = static_cast<AvahiUvPoll::Timeout*>(h->data);
  if (t->dead) return;
  // One-shot: the timer is already inactive; the callback may update or free it.
  t->cb(reinterpret_cast<AvahiTimeout*>(t), t->userdata);
}

void timeout_arm(uv_loop_t* loop, AvahiUvPoll::Timeout* t, const struct timeval* tv) {
  uv_timer_stop(&t->timer);
  if (!tv) return;
  // Avahi gives absolute gettimeofday() times; a time in the past means "as soon as possible".
  AvahiUsec age = avahi_age(tv);
  uint64_t delay_us = age >= 0 ? 0 : static_cast<uint64_t>(-age);
  uv_update_time(loop);  // the cached loop time may be stale inside a long callback
  uv_timer_start(&t->timer, on_timer, (delay_us + 999) / 1000, 0);
}

}  // namespace

AvahiUvPoll::AvahiUvPoll(Loop& loop) : loop_(loop), tracker_(std::make_shared<Tracker>()) {
  api_.userdata = this;
  api_.watch_new = watch_new;
  api_.watch_update = watch_update;
  api_.watch_get_events = watch_get_events;
  api_.watch_free = watch_free;
  api_.timeout_new = timeout_new;
  api_.timeout_update = timeout_update;
  api_.timeout_free = timeout_free;
}

AvahiUvPoll::~AvahiUvPoll() {
  if (live_watches_ || live_timeouts_)
    log::error("discovery", "avahi poll destroyed with {} watches and {} timeouts still in use", live_watches_,
               live_timeouts_);
  while (!fd_polls_.empty()) {
    FdPoll* p = fd_polls_.begin()->second;
    for (auto* w : p->watches) w->dead = true;
    fd_poll_release(p);
  }
  while (!timeouts_.empty()) timeout_release(*timeouts_.begin());
  tracker_->done = nullptr;  // the owner is going away; nobody is left to tell
}

size_t AvahiUvPoll::open_handles() const { return tracker_->open; }

void AvahiUvPoll::when_closed(std::function<void()> done) {
  if (tracker_->open == 0) {
    tracker_->done = nullptr;
    loop_.defer(std::move(done));
    return;
  }
  tracker_->done = std::move(done);
}

AvahiWatch* AvahiUvPoll::watch_new(const AvahiPoll* api, int fd, AvahiWatchEvent event, AvahiWatchCallback cb,
                                   void* userdata) {
  AvahiUvPoll* self = owner_of(api);
  FdPoll* p;
  if (auto it = self->fd_polls_.find(fd); it != self->fd_polls_.end()) {
    p = it->second;
  } else {
    p = new FdPoll{};
    p->fd = fd;
    p->owner = self;
    if (int rc = uv_poll_init(self->loop_.uv(), &p->handle, fd); rc != 0) {
      log::error("discovery", "cannot poll fd {}: {}", fd, uv_strerror(rc));
      delete p;
      return nullptr;
    }
    p->handle.data = p;
    p->tracker = self->tracker_;
    ++p->tracker->open;
    self->fd_polls_.emplace(fd, p);
  }
  auto* w = new Watch{p, static_cast<int>(event), 0, cb, userdata};
  p->watches.push_back(w);
  ++self->live_watches_;
  fd_poll_sync(p);
  return reinterpret_cast<AvahiWatch*>(w);
}

void AvahiUvPoll::watch_update(AvahiWatch* aw, AvahiWatchEvent event) {
  Watch* w = as_watch(aw);
  if (w->dead) return;
  w->events = static_cast<int>(event);
  fd_poll_sync(w->poll);
}

AvahiWatchEvent AvahiUvPoll::watch_get_events(AvahiWatch* aw) { return static_cast<AvahiWatchEvent>(as_watch(aw)->revents); }

void AvahiUvPoll::watch_free(AvahiWatch* aw) {
  Watch* w = as_watch(aw);
  if (w->dead) return;
  w->dead = true;
  FdPoll* p = w->poll;
  AvahiUvPoll* self = p->owner;
  --self->live_watches_;
  bool any_live = false;
  for (auto* other : p->watches) any_live |= !other->dead;
  if (!any_live) {
    // Stop polling now: the owner usually closes the fd right after freeing its last watch.
    self->fd_poll_release(p);
    return;
  }
  if (p->dispatching == 0) {
    std::erase(p->watches, w);
    delete w;
  }
  fd_poll_sync(p);
}

void AvahiUvPoll::fd_poll_release(FdPoll* p) {
  fd_polls_.erase(p->fd);
  p->closing = true;
  p->owner = nullptr;
  uv_poll_stop(&p->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), [](uv_handle_t* h) {
    auto* fp = static_cast<FdPoll*>(h->data);
    for (auto* w : fp->watches) delete w;
    auto tracker = std::move(fp->tracker);
    delete fp;
    tracker->closed();
  });
}

AvahiTimeout* AvahiUvPoll::timeout_new(const AvahiPoll* api, const struct timeval* tv, AvahiTimeoutCallback cb,
                                       void* userdata) {
  AvahiUvPoll* self = owner_of(api);
  auto* t = new Timeout{{}, self, self->tracker_, cb, userdata};
  if (int rc = uv_timer_init(self->loop_.uv(), &t->timer); rc != 0) {
    log::error("discovery", "cannot create a timer: {}", uv_strerror(rc));
    delete t;
    return nullptr;
  }
  t->timer.data = t;
  ++self->tracker_->open;
  ++self->live_timeouts_;
  self->timeouts_.insert(t);
  timeout_arm(self->loop_.uv(), t, tv);
  return reinterpret_cast<AvahiTimeout*>(t);
}

void AvahiUvPoll::timeout_update(AvahiTimeout* at, const struct timeval* tv) {
  Timeout* t = as_timeout(at);
  if (t->dead) return;
  timeout_arm(t->owner->loop_.uv(), t, tv);
}

void AvahiUvPoll::timeout_free(AvahiTimeout* at) {
  Timeout* t = as_timeout(at);
  if (t->dead) return;
  t->owner->timeout_release(t);
}

void AvahiUvPoll::timeout_release(Timeout* t) {
  t->dead = true;
  timeouts_.erase(t);
  --live_timeouts_;
  t->owner = nullptr;
  uv_timer_stop(&t->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->timer), [](uv_handle_t* h) {
    auto* tm = static_cast<Timeout*>(h->data);
    auto tracker = std::move(tm->tracker);
    delete tm;
    tracker->closed();
  });
}

}  // namespace cloudlet
