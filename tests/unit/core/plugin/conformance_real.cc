// The conformance suite's adapter for the real host: the core's loop, store, HTTP server (loopback, real
// sockets), operations, events and plugin manager (plugin_core.h).
#include "conformance_host.h"
#include "plugin_core.h"

namespace cloudlet::test {

namespace {

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
