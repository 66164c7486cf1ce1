#include "http/request_guard.h"

#include <arpa/inet.h>

#include <cstring>

#include "http/header_text.h"
#include "http/request.h"

namespace cloudlet::http {

namespace {

// "name", "name:port", "[v6]" or "[v6]:port" -> host (without brackets) and port ("" when absent). False
// when malformed.
bool split_authority(std::string_view a, std::string_view* host, std::string_view* port) {
  *port = {};
  if (a.empty()) return false;
  if (a.front() == '[') {
    size_t close = a.find(']');
    if (close == std::string_view::npos) return false;
    *host = a.substr(1, close - 1);
    std::string_view rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      *port = rest.substr(1);
    }
  } else {
    size_t colon = a.rfind(':');
    if (colon != std::string_view::npos) {
      if (a.find(':') != colon) return false;  // a bare IPv6 literal needs brackets
      *port = a.substr(colon + 1);
      a = a.substr(0, colon);
    }
    *host = a;
  }
  if (host->empty() || port->size() > 5) return false;
  for (char c : *port) {
    if (c < '0' || c > '9') return false;
  }
  for (char c : *host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || c == ':' || c == '%';
    if (!ok) return false;
  }
  return true;
}

std::string_view without_trailing_dot(std::string_view h) {
  if (h.size() > 1 && h.back() == '.') h.remove_suffix(1);
  return h;
}

// The address a literal names, as 16 bytes (IPv4 as v4-mapped IPv6); false if h is not an IP literal.
bool ip_literal(std::string_view h, unsigned char out[16]) {
  if (h.size() >= INET6_ADDRSTRLEN) return false;
  char buf[INET6_ADDRSTRLEN];
  memcpy(buf, h.data(), h.size());
  buf[h.size()] = '\0';
  in_addr v4;
  if (inet_pton(AF_INET, buf, &v4) == 1) {
    static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(out, prefix, 12);
    memcpy(out + 12, &v4, 4);
    return true;
  }
  return inet_pton(AF_INET6, buf, out) == 1;
}

bool same_ip(std::string_view a, std::string_view b) {
  unsigned char x[16], y[16];
  return ip_literal(a, x) && ip_literal(b, y) && memcmp(x, y, 16) == 0;
}

bool localhost_name(std::string_view h) {
  constexpr std::string_view kSuffix = ".localhost";  // RFC 6761: always loopback, browsers resolve it so
  return iequals(h, "localhost") ||
         (h.size() > kSuffix.size() && iequals(h.substr(h.size() - kSuffix.size()), kSuffix));
}

// The authority the request names: the target's in absolute form (RFC 9112 3.2.2: it wins over Host), else
// the Host header. *count: how many Host headers there were.
std::string_view request_authority(const ::cl_request_s& r, size_t* count) {
  *count = 0;
  std::string_view host;
  for (const auto& [k, v] : r.headers) {
    if (iequals(k, "host")) {
      if ((*count)++ == 0) host = trim_ows(v);
    }
  }
  std::string_view t = r.target;
  for (std::string_view scheme : {"http://", "https://"}) {
    if (t.size() > scheme.size() && iequals(t.substr(0, scheme.size()), scheme)) {
      t.remove_prefix(scheme.size());
      return t.substr(0, t.find_first_of("/?#"));
    }
  }
  return host;
}

std::string_view port_or_default(std::string_view port, bool tls) {
  return port.empty() ? (tls ? "443" : "80") : port;
}

}  // namespace

bool safe_method(std::string_view m) { return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE"; }

Refusal check_host(const ListenerOptions& o, ::cl_request_s& r) {
  if (o.host_check == HostCheck::off) return {};
  size_t count = 0;
  std::string_view authority = request_authority(r, &count);
  if (count > 1) return {400, "more than one Host header"};
  if (authority.empty()) {
    // HTTP/1.0 may omit Host (and a browser never does); HTTP/1.1 must send it (RFC 9112 3.2).
    if (count == 0 && r.http_major == 1 && r.http_minor == 0) return {};
    return {400, "missing Host header"};
  }
  std::string_view host, port;
  if (!split_authority(authority, &host, &port)) return {400, "malformed Host header"};
  host = without_trailing_dot(host);
  if (localhost_name(host)) return {};
  unsigned char addr[16];
  bool is_ip = ip_literal(host, addr);
  // The bound address counts unless it is the wildcard (0.0.0.0 is no address a client should name).
  static const unsigned char kAny4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
  static const unsigned char kAny6[16] = {};
  bool bound = is_ip && same_ip(host, o.host) && memcmp(addr, kAny4, 16) != 0 && memcmp(addr, kAny6, 16) != 0;
  if (is_ip && (o.host_check == HostCheck::names_or_ip || bound ||
                (r.addresses() == CL_OK && same_ip(host, r.local_ip)))) {
    return {};
  }
  for (const auto& name : o.server_names) {
    std::string_view n = without_trailing_dot(name);
    if (iequals(n, host) || (is_ip && same_ip(n, host))) return {};
  }
  return {421, "this server does not serve the host name '" + std::string(host) +
                   "' (add it to the listener's server_names)"};
}

Refusal check_cross_site(const ::cl_request_s& r) {
  bool safe = safe_method(r.method);
  std::string_view site;
  if (r.header("sec-fetch-site", &site) == CL_OK) {
    site = trim_ows(site);
    if (iequals(site, "cross-site") || iequals(site, "same-site")) {
      std::string_view mode;
      bool navigate = r.header("sec-fetch-mode", &mode) == CL_OK && iequals(trim_ows(mode), "navigate");
      if (!safe || !navigate) return {403, "cross-site request refused"};
    }
  }
  if (safe) return {};
  std::string_view origin;
  if (r.header("origin", &origin) != CL_OK) return {};
  origin = trim_ows(origin);
  size_t sep = origin.find("://");
  if (sep == std::string_view::npos) return {403, "cross-origin request refused (Origin: null or malformed)"};
  bool origin_tls = iequals(origin.substr(0, sep), "https");
  std::string_view oh, op, hh, hp;
  size_t count = 0;
  std::string_view authority = request_authority(r, &count);
  if (!split_authority(origin.substr(sep + 3), &oh, &op) || !split_authority(authority, &hh, &hp) ||
      !iequals(without_trailing_dot(oh), without_trailing_dot(hh)) ||
      port_or_default(op, origin_tls) != port_or_default(hp, origin_tls)) {
    return {403, "cross-origin request refused (Origin does not match Host)"};
  }
  return {};
}

}  // namespace cloudlet::http
