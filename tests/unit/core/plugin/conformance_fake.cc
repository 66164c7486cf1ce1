// The conformance suite's adapter for tests/fakehost.
#include "conformance_host.h"
#include "fakehost.h"

namespace cloudlet::test {

namespace {

// The headers of a browser's upgrade request (RFC 6455 4.1; the key is the RFC's example).
ConformanceHost::Headers upgrade_headers() {
  return {{"Upgrade", "websocket"},
          {"Connection", "Upgrade"},
          {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
          {"Sec-WebSocket-Version", "13"}};
}

// The fake host's client end: frames are what the plugin left in FakeHost::WebSocket, read in order.
class FakeWebSocket : public ConfWebSocket {
 public:
  FakeWebSocket(FakeHost& fh, std::shared_ptr<FakeHost::WebSocket> ws) : fh_(fh), ws_(std::move(ws)) {}
  void send(int32_t type, const std::string& data) override { fh_.ws_send(ws_, type, data); }
  std::optional<Frame> next(uint64_t timeout_ms) override {
    std::optional<Frame> out;
    fh_.run_until(
        [&] {
          if (read_ < ws_->messages.size()) {
            out = Frame{ws_->messages[read_].first, ws_->messages[read_].second, 0};
            read_++;
          } else if (ws_->close_code && !close_read_) {
            out = Frame{0, ws_->close_reason, ws_->close_code};
            close_read_ = true;
          }
          return out.has_value();
        },
        timeout_ms);
    return out;
  }
  void close(uint32_t code) override { fh_.ws_close(ws_, code); }

 private:
  FakeHost& fh_;
  std::shared_ptr<FakeHost::WebSocket> ws_;
  size_t read_ = 0;
  bool close_read_ = false;
};

class FakeAdapter : public ConformanceHost {
 public:
  void configure(const std::string& files_dir) override {
    fh_.guards = {"manager"};
    fh_.facts["plugin_files_dir"] = files_dir;
  }
  cl_status_t load(const std::string& so_path, const std::vector<std::string>& grants, std::string* error) override {
    fh_.grants = grants;
    return fh_.load(so_path, "{}", error);
  }
  std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args) override {
    return fh_.call(op, args, 10000);
  }
  ConfResponse request(const std::string& method, const std::string& target, const std::string& body,
                       const Headers& headers) override {
    FakeHost::Response r = fh_.request("manager", method, target, body, headers, 10000);
    ConfResponse out;
    out.status = r.complete ? static_cast<int>(r.status) : 0;
    out.headers = r.headers;
    out.body = r.body;
    return out;
  }
  std::unique_ptr<ConfWebSocket> websocket(const std::string& target, int* status) override {
    FakeHost::Response r = fh_.request("manager", "GET", target, "", upgrade_headers(), 10000);
    *status = r.complete ? static_cast<int>(r.status) : 0;
    if (!r.websocket) return nullptr;
    return std::make_unique<FakeWebSocket>(fh_, r.websocket);
  }
  void publish(const std::string& topic, const std::string& json) override { fh_.publish(topic, json); }
  void provide(const std::string& op, std::function<std::string(const std::string&)> result,
               uint32_t flags) override {
    fh_.provide(
        op,
        [result](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
          reply(CL_OK, result(args));
        },
        flags);
  }
  int events_with(const std::string& topic, const std::string& needle) override {
    int n = 0;
    for (const auto& [t, payload] : fh_.published) n += t == topic && payload.find(needle) != std::string::npos;
    return n;
  }
  void run_for(uint64_t ms) override { fh_.run_for(ms); }
  void unload() override { fh_.unload(); }
  int log_lines_with(const std::string& needle) override {
    std::lock_guard<std::mutex> lock(fh_.log_mutex);
    int n = 0;
    for (const auto& l : fh_.logs) n += l.text.find(needle) != std::string::npos;
    return n;
  }

 private:
  FakeHost fh_{"conformance"};
};

}  // namespace

std::unique_ptr<ConformanceHost> make_conformance_host() { return std::make_unique<FakeAdapter>(); }

}  // namespace cloudlet::test
