// The conformance suite's adapter for the real host: the core's loop, store, HTTP server (loopback, real
// sockets), operations, events and plugin manager (plugin_core.h).
#include "conformance_host.h"
#include "plugin_core.h"

namespace cloudlet::test {

namespace {

class RealAdapter : public ConformanceHost {
 public:
  void configure(const std::string& files_dir) override {
    core_.guards = {"manager"};
    core_.files_dir = files_dir;
  }
  cl_status_t load(const std::string& so_path, std::string* error) override {
    return core_.load("conformance", so_path, {}, error);
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

  void provide(const std::string& op, std::function<std::string(const std::string&)> result) override {
    core_.ops.add(op, [result](std::string_view args, Operations::Reply reply) {
      reply(CL_OK, result(std::string(args)));
    });
  }

  void run_for(uint64_t ms) override {
    uint64_t end = uv_hrtime() + ms * 1000000;
    core_.run_until([&] { return uv_hrtime() >= end; }, ms + 1000);
  }

  void unload() override { core_.unload_all(); }

  int log_lines_with(const std::string& needle) override { return core_.log_lines_with(needle); }

 private:
  static inline int seq_ = 0;
  PluginCore core_{"conformance-" + std::to_string(++seq_)};
};

}  // namespace

std::unique_ptr<ConformanceHost> make_conformance_host() { return std::make_unique<RealAdapter>(); }

}  // namespace cloudlet::test
