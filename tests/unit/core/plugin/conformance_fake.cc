// The conformance suite's adapter for tests/fakehost.
#include "conformance_host.h"
#include "fakehost.h"

namespace cloudlet::test {

namespace {

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
