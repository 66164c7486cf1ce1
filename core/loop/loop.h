// The event loop: one libuv loop on one thread, plus the few services everything else builds on.
//
// Thread rule: every method is loop-thread-only except post(), which any thread may call. Handles are owned
// here and freed only from their close callbacks (libuv rule); close() runs the loop until all are closed.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace cloudlet {

// Monotonic milliseconds read now (not the loop's cached time): for deadlines on worker threads. Any thread.
inline int64_t monotonic_ms() { return static_cast<int64_t>(uv_hrtime() / 1000000); }

// Wall-clock milliseconds since the epoch: for what is stored and must mean the same after a restart
// (authorization windows, creation times). Any thread.
inline int64_t wall_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

class Loop {
 public:
  using TimerId = uint64_t;
  using WorkId = uint64_t;

  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* uv() { return &loop_; }
  bool on_loop_thread() const { return std::this_thread::get_id() == loop_thread_; }

  // Any thread. Queues fn to run on the loop. Every accepted item runs exactly once, in order per calling
  // thread: posts never coalesce (unlike uv_async_send). Returns false once close() has begun.
  bool post(std::function<void()> fn);

  // Loop thread. Runs fn on a later loop turn from a clean stack (never inside the caller's frame). Used for
  // callbacks that must not run re-entrantly (operation results, libvirt free callbacks).
  void defer(std::function<void()> fn);

  // Loop thread. Runs work() on the libuv thread pool, then done(cancelled) on the loop.
  WorkId queue_work(std::function<void()> work, std::function<void(bool cancelled)> done);
  // Cancels work that has not started; its done() then gets cancelled = true. False if running or unknown.
  bool cancel_work(WorkId id);
  size_t pending_work() const { return work_.size(); }

  // Loop thread. A timer calling cb after timeout_ms, then every repeat_ms if repeat_ms > 0.
  TimerId timer_start(uint64_t timeout_ms, uint64_t repeat_ms, std::function<void()> cb);
  // Returns false if the timer is unknown (already fired one-shot, or stopped).
  bool timer_stop(TimerId id);
  size_t active_timers() const { return timers_.size(); }

  // Loop thread. Cached monotonic milliseconds (uv_now).
  uint64_t now_ms() { return uv_now(&loop_); }

  // Calls on_signal(signum) on the loop for SIGINT and SIGTERM. SIGPIPE is ignored process-wide.
  void watch_signals(std::function<void(int)> on_signal);

  // Runs the loop until stop() or until nothing is left to do.
  void run();
  void stop() { uv_stop(&loop_); }

  // Stops the loop's own handles, drains posted and deferred items, runs until every handle has closed and
  // returns uv_loop_close()'s result (0 when everything was closed cleanly). Call after all other owners of
  // handles (servers, plugins) have closed theirs; pending work is waited for.
  int close();

 private:
  struct Timer;
  struct Work;
  static void on_async(uv_async_t* h);
  static void on_idle(uv_idle_t* h);
  void drain_posts();
  void drain_deferred();

  uv_loop_t loop_;
  std::thread::id loop_thread_;

  std::mutex post_mutex_;
  std::vector<std::function<void()>> posts_;  // guarded by post_mutex_
  bool closing_ = false;                      // guarded by post_mutex_
  uv_async_t async_;

  std::vector<std::function<void()>> deferred_;
  uv_idle_t idle_;

  uint64_t next_id_ = 1;
  std::unordered_map<TimerId, Timer*> timers_;
  std::unordered_map<WorkId, Work*> work_;

  uv_signal_t sigint_, sigterm_;
  bool signals_ = false;
  std::function<void(int)> on_signal_;
  bool closed_ = false;
};

}  // namespace cloudlet
