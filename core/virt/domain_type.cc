#include "virt/domain_type.h"

#include <libvirt/virterror.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet::virt {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string err_text() {
  virErrorPtr e = virGetLastError();
  return e && e->message ? e->message : "unknown libvirt error";
}

}  // namespace

bool domain_type_setting_valid(const std::string& s) { return s == "auto" || s == "kvm" || s == "qemu"; }

DomainType domain_type_probe(virConnectPtr conn, const DomainTypeProbe& p, std::string* reason) {
  auto result = [&](DomainType t, std::string why) {
    if (reason) *reason = std::move(why);
    return t;
  };
  if (p.setting == "qemu") return result(DomainType::qemu, "virt.domain_type is qemu");
  if (p.setting == "kvm") return result(DomainType::kvm, "virt.domain_type is kvm");
  if (access("/dev/kvm", R_OK | W_OK) != 0) return result(DomainType::qemu, "/dev/kvm is not usable");
  char* caps = virConnectGetDomainCapabilities(conn, nullptr, "x86_64", nullptr, "kvm", 0);
  if (!caps) return result(DomainType::qemu, fmt::format("libvirt offers no kvm domains: {}", err_text()));
  free(caps);
  if (p.kernel.empty() || access(p.kernel.c_str(), R_OK) != 0)
    return result(DomainType::qemu, "no guest kernel to test KVM with (set virt.domain_type: kvm to force it)");
  if (p.work_dir.empty() || p.work_dir[0] != '/') return result(DomainType::qemu, "no work directory for the KVM test");

  DomainSpec spec;
  spec.name = fmt::format("cloudlet-kvm-probe-{}", getpid());
  spec.uuid = uuid_generate();
  spec.type = DomainType::kvm;
  spec.memory_mib = 128;
  spec.kernel = p.kernel;
  spec.initrd = p.initrd;
  spec.cmdline = "console=ttyS0 loglevel=7 panic=-1";
  spec.console_log = p.work_dir + "/kvm-probe.log";
  spec.vnc = false;
  std::string xml;
  if (Status built = domain_xml_build(spec, &xml); !built.ok())
    return result(DomainType::qemu, "KVM test domain: " + built.message());
  ::unlink(spec.console_log.c_str());
  // Not VIR_DOMAIN_START_AUTODESTROY: the embedded driver does not support it. Destroyed below on every path.
  virDomainPtr dom = virDomainCreateXML(conn, xml.c_str(), 0);
  if (!dom) return result(DomainType::qemu, fmt::format("a kvm domain does not start: {}", err_text()));
  int64_t start = monotonic_ms();
  bool reached_init = false;
  while (monotonic_ms() - start < p.boot_timeout_ms) {
    std::string log = read_file(spec.console_log);
    if (log.find("Run /init as init process") != std::string::npos ||
        log.find("Freeing unused kernel") != std::string::npos) {
      reached_init = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  int64_t took = monotonic_ms() - start;
  virDomainDestroy(dom);
  virDomainFree(dom);
  ::unlink(spec.console_log.c_str());
  if (!reached_init)
    return result(DomainType::qemu,
                  fmt::format("a kernel booted under kvm did not reach init within {} ms (KVM unusable here)", took));
  return result(DomainType::kvm, fmt::format("a kernel booted under kvm reached init in {} ms", took));
}

}  // namespace cloudlet::virt
