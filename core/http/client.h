// An outbound HTTP/1.1 exchange on a libuv loop (the plugin ABI's fetch_* slots, core/plugin/host_api.cc and
// tests/fakehost): name lookup (uv_getaddrinfo), connect (each address in turn), optional TLS (tls.h's client
// side: CA file or the system's trust store, host name or IP checked, SNI, client certificate, SHA-256 pin),
// the request head, a request body streamed with Content-Length or chunked, and the response parsed by llhttp
// and streamed out in chunks. One connection per exchange ("Connection: close"), no redirects, no pooling.
//
// Bounds: the response head (status line and headers) is at most max_header_bytes; request bytes the client
// holds copies of are at most kMaxCopiedBytes (lent writes are paced by their done callbacks instead); the
// response is read only while not paused, one read buffer at a time.
//
// Callbacks: on_response at most once (the head of the final response; 1xx heads are skipped), on_body for
// every body chunk, then on_body's final call exactly once (status != CL_OK, or CL_OK with an empty chunk at
// the end of the body), from a clean loop turn whatever ended the exchange (cancel() included). Write done
// callbacks run exactly once each, from a clean loop turn, before the final call. The Fetch frees itself once
// the final call returned and its handles are closed.
//
// Thread: loop thread only. Ownership: the Fetch owns itself; a pointer stays valid until the final call
// returns.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"
#include "http/tls.h"

namespace cloudlet::http {

struct FetchOptions {
  std::string method = "GET";  // an RFC 9110 token
  std::string url;             // http:// or https://, host a name, an IPv4 literal or [IPv6]
  std::vector<std::pair<std::string, std::string>> headers;  // Host, Content-Length, Transfer-Encoding,
                                                             // Connection are the client's
  int64_t body_length = 0;     // 0 none, > 0 exactly that many bytes (Content-Length), -1 chunked
  std::string ca_file;         // https: "" = the system's trust store
  std::string cert_file;       // https: client certificate chain (PEM), or ""
  std::string key_file;        // https: its key (PEM); "" = in cert_file
  std::string pin_sha256;      // https: hex SHA-256 of the server certificate's DER, or ""
  bool pin_only = false;       // with pin_sha256: no chain or name check
  uint64_t connect_timeout_ms = 10000;  // lookup, connect and handshake
  uint64_t idle_timeout_ms = 60000;     // longest pause without progress
  size_t max_header_bytes = 64 << 10;
};

// A parsed http(s) URL.
struct FetchUrl {
  bool tls = false;
  std::string host;    // without brackets
  uint16_t port = 0;
  std::string target;  // path and query, "/" at least
  std::string authority;  // the Host header: host[:port], IPv6 in brackets
};

// Parses an absolute http or https URL: no user info, no bytes outside printable ASCII, a fragment dropped.
bool parse_fetch_url(std::string_view url, FetchUrl* out);

class Fetch {
 public:
  using OnResponse = std::function<void(unsigned status)>;
  // status CL_OK with a non-empty chunk: body bytes; the final call: CL_OK with an empty chunk (the whole
  // body came), or CL_ETIMEDOUT, CL_EUNAVAIL (no address, nothing listening), CL_EPERM (certificate refused:
  // chain, name or pin), CL_EIO (TLS or socket failure), CL_EINVAL (malformed or oversized response head),
  // CL_ECLOSING (the server closed before the end), or what cancel() was given.
  using OnBody = std::function<void(cl_status_t status, std::string_view chunk)>;
  using WriteDone = std::function<void()>;

  // Bytes of copied (not lent) request body the client holds at most; past it write() says CL_EBUSY.
  static constexpr size_t kMaxCopiedBytes = 1 << 20;

  // Checks the options (CL_EINVAL with *error: URL, method, a header name or value with CR, LF or NUL, a
  // header that is the client's, body_length < -1, TLS files that do not load, a pin that is not 64 hex
  // digits) and starts. Never calls back from inside.
  static cl_status_t start(uv_loop_t* loop, FetchOptions options, OnResponse on_response, OnBody on_body,
                           Fetch** out, std::string* error);

  // Sends request body bytes (queued until connected). done null: the bytes are copied now; else they stay
  // the caller's until done runs (once, from a clean loop turn, when they were handed to the socket or the
  // exchange ended): that is the back-pressure. CL_OK; CL_ESTATE (no body declared, more than body_length,
  // after end()); CL_EBUSY (copies past kMaxCopiedBytes); CL_ECLOSING (the exchange ended: done still runs).
  cl_status_t write(std::string_view data, WriteDone done);
  // Ends a chunked body. CL_OK or CL_ESTATE (not chunked, or ended already).
  cl_status_t end();
  // Stops (or resumes) reading and delivering the response body. CL_OK or CL_ESTATE (ended).
  cl_status_t pause(bool paused);
  // Ends the exchange; the final call follows from a clean loop turn with `status`. CL_OK or CL_ESTATE.
  cl_status_t cancel(cl_status_t status);
  // Forgets the response and body callbacks (the owner goes away without waiting) and closes the connection.
  // Write done callbacks still run: they release what they hold.
  void detach();

  // The response head (from on_response on): the first header named `name` (any case), or null.
  const std::string* header(std::string_view name) const;
  bool has_response() const { return responded_; }
  bool tls() const { return url_.tls; }
  // Hex SHA-256 of the server certificate's DER (https, once the handshake is done), else "".
  const std::string& peer_fingerprint() const { return peer_fp_; }

 private:
  struct Socket;
  struct Out;

  Fetch(uv_loop_t* loop, FetchOptions options, FetchUrl url, OnResponse on_response, OnBody on_body);
  ~Fetch();
  void resolve();
  void on_resolved(int status, struct addrinfo* res);
  void connect_next();
  void on_connected(int status);
  void on_ready();
  void send_head();
  void queue(std::string owned, std::string_view lent, WriteDone done, bool chunk);
  void flush();
  void on_written(Out* out, int status);
  void on_read(ssize_t n, const uv_buf_t* buf);
  void on_eof();
  void parse(std::string_view data);
  void send_raw(std::string wire);
  void update_reading();
  void arm(uint64_t ms);
  void end_with(cl_status_t status);
  void defer();
  void run_deferred();
  void close_socket();
  void handle_closed();

  static llhttp_settings_t settings();
  int on_header_bytes(size_t n);
  int on_headers_complete();
  int on_body_bytes(const char* at, size_t len);
  int on_message_complete();

  uv_loop_t* loop_;
  FetchOptions options_;
  FetchUrl url_;
  OnResponse on_response_;
  OnBody on_body_;

  std::unique_ptr<TlsContext> tls_ctx_;
  std::unique_ptr<TlsSession> tls_;
  uv_getaddrinfo_t resolver_;
  struct addrinfo* addrs_ = nullptr;
  struct addrinfo* next_addr_ = nullptr;
  Socket* socket_ = nullptr;
  uv_timer_t timer_;  // the connect deadline, then the idle deadline
  uv_timer_t later_;  // runs done callbacks and the final call from a clean loop turn
  int handles_open_ = 0;   // timers, the lookup, sockets: freed when 0 and finished
  int sockets_open_ = 0;    // the final call waits for every socket to close
  int writes_in_flight_ = 0;
  bool resolving_ = false;

  llhttp_t parser_;
  std::string head_field_, head_value_;
  size_t head_bytes_ = 0;
  bool in_value_ = false;
  bool informational_ = false;  // the head being parsed is a 1xx
  std::vector<std::pair<std::string, std::string>> headers_;
  std::string held_;           // body bytes parsed while paused (at most one read's worth)
  bool held_complete_ = false;  // the body ended while paused: the final call follows the held bytes
  std::string peer_fp_;

  std::deque<Out*> pending_;       // body writes waiting for the connection
  std::vector<WriteDone> done_;    // completions to run from the clean loop turn
  size_t copied_bytes_ = 0;        // copies held by pending_ and by writes in flight
  int64_t body_sent_ = 0;
  bool head_sent_ = false;
  bool body_ended_ = false;        // every request body byte was given (or there is none)
  bool connected_ = false;         // connected and, for https, handshake done
  bool responded_ = false;
  bool paused_ = false;
  bool reading_ = false;
  bool ended_ = false;             // no more body chunks: the final call is due
  bool finished_ = false;          // the final call ran (or was dropped by detach)
  cl_status_t final_status_ = CL_OK;
  char read_buf_[65536];
};

}  // namespace cloudlet::http
