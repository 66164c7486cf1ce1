// One client connection: llhttp parsing, request dispatch, ordered responses, TLS, back-pressure.
//
// Requests on a connection are handled one at a time: while a response is pending the parser is paused and
// pipelined bytes wait (reading stops once they exceed a bound), so responses leave in request order. While
// the connection's unsent response bytes are above limits.max_unsent_bytes (or above the server's total),
// it neither parses the next request nor reads: a client that pipelines and never reads holds a bounded
// amount of memory, and the write timeout ends it.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.h"
#include "http/request.h"
#include "http/server.h"
#include "http/tls.h"

namespace cloudlet::http {

class WsSession;

class Connection {
 public:
  Connection(Server& server, Listener& listener);
  ~Connection();

  uv_tcp_t* tcp() { return &tcp_; }
  // Starts reading after accept.
  void start();
  // Closes the socket (idempotent). The object is deleted from the close callback.
  void close(std::string_view why);
  // True once the connection is closing, or a write failed and it will close on the next loop turn.
  bool closing() const { return closing_ || write_failed_; }
  // Shutdown: close now if idle, else close once the current response is done.
  void drain();

  // ---- used by Request ----
  // Queues bytes for the client (TLS-encrypted when needed).
  void write_copy(std::string_view data);
  void write_copy2(std::string_view a, std::string_view b);
  // Queues bytes lent by a plugin: done(ptr, hint) runs once written (or on close), from a clean stack.
  void write_lent(const void* ptr, size_t len, cl_free_cb done, void* hint);
  // The current response is complete: log it, free the request, continue with the next one.
  void response_done(Request* r);
  bool keep_alive(const Request& r) const { return keep_alive_for(r); }
  // Stream body delivery control (a plugin paused or resumed reading, or attached a reader).
  void body_flow_changed();
  Server& server() { return server_; }
  Listener& listener() { return listener_; }
  const Listener* listener_ptr() const { return &listener_; }
  bool write_pending() const { return pending_writes_ > 0; }
  // Response bytes queued and not yet taken by the kernel (copied, lent and TLS-encrypted alike).
  uint64_t unsent() const { return unsent_; }
  // A streamed response's client lets too much pile up unread: close it (from a clean stack).
  void abort_slow_reader() { fail_later("the client does not read its response"); }
  // Switches to a WebSocket (WsSession::accept): writes the 101 head, completes r (freed) without closing, and
  // hands every byte read from now on, and those already read after r, to ws. The HTTP clocks stop.
  void upgrade(Request* r, WsSession* ws, std::string_view head);
  // The response head of a HEAD request is out and the handler streams a body of unknown length (SSE): the
  // response is complete on the wire. The request is handed to its handler as if the client had left: its
  // close callback runs on the next loop turn, writes return CL_ECLOSING, and it is freed once ended.
  void head_done(Request* r);

  // ---- timeout bookkeeping (owned by Server) ----
  Phase phase = Phase::none;
  std::list<Connection*>::iterator phase_it;
  uint64_t deadline_ms = 0;
  bool in_request_list = false;  // the whole-request clock runs
  std::list<Connection*>::iterator request_it;
  uint64_t request_deadline_ms = 0;
  std::string address_key;       // the client's address as counted in the listener's per_address
  bool address_counted = false;

  // llhttp callbacks (the settings table is static; the connection is parser->data).
  static int cb_message_begin(llhttp_t* p);
  static int cb_url(llhttp_t* p, const char* at, size_t len);
  static int cb_header_field(llhttp_t* p, const char* at, size_t len);
  static int cb_header_value(llhttp_t* p, const char* at, size_t len);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, size_t len);
  static int cb_message_complete(llhttp_t* p);

 private:
  friend class WsSession;  // reads, writes and closes the connection it took over
  struct WriteReq;

  void on_read(ssize_t nread, const uv_buf_t* buf);
  void process(const char* data, size_t len);
  // Too much unsent output (this connection's bound, or the server's total): no reading, no parsing.
  bool output_blocked() const;
  void read_stop();
  void resume_parsing();
  void schedule_resume();
  void resume_reading();
  int headers_complete();
  int body(const char* at, size_t len);
  int message_complete();
  // Refuses requests this listener does not answer. Without a route: Host and cross-site checks; with the
  // route that will take the request: its JSON Content-Type rule. False: rejected (reject_status_ set).
  bool guard(Request& r, const Route* route, bool has_body);
  // Runs the listener's guard (a plugin's, Listener::guard). 1: let through; 0: the guard (or the core for it)
  // answered, r may be gone; -1: refused before anything was sent (reject_status_ set).
  int listener_guard(Request* r, bool has_body);
  // Reserves memory for a body buffered in memory up to `bytes`; false (reject_status_ set) when refused.
  bool reserve_body(Request& r, uint64_t bytes);
  void dispatch();
  void reject(uint32_t status, std::string_view message);  // respond with an error and close afterwards
  void log_access(Request& r);
  bool add_header_bytes(size_t n);
  void flush_header();
  cl_status_t start_form(Request& r, std::string_view content_type, std::string* error);
  void finish_form(Request& r);
  bool keep_alive_for(const Request& r) const;
  void write_wire(std::string_view a, std::string_view b);
  void write_done(WriteReq* w, int status);
  // progress: a write completed (the client reads), which alone pushes the write deadline back.
  void after_write_state(bool progress = false);
  void peer_gone();
  void fail_later(std::string why);
  void read_start();

  Server& server_;
  Listener& listener_;
  uv_tcp_t tcp_;
  llhttp_t parser_;
  std::unique_ptr<TlsSession> tls_;
  std::string tls_plain_;  // scratch for decrypted bytes

  Request* req_ = nullptr;  // the request being parsed or answered (owned until the response completes)
  std::string field_, value_;
  bool in_value_ = false;
  uint64_t header_bytes_ = 0;
  uint32_t reject_status_ = 0;  // set by a callback that aborts parsing
  std::string reject_message_;

  bool parser_paused_ = false;   // waiting for the current response before parsing more
  std::string pending_;          // unparsed bytes received while paused
  bool reading_ = false;
  bool close_after_response_ = false;
  bool closing_ = false;
  bool write_failed_ = false;  // a write failed inside a response call: closing on the next loop turn
  bool parse_failed_ = false;  // the parser stopped on an error: nothing more is read on this connection
  bool in_process_ = false;  // inside llhttp_execute: never resume parsing re-entrantly
  size_t pending_writes_ = 0;
  uint64_t unsent_ = 0;        // bytes in pending writes (counted in the server's total too)
  uint64_t window_bytes_ = 0;  // body bytes since the whole-request clock last (re)started
  std::vector<Router::Match> matches_;  // routes for the request being parsed
  std::string allowed_;                 // methods of path-only matches (for 405)
  WsSession* ws_ = nullptr;  // after an upgrade: every byte goes to it; it lives until it reported its close
  // Deferred callbacks hold a weak_ptr to this token: the connection may be gone when they run.
  std::shared_ptr<bool> alive_;
};

}  // namespace cloudlet::http
