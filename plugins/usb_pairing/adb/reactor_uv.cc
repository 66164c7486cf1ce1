#include "adb/reactor_uv.h"

#include <cstdio>
#include <utility>

namespace cloudlet::adb {

// Handles are freed in their close callbacks (libuv's rule). A callback may stop its own watch or timer, so
// the std::function it runs lives until the callback returns.
struct UvReactor::Io {
  uv_poll_t poll;
  IoCb cb;
  int busy = 0;
  bool closing = false;  // stopped: the callback must not run again
  bool closed = false;   // uv_close called

  // Closes the handle once nothing runs its callback any more.
  void close_when_idle() {
    if (closed || busy) return;
    closed = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), [](uv_handle_t* h) { delete static_cast<Io*>(h->data); });
  }
};

struct UvReactor::Timer {
  uv_timer_t timer;
  UvReactor* self;
  Id id;
  std::function<void()> cb;
};

struct UvReactor::Poster {
  uv_async_t async;
  std::mutex mutex;
  std::vector<std::function<void()>> queue;  // guarded by mutex
  bool closing = false;                      // guarded by mutex
};

namespace {

struct Work {
  uv_work_t req;
  std::function<void()> work;
  std::function<void(bool)> done;
  size_t* pending;  // the reactor's count, decremented before done runs
};

}  // namespace

UvReactor::UvReactor(uv_loop_t* loop, int log_level, LogSink sink)
    : loop_(loop), log_level_(log_level), sink_(std::move(sink)), poster_(new Poster) {
  poster_->async.data = poster_;
  uv_async_init(loop_, &poster_->async, [](uv_async_t* a) {
    auto* p = static_cast<Poster*>(a->data);
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard<std::mutex> lock(p->mutex);
      batch.swap(p->queue);
    }
    for (auto& fn : batch) fn();
  });
}

UvReactor::~UvReactor() {
  for (auto& [id, io] : ios_) {
    uv_poll_stop(&io->poll);
    io->closing = true;
    io->close_when_idle();
  }
  ios_.clear();
  for (auto& [id, t] : timers_) {
    uv_timer_stop(&t->timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&t->timer),
             [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
  }
  timers_.clear();
  {
    std::lock_guard<std::mutex> lock(poster_->mutex);
    poster_->closing = true;
    poster_->queue.clear();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&poster_->async),
           [](uv_handle_t* h) { delete static_cast<Poster*>(h->data); });
}

Reactor::Id UvReactor::io_start(int fd, uint32_t events, IoCb cb) {
  auto* io = new Io;
  io->cb = std::move(cb);
  if (uv_poll_init(loop_, &io->poll, fd) != 0) {
    delete io;
    return 0;
  }
  io->poll.data = io;
  int uvev = 0;
  if (events & kReadable) uvev |= UV_READABLE;
  if (events & kWritable) uvev |= UV_WRITABLE;
  if (events & kDisconnect) uvev |= UV_DISCONNECT;
  int rc = uv_poll_start(&io->poll, uvev, [](uv_poll_t* p, int status, int ev) {
    auto* x = static_cast<Io*>(p->data);
    if (x->closing) return;
    uint32_t out = 0;
    if (ev & UV_READABLE) out |= kReadable;
    if (ev & UV_WRITABLE) out |= kWritable;
    if (ev & UV_DISCONNECT) out |= kDisconnect;
    x->busy++;
    x->cb(status < 0 ? status : 0, out);
    x->busy--;
    if (x->closing) x->close_when_idle();
  });
  if (rc != 0) {
    io->closing = true;
    io->close_when_idle();
    return 0;
  }
  Id id = next_id_++;
  ios_[id] = io;
  return id;
}

bool UvReactor::io_update(Id id, uint32_t events) {
  auto it = ios_.find(id);
  if (it == ios_.end()) return false;
  Io* io = it->second;
  int uvev = 0;
  if (events & kReadable) uvev |= UV_READABLE;
  if (events & kWritable) uvev |= UV_WRITABLE;
  if (events & kDisconnect) uvev |= UV_DISCONNECT;
  // Re-arming keeps the callback: uv_poll_start on an active handle only changes the event mask.
  return uv_poll_start(&io->poll, uvev, io->poll.poll_cb) == 0;
}

void UvReactor::io_stop(Id id) {
  auto it = ios_.find(id);
  if (it == ios_.end()) return;
  Io* io = it->second;
  ios_.erase(it);
  uv_poll_stop(&io->poll);
  io->closing = true;
  io->close_when_idle();
}

Reactor::Id UvReactor::timer_start(uint64_t timeout_ms, std::function<void()> cb) {
  auto* t = new Timer{{}, this, next_id_++, std::move(cb)};
  uv_timer_init(loop_, &t->timer);
  t->timer.data = t;
  uv_timer_start(
      &t->timer,
      [](uv_timer_t* h) {
        auto* x = static_cast<Timer*>(h->data);
        x->self->timers_.erase(x->id);
        auto fn = std::move(x->cb);
        uv_close(reinterpret_cast<uv_handle_t*>(&x->timer), [](uv_handle_t* hh) { delete static_cast<Timer*>(hh->data); });
        fn();
      },
      timeout_ms, 0);
  timers_[t->id] = t;
  return t->id;
}

void UvReactor::timer_stop(Id id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  Timer* t = it->second;
  timers_.erase(it);
  uv_timer_stop(&t->timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->timer), [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
}

bool UvReactor::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(poster_->mutex);
    if (poster_->closing) return false;
    poster_->queue.push_back(std::move(fn));
  }
  uv_async_send(&poster_->async);
  return true;
}

bool UvReactor::work_queue(std::function<void()> work, std::function<void(bool)> done) {
  auto* w = new Work;
  w->req.data = w;
  w->work = std::move(work);
  w->done = std::move(done);
  w->pending = &pending_work_;
  int rc = uv_queue_work(
      loop_, &w->req, [](uv_work_t* r) { static_cast<Work*>(r->data)->work(); },
      [](uv_work_t* r, int status) {
        auto* x = static_cast<Work*>(r->data);
        (*x->pending)--;
        x->done(status == UV_ECANCELED);
        delete x;
      });
  if (rc != 0) {
    delete w;
    return false;
  }
  pending_work_++;
  return true;
}

uint64_t UvReactor::now_ms() { return uv_now(loop_); }

void UvReactor::log(int level, const std::string& msg) {
  if (level > log_level_) return;
  if (sink_) {
    sink_(level, msg);
    return;
  }
  static const char* names[] = {"error", "warn", "info", "debug", "trace"};
  std::fprintf(stderr, "adb %s: %s\n", names[level < 0 ? 0 : level > 4 ? 4 : level], msg.c_str());
}

}  // namespace cloudlet::adb
