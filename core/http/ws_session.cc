#include "http/ws_session.h"

#include "http/connection.h"
#include "http/options.h"
#include "loop/loop.h"
#include "text/utf8.h"

namespace cloudlet::http {
namespace {

constexpr uint64_t kCloseWaitMs = 5000;  // how long our close frame waits for the peer's

}  // namespace

cl_status_t WsSession::accept(Request* r, WsOptions options, OnMessage on_message, OnClose on_close,
                              WsSession** out, std::string* error) {
  *out = nullptr;
  if (r->resp != Request::Resp::none || !r->conn || r->conn->closing()) return CL_ESTATE;
  std::string_view key;
  auto lookup = [r](std::string_view name, std::string_view* v) { return r->header(name, v) == CL_OK; };
  std::string why = ws::upgrade_error(r->method, lookup, &key);
  if (why.empty() && !r->body_complete) why = "a WebSocket request has no body";
  std::string_view offered;
  if (why.empty() && !options.subprotocol.empty() &&
      (r->header("sec-websocket-protocol", &offered) != CL_OK || !ws::protocol_offered(offered, options.subprotocol))) {
    why = "the client did not offer the subprotocol '" + options.subprotocol + "'";
  }
  if (!why.empty()) {
    *error = why;
    return CL_EINVAL;
  }
  if (options.max_message == 0) options.max_message = 1 << 20;
  if (options.ping_interval_ms == 0) options.ping_interval_ms = 30000;
  std::string head =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
      ws::accept_key(key) + "\r\n";
  if (!options.subprotocol.empty()) head += "Sec-WebSocket-Protocol: " + options.subprotocol + "\r\n";
  head += "\r\n";
  r->status = 101;
  Connection* conn = r->conn;
  auto* s = new WsSession(conn, std::move(options), std::move(on_message), std::move(on_close));
  conn->upgrade(r, s, head);  // frees r
  *out = s;
  return CL_OK;
}

WsSession::WsSession(Connection* conn, WsOptions options, OnMessage on_message, OnClose on_close)
    : conn_(conn),
      loop_(conn->server().loop()),
      options_(std::move(options)),
      on_message_(std::move(on_message)),
      on_close_(std::move(on_close)),
      decoder_(options_.max_message) {
  last_heard_ms_ = loop_.now_ms();
  std::weak_ptr<bool> alive = alive_;
  ping_timer_ = loop_.timer_start(options_.ping_interval_ms, options_.ping_interval_ms, [this, alive] {
    if (!alive.expired()) on_ping_timer();
  });
}

WsSession::~WsSession() { *alive_ = false; }

void WsSession::receive(std::string_view bytes) {
  if (!conn_ || ended_) return;
  last_heard_ms_ = loop_.now_ms();
  decoder_.feed(bytes, [this](ws::Decoder::Event&& e) { queued_.push_back(std::move(e)); });
  deliver();
  update_reading();
}

// Hands queued events on, in order, until paused or closed. Control frames are answered here.
void WsSession::deliver() {
  if (delivering_) return;  // a callback below paused and resumed: the outer loop goes on
  delivering_ = true;
  std::weak_ptr<bool> alive = alive_;
  while (!queued_.empty() && !ended_ && !paused_) {
    ws::Decoder::Event e = std::move(queued_.front());
    queued_.pop_front();
    switch (e.kind) {
      case ws::Decoder::Event::message:
        if (!close_sent_ && on_message_) on_message_(e.type, e.data);  // after our close: dropped (RFC 7.1.4)
        if (alive.expired()) return;
        break;
      case ws::Decoder::Event::ping:
        if (!close_sent_) send_control(ws::kPong, e.data);
        break;
      case ws::Decoder::Event::pong:
        break;  // last_heard_ms_ was updated by the read itself
      case ws::Decoder::Event::close:
        close_received_ = true;
        close_code_ = e.code;
        close_reason_ = e.data;
        if (!close_sent_) {
          // Echo the peer's code (none when it sent none), then the server closes the TCP connection first.
          send_control(ws::kClose, e.code == ws::kNoStatus ? std::string() : ws::close_payload(e.code, ""));
          close_sent_ = true;
          close_status_ = CL_OK;
        }
        if (conn_) {
          conn_->close_after_response_ = true;
          conn_->after_write_state();
        }
        break;
      case ws::Decoder::Event::error:
        begin_close(e.code, e.data, e.code == ws::kTooBig ? CL_ETOOBIG : CL_EINVAL);
        close_code_ = e.code;
        close_reason_ = e.data;
        if (conn_) {
          conn_->close_after_response_ = true;  // no closing handshake with a peer that broke the protocol
          conn_->after_write_state();
        }
        break;
    }
  }
  delivering_ = false;
}

void WsSession::update_reading() {
  if (!conn_ || conn_->closing()) return;
  if (paused_ || close_received_ || conn_->output_blocked()) {
    conn_->read_stop();
  } else {
    conn_->read_start();
  }
}

void WsSession::output_drained() { update_reading(); }

void WsSession::send_control(ws::Opcode op, std::string_view payload) {
  if (!conn_ || conn_->closing()) return;
  conn_->write_copy(ws::frame(op, payload));
}

cl_status_t WsSession::send(ws::Opcode type, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  auto release = [&] {  // lent bytes come back exactly once, from a clean stack, also on refusal
    if (done) loop_.defer([ptr, done, hint] { done(const_cast<void*>(ptr), hint); });
  };
  std::string_view data(static_cast<const char*>(ptr), ptr ? len : 0);
  if ((type != ws::kText && type != ws::kBinary) || (!ptr && len)) {
    release();
    return CL_EINVAL;
  }
  if (!conn_ || conn_->closing() || close_sent_ || ended_) {
    release();
    return CL_ECLOSING;
  }
  if (type == ws::kText && !text::utf8_valid(data)) {
    release();
    return CL_EINVAL;
  }
  // Copied messages have no completion to pace them: a client that lets them pile up is dropped.
  if (!done && conn_->unsent() > conn_->listener().options.limits.max_unsent_bytes * kStreamUnsentFactor) {
    conn_->abort_slow_reader();
    return CL_ECLOSING;
  }
  std::string head = ws::frame_header(type, data.size());
  if (done) {
    conn_->write_copy(head);
    conn_->write_lent(ptr, len, done, hint);
  } else {
    conn_->write_copy2(head, data);
  }
  return conn_->closing() ? CL_ECLOSING : CL_OK;
}

cl_status_t WsSession::pause(bool paused) {
  if (!conn_ || ended_ || close_received_) return CL_ECLOSING;
  paused_ = paused;
  if (!paused_ && !queued_.empty()) {
    std::weak_ptr<bool> alive = alive_;
    loop_.defer([this, alive] {  // never from inside the caller
      if (alive.expired()) return;
      deliver();
      update_reading();
    });
  }
  update_reading();
  return CL_OK;
}

cl_status_t WsSession::close(uint32_t code, std::string_view reason) {
  if (!ws::close_code_valid(code) || reason.size() > ws::kMaxCloseReason || !text::utf8_valid(reason)) {
    return CL_EINVAL;
  }
  if (!conn_ || ended_ || close_sent_) return CL_ECLOSING;
  begin_close(static_cast<uint16_t>(code), reason, CL_OK);
  return CL_OK;
}

void WsSession::shutdown(cl_status_t status, std::string_view reason) {
  if (!conn_ || ended_) return;
  if (!close_sent_) {
    begin_close(ws::kGoingAway, reason, status);
  } else {
    close_status_ = status;
  }
}

// Sends our close frame and waits (bounded) for the peer's answer; on_close reports `status`.
void WsSession::begin_close(uint16_t code, std::string_view reason, cl_status_t status) {
  if (close_sent_) return;
  close_sent_ = true;
  close_status_ = status;
  close_code_ = code;
  close_reason_ = std::string(reason);
  send_control(ws::kClose, ws::close_payload(code, reason));
  std::weak_ptr<bool> alive = alive_;
  if (conn_ && !close_timer_) {
    close_timer_ = loop_.timer_start(kCloseWaitMs, 0, [this, alive] {
      if (alive.expired()) return;
      close_timer_ = 0;
      if (!conn_) return;
      close_status_ = close_status_ == CL_OK ? CL_ETIMEDOUT : close_status_;
      conn_->close("websocket close not answered");
    });
  }
}

void WsSession::on_ping_timer() {
  if (!conn_ || ended_) return;
  uint64_t now = loop_.now_ms();
  if (!conn_->reading_) {
    // Paused by its owner, or held back by unsent output: the peer cannot be heard, so it is not silent.
    last_heard_ms_ = now;
    return;
  }
  if (now - last_heard_ms_ >= 2 * options_.ping_interval_ms) {
    close_status_ = CL_ETIMEDOUT;
    close_code_ = ws::kAbnormal;
    close_reason_ = "the peer stopped answering pings";
    close_sent_ = true;  // no handshake with a silent peer
    conn_->close("websocket peer silent");
    return;
  }
  if (!close_sent_) send_control(ws::kPing, "");
}

void WsSession::connection_closed() {
  conn_ = nullptr;
  if (close_timer_) loop_.timer_stop(close_timer_);
  close_timer_ = 0;
  if (ping_timer_) loop_.timer_stop(ping_timer_);
  ping_timer_ = 0;
  cl_status_t status = close_status_;
  uint16_t code = close_code_;
  std::string reason = close_reason_;
  if (!close_sent_ && !close_received_) {
    status = CL_ECLOSING;
    code = ws::kAbnormal;
    reason = "the connection was closed without a closing handshake";
  }
  ended_ = true;
  std::weak_ptr<bool> alive = alive_;
  loop_.defer([this, alive, status, code, reason = std::move(reason)] {
    if (alive.expired()) return;
    OnClose cb = std::move(on_close_);
    on_message_ = nullptr;
    if (cb) cb(status, code, reason);
    delete this;
  });
}

void WsSession::detach() {
  on_message_ = nullptr;
  on_close_ = nullptr;
  shutdown(CL_ECANCELED, "going away");
}

}  // namespace cloudlet::http
