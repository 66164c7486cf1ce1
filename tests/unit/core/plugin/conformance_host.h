// The host under test of the conformance suite (conformance_suite.cc): the real host (conformance_real.cc:
// loop, store, HTTP server, operations, events, plugin manager) or tests/fakehost (conformance_fake.cc). The
// suite drives both through this interface only, so each expectation holds for both.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
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
