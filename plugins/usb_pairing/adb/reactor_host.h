// Reactor over the plugin ABI (cl_host_api_t): what the usb_pairing plugin hands to the ADB library.
#pragma once

#include <cloudlet_plugin.h>

#include <memory>
#include <unordered_map>

#include "adb/reactor.h"

namespace cloudlet::adb {

class HostReactor final : public Reactor {
 public:
  HostReactor(cl_host_t* host, const cl_host_api_t* api) : host_(host), api_(api) {}
  // Stops the watches and timers still registered. Queued work and posts own their own state.
  ~HostReactor() override;
  HostReactor(const HostReactor&) = delete;
  HostReactor& operator=(const HostReactor&) = delete;

  Id io_start(int fd, uint32_t events, IoCb cb) override;
  bool io_update(Id id, uint32_t events) override;
  void io_stop(Id id) override;
  Id timer_start(uint64_t timeout_ms, std::function<void()> cb) override;
  void timer_stop(Id id) override;
  bool post(std::function<void()> fn) override;
  bool work_queue(std::function<void()> work, std::function<void(bool cancelled)> done) override;
  uint64_t now_ms() override;
  bool log_enabled(int level) override;
  void log(int level, const std::string& msg) override;

 private:
  struct Io;
  struct Timer;
  static void on_io(void* ud, cl_io_id_t id, cl_status_t status, uint32_t events);
  static void on_timer(void* ud, cl_timer_id_t id);

  cl_host_t* host_;
  const cl_host_api_t* api_;
  std::unordered_map<Id, Io*> ios_;
  std::unordered_map<Id, Timer*> timers_;
};

}  // namespace cloudlet::adb
