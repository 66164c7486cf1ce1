// FakeHost: a complete cl_host_api_t for testing plugins without the server.
//
// Loop services (timers, post, work, io) run on a real private libuv loop; the store, operations, events and
// HTTP are in memory and recorded, so a test can load a plugin .so, drive requests and operations into it, fake
// the operations it calls (e.g. "instance.start"), and inspect what it stored, published and logged.
//
// It is a second implementation of the ABI, written from the header: it links no core code except the router
// and URL helpers, the pure slot helpers (core/plugin/json_doc.cc, status_text.cc, proc_slots.cc,
// fetch_slots.cc), the child process runner (core/loop/child.cc, so plugins' processes really run), the
// outbound HTTP client (core/http/client.cc and tls.cc, so plugins' requests really go out) and the WebSocket
// protocol helpers (core/http/websocket.cc: handshake checks, close codes), and defines its own cl_request_s.
// tests/unit/core/plugin/conformance runs one suite against it and against the real host, so
// the two keep the same contract: thread rule (loop-only slots refuse other threads with CL_ESTATE), status
// codes, exactly-once completions and the unload sequence. Drive it from the thread that created it.
//
// WebSockets (ABI 1.1) have no socket here: a request whose route calls ws_accept comes back with status 101 and
// a FakeHost::WebSocket, the client's end, which the test drives (ws_send, ws_close, ws_drop). The fake's client
// answers the plugin's close frame at once, as browsers do; nothing pings, so silent peers are never dropped.
//
// Built twice: cl_fakehost against abi/cloudlet_plugin.h, and cl_fakehost_1_0 against the frozen 1.0 header
// (tests/abi/headers), which is a host that provides ABI 1.0 only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet::test {

class FakeHost {
 public:
  // The client's end of a WebSocket the plugin accepted (ABI 1.1): what the plugin sent, and how it ended.
  struct WebSocket {
    std::vector<std::pair<int32_t, std::string>> messages;  // CL_WS_TEXT or CL_WS_BINARY, in order
    uint32_t close_code = 0;  // the close frame the server sent (the plugin's, or 1001 at unload); 0 = none
    std::string close_reason;
    bool open = true;       // false once the socket is closed, by either side
    void* handle = nullptr;  // the fake's socket while open (internal)
  };
  struct Response {
    uint32_t status = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    bool complete = false;
    std::shared_ptr<WebSocket> websocket;  // set when the plugin accepted a WebSocket (status 101)
    std::string header(const std::string& name) const;  // case-insensitive, "" when absent
  };
  struct LogLine {
    int32_t level;
    std::string text;
  };
  struct Route {
    std::string listener, method, pattern;
    uint32_t flags;
  };
  using OpHandler = std::function<void(const std::string& args, std::function<void(cl_status_t, std::string)> reply)>;

  explicit FakeHost(std::string plugin_name = "test");
  ~FakeHost();
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;

  const cl_host_api_t* api() const;
  cl_host_t* host();
  uv_loop_t* loop() { return &loop_; }

  // Loads a plugin .so (dlopen RTLD_NOW|RTLD_LOCAL), checks its descriptor as the real loader does (major,
  // minor, name when given) and calls init with config. On failure *error says why, in the loader's words.
  cl_status_t load(const std::string& so_path, const std::string& config_json = "{}", std::string* error = nullptr);
  // Or initialise from a descriptor linked into the test.
  cl_status_t init(const cl_plugin_desc_t* desc, const std::string& config_json = "{}", std::string* error = nullptr);
  // Unloads as the real host does (abi/cloudlet_plugin.h, lifecycle): stops new calls, cancels and waits for
  // every completion the plugin is owed (running the loop), calls fini, then answers what the plugin left.
  // Returns how many things the plugin left behind after fini: unanswered requests and operation calls, an
  // open transaction, JSON documents not freed. A clean plugin returns 0.
  size_t unload();

  // Runs the loop until cond() holds or timeout_ms passes; returns cond()'s final value.
  bool run_until(const std::function<bool()>& cond, uint64_t timeout_ms = 5000);
  void run_for(uint64_t ms);

  // Sends a request to the plugin's routes (as the server would) and runs the loop until the response ends. A
  // listener guard the plugin set runs first; once the plugin unloaded, its listener answers 503.
  Response request(const std::string& listener, const std::string& method, const std::string& target,
                   const std::string& body = "", const std::vector<std::pair<std::string, std::string>>& headers = {},
                   uint64_t timeout_ms = 5000);
  // The client's side of an accepted WebSocket: a message (CL_WS_TEXT must be UTF-8, as a real client's), a
  // close frame (code 0: one without a code), or leaving without one. Each runs the loop until the plugin's
  // callbacks for it ran. The host enforces what the core does (max_message: 1009, bad UTF-8: 1007).
  void ws_send(const std::shared_ptr<WebSocket>& ws, int32_t type, const std::string& data);
  void ws_close(const std::shared_ptr<WebSocket>& ws, uint32_t code, const std::string& reason = "");
  void ws_drop(const std::shared_ptr<WebSocket>& ws);

  // Headers every request() carries besides its own (a client's credentials: an API token for a guarded
  // listener); a request's own header of the same name wins.
  std::vector<std::pair<std::string, std::string>> default_headers;

  // The local address reported by req_local_addr (what a client "connected to").
  std::string local_ip = "127.0.0.1";
  uint16_t local_port = 9999;
  std::string peer_ip = "127.0.0.1";
  // The client certificate's hex SHA-256 that requests report (req_peer_cert); "" = no certificate.
  std::string peer_cert;

  // What the configuration grants, as the real host reads it: the listeners that exist (listener_guard_set and
  // static_add refuse others with CL_ENOENT), URL prefixes (empty = "/plugins/<name>/") and the listeners whose
  // guard the plugin may set (plugins[].guards). The plugin's files directory is facts["plugin_files_dir"].
  std::vector<std::string> listeners = {"manager"};
  std::vector<std::string> prefixes;
  std::vector<std::string> guards;
  std::string plugin_name;

  // Calls an operation as the core would (CL_CALLER_CORE): one the plugin registered, else one provided;
  // runs the loop until it answers.
  std::pair<cl_status_t, std::string> call(const std::string& name, const std::string& args_json = "{}",
                                           uint64_t timeout_ms = 5000);
  // Provides an operation the plugin may call (a fake of a core or other-plugin operation). flags: with ABI 1.1,
  // CL_OP_F_PRIVILEGED makes it callable only by the core and a plugin granted it (see `grants`). The fake's
  // job registry provides job.get, job.list and job.cancel this way (ABI 1.1); providing them replaces it.
  void provide(const std::string& name, OpHandler handler, uint32_t flags = 0);
  bool has_operation(const std::string& name) const;

  // Publishes an event to the plugin's subscriptions (delivered on a later loop turn).
  void publish(const std::string& topic, const std::string& json);

  // What the plugin did.
  std::vector<Route> routes;
  std::vector<std::pair<std::string, std::string>> published;  // topic, payload
  std::vector<LogLine> logs;  // guarded by log_mutex (plugins log from any thread)
  std::mutex log_mutex;
  std::map<std::string, std::string> facts;  // host_get keys ("data_dir", "cloudlet_name", ...)
  // The store: collection -> key -> JSON value (the plugin's private namespace).
  std::map<std::string, std::map<std::string, std::string>> store;
  size_t commits = 0;
  // Privileged operations the plugin is granted (the configuration's plugins[].grants). ABI 1.1.
  std::vector<std::string> grants;

  // Internal state shared with the C trampolines (public for them; tests should not need it).
  struct Impl;
  std::unique_ptr<Impl> impl;

 private:
  uv_loop_t loop_;
};

}  // namespace cloudlet::test
