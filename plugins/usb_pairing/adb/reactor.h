// The few loop services the ADB library needs, behind a small interface so the same protocol code runs in the
// usb_pairing plugin (over the plugin ABI: reactor_host.h) and in tests and tools (over libuv: reactor_uv.h).
//
// Thread rule: every method is loop-thread-only except post(), which any thread may call. Callbacks run on the
// loop thread and never from inside the call that registered them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace cloudlet::adb {

class Reactor {
 public:
  using Id = uint64_t;  // 0 is never a valid id

  // fd events; the same values as CL_IO_* in the plugin ABI.
  static constexpr uint32_t kReadable = 1;
  static constexpr uint32_t kWritable = 2;
  static constexpr uint32_t kDisconnect = 4;

  // status is 0, or a negative value when the watch failed (the fd is then unusable).
  using IoCb = std::function<void(int status, uint32_t events)>;

  virtual ~Reactor() = default;

  // Watches fd for `events`. Returns 0 on failure. The fd stays the caller's: stop the watch before closing.
  virtual Id io_start(int fd, uint32_t events, IoCb cb) = 0;
  virtual bool io_update(Id id, uint32_t events) = 0;
  // After this returns the callback never runs again (also when called from inside the callback).
  virtual void io_stop(Id id) = 0;

  // A one-shot timer. Stopping an unknown or already fired timer is harmless.
  virtual Id timer_start(uint64_t timeout_ms, std::function<void()> cb) = 0;
  virtual void timer_stop(Id id) = 0;

  // Any thread: runs fn on the loop thread soon, in order per calling thread. False if the loop is closing
  // (fn is then dropped without running).
  virtual bool post(std::function<void()> fn) = 0;

  // Runs work() on a worker thread, then done(cancelled) on the loop. work must not touch loop-owned state.
  // False if the work could not be queued (done then never runs).
  virtual bool work_queue(std::function<void()> work, std::function<void(bool cancelled)> done) = 0;

  // Monotonic milliseconds.
  virtual uint64_t now_ms() = 0;

  // level is CL_LOG_* (0 error .. 4 trace). Any thread.
  virtual bool log_enabled(int level) = 0;
  virtual void log(int level, const std::string& msg) = 0;
};

}  // namespace cloudlet::adb
