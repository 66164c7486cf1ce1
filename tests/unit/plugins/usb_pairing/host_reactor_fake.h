// A stand-in for the core's cl_host_api_t, over a libuv loop, with just the slots HostReactor uses (log,
// timers, fd watches, post, work queue). Lets the connection tests run through the plugin-side reactor too.
#pragma once

#include <cloudlet_plugin.h>
#include <uv.h>

#include <memory>

namespace cloudlet::adb::test {

class FakeHost {
 public:
  explicit FakeHost(uv_loop_t* loop);
  ~FakeHost();  // closes what is still registered; run the loop afterwards
  cl_host_t* host() { return reinterpret_cast<cl_host_t*>(this); }
  const cl_host_api_t* api() const { return &api_; }
  size_t live_handles() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  cl_host_api_t api_{};
};

}  // namespace cloudlet::adb::test
