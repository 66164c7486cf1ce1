// The conformance suite's adapter for the real host: the core's loop, store, HTTP server (loopback, real
// sockets), operations, events and plugin manager, as loader_test.cc assembles them.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "conformance_host.h"
#include "events/bus.h"
#include "http/server.h"
#include "http_client.h"
#include "log/log.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "plugin/host.h"
#include "plugin_test_util.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace cloudlet::test {

namespace {

class RealAdapter : public ConformanceHost {
 public:
  RealAdapter() {
    dir_ = fs::temp_directory_path() / ("cl-conformance-" + std::to_string(getpid()) + "-" + std::to_string(++seq_));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "tmp");
    log_path_ = (dir_ / "log.txt").string();
    log::set_output_file(log_path_);
    Store::Options so;
    so.dir = (dir_ / "db").string();
    std::string err;
    store_ = Store::open(loop_, so, &err);
    server_ = std::make_unique<http::Server>(loop_, (dir_ / "tmp").string());
    http::ListenerOptions lo;
    lo.name = "manager";
    lo.host = "127.0.0.1";
    lo.port = 0;
    server_->listen(lo, &err);
    port_ = server_->listener("manager")->bound_port;
    svc_ = std::make_unique<HostServices>(
        HostServices{loop_, *server_, store_.get(), ops_, events_, "test", dir_.string(), "testlet", "open"});
    pm_ = std::make_unique<PluginManager>(*svc_);
  }

  ~RealAdapter() override {
    unload();
    bool down = false;
    server_->shutdown(1000, [&] { down = true; });
    run_until([&] { return down; }, 5000);
    store_->close();
    server_.reset();
    loop_.close();
    log::set_output_file("/dev/stderr");
    fs::remove_all(dir_);
  }

  cl_status_t load(const std::string& so_path, std::string* error) override {
    PluginSpec spec;
    spec.name = "conformance";
    spec.path = so_path;
    return pm_->load(spec, error);
  }

  std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args) override {
    bool done = false;
    std::pair<cl_status_t, std::string> out{CL_EIO, ""};
    cl_status_t st = ops_.call(op, args, [&](cl_status_t s, std::string_view r) {
      out = {s, std::string(r)};
      done = true;
    });
    if (st != CL_OK) return {st, ""};
    if (!run_until([&] { return done; }, 10000)) return {CL_ETIMEDOUT, ""};
    return out;
  }

  ConfResponse request(const std::string& method, const std::string& target, const std::string& body,
                       const Headers& headers) override {
    std::string raw = method + " " + target + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n";
    for (const auto& [k, v] : headers) raw += k + ": " + v + "\r\n";
    if (!body.empty() || method == "POST") raw += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    raw += "\r\n" + body;
    auto fut = std::async(std::launch::async, [&] { return http_raw("127.0.0.1", port_, raw, 10000); });
    run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, 11000);
    HttpResponse r = fut.get();
    ConfResponse out;
    out.status = r.status;
    out.headers = r.headers;
    out.body = r.body;
    return out;
  }

  void publish(const std::string& topic, const std::string& json) override { events_.publish(topic, json); }

  void provide(const std::string& op, std::function<std::string(const std::string&)> result) override {
    ops_.add(op, [result](std::string_view args, Operations::Reply reply) { reply(CL_OK, result(std::string(args))); });
  }

  void run_for(uint64_t ms) override {
    uint64_t end = uv_hrtime() + ms * 1000000;
    run_until([&] { return uv_hrtime() >= end; }, ms + 1000);
  }

  void unload() override {
    if (unloaded_) return;
    unloaded_ = true;
    bool done = false;
    pm_->unload_all(true, [&] { done = true; });
    run_until([&] { return done; }, 20000);
  }

  int log_lines_with(const std::string& needle) override {
    std::ifstream in(log_path_);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
    return n;
  }

 private:
  bool run_until(const std::function<bool()>& pred, uint64_t timeout_ms) {
    return test::run_until(loop_, pred, timeout_ms);
  }

  static inline int seq_ = 0;
  fs::path dir_;
  std::string log_path_;
  Loop loop_;
  std::unique_ptr<Store> store_;
  Operations ops_{loop_};
  EventBus events_{loop_};
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<HostServices> svc_;
  std::unique_ptr<PluginManager> pm_;
  uint16_t port_ = 0;
  bool unloaded_ = false;
};

}  // namespace

std::unique_ptr<ConformanceHost> make_conformance_host() { return std::make_unique<RealAdapter>(); }

}  // namespace cloudlet::test
