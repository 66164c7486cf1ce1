#include "http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

namespace cloudlet::test {

std::string HttpResponse::header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
  }
  return "";
}

bool parse_response(const std::string& data, size_t* pos, HttpResponse* out, bool head) {
  size_t end = data.find("\r\n\r\n", *pos);
  if (end == std::string::npos) return false;
  HttpResponse r;
  size_t line_end = data.find("\r\n", *pos);
  std::string status_line = data.substr(*pos, line_end - *pos);
  if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) {
    out->error = "bad status line: " + status_line;
    return false;
  }
  r.status = std::stoi(status_line.substr(9, 3));
  size_t p = line_end + 2;
  while (p < end) {
    size_t e = data.find("\r\n", p);
    std::string line = data.substr(p, e - p);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string v = line.substr(colon + 1);
      while (!v.empty() && v[0] == ' ') v.erase(0, 1);
      r.headers.emplace_back(line.substr(0, colon), v);
    }
    p = e + 2;
  }
  size_t body_start = end + 4;
  std::string cl = r.header("Content-Length");
  bool no_body = head || r.status == 204 || r.status == 304 || r.status < 200;
  if (!cl.empty()) {
    r.had_content_length = true;
    size_t n = std::stoull(cl);
    if (no_body) n = 0;
    if (data.size() < body_start + n) return false;
    r.body = data.substr(body_start, n);
    *pos = body_start + n;
  } else if (strcasecmp(r.header("Transfer-Encoding").c_str(), "chunked") == 0 && !no_body) {
    r.chunked = true;
    size_t q = body_start;
    for (;;) {
      size_t e = data.find("\r\n", q);
      if (e == std::string::npos) return false;
      size_t n = std::stoull(data.substr(q, e - q), nullptr, 16);
      if (data.size() < e + 2 + n + 2) return false;
      r.body.append(data, e + 2, n);
      q = e + 2 + n + 2;
      if (n == 0) break;
    }
    *pos = q;
  } else if (no_body) {
    *pos = body_start;
  } else {
    return false;  // delimited by close: the caller finishes at EOF
  }
  *out = std::move(r);
  return true;
}

namespace {
int connect_to(const std::string& host, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}
}  // namespace

int connect_loopback(uint16_t port) { return connect_to("127.0.0.1", port); }

bool send_all(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

HttpResponse http_raw(const std::string& host, uint16_t port, const std::string& request, uint64_t timeout_ms,
                      bool head) {
  HttpResponse r;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int fd = connect_to(host, port);
  if (fd < 0) {
    r.error = std::string("connect: ") + strerror(errno);
    return r;
  }
  if (!send_all(fd, request)) {
    r.error = "send failed";
    close(fd);
    return r;
  }
  std::string data;
  char buf[65536];
  for (;;) {
    size_t pos = 0;
    if (parse_response(data, &pos, &r, head)) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.error = "timeout";
      break;
    }
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      // EOF: a close-delimited body ends here.
      size_t hend = data.find("\r\n\r\n");
      if (hend != std::string::npos && r.status == 0) {
        HttpResponse partial;
        std::string with_len = data;
        size_t p2 = 0;
        if (!parse_response(with_len, &p2, &partial, head)) {
          // Re-parse headers only and take the rest as body.
          std::string hdr = data.substr(0, hend + 4) ;
          std::string fake = hdr.substr(0, hend) + "\r\nContent-Length: " + std::to_string(data.size() - hend - 4) +
                             "\r\n\r\n" + data.substr(hend + 4);
          p2 = 0;
          if (parse_response(fake, &p2, &partial, head)) {
            partial.had_content_length = false;
            partial.headers.pop_back();
            r = partial;
          }
        }
      }
      if (r.status == 0) r.error = "connection closed before a complete response";
      break;
    }
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return r;
}

HttpResponse http_get(uint16_t port, const std::string& path, uint64_t timeout_ms) {
  return http_raw("127.0.0.1", port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout_ms);
}

}  // namespace cloudlet::test
