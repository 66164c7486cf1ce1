#include "http/client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <strings.h>

#include <cctype>
#include <cstring>

namespace cloudlet::http {
namespace {

template <typename H>
uv_handle_t* as_handle(H* h) {
  return reinterpret_cast<uv_handle_t*>(h);
}

bool is_tchar(unsigned char c) {
  return std::isalnum(c) || (c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// A field value may hold anything but the bytes that would end or split the header line.
bool is_field_value(std::string_view s) {
  for (unsigned char c : s) {
    if (c == '\r' || c == '\n' || c == 0) return false;
  }
  return true;
}

bool client_owned(std::string_view name) {
  for (const char* own : {"host", "content-length", "transfer-encoding", "connection"}) {
    if (name.size() == std::strlen(own) && strncasecmp(name.data(), own, name.size()) == 0) return true;
  }
  return false;
}

bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (unsigned char c : s) {
    if (!std::isxdigit(c)) return false;
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool parse_port(std::string_view s, uint16_t* port) {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *port = static_cast<uint16_t>(v);
  return true;
}

}  // namespace

bool parse_fetch_url(std::string_view url, FetchUrl* out) {
  for (unsigned char c : url) {
    if (c <= 0x20 || c >= 0x7f) return false;  // CR, LF, NUL, spaces and raw UTF-8 never reach the wire
  }
  FetchUrl u;
  std::string scheme = lower(url.substr(0, url.find("://")));
  if (scheme == "http") u.tls = false;
  else if (scheme == "https") u.tls = true;
  else return false;
  std::string_view rest = url.substr(scheme.size() + 3);
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view port;
  bool v6 = false;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return false;
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return false;
      port = after.substr(1);
      if (port.empty()) return false;
    }
    unsigned char buf[16];
    if (inet_pton(AF_INET6, u.host.c_str(), buf) != 1) return false;
    v6 = true;
  } else {
    size_t colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (u.host.empty()) return false;
    for (unsigned char c : u.host) {
      if (!std::isalnum(c) && c != '.' && c != '-' && c != '_') return false;
    }
  }
  uint16_t dflt = u.tls ? 443 : 80;
  u.port = dflt;
  if (!port.empty() && !parse_port(port, &u.port)) return false;
  target = target.substr(0, target.find('#'));
  u.target = target.empty() || target.front() != '/' ? "/" + std::string(target) : std::string(target);
  u.authority = v6 ? "[" + u.host + "]" : u.host;
  if (u.port != dflt) u.authority += ":" + std::to_string(u.port);
  *out = std::move(u);
  return true;
}

// One TCP connection attempt; freed by its close callback.
struct Fetch::Socket {
  uv_tcp_t tcp;
  uv_connect_t connect;
  Fetch* fetch;
};

// One write: the request head, a body piece (with its chunk framing), the chunked terminator or TLS records.
struct Fetch::Out {
  uv_write_t req;
  Fetch* fetch = nullptr;
  std::string owned;      // a copy, or the TLS records of everything below
  std::string_view lent;  // bytes the caller lends until done runs
  std::string prefix, suffix;  // chunk framing
  WriteDone done;
  size_t copied = 0;      // counted in copied_bytes_
};

cl_status_t Fetch::start(uv_loop_t* loop, FetchOptions options, OnResponse on_response, OnBody on_body,
                         Fetch** out, std::string* error) {
  FetchUrl url;
  if (!parse_fetch_url(options.url, &url)) {
    *error = "not an http or https URL: " + options.url;
    return CL_EINVAL;
  }
  if (!is_token(options.method)) {
    *error = "not a method: " + options.method;
    return CL_EINVAL;
  }
  for (const auto& [name, value] : options.headers) {
    if (!is_token(name) || !is_field_value(value) || client_owned(name)) {
      *error = "header not allowed: " + name;
      return CL_EINVAL;
    }
  }
  if (options.body_length < -1 || options.max_header_bytes == 0 || options.connect_timeout_ms == 0 ||
      options.idle_timeout_ms == 0) {
    *error = "bad body length, bound or timeout";
    return CL_EINVAL;
  }
  if (!options.pin_sha256.empty() && !is_hex64(options.pin_sha256)) {
    *error = "pin_sha256 is not 64 hex digits";
    return CL_EINVAL;
  }
  if (options.pin_only && options.pin_sha256.empty()) {
    *error = "pin_only without a pin";
    return CL_EINVAL;
  }
  options.pin_sha256 = lower(options.pin_sha256);
  std::unique_ptr<TlsContext> ctx;
  if (url.tls) {
    ctx = TlsContext::create_client(options.ca_file, options.cert_file, options.key_file, !options.pin_only, error);
    if (!ctx) return CL_EINVAL;
  }
  auto* f = new Fetch(loop, std::move(options), std::move(url), std::move(on_response), std::move(on_body));
  f->tls_ctx_ = std::move(ctx);
  f->send_head();
  f->resolve();
  *out = f;
  return CL_OK;
}

Fetch::Fetch(uv_loop_t* loop, FetchOptions options, FetchUrl url, OnResponse on_response, OnBody on_body)
    : loop_(loop),
      options_(std::move(options)),
      url_(std::move(url)),
      on_response_(std::move(on_response)),
      on_body_(std::move(on_body)) {
  uv_timer_init(loop_, &timer_);
  uv_timer_init(loop_, &later_);
  timer_.data = later_.data = this;
  handles_open_ = 2;
  static const llhttp_settings_t kSettings = settings();
  llhttp_init(&parser_, HTTP_RESPONSE, &kSettings);
  parser_.data = this;
  body_ended_ = options_.body_length == 0;
}

Fetch::~Fetch() {
  for (Out* o : pending_) delete o;
  if (addrs_) uv_freeaddrinfo(addrs_);
}

void Fetch::send_head() {
  std::string head = options_.method + " " + url_.target + " HTTP/1.1\r\nHost: " + url_.authority + "\r\n";
  for (const auto& [name, value] : options_.headers) head += name + ": " + value + "\r\n";
  head += "Connection: close\r\n";
  if (options_.body_length > 0) {
    head += "Content-Length: " + std::to_string(options_.body_length) + "\r\n";
  } else if (options_.body_length < 0) {
    head += "Transfer-Encoding: chunked\r\n";
  } else if (options_.method == "POST" || options_.method == "PUT" || options_.method == "PATCH") {
    head += "Content-Length: 0\r\n";  // servers may refuse these without a length (411)
  }
  head += "\r\n";
  queue(std::move(head), {}, nullptr, false);
}

void Fetch::resolve() {
  arm(options_.connect_timeout_ms);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  resolver_.data = this;
  handles_open_++;
  resolving_ = true;
  std::string port = std::to_string(url_.port);
  int rc = uv_getaddrinfo(
      loop_, &resolver_,
      [](uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
        static_cast<Fetch*>(req->data)->on_resolved(status, res);
      },
      url_.host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    handles_open_--;
    resolving_ = false;
    end_with(CL_EUNAVAIL);
  }
}

void Fetch::on_resolved(int status, struct addrinfo* res) {
  resolving_ = false;
  addrs_ = res;
  if (ended_) {
    handle_closed();  // cancelled: this may have been the Fetch's last reference
    return;
  }
  handles_open_--;  // the timers are still open: never the last
  if (status != 0) {
    end_with(CL_EUNAVAIL);
    return;
  }
  next_addr_ = addrs_;
  connect_next();
}

void Fetch::connect_next() {
  while (next_addr_) {
    struct addrinfo* a = next_addr_;
    next_addr_ = a->ai_next;
    auto* s = new Socket;
    s->fetch = this;
    s->tcp.data = s->connect.data = s;
    uv_tcp_init(loop_, &s->tcp);
    handles_open_++;
    sockets_open_++;
    socket_ = s;
    int rc = uv_tcp_connect(&s->connect, &s->tcp, a->ai_addr, [](uv_connect_t* req, int st) {
      auto* sock = static_cast<Socket*>(req->data);
      if (sock->fetch->socket_ == sock) sock->fetch->on_connected(st);
    });
    if (rc == 0) return;
    close_socket();
  }
  end_with(CL_EUNAVAIL);
}

void Fetch::on_connected(int status) {
  if (ended_) return;
  if (status != 0) {
    close_socket();
    connect_next();
    return;
  }
  uv_tcp_nodelay(&socket_->tcp, 1);
  update_reading();
  if (!tls_ctx_) {
    on_ready();
    return;
  }
  tls_ = std::make_unique<TlsSession>(tls_ctx_->ctx(), url_.host);
  std::string wire;
  if (!tls_->start(&wire)) {
    end_with(CL_EIO);
    return;
  }
  send_raw(std::move(wire));
}

void Fetch::on_ready() {
  connected_ = true;
  if (paused_) uv_timer_stop(&timer_);  // the connect deadline is met; a paused reader has no idle deadline
  else arm(options_.idle_timeout_ms);
  update_reading();
  flush();
}

void Fetch::queue(std::string owned, std::string_view lent, WriteDone done, bool chunk) {
  auto* o = new Out;
  o->fetch = this;
  o->owned = std::move(owned);
  o->lent = lent;
  o->done = std::move(done);
  o->copied = o->owned.size();
  copied_bytes_ += o->copied;
  if (chunk) {
    char size[24];
    snprintf(size, sizeof size, "%zx\r\n", o->lent.data() ? o->lent.size() : o->owned.size());
    o->prefix = size;
    o->suffix = "\r\n";
  }
  pending_.push_back(o);
  if (connected_) flush();
}

void Fetch::flush() {
  while (!pending_.empty() && !ended_) {
    Out* o = pending_.front();
    pending_.pop_front();
    std::string_view data = o->lent.data() ? o->lent : std::string_view(o->owned);
    uv_buf_t bufs[3];
    unsigned n = 0;
    if (tls_) {
      std::string wire;
      bool ok = tls_->send(o->prefix, &wire) && tls_->send(data, &wire) && tls_->send(o->suffix, &wire);
      o->owned = std::move(wire);  // the lent bytes are free to go back once the records are written
      bufs[n++] = uv_buf_init(o->owned.data(), static_cast<unsigned>(o->owned.size()));
      if (!ok) {
        if (o->done) done_.push_back(std::move(o->done));
        delete o;
        end_with(CL_EIO);
        return;
      }
    } else {
      if (!o->prefix.empty()) bufs[n++] = uv_buf_init(o->prefix.data(), static_cast<unsigned>(o->prefix.size()));
      bufs[n++] = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
      if (!o->suffix.empty()) bufs[n++] = uv_buf_init(o->suffix.data(), static_cast<unsigned>(o->suffix.size()));
    }
    o->req.data = o;
    int rc = uv_write(&o->req, reinterpret_cast<uv_stream_t*>(&socket_->tcp), bufs, n, [](uv_write_t* req, int st) {
      auto* out = static_cast<Out*>(req->data);
      out->fetch->on_written(out, st);
    });
    if (rc != 0) {
      if (o->done) done_.push_back(std::move(o->done));
      copied_bytes_ -= o->copied;
      delete o;
      end_with(CL_EIO);
      return;
    }
    writes_in_flight_++;
  }
}

void Fetch::send_raw(std::string wire) {
  if (wire.empty() || !socket_) return;
  auto* o = new Out;
  o->fetch = this;
  o->owned = std::move(wire);
  uv_buf_t buf = uv_buf_init(o->owned.data(), static_cast<unsigned>(o->owned.size()));
  o->req.data = o;
  int rc = uv_write(&o->req, reinterpret_cast<uv_stream_t*>(&socket_->tcp), &buf, 1, [](uv_write_t* req, int st) {
    auto* out = static_cast<Out*>(req->data);
    out->fetch->on_written(out, st);
  });
  if (rc != 0) {
    delete o;
    end_with(CL_EIO);
    return;
  }
  writes_in_flight_++;
}

void Fetch::on_written(Out* o, int status) {
  writes_in_flight_--;
  copied_bytes_ -= o->copied;
  if (o->done) done_.push_back(std::move(o->done));
  delete o;
  // A failed write (the server closed early) is not the end: the response may still be read to its end.
  if (status == 0 && connected_ && !ended_ && !paused_) arm(options_.idle_timeout_ms);
  defer();
}

cl_status_t Fetch::write(std::string_view data, WriteDone done) {
  if (finished_ || body_ended_) return CL_ESTATE;
  if (options_.body_length > 0 && static_cast<uint64_t>(body_sent_) + data.size() > static_cast<uint64_t>(options_.body_length)) {
    return CL_ESTATE;
  }
  if (ended_) {
    if (done) {
      done_.push_back(std::move(done));
      defer();
    }
    return CL_ECLOSING;
  }
  if (!done && copied_bytes_ + data.size() > kMaxCopiedBytes) return CL_EBUSY;
  body_sent_ += static_cast<int64_t>(data.size());
  if (options_.body_length > 0 && body_sent_ == options_.body_length) body_ended_ = true;
  if (data.empty()) {  // an empty chunk would end a chunked body
    if (done) {
      done_.push_back(std::move(done));
      defer();
    }
    return CL_OK;
  }
  bool lent = static_cast<bool>(done);
  queue(lent ? std::string() : std::string(data), lent ? data : std::string_view(), std::move(done),
        options_.body_length < 0);
  return CL_OK;
}

cl_status_t Fetch::end() {
  if (finished_ || options_.body_length >= 0 || body_ended_) return CL_ESTATE;
  body_ended_ = true;
  if (!ended_) queue("0\r\n\r\n", {}, nullptr, false);
  return CL_OK;
}

cl_status_t Fetch::pause(bool paused) {
  if (ended_ || finished_) return CL_ESTATE;
  paused_ = paused;
  if (connected_) {
    if (paused) uv_timer_stop(&timer_);  // a paused reader is not a silent server
    else arm(options_.idle_timeout_ms);
  }
  update_reading();
  if (!paused) defer();  // held bytes are delivered from a clean loop turn
  return CL_OK;
}

cl_status_t Fetch::cancel(cl_status_t status) {
  if (ended_ || finished_) return CL_ESTATE;
  end_with(status);
  return CL_OK;
}

void Fetch::detach() {
  on_response_ = nullptr;
  on_body_ = nullptr;
  if (!ended_) end_with(CL_ECANCELED);
}

const std::string* Fetch::header(std::string_view name) const {
  for (const auto& [n, v] : headers_) {
    if (n.size() == name.size() && strncasecmp(n.data(), name.data(), n.size()) == 0) return &v;
  }
  return nullptr;
}

void Fetch::update_reading() {
  if (!socket_) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&socket_->tcp);
  bool want = !ended_ && (!paused_ || !connected_);  // the handshake is read even while paused
  if (want == reading_) return;
  reading_ = want;
  if (!want) {
    uv_read_stop(stream);
    return;
  }
  uv_read_start(
      stream,
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        Fetch* f = static_cast<Socket*>(h->data)->fetch;
        *buf = uv_buf_init(f->read_buf_, sizeof f->read_buf_);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        static_cast<Socket*>(s->data)->fetch->on_read(n, buf);
      });
}

void Fetch::on_read(ssize_t n, const uv_buf_t* buf) {
  if (ended_) return;
  if (n < 0) {
    if (!connected_) {
      end_with(tls_ && tls_->verify_failed() ? CL_EPERM : CL_EIO);
      return;
    }
    on_eof();
    return;
  }
  if (n == 0) return;
  arm(connected_ ? options_.idle_timeout_ms : 0);
  std::string_view data(buf->base, static_cast<size_t>(n));
  if (!tls_) {
    parse(data);
    return;
  }
  std::string plain, wire;
  bool ok = tls_->receive(data, &plain, &wire);
  send_raw(std::move(wire));
  if (!connected_) {
    if (!ok) {
      end_with(tls_->verify_failed() ? CL_EPERM : CL_EIO);
      return;
    }
    if (!tls_->established()) return;
    peer_fp_ = tls_->peer_fingerprint();
    if (!options_.pin_sha256.empty() && peer_fp_ != options_.pin_sha256) {
      end_with(CL_EPERM);
      return;
    }
    on_ready();
    if (ended_) return;
  }
  if (!plain.empty()) parse(plain);
  if (!ok && !ended_) on_eof();  // close_notify or a TLS failure: what came so far decides
}

void Fetch::on_eof() {
  if (ended_) return;
  llhttp_finish(&parser_);  // ends a body delimited by the connection's end
  if (ended_) return;
  if (held_complete_) {
    update_reading();
    return;
  }
  end_with(CL_ECLOSING);
}

void Fetch::parse(std::string_view data) {
  llhttp_errno_t err = llhttp_execute(&parser_, data.data(), data.size());
  if (ended_ || err == HPE_OK) return;
  if (held_complete_ && err == HPE_PAUSED) return;
  end_with(CL_EINVAL);
}

void Fetch::arm(uint64_t ms) {
  if (ms == 0) return;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Fetch*>(t->data)->end_with(CL_ETIMEDOUT); }, ms, 0);
}

void Fetch::end_with(cl_status_t status) {
  if (ended_) return;
  ended_ = true;
  final_status_ = status;
  uv_timer_stop(&timer_);
  if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&resolver_));
  for (Out* o : pending_) {
    if (o->done) done_.push_back(std::move(o->done));
    copied_bytes_ -= o->copied;
    delete o;
  }
  pending_.clear();
  close_socket();
  defer();
}

void Fetch::close_socket() {
  Socket* s = socket_;
  if (!s) return;
  socket_ = nullptr;
  reading_ = false;
  uv_close(as_handle(&s->tcp), [](uv_handle_t* h) {
    auto* sock = static_cast<Socket*>(h->data);
    Fetch* f = sock->fetch;
    delete sock;
    f->sockets_open_--;
    f->defer();
    f->handle_closed();
  });
}

void Fetch::defer() {
  if (finished_ || uv_is_active(as_handle(&later_))) return;
  uv_timer_start(&later_, [](uv_timer_t* t) { static_cast<Fetch*>(t->data)->run_deferred(); }, 0, 0);
}

void Fetch::run_deferred() {
  while (!done_.empty()) {
    std::vector<WriteDone> dones;
    dones.swap(done_);
    for (auto& d : dones) d();
  }
  if (!ended_ && !paused_ && (!held_.empty() || held_complete_)) {
    while (!ended_ && !paused_ && !held_.empty()) {  // in pieces no larger than a read, as promised
      std::string piece = held_.substr(0, sizeof read_buf_);
      held_.erase(0, piece.size());
      if (on_body_) on_body_(CL_OK, piece);
    }
    if (!ended_ && !paused_ && held_complete_) end_with(CL_OK);
    update_reading();
  }
  if (!ended_ || finished_ || sockets_open_ > 0 || writes_in_flight_ > 0) return;
  finished_ = true;
  OnBody cb = std::move(on_body_);
  on_response_ = nullptr;
  if (cb) cb(final_status_, {});
  done_.clear();  // nothing can be owed after the final call: write() refuses from here on
  uv_close(as_handle(&timer_), [](uv_handle_t* h) { static_cast<Fetch*>(h->data)->handle_closed(); });
  uv_close(as_handle(&later_), [](uv_handle_t* h) { static_cast<Fetch*>(h->data)->handle_closed(); });
}

void Fetch::handle_closed() {
  if (--handles_open_ == 0 && finished_) delete this;
}

// ---- llhttp callbacks ------------------------------------------------------------------------------------

llhttp_settings_t Fetch::settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_status = [](llhttp_t* p, const char*, size_t len) { return static_cast<Fetch*>(p->data)->on_header_bytes(len); };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t len) {
    auto* f = static_cast<Fetch*>(p->data);
    if (f->in_value_) {
      f->headers_.emplace_back(std::move(f->head_field_), std::move(f->head_value_));
      f->head_field_.clear();
      f->head_value_.clear();
      f->in_value_ = false;
    }
    f->head_field_.append(at, len);
    return f->on_header_bytes(len);
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t len) {
    auto* f = static_cast<Fetch*>(p->data);
    f->in_value_ = true;
    f->head_value_.append(at, len);
    return f->on_header_bytes(len);
  };
  s.on_headers_complete = [](llhttp_t* p) { return static_cast<Fetch*>(p->data)->on_headers_complete(); };
  s.on_body = [](llhttp_t* p, const char* at, size_t len) { return static_cast<Fetch*>(p->data)->on_body_bytes(at, len); };
  s.on_message_complete = [](llhttp_t* p) { return static_cast<Fetch*>(p->data)->on_message_complete(); };
  return s;
}

int Fetch::on_header_bytes(size_t n) {
  if (ended_) return -1;
  head_bytes_ += n + 4;  // ": " and CRLF, roughly: bounds what a server can make us hold
  if (head_bytes_ <= options_.max_header_bytes) return 0;
  end_with(CL_EINVAL);
  return -1;
}

int Fetch::on_headers_complete() {
  if (ended_) return -1;
  if (in_value_ || !head_field_.empty()) headers_.emplace_back(std::move(head_field_), std::move(head_value_));
  head_field_.clear();
  head_value_.clear();
  in_value_ = false;
  unsigned status = llhttp_get_status_code(&parser_);
  if (status >= 100 && status < 200 && status != 101) {  // 100 Continue and friends: the real head follows
    informational_ = true;
    headers_.clear();
    head_bytes_ = 0;
    return 0;
  }
  responded_ = true;
  if (on_response_) on_response_(status);
  if (ended_) return -1;
  return options_.method == "HEAD" ? 1 : 0;  // 1: llhttp expects no body
}

int Fetch::on_body_bytes(const char* at, size_t len) {
  if (ended_) return -1;
  if (paused_ || !held_.empty()) {
    held_.append(at, len);  // at most what one read brought: reading stopped with the pause
    return 0;
  }
  if (on_body_) on_body_(CL_OK, std::string_view(at, len));
  return ended_ ? -1 : 0;
}

int Fetch::on_message_complete() {
  if (ended_) return -1;
  if (informational_) {
    informational_ = false;
    return 0;
  }
  if (paused_ || !held_.empty()) {
    held_complete_ = true;
    return HPE_PAUSED;
  }
  end_with(CL_OK);
  return HPE_PAUSED;  // anything after the response is not ours to parse
}

}  // namespace cloudlet::http
