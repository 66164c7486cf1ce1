// Choosing the domain type at run time: kvm only where KVM really works, qemu (TCG) otherwise.
//
// /dev/kvm existing and libvirt's domain capabilities listing kvm are not enough: on these machines /dev/kvm is a
// paravirtual KVM that stock guest kernels hang on. So "auto" also boots a real kernel (the demo guest's) under
// kvm with a tiny memory size and waits for the kernel to reach init on the serial console; only then is it kvm.
#pragma once

#include <libvirt/libvirt.h>

#include <string>

#include "virt/domain_xml.h"

namespace cloudlet::virt {

struct DomainTypeProbe {
  std::string setting = "auto";  // config virt.domain_type: auto | kvm | qemu
  std::string kernel, initrd;    // a guest to boot for the test; without one, auto means qemu
  std::string work_dir;          // absolute; holds the probe's console log while it runs
  int boot_timeout_ms = 10000;   // a working KVM reaches init in well under a second
};

// Parses "auto" | "kvm" | "qemu".
bool domain_type_setting_valid(const std::string& setting);

// Blocking (worker thread). *reason says why (for the log).
DomainType domain_type_probe(virConnectPtr conn, const DomainTypeProbe& probe, std::string* reason);

}  // namespace cloudlet::virt
