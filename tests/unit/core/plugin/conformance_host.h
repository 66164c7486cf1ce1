// The host under test of the conformance suite (conformance_suite.cc): the real host (conformance_real.cc:
// loop, store, HTTP server, operations, events, plugin manager) or tests/fakehost (conformance_fake.cc). The
// suite drives both through this interface only, so each expectation holds for both.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet::test {

struct ConfResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string header(const std::string& name) const;  // case-insensitive, "" when absent
};

// A WebSocket client of the "manager" listener (ABI 1.1): the real host's speaks RFC 6455 over loopback, the
// fake's drives FakeHost::WebSocket. Either way the test sees what the plugin sent, in order.
class ConfWebSocket {
 public:
  struct Frame {
    int32_t type = 0;  // CL_WS_TEXT, CL_WS_BINARY, or 0 for the server's close frame (code; data: its reason)
    std::string data;
    uint32_t code = 0;
  };
  virtual ~ConfWebSocket() = default;
  // One message to the plugin.
  virtual void send(int32_t type, const std::string& data) = 0;
  // The next frame the server sent, the host's loop turning meanwhile; nullopt when none came in timeout_ms.
  virtual std::optional<Frame> next(uint64_t timeout_ms = 5000) = 0;
  // A close frame with code: the answer to the server's, or the start of the client's closing handshake.
  virtual void close(uint32_t code) = 0;
};

class ConformanceHost {
 public:
  using Headers = std::vector<std::pair<std::string, std::string>>;
  virtual ~ConformanceHost() = default;

  // Grants the next plugin the guard of the "manager" listener and sets its files directory (static_add).
  virtual void configure(const std::string& files_dir) = 0;
  // Loads the plugin; grants are the privileged operations the configuration grants it (plugins[].grants).
  virtual cl_status_t load(const std::string& so_path, const std::vector<std::string>& grants, std::string* error) = 0;
  // Calls an operation as the core (CL_CALLER_CORE): the plugin's, or the host's own (job.get, job.cancel...);
  // the host's loop runs until it answers.
  virtual std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args = "{}") = 0;
  // Sends a request to the "manager" listener and runs the loop until the response is complete.
  virtual ConfResponse request(const std::string& method, const std::string& target, const std::string& body = "",
                               const Headers& headers = {}) = 0;
  // Asks the "manager" listener to upgrade target to a WebSocket: the socket when the plugin accepted (101),
  // else nullptr, with the answer's status in *status either way.
  virtual std::unique_ptr<ConfWebSocket> websocket(const std::string& target, int* status) = 0;
  // Publishes an event as the core would.
  virtual void publish(const std::string& topic, const std::string& json) = 0;
  // Provides an operation the plugin may call; its result is result(args). flags: CL_OP_F_*.
  virtual void provide(const std::string& op, std::function<std::string(const std::string& args)> result,
                       uint32_t flags = 0) = 0;
  // Runs the loop for a while.
  virtual void run_for(uint64_t ms) = 0;
  // Unloads the plugin (waiting for its completions) and returns once it is gone.
  virtual void unload() = 0;
  // Events published on topic whose payload contains needle (the host's own and the plugin's).
  virtual int events_with(const std::string& topic, const std::string& needle) = 0;
  // Log lines (of the plugin or about it) containing needle.
  virtual int log_lines_with(const std::string& needle) = 0;
};

std::unique_ptr<ConformanceHost> make_conformance_host();

}  // namespace cloudlet::test
