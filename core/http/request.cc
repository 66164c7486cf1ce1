#include "http/request.h"

#include <arpa/inet.h>

#include <fmt/format.h>

#include "http/connection.h"
#include "http/form_reader.h"
#include "http/header_text.h"
#include "http/server.h"
#include "http/status.h"
#include "http/url.h"
#include "loop/loop.h"

using cloudlet::http::Connection;
using cloudlet::http::iequals;

namespace {
// Header names the core writes itself.
bool reserved_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection") ||
         iequals(name, "date") || iequals(name, "server");
}

bool valid_header_text(std::string_view s, bool name) {
  for (unsigned char c : s) {
    if (c == '\r' || c == '\n' || c == 0) return false;
    if (name && (c <= ' ' || c == ':' || c >= 127)) return false;
  }
  return !(name && s.empty());
}

void release_later(cl_request_s* r, const void* ptr, cl_free_cb done, void* hint) {
  if (!done) return;
  r->listener->server->loop().defer([ptr, done, hint] { done(const_cast<void*>(ptr), hint); });
}
}  // namespace

namespace cloudlet::http {

void format_response_head(const Request& r, uint32_t status, std::string_view content_type, int64_t length,
                          std::string* out) {
  fmt::format_to(std::back_inserter(*out), "HTTP/1.1 {} {}\r\nServer: cloudletd\r\nDate: {}\r\n", status,
                 reason_phrase(status), r.listener->server->date());
  // A browser that reached us over HTTPS once must never fall back to plain HTTP here (a year).
  if (r.listener->tls) out->append("Strict-Transport-Security: max-age=31536000\r\n");
  // One Content-Type: the one passed to send() wins over one added as a header.
  std::string_view ctype = content_type.empty() ? std::string_view(r.content_type) : content_type;
  if (!ctype.empty()) fmt::format_to(std::back_inserter(*out), "Content-Type: {}\r\n", ctype);
  bool no_body_status = status == 204 || status == 304 || status < 200;
  if (!no_body_status) {
    if (length >= 0) {
      fmt::format_to(std::back_inserter(*out), "Content-Length: {}\r\n", length);
    } else if (r.chunked) {
      out->append("Transfer-Encoding: chunked\r\n");
    }
  }
  bool keep = r.conn && r.conn->keep_alive(r) && (length >= 0 || r.chunked || no_body_status || r.head);
  if (!keep) {
    out->append("Connection: close\r\n");
  } else if (r.http_minor == 0) {
    out->append("Connection: keep-alive\r\n");
  }
  out->append(r.resp_headers);
  out->append("\r\n");
}

}  // namespace cloudlet::http

cl_request_s::cl_request_s() = default;
cl_request_s::~cl_request_s() {
  if (body_reserved > 0) listener->server->body_release(body_reserved);
}

void cl_request_s::finish_detached() {
  if (notifying || notify_pending) return;  // freed once the callbacks ran
  if (done_hook) done_hook(done_hook_ud, this);
  delete this;
}

void cl_request_s::client_gone() {
  notifying = true;
  if (body_mode == BodyMode::stream && body_cb && !body_end_delivered) {
    body_end_delivered = true;
    body_cb(body_ud, this, CL_ECLOSING, cl_str_t{nullptr, 0});
  }
  if (close_cb && resp != Resp::ended) {
    auto cb = close_cb;
    close_cb = nullptr;
    cb(close_ud, this);
  }
  notifying = false;
  if (resp == Resp::ended) finish_detached();
}

namespace {
// Statuses whose responses never have a body (RFC 9110 6.4.1).
bool bodiless_status(uint32_t code) { return code < 200 || code == 204 || code == 304; }
}  // namespace

cl_status_t cl_request_s::header(std::string_view name, std::string_view* out) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) {
      *out = v;
      return CL_OK;
    }
  }
  return CL_ENOENT;
}

cl_status_t cl_request_s::param(std::string_view name, std::string_view* out) {
  for (const auto& [k, v] : path_params) {
    if (k == name) {
      *out = v;
      return CL_OK;
    }
  }
  if (!params_parsed) {
    params_parsed = true;
    Params query_params;
    // A malformed escape ends parsing there; the pairs before it stay (phones' URLs are what they are).
    cloudlet::http::parse_query(query, &query_params);
    params.insert(params.begin(), std::make_move_iterator(query_params.begin()),
                  std::make_move_iterator(query_params.end()));
  }
  for (const auto& [k, v] : params) {
    if (k == name) {
      *out = v;
      return CL_OK;
    }
  }
  return CL_ENOENT;
}

cl_status_t cl_request_s::param_at(size_t index, std::string_view* name, std::string_view* value) {
  std::string_view unused;
  if (!params_parsed) param(std::string_view("\x01", 1), &unused);  // parses the query once
  if (index >= params.size()) return CL_ENOENT;
  *name = params[index].first;
  *value = params[index].second;
  return CL_OK;
}

cl_status_t cl_request_s::addresses() {
  if (!local_ip.empty()) return CL_OK;
  if (!conn) return CL_ECLOSING;
  auto name_of = [](const sockaddr_storage& ss, std::string* ip, uint16_t* port) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ss.ss_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
      uv_ip4_name(in, buf, sizeof buf);
      *port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
      uv_ip6_name(in6, buf, sizeof buf);
      *port = ntohs(in6->sin6_port);
    }
    *ip = buf;
    if (ip->rfind("::ffff:", 0) == 0 && ip->find('.') != std::string::npos) ip->erase(0, 7);  // v4-mapped
  };
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(conn->tcp(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) name_of(ss, &local_ip, &local_port);
  len = sizeof ss;
  ss = {};
  if (uv_tcp_getpeername(conn->tcp(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) name_of(ss, &peer_ip, &peer_port);
  return local_ip.empty() ? CL_EIO : CL_OK;
}

cl_status_t cl_request_s::add_header(std::string_view name, std::string_view value) {
  if (resp != Resp::none) return CL_ESTATE;
  if (!valid_header_text(name, true) || !valid_header_text(value, false) || reserved_header(name)) return CL_EINVAL;
  if (iequals(name, "content-type")) {
    content_type.assign(value);
    return CL_OK;
  }
  resp_headers.append(name).append(": ").append(value).append("\r\n");
  return CL_OK;
}

cl_status_t cl_request_s::send(uint32_t code, std::string_view content_type, std::string_view data) {
  if (resp != Resp::none) return CL_ESTATE;
  if (code < 100 || code > 999) return CL_EINVAL;
  resp = Resp::ended;
  status = code;
  if (!conn) {
    finish_detached();
    return CL_ECLOSING;
  }
  std::string head;
  head.reserve(160 + resp_headers.size());
  cloudlet::http::format_response_head(*this, code, content_type, static_cast<int64_t>(data.size()), &head);
  bool no_body = head_only() || code == 204 || code == 304;
  bytes_out = no_body ? 0 : data.size();
  Connection* c = conn;
  c->write_copy2(head, no_body ? std::string_view() : data);
  bool gone = c->closing();  // the write found the peer gone
  c->response_done(this);  // frees this
  return gone ? CL_ECLOSING : CL_OK;
}

cl_status_t cl_request_s::start(uint32_t code, int64_t length) {
  if (resp != Resp::none) return CL_ESTATE;
  if (code < 100 || code > 999 || length < -1) return CL_EINVAL;
  resp = Resp::started;
  status = code;
  content_length = length;
  // A 204/304 has no body, so no chunk framing either (it would be read as the start of the next response).
  chunked = length < 0 && http_minor >= 1 && !head && !bodiless_status(code);
  // HTTP/1.0 without a length: the body ends with the connection.
  if (length < 0 && !chunked && !head && !bodiless_status(code)) keep_alive = false;
  if (!conn) return CL_ECLOSING;
  std::string h;
  cloudlet::http::format_response_head(*this, code, {}, length, &h);
  conn->write_copy(h);
  if (conn->closing()) return CL_ECLOSING;
  // HEAD of a stream of unknown length (SSE): the head is the whole answer. The handler would otherwise keep
  // the request (and the connection, and a stream slot) for as long as its stream runs.
  if (head && length < 0) conn->head_done(this);
  return CL_OK;
}

cl_status_t cl_request_s::write(const void* ptr, size_t len, cl_free_cb done, void* hint) {
  if (resp != Resp::started) {
    release_later(this, ptr, done, hint);  // done runs exactly once, also on error (ABI)
    return CL_ESTATE;
  }
  if (!conn || conn->closing()) {
    release_later(this, ptr, done, hint);
    return CL_ECLOSING;
  }
  // Copied writes (SSE events, heartbeats) have no completion to pace them: a client that lets them pile up
  // is dropped rather than held in memory. Lent writes are paced by their done callbacks.
  if (!done && conn->unsent() > listener->options.limits.max_unsent_bytes * cloudlet::http::kStreamUnsentFactor) {
    conn->abort_slow_reader();
    return CL_ECLOSING;
  }
  if (content_length >= 0 && bytes_out + len > static_cast<uint64_t>(content_length)) {
    release_later(this, ptr, done, hint);
    return CL_EINVAL;
  }
  bytes_out += len;
  if (head || len == 0 || bodiless_status(status)) {
    release_later(this, ptr, done, hint);
    return CL_OK;
  }
  if (chunked) conn->write_copy(fmt::format("{:x}\r\n", len));
  if (done) {
    conn->write_lent(ptr, len, done, hint);
  } else {
    conn->write_copy(std::string_view(static_cast<const char*>(ptr), len));
  }
  if (chunked) conn->write_copy("\r\n");
  return conn->closing() ? CL_ECLOSING : CL_OK;
}

cl_status_t cl_request_s::end() {
  if (resp != Resp::started) return CL_ESTATE;
  resp = Resp::ended;
  if (!conn) {
    finish_detached();
    return CL_OK;
  }
  if (chunked) conn->write_copy("0\r\n\r\n");
  if (content_length >= 0 && bytes_out != static_cast<uint64_t>(content_length) && !head) {
    keep_alive = false;  // the framing promised more bytes than were sent: only closing ends it
  }
  Connection* c = conn;
  c->response_done(this);
  return CL_OK;
}

cl_status_t cl_request_s::send_file(std::string_view file_path, std::string_view content_type) {
  if (resp != Resp::none) return CL_ESTATE;
  return listener->server->files().send_file(*this, std::string(file_path), content_type);
}

cl_status_t cl_request_s::sse_start() {
  if (resp != Resp::none) return CL_ESTATE;
  content_type = "text/event-stream";
  resp_headers.append("Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
  sse = true;
  return start(200, -1);
}

cl_status_t cl_request_s::sse_send(std::string_view event, std::string_view data) {
  if (!sse || resp != Resp::started) return CL_ESTATE;
  if (!conn) return CL_ECLOSING;
  if (event.find_first_of("\r\n") != std::string_view::npos) return CL_EINVAL;
  std::string msg;
  if (!event.empty()) msg.append("event: ").append(event).append("\n");
  // Every line of data becomes its own "data:" field; the browser joins them with '\n'.
  size_t pos = 0;
  do {
    size_t nl = data.find('\n', pos);
    std::string_view line = data.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    msg.append("data: ").append(line).append("\n");
    pos = nl == std::string_view::npos ? data.size() + 1 : nl + 1;
  } while (pos <= data.size());
  msg.append("\n");
  return write(msg.data(), msg.size(), nullptr, nullptr);
}

cl_status_t cl_request_s::send_error(uint32_t code, std::string_view message) {
  std::string text = message.empty()
                         ? fmt::format("{} {}\n", code, cloudlet::http::reason_phrase(code))
                         : fmt::format("{} {}\n{}\n", code, cloudlet::http::reason_phrase(code), message);
  return send(code, "text/plain; charset=utf-8", text);
}

cl_status_t cl_request_s::read_body(cl_body_cb cb, void* ud) {
  if (body_mode != BodyMode::stream || body_cb || !cb) return CL_ESTATE;
  body_cb = cb;
  body_ud = ud;
  if (conn) {
    conn->body_flow_changed();
  } else if (!body_end_delivered) {
    // The client already left: the reader still gets its ending (rule E2), from a clean stack.
    body_end_delivered = true;
    cl_request_s* self = this;
    listener->server->loop().defer([self, cb, ud] { cb(ud, self, CL_ECLOSING, cl_str_t{nullptr, 0}); });
  }
  return CL_OK;
}

cl_status_t cl_request_s::pause_body(bool paused) {
  if (body_mode != BodyMode::stream) return CL_ESTATE;
  body_reader_paused = paused;
  if (!paused && conn) conn->body_flow_changed();
  return CL_OK;
}
