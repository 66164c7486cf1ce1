// Reactor directly over a libuv loop, for tests and tools (the plugin uses reactor_host.h and never links
// libuv itself).
#pragma once

#include <uv.h>

#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "adb/reactor.h"

namespace cloudlet::adb {

class UvReactor final : public Reactor {
 public:
  using LogSink = std::function<void(int level, const std::string& msg)>;

  // The loop must outlive the reactor. Logs at or below log_level go to sink (stderr when none).
  explicit UvReactor(uv_loop_t* loop, int log_level = 1 /* warn */, LogSink sink = {});
  // Closes the reactor's handles; the loop must run afterwards to finish closing them.
  ~UvReactor() override;
  UvReactor(const UvReactor&) = delete;
  UvReactor& operator=(const UvReactor&) = delete;

  Id io_start(int fd, uint32_t events, IoCb cb) override;
  bool io_update(Id id, uint32_t events) override;
  void io_stop(Id id) override;
  Id timer_start(uint64_t timeout_ms, std::function<void()> cb) override;
  void timer_stop(Id id) override;
  bool post(std::function<void()> fn) override;
  bool work_queue(std::function<void()> work, std::function<void(bool cancelled)> done) override;
  uint64_t now_ms() override;
  bool log_enabled(int level) override { return level <= log_level_; }
  void log(int level, const std::string& msg) override;

  uv_loop_t* loop() { return loop_; }
  size_t active_ios() const { return ios_.size(); }
  size_t active_timers() const { return timers_.size(); }
  // Work items queued and not completed yet (their done has not run).
  size_t pending_work() const { return pending_work_; }

 private:
  struct Io;
  struct Timer;
  struct Poster;

  uv_loop_t* loop_;
  int log_level_;
  LogSink sink_;
  Id next_id_ = 1;
  std::unordered_map<Id, Io*> ios_;
  std::unordered_map<Id, Timer*> timers_;
  Poster* poster_;
  size_t pending_work_ = 0;
};

}  // namespace cloudlet::adb
