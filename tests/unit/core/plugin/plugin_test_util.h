// Helpers shared by the plugin tests that run the real core: turning the loop until something holds, and
// reading the "tally:" line the unload_pending fixture logs in fini.
#pragma once

#include <cstdlib>
#include <functional>
#include <string>

#include "loop/loop.h"

namespace cloudlet::test {

// Runs the loop until pred() holds (checked every ms) or timeout_ms passes; returns pred()'s last value. Call
// it from test code only, never from a callback of that loop (uv_run must not be re-entered).
inline bool run_until(Loop& loop, const std::function<bool()>& pred, uint64_t timeout_ms = 5000) {
  if (pred()) return true;
  bool ok = false;
  uint64_t start = uv_hrtime();
  Loop::TimerId t = loop.timer_start(1, 1, [&] {
    if (pred()) {
      ok = true;
    } else if (uv_hrtime() - start < timeout_ms * 1000000) {
      return;
    }
    loop.timer_stop(t);
    loop.stop();
  });
  loop.run();
  return ok;
}

// The value of " key=N" in a tally line; -999 when absent.
inline long tally_value(const std::string& tally, const std::string& key) {
  size_t p = tally.find(" " + key + "=");
  return p == std::string::npos ? -999 : atol(tally.c_str() + p + key.size() + 2);
}

}  // namespace cloudlet::test
