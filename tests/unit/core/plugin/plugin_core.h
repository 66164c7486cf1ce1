// A real core for plugin tests: loop, store, an HTTP server with a "manager" listener on loopback, operations,
// events and a plugin manager, in a scratch directory with its own log file. Used by the loader tests and by
// the conformance suite's real-host adapter.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "events/bus.h"
#include "http/server.h"
#include "jobs/jobs.h"
#include "http_client.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "plugin/host.h"
#include "store/store.h"

namespace cloudlet::test {

class PluginCore {
 public:
  // tag names the scratch directory (one per test).
  // tweak may change the manager listener's options before it listens (TLS, webroot).
  explicit PluginCore(const std::string& tag, const std::function<void(http::ListenerOptions&)>& tweak = {});
  // Calls close() if the test did not.
  ~PluginCore();

  // Unloads the plugins, shuts the server down, closes the store and the loop; returns uv_loop_close's result.
  int close();

  // Loads with the guards and files directory set below (the configuration's plugins[].guards).
  cl_status_t load(const std::string& name, const std::string& path, std::vector<std::string> prefixes = {},
                   std::string* error = nullptr, std::vector<std::string> grants = {});
  std::vector<std::string> guards;  // listeners whose guard the next loaded plugin may set
  std::string files_dir;            // the next loaded plugin's files directory ("" = the default)
  // Unloads every plugin; the loop turns here (never inside unload_all). False if it took over 20 s.
  bool unload_all();
  // Runs the loop until pred() holds or timeout_ms passes (see plugin_test_util.h).
  bool run_until(const std::function<bool()>& pred, uint64_t timeout_ms = 5000);
  // Sends raw bytes to the manager listener from another thread while the loop serves them.
  HttpResponse http(const std::string& raw_request, uint64_t timeout_ms = 5000);
  HttpResponse get(const std::string& path) {
    return http("GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  }
  // Calls an operation and turns the loop until it answers.
  std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args = "{}",
                                           uint64_t timeout_ms = 5000);
  // Lines of the log file that contain needle.
  int log_lines_with(const std::string& needle) const;
  // The last log line that contains needle ("" if none).
  std::string log_line(const std::string& needle) const;

  std::filesystem::path dir;
  std::string log_path;
  Loop loop;
  std::unique_ptr<Store> store;
  Operations ops{loop};
  EventBus events{loop};
  Jobs jobs{loop, events, ops};
  std::unique_ptr<http::Server> server;
  std::unique_ptr<HostServices> svc;
  std::unique_ptr<PluginManager> pm;
  uint16_t port = 0;

 private:
  bool closed_ = false;
};

}  // namespace cloudlet::test
