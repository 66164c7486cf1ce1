#include "http/connection.h"


#include <cstring>

#include "http/form_reader.h"
#include "http/header_text.h"
#include "http/request_guard.h"
#include "http/status.h"
#include "http/url.h"
#include "http/ws_session.h"
#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet::http {

namespace {
// Pipelined bytes held while a response is pending; beyond this the socket is not read (back-pressure).
constexpr size_t kMaxPending = 64 * 1024;
// Stream-body bytes held for a paused or not-yet-attached reader before the socket is not read.
constexpr size_t kMaxBacklog = 256 * 1024;
constexpr size_t kMaxHeaders = 200;

bool json_media_type(std::string_view content_type) {
  std::string_view t = media_type(content_type);
  constexpr std::string_view kSuffix = "+json";  // application/merge-patch+json and the like
  return iequals(t, "application/json") ||
         (t.size() > kSuffix.size() && t.find('/') != std::string_view::npos &&
          iequals(t.substr(t.size() - kSuffix.size()), kSuffix));
}

size_t backlog_bytes(const Request& r) {
  size_t n = 0;
  for (const auto& c : r.body_backlog) n += c.size();
  return n;
}
}  // namespace

struct Connection::WriteReq {
  uv_write_t req;
  Connection* conn;
  size_t bytes = 0;  // counted in unsent_
  std::string data;  // owned bytes, or empty when lending
  const void* lent_base = nullptr;
  cl_free_cb done = nullptr;
  void* hint = nullptr;
};

// llhttp settings live in one static table; the callbacks find the connection through parser->data.
static llhttp_settings_t make_settings();
static const llhttp_settings_t kSettings = make_settings();

Connection::Connection(Server& server, Listener& listener)
    : server_(server), listener_(listener), alive_(std::make_shared<bool>(true)) {
  uv_tcp_init(server_.loop().uv(), &tcp_);
  tcp_.data = this;
  llhttp_init(&parser_, HTTP_REQUEST, &kSettings);
  parser_.data = this;
  if (listener.tls) tls_ = std::make_unique<TlsSession>(listener.tls->ctx());
}

Connection::~Connection() {
  *alive_ = false;
  delete req_;
}

void Connection::start() {
  uv_tcp_nodelay(&tcp_, 1);
  read_start();
  server_.set_phase(this, Phase::header);
}

void Connection::read_start() {
  if (reading_ || closing()) return;
  reading_ = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&tcp_),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* c = static_cast<Connection*>(h->data);
        buf->base = c->server_.read_buffer();
        buf->len = Server::kReadBufferSize;
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) { static_cast<Connection*>(s->data)->on_read(nread, buf); });
}

void Connection::read_stop() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

bool Connection::output_blocked() const {
  return unsent_ > listener_.options.limits.max_unsent_bytes || (unsent_ > 0 && server_.unsent_over_total());
}

void Connection::close(std::string_view why) {
  if (closing_) return;
  closing_ = true;
  log::trace("http", "closing connection: {}", why);
  server_.set_phase(this, Phase::none);
  server_.request_clock_stop(this);
  read_stop();
  peer_gone();
  if (WsSession* ws = ws_) {
    ws_ = nullptr;
    ws->connection_closed();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) {
    auto* c = static_cast<Connection*>(h->data);
    c->server_.connection_closed(c);
    delete c;
  });
}

void Connection::drain() {
  if (ws_) {
    ws_->shutdown(CL_ECLOSING, "server shutting down");
    return;
  }
  if (req_ == nullptr && pending_writes_ == 0) {
    close("shutdown");
  } else {
    close_after_response_ = true;
  }
}

// The client is gone (or we are closing): the current request can no longer be answered.
void Connection::peer_gone() {
  Request* r = req_;
  if (!r) return;
  req_ = nullptr;
  if (r->form) r->form->abort();
  if (!r->dispatched || r->resp == Request::Resp::ended) {
    delete r;  // no handler owns it
    return;
  }
  r->conn = nullptr;
  r->client_gone();  // the handler still owns it until it ends the response
}

void Connection::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread < 0) {
    close(nread == UV_EOF ? "peer closed" : uv_strerror(static_cast<int>(nread)));
    return;
  }
  if (tls_) {
    tls_plain_.clear();
    std::string wire;
    bool ok = tls_->receive(std::string_view(buf->base, static_cast<size_t>(nread)), &tls_plain_, &wire);
    if (!wire.empty()) write_wire(wire, {});
    if (!ok) {
      close(tls_->last_error());
      return;
    }
    if (tls_plain_.empty()) return;
    std::string plain;
    plain.swap(tls_plain_);
    process(plain.data(), plain.size());
    return;
  }
  process(buf->base, static_cast<size_t>(nread));
}

void Connection::process(const char* data, size_t len) {
  if (closing()) return;
  if (ws_) {
    ws_->receive(std::string_view(data, len));
    return;
  }
  if (parser_paused_) {
    pending_.append(data, len);
    if (pending_.size() > kMaxPending || output_blocked()) read_stop();
    return;
  }
  in_process_ = true;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  in_process_ = false;
  if (closing_) return;
  if (err == HPE_OK) return;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    const char* pos = llhttp_get_error_pos(&parser_);
    size_t used = pos ? static_cast<size_t>(pos - data) : len;
    if (ws_) {
      // Its handler accepted the WebSocket already: what follows the request is the first frames.
      if (used < len) ws_->receive(std::string_view(data + used, len - used));
      return;
    }
    if (err == HPE_PAUSED_UPGRADE) {
      // Not (yet) a WebSocket: the request is answered as a plain one (its answer says Connection:
      // close), and the bytes after it are not HTTP. Close once the answer is out, not at the idle timeout.
      close_after_response_ = true;
      if (req_ == nullptr) after_write_state();
      if (closing_) return;
    }
    parser_paused_ = true;
    pending_.assign(data + used, len - used);
    if (pending_.size() > kMaxPending || output_blocked()) read_stop();
    // The response may already be complete (it finished while the parser was still running).
    if (req_ == nullptr && !close_after_response_) {
      std::weak_ptr<bool> alive = alive_;
      server_.loop().defer([this, alive] {
        if (!alive.expired()) resume_parsing();
      });
    }
    return;
  }
  if (reject_status_) {
    reject(reject_status_, reject_message_);
    return;
  }
  if (req_ && req_->resp == Request::Resp::started) {
    close("parse error after response");  // a response is streaming: the close tells the handler
    return;
  }
  reject(400, llhttp_get_error_reason(&parser_));
}

void Connection::resume_parsing() {
  if (closing() || req_ != nullptr || !parser_paused_ || ws_) return;
  if (output_blocked()) {
    read_stop();  // a completed write resumes (after_write_state)
    return;
  }
  parser_paused_ = false;
  llhttp_resume(&parser_);
  std::string data;
  data.swap(pending_);
  if (!data.empty()) process(data.data(), data.size());
  if (!closing() && !parser_paused_ && !close_after_response_) read_start();
}

// ---- llhttp callbacks ----------------------------------------------------------------------------------

static llhttp_settings_t make_settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) { return Connection::cb_message_begin(p); };
  s.on_url = [](llhttp_t* p, const char* at, size_t len) { return Connection::cb_url(p, at, len); };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t len) { return Connection::cb_header_field(p, at, len); };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t len) { return Connection::cb_header_value(p, at, len); };
  s.on_headers_complete = [](llhttp_t* p) { return Connection::cb_headers_complete(p); };
  s.on_body = [](llhttp_t* p, const char* at, size_t len) { return Connection::cb_body(p, at, len); };
  s.on_message_complete = [](llhttp_t* p) { return Connection::cb_message_complete(p); };
  return s;
}

int Connection::cb_message_begin(llhttp_t* p) {
  auto* c = static_cast<Connection*>(p->data);
  auto* r = new Request;
  r->conn = c;
  r->listener = &c->listener_;
  r->start_ms = c->server_.loop().now_ms();
  if (c->tls_) r->peer_cert = c->tls_->peer_fingerprint();
  c->req_ = r;
  c->header_bytes_ = 0;
  c->field_.clear();
  c->value_.clear();
  c->in_value_ = false;
  c->reject_status_ = 0;
  c->server_.note_request();
  if (c->phase != Phase::header) c->server_.set_phase(c, Phase::header);
  c->window_bytes_ = 0;
  c->server_.request_clock_start(c);
  return 0;
}

bool Connection::add_header_bytes(size_t n) {
  header_bytes_ += n;
  if (header_bytes_ > listener_.options.limits.max_header_bytes) {
    reject_status_ = 431;
    reject_message_ = "request header fields too large";
    return false;
  }
  return true;
}

int Connection::cb_url(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!c->req_) return 0;
  c->req_->target.append(at, len);
  if (c->req_->target.size() > c->listener_.options.limits.max_uri_bytes) {
    c->reject_status_ = 414;
    c->reject_message_ = "request target too long";
    return -1;
  }
  return c->add_header_bytes(len) ? 0 : -1;
}

void Connection::flush_header() {
  if (!field_.empty()) req_->headers.emplace_back(std::move(field_), std::move(value_));
  field_.clear();
  value_.clear();
  in_value_ = false;
}

int Connection::cb_header_field(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!c->req_) return 0;
  if (c->in_value_) c->flush_header();
  if (c->req_->headers.size() >= kMaxHeaders) {
    c->reject_status_ = 431;
    c->reject_message_ = "too many header fields";
    return -1;
  }
  c->field_.append(at, len);
  return c->add_header_bytes(len) ? 0 : -1;
}

int Connection::cb_header_value(llhttp_t* p, const char* at, size_t len) {
  auto* c = static_cast<Connection*>(p->data);
  if (!c->req_) return 0;
  c->in_value_ = true;
  c->value_.append(at, len);
  return c->add_header_bytes(len) ? 0 : -1;
}

int Connection::cb_headers_complete(llhttp_t* p) { return static_cast<Connection*>(p->data)->headers_complete(); }

int Connection::headers_complete() {
  Request* r = req_;
  if (!r) return 0;
  flush_header();
  r->method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(&parser_)));
  r->http_major = llhttp_get_http_major(&parser_);
  r->http_minor = llhttp_get_http_minor(&parser_);
  r->keep_alive = llhttp_should_keep_alive(&parser_) && !close_after_response_ && !server_.shutting_down();
  r->head = r->method == "HEAD";
  std::string_view upgrade;
  // Protocol switching is not offered: a request asking for it is answered as a plain one and the connection
  // closes after the answer (the client may already be sending the other protocol).
  if (r->header("upgrade", &upgrade) == CL_OK || r->method == "CONNECT") r->keep_alive = false;

  // Request target: origin-form, or absolute-form (proxies) reduced to its path.
  std::string_view target = r->target;
  if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
    size_t slash = target.find('/', target.find("//") + 2);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  if (target.empty() || target[0] != '/') {
    reject_status_ = 400;
    reject_message_ = "unsupported request target";
    return -1;
  }
  size_t q = target.find('?');
  std::string_view raw_path = target.substr(0, q);
  if (size_t hash = raw_path.find('#'); hash != std::string_view::npos) raw_path = raw_path.substr(0, hash);
  if (q != std::string_view::npos) r->query.assign(target.substr(q + 1));
  if (size_t hash = r->query.find('#'); hash != std::string::npos) r->query.resize(hash);
  if (!percent_decode(raw_path, &r->path, false)) {
    reject_status_ = 400;
    reject_message_ = "malformed percent-encoding in path";
    return -1;
  }

  std::string allowed;
  listener_.router.match(r->method, r->path, &matches_, &allowed);
  allowed_ = std::move(allowed);

  const Limits& limits = listener_.options.limits;
  bool has_body = (parser_.flags & F_CHUNKED) || ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > 0);
  const Route* first = matches_.empty() ? nullptr : matches_.front().route;
  if (!guard(*r, nullptr, false)) return -1;  // Host and cross-site first: the core's own refusals
  if (listener_.guarded) {
    // Before routing and before the body is read: an unauthenticated client uploads nothing.
    int through = listener_guard(r, has_body);
    if (through <= 0) return through;
  }
  if (first && !guard(*r, first, has_body)) return -1;
  uint32_t flags = first ? first->flags : 0;
  if (flags & CL_ROUTE_F_STREAM_BODY) {
    r->body_mode = Request::BodyMode::stream;
    r->body_limit = limits.max_upload_bytes;
  } else if (flags & CL_ROUTE_F_FORM) {
    r->body_mode = Request::BodyMode::form;
    r->body_limit = limits.max_upload_bytes;
  } else {
    r->body_mode = first ? Request::BodyMode::buffer : Request::BodyMode::discard;
    r->body_limit = limits.max_body_bytes;
  }
  if (first && first->max_body) r->body_limit = first->max_body;
  if ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > r->body_limit) {
    reject_status_ = 413;
    reject_message_ = "request body too large";
    return -1;
  }
  std::string_view ctype;
  r->header("content-type", &ctype);
  // Bodies kept in memory (buffered, or a urlencoded form's fields) count against the server's total; with
  // a Content-Length the whole body is reserved before any of it is read.
  r->body_in_memory = r->body_mode == Request::BodyMode::buffer ||
                      (r->body_mode == Request::BodyMode::form && FormReader::kind_of(ctype) != FormKind::multipart);
  if (r->body_in_memory && (parser_.flags & F_CONTENT_LENGTH) && !reserve_body(*r, parser_.content_length)) return -1;

  std::string_view expect;
  if (r->header("expect", &expect) == CL_OK) {
    if (!iequals(expect, "100-continue")) {
      reject_status_ = 417;
      reject_message_ = "unsupported expectation";
      return -1;
    }
    if (has_body && r->http_minor >= 1) write_copy("HTTP/1.1 100 Continue\r\n\r\n");
  }

  if (r->body_mode == Request::BodyMode::form && has_body) {
    std::string error;
    cl_status_t st = start_form(*r, ctype, &error);
    if (st != CL_OK) {
      reject_status_ = status_from_cl(st);
      reject_message_ = error;
      return -1;
    }
  }

  server_.set_phase(this, has_body ? Phase::body : Phase::none);
  if (r->body_mode == Request::BodyMode::stream) {
    // Without a body the request is complete already: an answer from the handler is not an early one (which
    // would close the connection), and a reader attached later gets the end of the body at once.
    if (!has_body) r->body_complete = true;
    // Streaming handlers run at once so they can attach a body reader before the bytes arrive.
    dispatch();
    if (req_ != r) return 0;  // answered already; the rest of the body is ignored
  }
  return 0;
}

int Connection::cb_body(llhttp_t* p, const char* at, size_t len) { return static_cast<Connection*>(p->data)->body(at, len); }

int Connection::body(const char* at, size_t len) {
  Request* r = req_;
  if (!r || r->resp == Request::Resp::ended) return 0;  // answered early: the connection closes after the reply
  r->body_received += len;
  if (r->body_received > r->body_limit) {
    if (r->dispatched) {
      // A streaming handler already owns the request: end its body with an error and close.
      if (r->body_cb && !r->body_end_delivered) {
        r->body_end_delivered = true;
        r->body_cb(r->body_ud, r, CL_ETOOBIG, cl_str_t{nullptr, 0});
      }
      close_after_response_ = true;
      return 0;
    }
    reject_status_ = 413;
    reject_message_ = "request body too large";
    return -1;
  }
  // A chunked body reserves its memory as it arrives.
  if (r->body_in_memory && r->body_received > r->body_reserved && !reserve_body(*r, r->body_received)) return -1;
  server_.touch(this);
  // The whole-request deadline moves on only while the body keeps min_body_rate.
  const Limits& limits = listener_.options.limits;
  window_bytes_ += len;
  if (limits.min_body_rate > 0 && window_bytes_ >= limits.min_body_rate * limits.request_timeout_ms / 1000) {
    window_bytes_ = 0;
    server_.request_clock_start(this);
  }
  switch (r->body_mode) {
    case Request::BodyMode::buffer:
      r->body.append(at, len);
      break;
    case Request::BodyMode::discard:
      break;
    case Request::BodyMode::form: {
      if (!r->form) {
        r->body.append(at, len);  // not a form content type: keep it as a plain body
        break;
      }
      std::string error;
      cl_status_t st = r->form->feed(std::string_view(at, len));
      if (st != CL_OK) {
        reject_status_ = status_from_cl(st);
        reject_message_ = r->form->error();
        return -1;
      }
      if (r->form->wants_pause() && reading_) {
        read_stop();
        // Our own back-pressure is not the client's fault: its clocks stop.
        server_.set_phase(this, Phase::none);
        server_.request_clock_stop(this);
      }
      break;
    }
    case Request::BodyMode::stream:
      if (r->body_cb && !r->body_reader_paused && r->body_backlog.empty()) {
        r->body_cb(r->body_ud, r, CL_OK, cl_str_t{at, len});  // may answer and free r
      } else {
        r->body_backlog.emplace_back(at, len);
        if (backlog_bytes(*r) > kMaxBacklog && reading_) {
          read_stop();
          server_.set_phase(this, Phase::none);
          server_.request_clock_stop(this);
        }
      }
      break;
  }
  return 0;
}

int Connection::cb_message_complete(llhttp_t* p) { return static_cast<Connection*>(p->data)->message_complete(); }

int Connection::message_complete() {
  server_.request_clock_stop(this);
  Request* r = req_;
  // Answered from the handler already (a streaming route): pause; process() resumes parsing if the connection
  // stays open.
  if (!r) return HPE_PAUSED;
  r->body_complete = true;
  if (phase == Phase::body) server_.set_phase(this, Phase::none);
  if (r->resp == Request::Resp::ended) {
    // Answered before the body finished: now the request can go.
    req_ = nullptr;
    delete r;
    after_write_state();
    return close_after_response_ || output_blocked() ? HPE_PAUSED : 0;
  }
  switch (r->body_mode) {
    case Request::BodyMode::stream:
      if (r->body_cb && !r->body_reader_paused && r->body_backlog.empty() && !r->body_end_delivered) {
        r->body_end_delivered = true;
        r->body_cb(r->body_ud, r, CL_OK, cl_str_t{nullptr, 0});
      }
      break;
    case Request::BodyMode::form:
      if (r->form) {
        finish_form(*r);
        break;
      }
      dispatch();
      break;
    default:
      dispatch();
      break;
  }
  // Continue with pipelined requests only once this one is answered, and its answer (with those before it)
  // is not piling up unread.
  return req_ == nullptr && !close_after_response_ && !output_blocked() ? 0 : HPE_PAUSED;
}

bool Connection::guard(Request& r, const Route* route, bool has_body) {
  Refusal no;
  if (!route) {
    no = check_host(listener_.options, r);
    if (no.status == 0) no = check_cross_site(r);
  } else if (route->json_body && has_body) {
    // A cross-site form can post text/plain without a CORS preflight; application/json needs one.
    std::string_view ctype;
    if (r.header("content-type", &ctype) != CL_OK || !json_media_type(ctype)) {
      no = {415, "the body must be JSON, sent with Content-Type: application/json"};
    }
  }
  if (no.status == 0) return true;
  reject_status_ = no.status;
  reject_message_ = std::move(no.message);
  return false;
}

int Connection::listener_guard(Request* r, bool has_body) {
  if (!listener_.guard) {
    // Its plugin unloaded: fail closed, never open.
    reject_status_ = 503;
    reject_message_ = "the guard of this listener is not available";
    return -1;
  }
  // Without a body the request is complete: an answer from the guard is not an early one (which would close
  // the connection). While the guard runs the request counts as dispatched, so whatever it answers is final.
  if (!has_body) r->body_complete = true;
  r->dispatched = true;
  r->in_guard = true;
  cl_status_t st;
  try {
    st = listener_.guard(*r);  // the plugin side runs it through the plugin guard (exceptions, phase)
  } catch (...) {
    st = CL_EIO;
  }
  if (req_ != r) return 0;  // answered and freed
  r->in_guard = false;
  if (r->resp == Request::Resp::none && st == CL_OK) {
    r->dispatched = false;  // through: routing dispatches it as usual
    return 1;
  }
  if (r->resp == Request::Resp::none) {
    r->send_error(status_from_cl(st), "refused by the listener's guard");
  } else if (r->resp == Request::Resp::started) {
    // A guard that started a response and refused (or let through) still answered: end what it began.
    log::warn("http", "the guard of listener '{}' started a response and did not end it", listener_.options.name);
    r->keep_alive = false;
    r->end();
  } else if (st == CL_OK) {
    log::warn("http", "the guard of listener '{}' answered a request and let it through: treated as refused",
              listener_.options.name);
  }
  return 0;
}

bool Connection::reserve_body(Request& r, uint64_t bytes) {
  if (bytes <= r.body_reserved) return true;
  if (!server_.body_reserve(bytes - r.body_reserved)) {
    reject_status_ = 503;
    reject_message_ = "the server holds too many request bodies right now; retry later";
    return false;
  }
  r.body_reserved = bytes;
  return true;
}

// ---- dispatch -------------------------------------------------------------------------------------------

void Connection::dispatch() {
  Request* r = req_;
  r->dispatched = true;
  std::vector<Router::Match> matches = std::move(matches_);
  matches_.clear();
  for (auto& m : matches) {
    r->route = m.route;
    r->owner = m.route->owner;
    r->path_params = std::move(m.params);
    cl_status_t st;
    try {
      st = m.route->handler(*r);
    } catch (const std::exception& e) {
      log::error("http", "handler for {} {} threw: {}", r->method, r->path, e.what());
      st = CL_EIO;
    } catch (...) {
      log::error("http", "handler for {} {} threw a non-standard exception", r->method, r->path);
      st = CL_EIO;
    }
    if (req_ != r) return;  // answered and freed, or the client left (the handler owns it now)
    if (st == CL_EDECLINED && r->resp == Request::Resp::none) {
      r->path_params.clear();
      r->resp_headers.clear();  // a declining handler's headers must not leak into the next one's answer
      r->content_type.clear();
      continue;
    }
    if (st != CL_OK && r->resp == Request::Resp::none) r->send_error(status_from_cl(st), "");
    return;
  }
  r->route = nullptr;
  r->owner = nullptr;
  const ListenerOptions& o = listener_.options;
  if (!allowed_.empty() && matches.empty()) {
    r->add_header("Allow", allowed_);
    r->send_error(405);
    return;
  }
  if (!o.webroot.empty() && (r->method == "GET" || r->method == "HEAD")) {
    server_.files().serve(*r, o.webroot, o.index_file);
    return;
  }
  r->send_error(404);
}

void Connection::reject(uint32_t status, std::string_view message) {
  // The parser stopped on an error: nothing more is read, and the connection closes once the answer is out
  // (response_done must not wait for the end of a body that will never be parsed).
  close_after_response_ = true;
  parse_failed_ = true;
  read_stop();
  server_.request_clock_stop(this);
  Request* r = req_;
  if (r && r->resp == Request::Resp::ended) {
    // Answered early while the rest of its body was being discarded: the request can go now.
    req_ = nullptr;
    delete r;
    after_write_state();
    return;
  }
  if (r && r->dispatched) {
    // A streaming handler owns the request and answers it: end its body with the error, so that it does not
    // wait for bytes that will never come. We close after its answer.
    if (r->body_cb && !r->body_end_delivered) {
      r->body_end_delivered = true;
      r->body_cb(r->body_ud, r, status == 413 ? CL_ETOOBIG : CL_EINVAL, cl_str_t{nullptr, 0});  // may answer
    }
    return;
  }
  if (r && r->resp == Request::Resp::none) {
    r->keep_alive = false;
    r->dispatched = true;  // the core answers it itself
    r->send_error(status, message);
    return;
  }
  std::string body = fmt::format("{} {}\n{}\n", status, reason_phrase(status), message);
  std::string head = fmt::format(
      "HTTP/1.1 {} {}\r\nServer: cloudletd\r\nDate: {}\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Length: {}\r\nConnection: close\r\n\r\n",
      status, reason_phrase(status), server_.date(), body.size());
  write_copy2(head, body);
  after_write_state();
}

// ---- request body flow -----------------------------------------------------------------------------------

void Connection::body_flow_changed() {
  std::weak_ptr<bool> alive = alive_;
  Request* r = req_;
  // A request answered early stays req_ while its body is discarded, but it is dead to its handler: nothing
  // more is delivered to it.
  auto gone = [this, r] { return req_ != r || r->resp == Request::Resp::ended; };
  server_.loop().defer([this, alive, r, gone] {
    if (alive.expired() || !r || gone()) return;
    while (r->body_cb && !r->body_reader_paused && !r->body_backlog.empty()) {
      std::string chunk = std::move(r->body_backlog.front());
      r->body_backlog.erase(r->body_backlog.begin());
      r->body_cb(r->body_ud, r, CL_OK, cl_str_t{chunk.data(), chunk.size()});
      if (alive.expired() || gone()) return;
    }
    if (r->body_cb && !r->body_reader_paused && r->body_backlog.empty() && r->body_complete &&
        !r->body_end_delivered) {
      r->body_end_delivered = true;
      r->body_cb(r->body_ud, r, CL_OK, cl_str_t{nullptr, 0});
      if (alive.expired() || gone()) return;
    }
    if (!r->body_complete && !r->body_reader_paused && backlog_bytes(*r) < kMaxBacklog / 2) resume_reading();
  });
}

void Connection::resume_reading() {
  if (closing() || reading_ || parser_paused_ || close_after_response_) return;
  read_start();
  if (req_ && !req_->body_complete) {
    server_.set_phase(this, Phase::body);
    window_bytes_ = 0;
    server_.request_clock_start(this);
  }
}

cl_status_t Connection::start_form(Request& r, std::string_view content_type, std::string* error) {
  if (FormReader::kind_of(content_type) == FormKind::none) {
    r.body_limit = std::min<uint64_t>(r.body_limit, listener_.options.limits.max_body_bytes);
    return CL_OK;  // not a form: the body is buffered as usual
  }
  FormLimits limits;
  limits.max_file_bytes = r.body_limit;
  auto form = std::make_unique<FormReader>(server_.loop(), content_type, server_.spool_dir(), limits);
  if (form->status() != CL_OK) {
    *error = form->error();
    return form->status();
  }
  std::weak_ptr<bool> alive = alive_;
  Request* req = &r;
  form->set_resume([this, alive, req] {
    if (alive.expired() || req_ != req) return;
    resume_reading();
  });
  r.form = std::move(form);
  return CL_OK;
}

void Connection::finish_form(Request& r) {
  std::weak_ptr<bool> alive = alive_;
  Request* req = &r;
  r.form->finish([this, alive, req](cl_status_t st, const std::string& error) {
    if (alive.expired() || req_ != req) return;
    if (st != CL_OK) {
      close_after_response_ = true;
      req->dispatched = true;
      req->send_error(status_from_cl(st), error);
      return;
    }
    for (auto& [name, value] : req->form->fields()) req->params.emplace_back(name, value);
    dispatch();
    if (!alive.expired() && req_ == nullptr) schedule_resume();
  });
}

// ---- responses ---------------------------------------------------------------------------------------

bool Connection::keep_alive_for(const Request& r) const {
  return r.keep_alive && r.body_complete && !close_after_response_ && !server_.shutting_down();
}

void Connection::log_access(Request& r) {
  if (!log::access_log_enabled()) return;
  r.addresses();
  log::write_access(fmt::format("{} {} \"{} {} HTTP/{}.{}\" {} {} {}ms", listener_.options.name, r.peer_ip, r.method,
                                r.target, r.http_major, r.http_minor, r.status, r.bytes_out,
                                server_.loop().now_ms() - r.start_ms));
}

void Connection::upgrade(Request* r, WsSession* ws, std::string_view head) {
  write_copy(head);
  log_access(*r);
  if (r->done_hook) r->done_hook(r->done_hook_ud, r);
  r->done_hook = nullptr;
  if (req_ == r) req_ = nullptr;
  delete r;
  ws_ = ws;
  server_.request_clock_stop(this);
  close_after_response_ = false;  // set for an upgrade request answered later than its parse (process())
  std::string early;
  early.swap(pending_);  // frames that arrived right behind the request
  after_write_state();
  if (closing()) return;
  if (early.empty()) {
    read_start();
    return;
  }
  // From a clean stack (the handler that accepted is still running), and before anything read later: the
  // socket is read again only once these were decoded (the session restarts reading).
  read_stop();
  std::weak_ptr<bool> alive = alive_;
  server_.loop().defer([this, alive, early = std::move(early)] {
    if (!alive.expired() && ws_ && !closing()) ws_->receive(early);
  });
}

void Connection::head_done(Request* r) {
  log_access(*r);
  if (req_ == r) req_ = nullptr;
  r->conn = nullptr;
  if (!keep_alive_for(*r)) close_after_response_ = true;
  after_write_state();
  if (!closing_ && !close_after_response_ && !in_process_) schedule_resume();
  // Its handler learns it from a clean stack; until then the request cannot be freed under it.
  r->notify_pending = true;
  server_.loop().defer([r] {
    r->notify_pending = false;
    r->client_gone();
  });
}

void Connection::response_done(Request* r) {
  log_access(*r);
  bool keep = keep_alive_for(*r);
  if (r->done_hook) r->done_hook(r->done_hook_ud, r);
  r->done_hook = nullptr;
  if (!r->body_complete && !parse_failed_) {
    // Answered before the whole body arrived: keep the object until the parser is done with it, then close.
    // Reading goes on (the rest of the body is discarded): closing with unread bytes would reset the
    // connection, which can destroy the answer before the client reads it, and a stopped reader would never
    // reach the end of the message. body() does not extend the body deadline any more, so this lingers at
    // most body_timeout_ms.
    close_after_response_ = true;
    r->conn = nullptr;
    r->resp = Request::Resp::ended;
    r->body_backlog.clear();
    read_start();
    if (phase != Phase::body && phase != Phase::write) server_.set_phase(this, Phase::body);
    after_write_state();
    return;
  }
  if (req_ == r) req_ = nullptr;
  delete r;
  if (!keep) close_after_response_ = true;
  after_write_state();
  if (!closing_ && !close_after_response_ && !in_process_) schedule_resume();
}

void Connection::schedule_resume() {
  if (!parser_paused_) return;
  std::weak_ptr<bool> alive = alive_;
  server_.loop().defer([this, alive] {
    if (!alive.expired()) resume_parsing();
  });
}

void Connection::after_write_state(bool progress) {
  if (closing_) return;
  if (ws_) {
    // A WebSocket has no HTTP phase: only a write the client does not take is timed.
    if (pending_writes_ > 0) {
      if (phase != Phase::write) server_.set_phase(this, Phase::write);
      else if (progress) server_.touch(this);
      return;
    }
    if (phase != Phase::none) server_.set_phase(this, Phase::none);
    if (close_after_response_) {
      close("websocket closed");
      return;
    }
    if (progress) ws_->output_drained();
    return;
  }
  // A write completed: pipelined requests that waited for the output to drain may go on.
  if (progress && parser_paused_ && req_ == nullptr && !close_after_response_ && !output_blocked()) schedule_resume();
  if (pending_writes_ > 0) {
    if (phase == Phase::write) {
      // Only the client's reading pushes the write deadline back: a handler queueing more (an SSE feed to a
      // client that reads nothing) must not keep the connection, and the memory it holds, alive.
      if (progress) server_.touch(this);
    } else if (phase != Phase::body) {
      server_.set_phase(this, Phase::write);
    }
    return;
  }
  if (req_ == nullptr) {
    if (close_after_response_) {
      close("response complete");
      return;
    }
    server_.set_phase(this, Phase::idle);
  } else if (phase == Phase::write) {
    server_.set_phase(this, req_->body_complete ? Phase::none : Phase::body);
  }
}

void Connection::write_copy(std::string_view data) { write_copy2(data, {}); }

void Connection::write_copy2(std::string_view a, std::string_view b) {
  if (closing()) return;
  if (tls_) {
    std::string wire;
    if (!tls_->send(a, &wire) || !tls_->send(b, &wire)) {
      fail_later(tls_->last_error());
      return;
    }
    write_wire(wire, {});
    return;
  }
  write_wire(a, b);
}

// A write failed inside a response call: the peer is gone. Closing at once would run the request's close
// callback (which may end and free the request) under the caller's feet, in the middle of resp_send or
// resp_write: stop writing and reading now, close from a clean stack on the next loop turn.
void Connection::fail_later(std::string why) {
  if (closing()) return;
  write_failed_ = true;
  read_stop();
  std::weak_ptr<bool> alive = alive_;
  server_.loop().defer([this, alive, why = std::move(why)] {
    if (!alive.expired()) close(why);
  });
}

void Connection::write_wire(std::string_view a, std::string_view b) {
  if (closing() || (a.empty() && b.empty())) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (pending_writes_ == 0) {
    uv_buf_t bufs[2] = {uv_buf_init(const_cast<char*>(a.data()), static_cast<unsigned>(a.size())),
                        uv_buf_init(const_cast<char*>(b.data()), static_cast<unsigned>(b.size()))};
    int n = uv_try_write(stream, bufs, b.empty() ? 1 : 2);
    if (n < 0 && n != UV_EAGAIN) {
      fail_later(uv_strerror(n));
      return;
    }
    size_t wrote = n > 0 ? static_cast<size_t>(n) : 0;
    if (wrote == a.size() + b.size()) return;
    size_t from_a = std::min(wrote, a.size());
    a.remove_prefix(from_a);
    b.remove_prefix(wrote - from_a);
  }
  auto* w = new WriteReq;
  w->conn = this;
  w->data.reserve(a.size() + b.size());
  w->data.append(a).append(b);
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  w->bytes = w->data.size();
  unsent_ += w->bytes;
  server_.add_unsent(static_cast<int64_t>(w->bytes));
  pending_writes_++;
  uv_write(&w->req, stream, &buf, 1, [](uv_write_t* req, int status) {
    auto* wr = static_cast<WriteReq*>(req->data);
    wr->conn->write_done(wr, status);
  });
  after_write_state();
}

void Connection::write_lent(const void* ptr, size_t len, cl_free_cb done, void* hint) {
  Loop& loop = server_.loop();
  auto release_later = [&loop, ptr, done, hint] {
    if (done) loop.defer([ptr, done, hint] { done(const_cast<void*>(ptr), hint); });
  };
  if (closing()) {
    release_later();
    return;
  }
  if (tls_ || len < 4096) {
    write_copy(std::string_view(static_cast<const char*>(ptr), len));
    release_later();
    return;
  }
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  const char* p = static_cast<const char*>(ptr);
  size_t left = len;
  if (pending_writes_ == 0) {
    uv_buf_t buf = uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(left));
    int n = uv_try_write(stream, &buf, 1);
    if (n < 0 && n != UV_EAGAIN) {
      release_later();
      fail_later(uv_strerror(n));
      return;
    }
    if (n > 0) {
      p += n;
      left -= static_cast<size_t>(n);
    }
    if (left == 0) {
      release_later();
      return;
    }
  }
  auto* w = new WriteReq;
  w->conn = this;
  w->lent_base = ptr;
  w->done = done;
  w->hint = hint;
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(left));
  w->bytes = left;
  unsent_ += w->bytes;
  server_.add_unsent(static_cast<int64_t>(w->bytes));
  pending_writes_++;
  uv_write(&w->req, stream, &buf, 1, [](uv_write_t* req, int status) {
    auto* wr = static_cast<WriteReq*>(req->data);
    wr->conn->write_done(wr, status);
  });
  after_write_state();
}

void Connection::write_done(WriteReq* w, int status) {
  pending_writes_--;
  unsent_ -= w->bytes;
  server_.add_unsent(-static_cast<int64_t>(w->bytes));
  if (w->done) w->done(const_cast<void*>(w->lent_base), w->hint);
  delete w;
  if (closing_) return;
  if (status < 0) {
    close(uv_strerror(status));
    return;
  }
  after_write_state(true);
}

}  // namespace cloudlet::http
