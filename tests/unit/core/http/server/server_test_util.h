// Test harness for the HTTP server: a real cloudlet::Loop + http::Server on 127.0.0.1 (ephemeral port) run in
// the test thread, driven by blocking client sockets (plain or TLS) in a client thread. Real bytes over
// loopback, no mocks. Every wait has a deadline so a server bug fails a test instead of hanging it, and every
// run ends with the server shut down and Loop::close() == 0.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "http/request.h"
#include "http/server.h"
#include "loop/loop.h"

namespace httptest {

namespace http = cloudlet::http;
using Clock = std::chrono::steady_clock;
using Request = http::Request;

inline int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}
inline void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Waits (polling) until pred() holds or timeout_ms passes; returns pred()'s last value.
inline bool wait_for(const std::function<bool()>& pred, int timeout_ms) {
  auto start = Clock::now();
  while (!pred()) {
    if (ms_since(start) > timeout_ms) return pred();
    sleep_ms(2);
  }
  return true;
}

// A 64-bit FNV-1a, for comparing large bodies in messages.
inline uint64_t fnv(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Deterministic pseudo-random bytes.
inline std::string pattern_bytes(size_t n, uint32_t seed = 1) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/cl-http-test-XXXXXX";
    const char* p = mkdtemp(tmpl);
    if (!p) abort();
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& rel) const { return path_ + "/" + rel; }
  void write(const std::string& rel, std::string_view data) const {
    std::filesystem::create_directories(std::filesystem::path(file(rel)).parent_path());
    std::ofstream f(file(rel), std::ios::binary | std::ios::trunc);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
  }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// ---- responses ----------------------------------------------------------------------------------------------

enum class Framing { none, length, chunked, close };

struct Response {
  std::string version;  // "HTTP/1.1"
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  Framing framing = Framing::none;
  std::string raw_head;

  bool has(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return true;
    }
    return false;
  }
  std::string header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return {};
  }
  size_t count(std::string_view name) const {
    size_t n = 0;
    for (const auto& [k, v] : headers) n += k == name;
    return n;
  }
  bool closes() const { return header("connection") == "close"; }
};

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return s;
}

// ---- clients ------------------------------------------------------------------------------------------------

// A blocking client with deadlines. recv_some/send_all are virtual so TlsClient can wrap them.
class Client {
 public:
  // rcvbuf > 0 shrinks the receive buffer (set before connect so the window is small too). source: the
  // client's own loopback address ("127.0.0.2"...), for tests of per-address limits; nullptr: 127.0.0.1.
  explicit Client(uint16_t port, int rcvbuf = 0, const char* source = nullptr) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (source) {
      sockaddr_in s{};
      s.sin_family = AF_INET;
      inet_pton(AF_INET, source, &s.sin_addr);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&s), sizeof s) != 0) {
        connect_errno_ = errno;
        ::close(fd_);
        fd_ = -1;
        return;
      }
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      connect_errno_ = errno;
      ::close(fd_);
      fd_ = -1;
      return;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  virtual ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  int connect_errno() const { return connect_errno_; }
  int fd() const { return fd_; }
  bool eof() const { return eof_; }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with a TCP reset (SO_LINGER 0): the server sees ECONNRESET, and writes to it fail.
  void reset() {
    if (fd_ < 0) return;
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }
  void shutdown_write() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
  }

  virtual bool send(std::string_view data) {
    while (!data.empty()) {
      if (fd_ < 0) return false;
      pollfd p{fd_, POLLOUT, 0};
      if (poll(&p, 1, 5000) <= 0) return false;
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one response. head: the request was HEAD (no body whatever the headers say). A 1xx response is
  // returned as is (the caller reads the final one next). nullopt on timeout, close or a malformed response.
  std::optional<Response> read_response(bool head = false, int timeout_ms = 5000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill(deadline)) return std::nullopt;
    }
    Response r;
    r.raw_head = buf_.substr(0, end + 4);
    std::string_view head_text(r.raw_head);
    buf_.erase(0, end + 4);
    size_t eol = head_text.find("\r\n");
    std::string_view status_line = head_text.substr(0, eol);
    size_t sp1 = status_line.find(' ');
    if (sp1 == std::string_view::npos) return std::nullopt;
    r.version = std::string(status_line.substr(0, sp1));
    r.status = atoi(std::string(status_line.substr(sp1 + 1, 3)).c_str());
    if (status_line.size() > sp1 + 5) r.reason = std::string(status_line.substr(sp1 + 5));
    size_t pos = eol + 2;
    while (pos < end) {
      size_t e = head_text.find("\r\n", pos);
      std::string_view line = head_text.substr(pos, e - pos);
      pos = e + 2;
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) return std::nullopt;
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      r.headers.emplace_back(lower(std::string(line.substr(0, colon))), std::string(v));
    }
    if (head || r.status < 200 || r.status == 204 || r.status == 304) return r;
    if (lower(r.header("transfer-encoding")) == "chunked") {
      r.framing = Framing::chunked;
      for (;;) {
        std::optional<std::string> chunk = read_chunk(deadline);
        if (!chunk) return std::nullopt;
        if (chunk->empty()) break;
        r.body += *chunk;
      }
      return r;
    }
    if (r.has("content-length")) {
      r.framing = Framing::length;
      size_t n = std::stoull(r.header("content-length"));
      while (buf_.size() < n) {
        if (!fill(deadline)) return std::nullopt;
      }
      r.body = buf_.substr(0, n);
      buf_.erase(0, n);
      return r;
    }
    r.framing = Framing::close;
    while (fill(deadline)) {
    }
    if (!eof_) return std::nullopt;
    r.body.swap(buf_);
    return r;
  }

  // The next chunk of a chunked body (after read_response_head-like use by SSE tests): "" is the last chunk
  // (its trailer consumed); nullopt on timeout or close.
  std::optional<std::string> read_chunk(Clock::time_point deadline) {
    size_t eol;
    while ((eol = buf_.find("\r\n")) == std::string::npos) {
      if (!fill(deadline)) return std::nullopt;
    }
    size_t n = std::stoull(buf_.substr(0, eol), nullptr, 16);
    buf_.erase(0, eol + 2);
    if (n == 0) {
      // Trailer section: lines until an empty one.
      for (;;) {
        while ((eol = buf_.find("\r\n")) == std::string::npos) {
          if (!fill(deadline)) return std::nullopt;
        }
        bool empty = eol == 0;
        buf_.erase(0, eol + 2);
        if (empty) return std::string();
      }
    }
    while (buf_.size() < n + 2) {
      if (!fill(deadline)) return std::nullopt;
    }
    std::string data = buf_.substr(0, n);
    if (buf_.compare(n, 2, "\r\n") != 0) return std::nullopt;
    buf_.erase(0, n + 2);
    return data;
  }
  std::optional<std::string> read_chunk(int timeout_ms = 5000) {
    return read_chunk(Clock::now() + std::chrono::milliseconds(timeout_ms));
  }

  // Reads only the head of a response (status line and headers): for streams read chunk by chunk.
  std::optional<Response> read_head(int timeout_ms = 5000) { return read_response(true, timeout_ms); }

  // Reads until the peer closes (EOF or reset) or the timeout; true if it closed. Bytes read go to *extra.
  bool wait_closed(int timeout_ms, std::string* extra = nullptr) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (fill(deadline)) {
    }
    if (extra) *extra = buf_;
    buf_.clear();
    return eof_;
  }

  // Bytes already received but not consumed.
  const std::string& buffered() const { return buf_; }

  // Reads at least n raw bytes (or until timeout/close).
  std::string read_raw(size_t n, int timeout_ms = 5000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (buf_.size() < n && fill(deadline)) {
    }
    std::string out = buf_.substr(0, std::min(n, buf_.size()));
    buf_.erase(0, out.size());
    return out;
  }

  // Sends a request and reads its response.
  std::optional<Response> roundtrip(std::string_view req, bool head = false, int timeout_ms = 5000) {
    if (!send(req)) return std::nullopt;
    return read_response(head, timeout_ms);
  }

 protected:
  // >0 bytes, 0 EOF, -1 error (reset), -2 timeout.
  virtual ssize_t recv_some(char* buf, size_t n, int timeout_ms) {
    if (fd_ < 0) return -1;
    pollfd p{fd_, POLLIN, 0};
    int rc = poll(&p, 1, timeout_ms);
    if (rc == 0) return -2;
    if (rc < 0) return errno == EINTR ? -2 : -1;
    ssize_t got = ::recv(fd_, buf, n, 0);
    if (got < 0) return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
    return got;
  }

  // Reads more bytes into buf_; false on EOF/reset (eof_ set) or when the deadline passed.
  bool fill(Clock::time_point deadline) {
    if (eof_) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    char tmp[65536];
    ssize_t n = recv_some(tmp, sizeof tmp, static_cast<int>(left));
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
    if (n == 0 || n == -1) eof_ = true;
    return false;
  }

  int fd_ = -1;
  int connect_errno_ = 0;
  std::string buf_;
  bool eof_ = false;
};

// ---- TLS ----------------------------------------------------------------------------------------------------

// Writes a throwaway self-signed certificate (CN and SAN "localhost", P-256) and its key into dir.
inline bool make_self_signed(const std::string& dir, std::string* cert_path, std::string* key_path) {
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  if (!pkey) return false;
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  if (X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, "DNS:localhost")) {
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  bool ok = X509_sign(x, pkey, EVP_sha256()) > 0;
  *cert_path = dir + "/cert.pem";
  *key_path = dir + "/key.pem";
  FILE* f = fopen(cert_path->c_str(), "w");
  ok = ok && f && PEM_write_X509(f, x) == 1;
  if (f) fclose(f);
  f = fopen(key_path->c_str(), "w");
  ok = ok && f && PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (f) fclose(f);
  X509_free(x);
  EVP_PKEY_free(pkey);
  return ok;
}

// A TLS client that verifies the server against the throwaway certificate (as its own trust anchor).
class TlsClient : public Client {
 public:
  TlsClient(uint16_t port, const std::string& ca_file) : Client(port) {
    if (fd_ < 0) return;
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    SSL_set_fd(ssl_, fd_);
    set_timeout(5000);
    int rc = SSL_connect(ssl_);
    if (rc != 1) {
      char err[256];
      ERR_error_string_n(ERR_get_error(), err, sizeof err);
      handshake_error_ = err;
      ERR_clear_error();
    } else {
      handshake_ok_ = true;
    }
  }
  ~TlsClient() override {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
  }
  bool handshake_ok() const { return handshake_ok_; }
  const std::string& handshake_error() const { return handshake_error_; }
  std::string version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }

  bool send(std::string_view data) override {
    if (!handshake_ok_) return false;
    while (!data.empty()) {
      int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

 protected:
  void set_timeout(int ms) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ssize_t recv_some(char* buf, size_t n, int timeout_ms) override {
    if (!handshake_ok_) return -1;
    set_timeout(std::max(1, timeout_ms));
    int got = SSL_read(ssl_, buf, static_cast<int>(n));
    if (got > 0) return got;
    int err = SSL_get_error(ssl_, got);
    ERR_clear_error();
    if (err == SSL_ERROR_ZERO_RETURN) return 0;
    if (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) return -2;
    if (err == SSL_ERROR_WANT_READ) return -2;
    return err == SSL_ERROR_SYSCALL && got == 0 ? 0 : -1;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool handshake_ok_ = false;
  std::string handshake_error_;
};

// ---- request builders ---------------------------------------------------------------------------------------

inline std::string get(std::string_view target, std::string_view extra = {}) {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\n" + std::string(extra) + "\r\n";
}
inline std::string head(std::string_view target, std::string_view extra = {}) {
  return "HEAD " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\n" + std::string(extra) + "\r\n";
}
inline std::string post(std::string_view target, std::string_view body, std::string_view extra = {}) {
  return "POST " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + std::string(extra) + "\r\n" + std::string(body);
}
inline std::string chunked(const std::vector<std::string>& chunks) {
  std::string out;
  char len[32];
  for (const auto& c : chunks) {
    snprintf(len, sizeof len, "%zx\r\n", c.size());
    out += len + c + "\r\n";
  }
  return out + "0\r\n\r\n";
}

// ---- the harness ----------------------------------------------------------------------------------------------

class Harness {
 public:
  static http::ListenerOptions options() {
    http::ListenerOptions o;
    o.name = "test";
    o.host = "127.0.0.1";
    o.port = 0;
    o.limits.header_timeout_ms = 3000;
    o.limits.body_timeout_ms = 3000;
    o.limits.idle_timeout_ms = 3000;
    o.limits.write_timeout_ms = 5000;
    o.host_check = http::HostCheck::off;  // tests send all kinds of Host; server_guard_test checks it
    return o;
  }

  explicit Harness(http::ListenerOptions o = options()) : name_(o.name) {
    signal(SIGPIPE, SIG_IGN);  // as cloudletd does (Loop::watch_signals): a dead peer is an error, not a signal
    server = std::make_unique<http::Server>(loop, spool.path());
    std::string error;
    cl_status_t st = server->listen(o, &error);
    EXPECT_EQ(st, CL_OK) << error;
    if (st == CL_OK) port = server->listener(name_)->bound_port;
  }
  ~Harness() {
    if (!ran_) {
      // A test that never ran the loop (failed set-up): still close cleanly.
      run([] {});
    }
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  http::Router& router() { return server->listener(name_)->router; }

  void route(std::string method, std::string pattern, std::function<cl_status_t(Request&)> handler, uint32_t flags = 0,
             uint64_t max_body = 0) {
    http::Route r;
    r.method = std::move(method);
    r.pattern = std::move(pattern);
    r.flags = flags;
    r.max_body = max_body;
    r.handler = std::move(handler);
    EXPECT_EQ(router().add(std::move(r)), CL_OK);
  }

  // Runs the loop in this thread and client() in a client thread. When client() returns the server shuts
  // down gracefully; if deadline_ms passes first the test fails and the server is closed by force.
  void run(std::function<void()> client, int deadline_ms = 20000, uint64_t shutdown_grace_ms = 2000) {
    ran_ = true;
    watchdog_ = loop.timer_start(deadline_ms, 0, [this] {
      watchdog_ = 0;
      ADD_FAILURE() << "test deadline passed: closing the server by force";
      shutdown(0);
    });
    std::thread t([&] {
      client();
      loop.post([this, shutdown_grace_ms] { shutdown(shutdown_grace_ms); });
    });
    loop.run();
    t.join();
    EXPECT_TRUE(shut_down_) << "the server did not finish shutting down";
    server.reset();
    EXPECT_EQ(loop.close(), 0);
  }

  // Loop thread: starts the graceful shutdown (once).
  void shutdown(uint64_t grace_ms) {
    if (shutdown_started_) return;
    shutdown_started_ = true;
    server->shutdown(grace_ms, [this] {
      shut_down_ = true;
      stats = server->stats();
      if (watchdog_) loop.timer_stop(watchdog_);
      watchdog_ = 0;
    });
  }

  // Client thread: runs fn on the loop and waits for it (false if it did not run within timeout_ms).
  bool on_loop(std::function<void()> fn, int timeout_ms = 5000) {
    auto done = std::make_shared<std::promise<void>>();
    auto fut = done->get_future();
    if (!loop.post([fn = std::move(fn), done] {
          fn();
          done->set_value();
        })) {
      return false;
    }
    return fut.wait_for(std::chrono::milliseconds(timeout_ms)) == std::future_status::ready;
  }

  TempDir spool;  // the server's upload spool
  cloudlet::Loop loop;
  std::unique_ptr<http::Server> server;
  uint16_t port = 0;
  http::ServerStats stats;  // copied when the shutdown completed

 private:
  std::string name_;
  cloudlet::Loop::TimerId watchdog_ = 0;
  bool ran_ = false;
  bool shutdown_started_ = false;
  bool shut_down_ = false;
};

// Common handlers.
inline std::function<cl_status_t(Request&)> text(std::string body) {
  return [body](Request& r) { return r.send(200, "text/plain; charset=utf-8", body); };
}
inline cl_status_t echo_body(Request& r) { return r.send(200, "application/octet-stream", r.body); }

}  // namespace httptest
