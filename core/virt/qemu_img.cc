#include "virt/qemu_img.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <memory>
#include <mutex>

#include "json/json.h"
#include "log/log.h"
#include "virt/process.h"

namespace cloudlet::virt::qemu_img {
namespace {

std::mutex g_program_mutex;
std::string g_program = "qemu-img";

std::string program() {
  std::lock_guard<std::mutex> lock(g_program_mutex);
  return g_program;
}

bool valid_format(const std::string& f) {
  static const char* known[] = {"qcow2", "raw", "qed", "vmdk", "vdi", "vhdx", "vpc"};
  for (auto* k : known)
    if (f == k) return true;
  return false;
}

std::string check_path(const char* what, const std::string& p) {
  if (p.empty() || p[0] != '/') return fmt::format("{} path must be absolute: '{}'", what, p);
  if (p.size() > 4096) return fmt::format("{} path is too long", what);
  if (p.find('\0') != std::string::npos) return fmt::format("{} path contains NUL", what);
  return {};
}

ProcessResult run(const std::vector<std::string>& args, int timeout_ms) {
  std::vector<std::string> argv{program()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions o;
  o.timeout_ms = timeout_ms;
  return process_run(argv, o);
}

}  // namespace

void set_program(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_program_mutex);
  g_program = path;
}

std::string create_overlay_sync(const std::string& backing, const std::string& backing_format,
                                const std::string& overlay) {
  if (auto e = check_path("backing", backing); !e.empty()) return e;
  if (auto e = check_path("overlay", overlay); !e.empty()) return e;
  if (!valid_format(backing_format)) return fmt::format("unknown backing format '{}'", backing_format);
  struct stat sb;
  if (stat(backing.c_str(), &sb) != 0) return fmt::format("backing file {} is missing: {}", backing, strerror(errno));
  if (!S_ISREG(sb.st_mode)) return fmt::format("backing file {} is not a regular file", backing);
  if (lstat(overlay.c_str(), &sb) == 0) return fmt::format("overlay {} already exists", overlay);
  auto r = run({"create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing, overlay}, 60000);
  if (!r.ok()) return r.describe("qemu-img create");
  return {};
}

std::string create_sync(const std::string& path, const std::string& format, uint64_t size_bytes) {
  if (auto e = check_path("image", path); !e.empty()) return e;
  if (!valid_format(format)) return fmt::format("unknown format '{}'", format);
  if (size_bytes == 0) return "image size must be positive";
  struct stat sb;
  if (lstat(path.c_str(), &sb) == 0) return fmt::format("image {} already exists", path);
  auto r = run({"create", "-q", "-f", format, path, std::to_string(size_bytes)}, 60000);
  if (!r.ok()) {
    ::unlink(path.c_str());
    return r.describe("qemu-img create");
  }
  return {};
}

std::string parse_info_json(const std::string& json, Info* out) {
  cloudlet::json::Document d;  // depth-limited like every JSON input
  if (!cloudlet::json::parse(json, &d, nullptr) || !d.IsObject()) return "qemu-img info printed no JSON object";
  auto str = [&](const char* k) -> std::string {
    auto it = d.FindMember(k);
    return it != d.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString()) : std::string();
  };
  auto num = [&](const char* k) -> uint64_t {
    auto it = d.FindMember(k);
    return it != d.MemberEnd() && it->value.IsUint64() ? it->value.GetUint64() : 0;
  };
  Info i;
  i.format = str("format");
  i.virtual_size = num("virtual-size");
  i.actual_size = num("actual-size");
  i.backing_file = str("full-backing-filename");
  if (i.backing_file.empty()) i.backing_file = str("backing-filename");
  i.backing_format = str("backing-filename-format");
  auto fs = d.FindMember("format-specific");
  if (fs != d.MemberEnd() && fs->value.IsObject()) {
    auto data = fs->value.FindMember("data");
    if (data != fs->value.MemberEnd() && data->value.IsObject()) {
      auto df = data->value.FindMember("data-file");
      if (df != data->value.MemberEnd() && df->value.IsString()) i.data_file = df->value.GetString();
    }
  }
  if (i.format.empty()) return "qemu-img info: no format in output";
  *out = std::move(i);
  return {};
}

std::string info_sync(const std::string& path, Info* out) {
  if (auto e = check_path("image", path); !e.empty()) return e;
  // -U: read even while a running guest holds the image's write lock.
  auto r = run({"info", "-U", "--output=json", path}, 30000);
  if (!r.ok()) return r.describe("qemu-img info");
  return parse_info_json(r.out, out);
}

std::string convert_sync(const std::string& src, const std::string& src_format, const std::string& dst,
                         const std::string& dst_format) {
  if (auto e = check_path("source", src); !e.empty()) return e;
  if (auto e = check_path("destination", dst); !e.empty()) return e;
  if (!src_format.empty() && !valid_format(src_format)) return fmt::format("unknown source format '{}'", src_format);
  if (!valid_format(dst_format)) return fmt::format("unknown destination format '{}'", dst_format);
  struct stat sb;
  if (lstat(dst.c_str(), &sb) == 0) return fmt::format("destination {} already exists", dst);
  std::vector<std::string> args{"convert", "-q"};
  if (!src_format.empty()) {
    args.push_back("-f");
    args.push_back(src_format);
  }
  args.insert(args.end(), {"-O", dst_format, src, dst});
  // Large disks take a while; the bound only guards against a hung tool.
  auto r = run(args, 3600 * 1000);
  if (!r.ok()) {
    ::unlink(dst.c_str());  // no half-written image left behind
    return r.describe("qemu-img convert");
  }
  return {};
}

void create_overlay(Loop& loop, std::string backing, std::string backing_format, std::string overlay,
                    std::function<void(std::string error)> done) {
  auto err = std::make_shared<std::string>();
  loop.queue_work([=] { *err = create_overlay_sync(backing, backing_format, overlay); },
                  [err, done = std::move(done)](bool cancelled) { done(cancelled ? "cancelled" : *err); });
}

void info(Loop& loop, std::string path, std::function<void(Info info, std::string error)> done) {
  auto res = std::make_shared<std::pair<Info, std::string>>();
  loop.queue_work([=] { res->second = info_sync(path, &res->first); },
                  [res, done = std::move(done)](bool cancelled) {
                    done(std::move(res->first), cancelled ? "cancelled" : res->second);
                  });
}

void convert(Loop& loop, std::string src, std::string src_format, std::string dst, std::string dst_format,
             std::function<void(std::string error)> done) {
  auto err = std::make_shared<std::string>();
  loop.queue_work([=] { *err = convert_sync(src, src_format, dst, dst_format); },
                  [err, done = std::move(done)](bool cancelled) { done(cancelled ? "cancelled" : *err); });
}

}  // namespace cloudlet::virt::qemu_img
