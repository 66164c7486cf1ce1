// core/config: any file content gives a config or one clear error line, never a crash.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "config/config.h"
#include "log/log.h"

namespace {

const std::string& scratch_file() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/cl-fuzz-config-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    if (!dir) abort();
    return std::string(dir) + "/cloudletd.json";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch_file();
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  cloudlet::Config cfg = cloudlet::default_config();
  cloudlet::Status loaded = cloudlet::load_config_file(path, &cfg);
  if (loaded.ok()) {
    cloudlet::Status valid = cloudlet::validate_config(cfg);
    if (!valid.ok() && valid.message().empty()) {
      fprintf(stderr, "config_fuzz: a failed validation must say why\n");
      abort();
    }
  } else if (loaded.message().empty() || loaded.message().find('\n') != std::string::npos) {
    fprintf(stderr, "config_fuzz: the error must be one non-empty line: '%s'\n", loaded.message().c_str());
    abort();
  }
  std::string host;
  uint16_t port = 0;
  cloudlet::parse_host_port(std::string(reinterpret_cast<const char*>(data), size), &host, &port);
  return 0;
}
