// Helpers shared by the store tests: a temporary directory and a bounded way to run the loop.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "loop/loop.h"

namespace cloudlet::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string templ = std::string(base && *base ? base : "/tmp") + "/cl-store-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) abort();
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs the loop until pred() holds (checked every millisecond) or timeout_ms passes. Returns pred's verdict.
inline bool run_until(Loop& loop, const std::function<bool()>& pred, uint64_t timeout_ms = 30000) {
  if (pred()) return true;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool ok = false;
  Loop::TimerId timer = 0;
  timer = loop.timer_start(0, 1, [&] {
    if (pred()) {
      ok = true;
      loop.timer_stop(timer);
    } else if (std::chrono::steady_clock::now() > deadline) {
      loop.timer_stop(timer);
    }
  });
  loop.run();
  return ok;
}

// One loop iteration: runs posted completions that have arrived, waiting up to wait_ms for one if wait_ms > 0.
// A bare uv_run would return without polling, because the loop's own handles do not keep it alive; the timer
// does (and bounds the wait).
inline void pump(Loop& loop, uint64_t wait_ms = 0) {
  auto keepalive = loop.timer_start(wait_ms ? wait_ms : 3600 * 1000, 0, [] {});
  uv_run(loop.uv(), wait_ms ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  loop.timer_stop(keepalive);
}

inline double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace cloudlet::test
