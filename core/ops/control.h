// The control socket: how `cloudletd --new-token` and `--set-password` reach a server that is already running on
// the same data directory (the store admits one process at a time, so they cannot open it themselves).
//
// <data_dir>/control.sock is a Unix stream socket made 0600 inside the 0700 data directory: whoever can connect
// could read the store's files anyway. One request per connection, one line each way:
//   -> {"op": "manager.token.create", "args": {...}}\n
//   <- {"status": 0, "result": {...}}\n        (status: a cl_status_t; result: the operation's JSON)
// Only the operations named at start() may be called (the command line's), as the core. Requests are bounded
// (kMaxControlLine) and a connection that says nothing is closed after kControlTimeoutMs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "cloudlet_plugin.h"
#include "system/status.h"

namespace cloudlet {

class Loop;
class Operations;

inline constexpr size_t kMaxControlLine = 64 * 1024;
inline constexpr uint64_t kControlTimeoutMs = 30000;

class ControlSocket {
 public:
  ControlSocket(Loop& loop, Operations& ops, std::set<std::string> allowed_ops);
  ~ControlSocket();
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;

  // Loop thread. Binds path (a stale socket file from a dead server is replaced). Error: why not.
  Status start(const std::string& path);
  // Loop thread. Stops listening, closes open connections (their operations' answers are dropped) and removes
  // the socket file; done() runs once every handle has closed.
  void stop(std::function<void()> done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Any thread, blocking (the command line, before it has a loop). Sends one request to the server listening on
// path and waits up to timeout_ms for its answer. CL_ENOENT: nobody listens there (no server running);
// otherwise the operation's status with *result_json its result (or an error object).
cl_status_t control_call(const std::string& path, std::string_view op, std::string_view args_json,
                         uint64_t timeout_ms, std::string* result_json);

}  // namespace cloudlet
