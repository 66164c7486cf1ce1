// A live WebSocket on an HTTP/1.1 connection (RFC 6455), TLS included: the upgrade of a request, messages in
// and out, ping/pong, pause, and the closing handshake. The bytes themselves are core/http/websocket.h's.
//
// Upgrade: accept() answers 101 to a GET that asked for a WebSocket and completes the request (it is freed);
// the connection then belongs to the session. Its HTTP clocks stop; a ping every ping_interval keeps NATs
// open, and a peer silent for two intervals is dropped. Output is bounded like a streamed response: lent
// sends are paced by their done callbacks, copied sends beyond max_unsent_bytes * kStreamUnsentFactor drop
// the client, and nothing is read while the connection's unsent output is over its bound.
//
// Callbacks: on_message for each complete message (not while paused), then on_close exactly once, from a
// clean loop turn, whatever ended it; the session frees itself after on_close returns. Thread: loop only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cloudlet_plugin.h"
#include "http/request.h"
#include "http/websocket.h"

namespace cloudlet {
class Loop;
}

namespace cloudlet::http {

class Connection;

struct WsOptions {
  std::string subprotocol;              // answered in Sec-WebSocket-Protocol; must be one the client offered
  uint64_t max_message = 1 << 20;       // a longer message closes with 1009
  uint64_t ping_interval_ms = 30000;
};

class WsSession {
 public:
  using OnMessage = std::function<void(ws::Opcode type, std::string_view data)>;
  // status: CL_OK after a closing handshake (either side began it), CL_ECLOSING when the peer left without
  // one (code 1006) or the server shut down (1001), CL_EINVAL / CL_ETOOBIG when the peer broke the protocol
  // or the size bound (1002, 1007 / 1009), CL_ETIMEDOUT for a silent peer or an unanswered close, or the
  // status given to shutdown(). code and reason: the peer's close frame when one came, else the server's.
  using OnClose = std::function<void(cl_status_t status, uint16_t code, std::string_view reason)>;

  // Upgrades r. CL_EINVAL with *error when r is not a valid upgrade request (or names a subprotocol the
  // client did not offer): r is untouched and still needs an answer. CL_ESTATE when its response started or
  // its client left. On CL_OK r is freed and *out is the session.
  static cl_status_t accept(Request* r, WsOptions options, OnMessage on_message, OnClose on_close,
                            WsSession** out, std::string* error);

  // Sends one message. done NULL copies the bytes; else they are lent until done(ptr, hint) runs (exactly
  // once, from a clean stack, also when this fails). CL_OK, CL_EINVAL (bad type, text not UTF-8), CL_ECLOSING.
  cl_status_t send(ws::Opcode type, const void* ptr, size_t len, cl_free_cb done, void* hint);
  // Stops (or resumes) delivering messages and reading the socket. CL_OK or CL_ECLOSING.
  cl_status_t pause(bool paused);
  // Begins the closing handshake (code 1000-4999 but 1005/1006/1015, reason <= 123 bytes of UTF-8).
  // CL_OK, CL_EINVAL, CL_ECLOSING (already closing).
  cl_status_t close(uint32_t code, std::string_view reason);
  // Closes with 1001 now, and reports `status` to on_close (server shutdown, plugin unloading).
  void shutdown(cl_status_t status, std::string_view reason);
  // Forgets the callbacks (the owner is gone without waiting); the socket still closes cleanly.
  void detach();

  // ---- used by Connection ----
  void receive(std::string_view bytes);
  void connection_closed();
  void output_drained();  // a write completed: reading may resume

 private:
  WsSession(Connection* conn, WsOptions options, OnMessage on_message, OnClose on_close);
  ~WsSession();
  void deliver();
  void send_control(ws::Opcode op, std::string_view payload);
  void begin_close(uint16_t code, std::string_view reason, cl_status_t status);
  void on_ping_timer();
  void update_reading();

  Connection* conn_;  // null once the connection closed
  Loop& loop_;
  WsOptions options_;
  OnMessage on_message_;
  OnClose on_close_;
  ws::Decoder decoder_;
  std::deque<ws::Decoder::Event> queued_;  // decoded, not delivered yet (paused, or delivery in progress)
  bool paused_ = false;
  bool delivering_ = false;
  bool close_sent_ = false;
  bool close_received_ = false;
  bool ended_ = false;  // on_close is scheduled or ran
  cl_status_t close_status_ = CL_OK;  // what on_close reports when the handshake completes
  uint16_t close_code_ = ws::kNoStatus;
  std::string close_reason_;
  uint64_t ping_timer_ = 0;
  uint64_t close_timer_ = 0;
  uint64_t last_heard_ms_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace cloudlet::http
