#include "plugin_core.h"

#include <unistd.h>

#include <fstream>
#include <future>

#include "log/log.h"
#include "plugin_test_util.h"

namespace fs = std::filesystem;

namespace cloudlet::test {

PluginCore::PluginCore(const std::string& tag, const std::function<void(http::ListenerOptions&)>& tweak) {
  dir = fs::temp_directory_path() / ("cl-plugin-" + std::to_string(getpid()) + "-" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir / "tmp");
  log_path = (dir / "log.txt").string();
  log::set_output_file(log_path);
  Store::Options so;
  so.dir = (dir / "db").string();
  std::string err;
  store = Store::open(loop, so, &err);
  if (!store) throw std::runtime_error("store: " + err);
  server = std::make_unique<http::Server>(loop, (dir / "tmp").string());
  http::ListenerOptions lo;
  lo.name = "manager";
  lo.host = "127.0.0.1";
  lo.port = 0;
  if (tweak) tweak(lo);
  if (server->listen(lo, &err) != CL_OK) throw std::runtime_error("listen: " + err);
  port = server->listener("manager")->bound_port;
  svc = std::make_unique<HostServices>(
      HostServices{loop, *server, store.get(), ops, events, "test", dir.string(), "testlet", "open", &jobs});
  pm = std::make_unique<PluginManager>(*svc);
}

PluginCore::~PluginCore() { close(); }

int PluginCore::close() {
  if (closed_) return 0;
  closed_ = true;
  unload_all();
  bool down = false;
  server->shutdown(1000, [&] { down = true; });
  run_until([&] { return down; });
  store->close();
  pm.reset();
  server.reset();
  int rc = loop.close();
  log::set_output_file("/dev/stderr");
  fs::remove_all(dir);
  return rc;
}

cl_status_t PluginCore::load(const std::string& name, const std::string& path, std::vector<std::string> prefixes,
                             std::string* error, std::vector<std::string> grants) {
  PluginSpec spec;
  spec.name = name;
  spec.path = path;
  spec.prefixes = std::move(prefixes);
  spec.guards = guards;
  spec.files_dir = files_dir;
  spec.grants = std::move(grants);
  std::string ignored;
  return pm->load(spec, error ? error : &ignored);
}

bool PluginCore::unload_all() {
  bool done = false;
  pm->unload_all(true, [&] { done = true; });
  return run_until([&] { return done; }, 20000);
}

bool PluginCore::run_until(const std::function<bool()>& pred, uint64_t timeout_ms) {
  return test::run_until(loop, pred, timeout_ms);
}

HttpResponse PluginCore::http(const std::string& raw_request, uint64_t timeout_ms) {
  auto fut = std::async(std::launch::async, [&] { return http_raw("127.0.0.1", port, raw_request, timeout_ms); });
  run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, timeout_ms + 1000);
  return fut.get();
}

std::pair<cl_status_t, std::string> PluginCore::call(const std::string& op, const std::string& args,
                                                     uint64_t timeout_ms) {
  bool done = false;
  std::pair<cl_status_t, std::string> out{CL_EIO, ""};
  cl_status_t st = ops.call(op, args, [&](cl_status_t s, std::string_view r) {
    out = {s, std::string(r)};
    done = true;
  });
  if (st != CL_OK) return {st, ""};
  if (!run_until([&] { return done; }, timeout_ms)) return {CL_ETIMEDOUT, ""};
  return out;
}

int PluginCore::log_lines_with(const std::string& needle) const {
  std::ifstream in(log_path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
  return n;
}

std::string PluginCore::log_line(const std::string& needle) const {
  std::ifstream in(log_path);
  std::string line, found;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) found = line;
  }
  return found;
}

}  // namespace cloudlet::test
