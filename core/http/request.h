// One HTTP exchange: the parsed request and the response being produced.
//
// The same object is the ABI's opaque cl_request_t, so plugin trampolines and core handlers share one API.
// Lifetime: created by the connection when a request starts; handed to a handler once routed; freed when the
// response is complete (send/send_file/end). If the client goes away first, `conn` becomes null, writes
// return CL_ECLOSING, the close callback runs, and the object still lives until the response is ended.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"
#include "http/router.h"

namespace cloudlet::http {
class Connection;
class FormReader;
struct Listener;
}  // namespace cloudlet::http

struct cl_request_s {
  using Params = cloudlet::http::Params;

  // ---- request ----
  std::string method;
  std::string target;  // raw request target
  std::string path;    // percent-decoded path
  std::string query;   // raw query string
  std::vector<std::pair<std::string, std::string>> headers;
  Params path_params;
  Params params;  // query then form fields, decoded
  bool params_parsed = false;
  std::string body;  // buffered body
  uint16_t http_major = 1, http_minor = 1;
  bool keep_alive = true;
  bool head = false;  // HEAD: the response has no body
  uint64_t start_ms = 0;
  // Whom the listener's guard authenticated ("" = nobody), and whether the guard is running (req_set_principal
  // is valid only then).
  std::string principal;
  bool in_guard = false;
  // Hex SHA-256 of the TLS client certificate ("" = none, or not a TLS listener asking for one).
  std::string peer_cert;
  const cloudlet::http::Route* route = nullptr;
  void* owner = nullptr;  // plugin host of the route's handler (accounting)

  // ---- body delivery ----
  enum class BodyMode { buffer, stream, form, discard } body_mode = BodyMode::buffer;
  uint64_t body_limit = 0;
  uint64_t body_received = 0;
  bool body_complete = false;
  cl_body_cb body_cb = nullptr;
  void* body_ud = nullptr;
  bool body_reader_paused = false;
  bool body_end_delivered = false;
  std::vector<std::string> body_backlog;  // stream chunks that arrived before req_body_read
  std::unique_ptr<cloudlet::http::FormReader> form;
  bool body_in_memory = false;  // buffered (or urlencoded form) body: counted in the server's body total
  uint64_t body_reserved = 0;   // bytes reserved in that total, released when the request is freed

  // ---- response ----
  enum class Resp { none, started, ended } resp = Resp::none;
  uint32_t status = 0;
  bool chunked = false;
  bool sse = false;
  int64_t content_length = -1;
  uint64_t bytes_out = 0;
  std::string resp_headers;  // "Name: value\r\n" lines added by the handler
  std::string content_type;  // a Content-Type added with add_header (send's argument wins over it)
  cl_req_close_cb close_cb = nullptr;
  void* close_ud = nullptr;

  // ---- plumbing ----
  cloudlet::http::Connection* conn = nullptr;  // null once the client is gone
  cloudlet::http::Listener* listener = nullptr;
  std::string local_ip, peer_ip;
  uint16_t local_port = 0, peer_port = 0;
  bool dispatched = false;
  // Set while the connection tells the handler that its client left (body reader, close callback): ending the
  // response inside those callbacks then only marks it ended, and the connection frees the request afterwards.
  bool notifying = false;
  // A deferred client_gone() is due (Connection::head_done): the request is not freed before it ran.
  bool notify_pending = false;
  // Called once when the response completes (or the request is freed unanswered): plugin accounting.
  void (*done_hook)(void* ud, cl_request_s* r) = nullptr;
  void* done_hook_ud = nullptr;

  cl_request_s();
  ~cl_request_s();
  cl_request_s(const cl_request_s&) = delete;
  cl_request_s& operator=(const cl_request_s&) = delete;

  // ---- accessors (ABI semantics) ----
  cl_status_t header(std::string_view name, std::string_view* out) const;
  cl_status_t param(std::string_view name, std::string_view* out);
  cl_status_t param_at(size_t index, std::string_view* name, std::string_view* value);
  cl_status_t addresses();  // fills local/peer fields from the socket on first use

  // ---- response API (ABI semantics; the request may be dead after send/send_file/end) ----
  cl_status_t add_header(std::string_view name, std::string_view value);
  cl_status_t send(uint32_t status, std::string_view content_type, std::string_view body);
  cl_status_t start(uint32_t status, int64_t content_length);
  cl_status_t write(const void* ptr, size_t len, cl_free_cb done, void* hint);
  cl_status_t end();
  cl_status_t send_file(std::string_view path, std::string_view content_type);
  cl_status_t sse_start();
  cl_status_t sse_send(std::string_view event, std::string_view data);
  // A plain-text error response: "<status> <reason>\n<message>\n".
  cl_status_t send_error(uint32_t status, std::string_view message = {});
  // JSON convenience used by core handlers.
  cl_status_t send_json(uint32_t status, std::string_view json) {
    return send(status, "application/json", json);
  }

  bool head_only() const { return head; }
  // Frees a request no connection owns any more (its client left) once its response has ended.
  void finish_detached();
  // The connection let go of the request (conn is null): ends a stream body reader with CL_ECLOSING and runs
  // the close callback. Either may end the response: while `notifying` that only marks it ended, and it is
  // freed here afterwards, so the close callback never runs on a freed request.
  void client_gone();
  cl_status_t read_body(cl_body_cb cb, void* ud);
  cl_status_t pause_body(bool paused);
};

namespace cloudlet::http {
using Request = ::cl_request_s;

// Formats the start of a response (status line, Date, Server, Content-Length/Transfer-Encoding, Connection and
// the handler's headers) into *out.
void format_response_head(const Request& r, uint32_t status, std::string_view content_type, int64_t length,
                          std::string* out);
}  // namespace cloudlet::http
