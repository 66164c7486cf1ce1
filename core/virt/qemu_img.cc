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

Status check_path(const char* what, const std::string& p) {
  if (p.empty() || p[0] != '/') return Status::invalid(fmt::format("{} path must be absolute: '{}'", what, p));
  if (p.size() > 4096) return Status::invalid(fmt::format("{} path is too long", what));
  if (p.find('\0') != std::string::npos) return Status::invalid(fmt::format("{} path contains NUL", what));
  return {};
}

// A run of qemu-img that did not succeed.
Status tool_failure(const ProcessResult& r, const char* what) {
  cl_status_t code = !r.started ? CL_EUNAVAIL : r.timed_out ? CL_ETIMEDOUT : CL_EIO;
  return Status::error(code, r.describe(what));
}

// What a queued run reports when the loop cancelled it before it ran.
Status cancelled_or(bool cancelled, Status status) {
  return cancelled ? Status::error(CL_ECANCELED, "cancelled") : std::move(status);
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

Status create_overlay_sync(const std::string& backing, const std::string& backing_format,
                           const std::string& overlay) {
  if (auto e = check_path("backing", backing); !e.ok()) return e;
  if (auto e = check_path("overlay", overlay); !e.ok()) return e;
  if (!valid_format(backing_format)) {
    return Status::invalid(fmt::format("unknown backing format '{}'", backing_format));
  }
  struct stat sb;
  if (stat(backing.c_str(), &sb) != 0) {
    int e = errno;
    return Status::error(e == ENOENT ? CL_ENOENT : CL_EIO,
                         fmt::format("backing file {} is missing: {}", backing, strerror(e)));
  }
  if (!S_ISREG(sb.st_mode)) return Status::invalid(fmt::format("backing file {} is not a regular file", backing));
  if (lstat(overlay.c_str(), &sb) == 0) {
    return Status::error(CL_EEXIST, fmt::format("overlay {} already exists", overlay));
  }
  auto r = run({"create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing, overlay}, 60000);
  if (!r.ok()) return tool_failure(r, "qemu-img create");
  return {};
}

Status create_sync(const std::string& path, const std::string& format, uint64_t size_bytes) {
  if (auto e = check_path("image", path); !e.ok()) return e;
  if (!valid_format(format)) return Status::invalid(fmt::format("unknown format '{}'", format));
  if (size_bytes == 0) return Status::invalid("image size must be positive");
  struct stat sb;
  if (lstat(path.c_str(), &sb) == 0) return Status::error(CL_EEXIST, fmt::format("image {} already exists", path));
  auto r = run({"create", "-q", "-f", format, path, std::to_string(size_bytes)}, 60000);
  if (!r.ok()) {
    ::unlink(path.c_str());
    return tool_failure(r, "qemu-img create");
  }
  return {};
}

Status parse_info_json(const std::string& json, Info* out) {
  cloudlet::json::Document d;  // depth-limited like every JSON input
  if (!cloudlet::json::parse(json, &d, nullptr) || !d.IsObject()) {
    return Status::io("qemu-img info printed no JSON object");
  }
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
  if (i.format.empty()) return Status::io("qemu-img info: no format in output");
  *out = std::move(i);
  return {};
}

Status info_sync(const std::string& path, Info* out) {
  if (auto e = check_path("image", path); !e.ok()) return e;
  // -U: read even while a running guest holds the image's write lock.
  auto r = run({"info", "-U", "--output=json", path}, 30000);
  if (!r.ok()) return tool_failure(r, "qemu-img info");
  return parse_info_json(r.out, out);
}

Status convert_sync(const std::string& src, const std::string& src_format, const std::string& dst,
                    const std::string& dst_format) {
  if (auto e = check_path("source", src); !e.ok()) return e;
  if (auto e = check_path("destination", dst); !e.ok()) return e;
  if (!src_format.empty() && !valid_format(src_format)) {
    return Status::invalid(fmt::format("unknown source format '{}'", src_format));
  }
  if (!valid_format(dst_format)) return Status::invalid(fmt::format("unknown destination format '{}'", dst_format));
  struct stat sb;
  if (lstat(dst.c_str(), &sb) == 0) return Status::error(CL_EEXIST, fmt::format("destination {} already exists", dst));
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
    return tool_failure(r, "qemu-img convert");
  }
  return {};
}

void create_overlay(Loop& loop, std::string backing, std::string backing_format, std::string overlay,
                    std::function<void(Status status)> done) {
  auto st = std::make_shared<Status>();
  loop.queue_work([=] { *st = create_overlay_sync(backing, backing_format, overlay); },
                  [st, done = std::move(done)](bool cancelled) { done(cancelled_or(cancelled, std::move(*st))); });
}

void info(Loop& loop, std::string path, std::function<void(Info info, Status status)> done) {
  auto res = std::make_shared<std::pair<Info, Status>>();
  loop.queue_work([=] { res->second = info_sync(path, &res->first); },
                  [res, done = std::move(done)](bool cancelled) {
                    done(std::move(res->first), cancelled_or(cancelled, std::move(res->second)));
                  });
}

void convert(Loop& loop, std::string src, std::string src_format, std::string dst, std::string dst_format,
             std::function<void(Status status)> done) {
  auto st = std::make_shared<Status>();
  loop.queue_work([=] { *st = convert_sync(src, src_format, dst, dst_format); },
                  [st, done = std::move(done)](bool cancelled) { done(cancelled_or(cancelled, std::move(*st))); });
}

}  // namespace cloudlet::virt::qemu_img
