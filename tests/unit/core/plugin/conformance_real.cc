// The conformance suite's adapter for the real host: the core's loop, store, HTTP server (loopback, real
// sockets), operations, events and plugin manager (plugin_core.h).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../http/server/ws_test_client.h"
#include "conformance_host.h"
#include "plugin_core.h"

namespace cloudlet::test {

namespace {

// A WebSocket client on a non-blocking loopback socket, read and written between turns of the core's loop
// (the suite is single-threaded): frames masked as browsers send them, the server's frames parsed as they come.
class RealWebSocket : public ConfWebSocket {
 public:
  explicit RealWebSocket(PluginCore& core) : core_(core) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(core.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {  // the backlog accepts
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RealWebSocket() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // Sends the upgrade request; the answer's status (0: none), its head consumed.
  int upgrade(const std::string& target) {
    write_all(httptest::upgrade_request(target));
    size_t end = std::string::npos;
    core_.run_until([&] {
      fill();
      end = in_.find("\r\n\r\n");
      return end != std::string::npos || eof_;
    }, 10000);
    if (end == std::string::npos || in_.compare(0, 9, "HTTP/1.1 ") != 0) return 0;
    int status = atoi(in_.c_str() + 9);
    in_.erase(0, end + 4);
    return status;
  }

  void send(int32_t type, const std::string& data) override {
    write_all(httptest::masked(static_cast<uint8_t>(0x80 | type), data));
  }
  void close(uint32_t code) override {
    write_all(httptest::masked(0x88, httptest::ws::close_payload(static_cast<uint16_t>(code), "")));
  }

  std::optional<Frame> next(uint64_t timeout_ms) override {
    std::optional<Frame> out;
    core_.run_until([&] {
      fill();
      out = take_frame();
      return out.has_value() || eof_;
    }, timeout_ms);
    return out;
  }

 private:
  // Writes between loop turns: the server reads only while its loop runs.
  void write_all(const std::string& bytes) {
    size_t off = 0;
    core_.run_until([&] {
      while (fd_ >= 0 && off < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) return n < 0 && errno != EAGAIN;  // a broken socket: give up
        off += static_cast<size_t>(n);
      }
      return true;
    }, 10000);
  }
  void fill() {
    char buf[65536];
    for (;;) {
      ssize_t n = fd_ >= 0 ? ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) : 0;
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || errno != EAGAIN) eof_ = true;
      return;
    }
  }
  // One whole server frame (final, unmasked) off the front of what was read.
  std::optional<Frame> take_frame() {
    if (in_.size() < 2) return std::nullopt;
    size_t head = 2;
    uint64_t len = uint8_t(in_[1]) & 0x7F;
    if (len >= 126) {
      size_t ext = len == 126 ? 2 : 8;
      if (in_.size() < 2 + ext) return std::nullopt;
      len = 0;
      for (size_t i = 0; i < ext; i++) len = (len << 8) | uint8_t(in_[2 + i]);
      head += ext;
    }
    if (in_.size() < head + len) return std::nullopt;
    Frame f;
    int opcode = uint8_t(in_[0]) & 0x0F;
    std::string payload = in_.substr(head, len);
    in_.erase(0, head + len);
    if (opcode == 0x8) {
      f.code = payload.size() >= 2 ? (uint8_t(payload[0]) << 8) | uint8_t(payload[1]) : 0;
      f.data = payload.size() > 2 ? payload.substr(2) : "";
    } else {
      f.type = opcode;
      f.data = std::move(payload);
    }
    return f;
  }

  PluginCore& core_;
  int fd_ = -1;
  std::string in_;
  bool eof_ = false;
};

class RealAdapter : public ConformanceHost {
 public:
  RealAdapter() {
    core_.events.subscribe("*", [this](std::string_view topic, std::string_view payload) {
      events_.emplace_back(std::string(topic), std::string(payload));
    });
  }

  void configure(const std::string& files_dir) override {
    core_.guards = {"manager"};
    core_.files_dir = files_dir;
  }
  cl_status_t load(const std::string& so_path, const std::vector<std::string>& grants, std::string* error) override {
    return core_.load("conformance", so_path, {}, error, grants);
  }

  std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args) override {
    return core_.call(op, args, 10000);
  }

  ConfResponse request(const std::string& method, const std::string& target, const std::string& body,
                       const Headers& headers) override {
    std::string raw = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    for (const auto& [k, v] : headers) raw += k + ": " + v + "\r\n";
    if (!body.empty() || method == "POST") raw += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    raw += "\r\n" + body;
    HttpResponse r = core_.http(raw, 10000);
    ConfResponse out;
    out.status = r.status;
    out.headers = r.headers;
    out.body = r.body;
    return out;
  }

  std::unique_ptr<ConfWebSocket> websocket(const std::string& target, int* status) override {
    auto ws = std::make_unique<RealWebSocket>(core_);
    *status = ws->upgrade(target);
    if (*status != 101) return nullptr;
    return ws;
  }

  void publish(const std::string& topic, const std::string& json) override { core_.events.publish(topic, json); }

  void provide(const std::string& op, std::function<std::string(const std::string&)> result,
               uint32_t flags) override {
    core_.ops.add(
        op, [result](std::string_view args, Operations::Reply reply) { reply(CL_OK, result(std::string(args))); },
        nullptr, flags);
  }

  int events_with(const std::string& topic, const std::string& needle) override {
    core_.run_until([] { return false; }, 20);  // deliveries are asynchronous
    int n = 0;
    for (const auto& [t, payload] : events_) n += t == topic && payload.find(needle) != std::string::npos;
    return n;
  }

  void run_for(uint64_t ms) override {
    uint64_t end = uv_hrtime() + ms * 1000000;
    core_.run_until([&] { return uv_hrtime() >= end; }, ms + 1000);
  }

  void unload() override { core_.unload_all(); }

  int log_lines_with(const std::string& needle) override { return core_.log_lines_with(needle); }

 private:
  static inline int seq_ = 0;
  std::vector<std::pair<std::string, std::string>> events_;  // before core_: its close() still delivers
  PluginCore core_{"conformance-" + std::to_string(++seq_)};
};

}  // namespace

std::unique_ptr<ConformanceHost> make_conformance_host() { return std::make_unique<RealAdapter>(); }

}  // namespace cloudlet::test
