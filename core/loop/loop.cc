#include "loop/loop.h"

#include <csignal>
#include <cstdlib>

#include "log/log.h"

namespace cloudlet {

struct Loop::Timer {
  uv_timer_t handle;
  TimerId id;
  Loop* loop;
  bool repeat;
  std::function<void()> cb;
};

struct Loop::Work {
  uv_work_t req;
  WorkId id;
  Loop* loop;
  std::function<void()> work;
  std::function<void(bool)> done;
};

Loop::Loop() : loop_thread_(std::this_thread::get_id()) {
  if (uv_loop_init(&loop_) != 0) abort();
  uv_async_init(&loop_, &async_, on_async);
  async_.data = this;
  // The loop's own handles never keep run() alive: it returns when no server, timer or work is left.
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
  uv_idle_init(&loop_, &idle_);
  idle_.data = this;
}

Loop::~Loop() {
  if (!closed_) close();
}

bool Loop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    if (closing_) return false;
    posts_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
  return true;
}

void Loop::on_async(uv_async_t* h) { static_cast<Loop*>(h->data)->drain_posts(); }

void Loop::drain_posts() {
  // Swap under the lock, run outside it: callbacks may post again (they run on the next wake-up).
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    batch.swap(posts_);
  }
  for (auto& fn : batch) fn();
}

void Loop::defer(std::function<void()> fn) {
  if (deferred_.empty() && !closed_) uv_idle_start(&idle_, on_idle);
  deferred_.push_back(std::move(fn));
}

void Loop::on_idle(uv_idle_t* h) { static_cast<Loop*>(h->data)->drain_deferred(); }

void Loop::drain_deferred() {
  std::vector<std::function<void()>> batch;
  batch.swap(deferred_);
  for (auto& fn : batch) fn();
  if (deferred_.empty()) uv_idle_stop(&idle_);
}

Loop::WorkId Loop::queue_work(std::function<void()> work, std::function<void(bool cancelled)> done) {
  auto* w = new Work{{}, next_id_++, this, std::move(work), std::move(done)};
  w->req.data = w;
  int rc = uv_queue_work(
      &loop_, &w->req, [](uv_work_t* req) { static_cast<Work*>(req->data)->work(); },
      [](uv_work_t* req, int status) {
        auto* item = static_cast<Work*>(req->data);
        item->loop->work_.erase(item->id);
        auto fn = std::move(item->done);
        delete item;
        if (fn) fn(status == UV_ECANCELED);
      });
  if (rc != 0) {
    WorkId id = w->id;
    auto fn = std::move(w->done);
    delete w;
    defer([fn = std::move(fn)] {
      if (fn) fn(true);
    });
    return id;
  }
  work_.emplace(w->id, w);
  return w->id;
}

bool Loop::cancel_work(WorkId id) {
  auto it = work_.find(id);
  if (it == work_.end()) return false;
  return uv_cancel(reinterpret_cast<uv_req_t*>(&it->second->req)) == 0;
}

Loop::TimerId Loop::timer_start(uint64_t timeout_ms, uint64_t repeat_ms, std::function<void()> cb) {
  auto* t = new Timer{{}, next_id_++, this, repeat_ms > 0, std::move(cb)};
  uv_timer_init(&loop_, &t->handle);
  t->handle.data = t;
  timers_.emplace(t->id, t);
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* h) {
        auto* timer = static_cast<Timer*>(h->data);
        if (!timer->repeat) {
          // Forget a one-shot timer before its callback so the callback may start new timers freely.
          auto fn = std::move(timer->cb);
          timer->loop->timer_stop(timer->id);
          fn();
          return;
        }
        timer->cb();  // may stop this very timer; the handle stays alive until its close callback
      },
      timeout_ms, repeat_ms);
  return t->id;
}

bool Loop::timer_stop(TimerId id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return false;
  Timer* t = it->second;
  timers_.erase(it);
  uv_timer_stop(&t->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->handle), [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
  return true;
}

void Loop::watch_signals(std::function<void(int)> on_signal) {
  signal(SIGPIPE, SIG_IGN);
  on_signal_ = std::move(on_signal);
  if (signals_) return;
  signals_ = true;
  for (uv_signal_t* s : {&sigint_, &sigterm_}) {
    uv_signal_init(&loop_, s);
    s->data = this;
  }
  auto cb = [](uv_signal_t* s, int signum) {
    auto* self = static_cast<Loop*>(s->data);
    if (self->on_signal_) self->on_signal_(signum);
  };
  uv_signal_start(&sigint_, cb, SIGINT);
  uv_signal_start(&sigterm_, cb, SIGTERM);
  uv_unref(reinterpret_cast<uv_handle_t*>(&sigint_));
  uv_unref(reinterpret_cast<uv_handle_t*>(&sigterm_));
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }

int Loop::close() {
  if (closed_) return 0;
  // Run what is already queued, then refuse new posts.
  drain_posts();
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    closing_ = true;
  }
  drain_posts();
  while (!deferred_.empty()) drain_deferred();
  // Wait for work already running (its done callbacks may defer more items).
  while (!work_.empty()) {
    uv_run(&loop_, UV_RUN_ONCE);
    while (!deferred_.empty()) drain_deferred();
  }
  while (!timers_.empty()) timer_stop(timers_.begin()->first);
  closed_ = true;
  if (signals_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  }
  uv_idle_stop(&idle_);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) {
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void*) {
          log::error("loop", "handle still open at close: {} (active={})", uv_handle_type_name(h->type),
                     uv_is_active(h));
        },
        nullptr);
  }
  return rc;
}

}  // namespace cloudlet
