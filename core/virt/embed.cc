#include "virt/embed.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "log/log.h"
#include "virt/process.h"

namespace cloudlet::virt {
namespace {

constexpr const char* kQemuUser = "libvirt-qemu";

Status mkdirs(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
      return Status::io(fmt::format("mkdir {}: {}", cur, strerror(errno)));
  }
  return {};
}

bool user_exists(const char* name) {
  struct passwd pw, *res = nullptr;
  char buf[4096];
  return getpwnam_r(name, &pw, buf, sizeof buf, &res) == 0 && res != nullptr;
}

bool group_exists(const char* name) {
  struct group gr, *res = nullptr;
  char buf[4096];
  return getgrnam_r(name, &gr, buf, sizeof buf, &res) == 0 && res != nullptr;
}

}  // namespace

bool embed_root_from_uri(const std::string& uri, std::string* root) {
  constexpr std::string_view prefix = "qemu:///embed?";
  if (uri.rfind(prefix, 0) != 0) return false;
  std::string_view query(uri);
  query.remove_prefix(prefix.size());
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    if (kv.substr(0, 5) == "root=") {
      std::string r(kv.substr(5));
      // Percent-encoding is not decoded here: data directories with such characters are not supported.
      if (r.empty() || r[0] != '/' || r.find('%') != std::string::npos) return false;
      *root = r;
      return true;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return false;
}

EmbedVncBlock embed_vnc_block(const std::string& root) {
  // FNV-1a: stable across runs and builds (std::hash is not), so a root keeps its block after a restart.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : root) h = (h ^ c) * 1099511628211ull;
  int block = static_cast<int>(h % kVncBlocks);
  int min = kVncPortBase + block * kVncBlockSize;
  return {min, min + kVncBlockSize - 1};
}

std::string embed_qemu_conf(const std::string& root) {
  EmbedVncBlock vnc = embed_vnc_block(root);
  return fmt::format(
      "# Written by cloudletd for its embedded libvirt QEMU driver; changes are overwritten.\n"
      "user = \"root\"\n"
      "group = \"root\"\n"
      "security_driver = \"none\"\n"
      "cgroup_controllers = [ ]\n"
      "stdio_handler = \"file\"\n"
      "remember_owner = 0\n"
      "remote_display_port_min = {}\n"
      "remote_display_port_max = {}\n",
      vnc.min, vnc.max);
}

Status embed_ensure_qemu_user() {
  if (user_exists(kQemuUser)) return {};
  if (geteuid() != 0) {
    return Status::error(
        CL_EUNAVAIL,
        fmt::format("libvirt's QEMU driver needs a system user '{}', which does not exist; create it as root with "
                    "'useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {}'",
                    kQemuUser, kQemuUser));
  }
  std::vector<std::string> argv{"useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                                "--shell", "/usr/sbin/nologin"};
  if (group_exists(kQemuUser)) {
    argv.insert(argv.end(), {"--gid", kQemuUser});
  } else {
    argv.push_back("--user-group");
  }
  argv.push_back(kQemuUser);
  log::info("virt", "creating system user '{}' (libvirt's QEMU driver refuses to start without it)", kQemuUser);
  ProcessOptions o;
  o.timeout_ms = 30000;
  auto r = process_run(argv, o);
  if (!r.ok() && !user_exists(kQemuUser)) return Status::error(CL_EUNAVAIL, r.describe("useradd"));
  return {};
}

Status embed_prepare(const std::string& root) {
  if (root.empty() || root[0] != '/')
    return Status::invalid(fmt::format("embedded libvirt root must be absolute: '{}'", root));
  std::string etc = root + "/etc";
  if (Status s = mkdirs(etc); !s.ok()) return s;
  std::string conf_path = etc + "/qemu.conf";
  std::string want = embed_qemu_conf(root);
  std::string have;
  {
    std::ifstream in(conf_path, std::ios::binary);
    if (in) {
      std::ostringstream ss;
      ss << in.rdbuf();
      have = ss.str();
    }
  }
  if (have != want) {
    std::string tmp = conf_path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Status::io(fmt::format("cannot write {}: {}", tmp, strerror(errno)));
    bool ok = ::write(fd, want.data(), want.size()) == static_cast<ssize_t>(want.size()) && fsync(fd) == 0;
    ::close(fd);
    if (!ok || rename(tmp.c_str(), conf_path.c_str()) != 0) {
      ::unlink(tmp.c_str());
      return Status::io(fmt::format("cannot write {}", conf_path));
    }
    log::info("virt", "wrote {}", conf_path);
  }
  return embed_ensure_qemu_user();
}

}  // namespace cloudlet::virt
