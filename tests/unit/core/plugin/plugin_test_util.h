// Helpers shared by the plugin tests that run the real core: turning the loop until something holds, holding
// connections open for the unload_pending fixture, and reading the "tally:" line it logs in fini.
#pragma once

#include <cstdlib>
#include <functional>
#include <string>

#include "http_client.h"
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

// Opens the two connections the unload_pending fixture holds on to: a download of its lent 32 MiB that is
// never read, and an upload that stops after a few of its 1000 bytes. The caller closes both fds.
inline bool hold_download_and_upload(uint16_t port, int* down, int* up) {
  *down = connect_loopback(port);
  *up = connect_loopback(port);
  return *down >= 0 && *up >= 0 &&
         send_all(*down, "GET /plugins/unload_pending/big HTTP/1.1\r\nHost: localhost\r\n\r\n") &&
         send_all(*up, "POST /plugins/unload_pending/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
                       "half of it");
}

// The value of " key=N" in a tally line; -999 when absent.
inline long tally_value(const std::string& tally, const std::string& key) {
  size_t p = tally.find(" " + key + "=");
  return p == std::string::npos ? -999 : atol(tally.c_str() + p + key.size() + 2);
}

}  // namespace cloudlet::test
