// A scripted HTTP(S) server for outbound-request tests: one thread, blocking sockets on 127.0.0.1 (ephemeral
// port), optional TLS through OpenSSL, one connection at a time. Each connection is handed to a script that
// reads the request and writes whatever bytes the test wants (valid, malformed, slow or none at all).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace fetchtest {

// One accepted connection, plain or TLS.
class Conn {
 public:
  Conn(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  // Reads up to n bytes; 0 at the end or on error (or after 20 s of silence).
  size_t read_some(char* buf, size_t n) {
    if (!ssl_ || SSL_pending(ssl_) == 0) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20000) <= 0) return 0;
    }
    ssize_t got = ssl_ ? SSL_read(ssl_, buf, static_cast<int>(n)) : ::read(fd_, buf, n);
    return got > 0 ? static_cast<size_t>(got) : 0;
  }
  bool write(std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ssl_ ? SSL_write(ssl_, s.data(), static_cast<int>(s.size())) : ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      s.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads the request head (through the blank line) into head, and the body (Content-Length or chunked,
  // decoded) into body. false when the client went away first.
  bool read_request(std::string* head, std::string* body) {
    while (buf_.find("\r\n\r\n") == std::string::npos) {
      if (!fill()) return false;
    }
    size_t end = buf_.find("\r\n\r\n") + 4;
    *head = buf_.substr(0, end);
    buf_.erase(0, end);
    body->clear();
    std::string lower = *head;
    for (auto& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    size_t cl = lower.find("\r\ncontent-length:");
    if (cl != std::string::npos) {
      size_t n = std::strtoull(lower.c_str() + cl + 17, nullptr, 10);
      while (buf_.size() < n) {
        if (!fill()) return false;
      }
      *body = buf_.substr(0, n);
      buf_.erase(0, n);
      return true;
    }
    if (lower.find("transfer-encoding: chunked") == std::string::npos) return true;
    for (;;) {
      while (buf_.find("\r\n") == std::string::npos) {
        if (!fill()) return false;
      }
      size_t n = std::strtoull(buf_.c_str(), nullptr, 16);
      size_t line = buf_.find("\r\n") + 2;
      while (buf_.size() < line + n + 2) {
        if (!fill()) return false;
      }
      body->append(buf_, line, n);
      buf_.erase(0, line + n + 2);
      if (n == 0) return true;
    }
  }
  int fd() const { return fd_; }

 private:
  bool fill() {
    char tmp[65536];
    size_t n = read_some(tmp, sizeof tmp);
    if (n == 0) return false;
    buf_.append(tmp, n);
    return true;
  }
  int fd_;
  SSL* ssl_;
  std::string buf_;
};

class Server {
 public:
  using Script = std::function<void(Conn&)>;
  // ctx: a server SSL_CTX (borrowed, must outlive the server) or null for plain HTTP.
  explicit Server(Script script, SSL_CTX* ctx = nullptr) : script_(std::move(script)), ctx_(ctx) {
    signal(SIGPIPE, SIG_IGN);  // as cloudletd does (core/loop): a client that left is an error, not a signal
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 16) != 0) abort();
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~Server() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  uint16_t port() const { return port_; }
  std::string url(std::string_view path, bool tls = false, std::string_view host = "127.0.0.1") const {
    return std::string(tls ? "https://" : "http://") + std::string(host) + ":" + std::to_string(port_) +
           std::string(path);
  }
  int connections() const { return connections_; }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      connections_++;
      SSL* ssl = nullptr;
      bool ok = true;
      if (ctx_) {
        ssl = SSL_new(ctx_);
        SSL_set_fd(ssl, c);
        ok = SSL_accept(ssl) == 1;
      }
      if (ok) {
        Conn conn(c, ssl);
        script_(conn);
        if (ssl) SSL_shutdown(ssl);
      }
      if (ssl) SSL_free(ssl);
      close(c);
    }
  }
  Script script_;
  SSL_CTX* ctx_;
  int fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

}  // namespace fetchtest
