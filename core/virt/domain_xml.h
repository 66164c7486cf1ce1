// Domain XML for Service VMs: building it for a cold boot, and rewriting a saved image's XML for a new instance.
//
// Port forwarding goes through QEMU user networking on the command line (libvirt 9.0 has no passt backend):
//   <qemu:commandline> -netdev user,id=hn0,hostfwd=tcp:ADDR:HOST-:GUEST,...
//                      -device virtio-net-pci,netdev=hn0,bus=pci.0,addr=0x1f
// The NIC gets a fixed PCI slot: without one QEMU takes the first free slot, which libvirt has already given to a
// device of its own, and the domain fails to start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "system/status.h"

namespace cloudlet::virt {

enum class DomainType { qemu, kvm };
const char* domain_type_name(DomainType t);

struct PortForward {
  std::string host_address = "127.0.0.1";  // numeric IPv4
  uint16_t host_port = 0;
  uint16_t guest_port = 0;
};

struct DomainSpec {
  std::string name;  // letters, digits, '.', '_', '-'; at most 64
  std::string uuid;  // 8-4-4-4-12 hex
  DomainType type = DomainType::qemu;
  uint64_t memory_mib = 256;
  unsigned vcpus = 1;
  // Direct kernel boot when `kernel` is set (initrd and cmdline optional); otherwise the disk boots.
  std::string kernel, initrd, cmdline;
  std::string disk_path;            // qcow2 unless disk_format says otherwise; optional for direct kernel boot
  std::string disk_format = "qcow2";
  std::string console_log;          // serial console written to this file (optional)
  std::vector<PortForward> forwards;  // empty: no network device at all
  std::string emulator;             // optional: libvirt picks the default QEMU otherwise
  bool vnc = true;                  // VNC on 127.0.0.1, port chosen by libvirt
};

// Builds the XML into *xml. CL_EINVAL on invalid input (every field is checked; paths must be absolute); *xml is
// left alone then.
Status domain_xml_build(const DomainSpec& spec, std::string* xml);

// The identity of one instance restored from a shared saved state.
struct InstanceIdentity {
  std::string name;
  std::string uuid;
  std::string disk_path;      // replaces the source of the first <disk device='disk'> (required if one exists)
  std::string console_log;    // replaces file-backed <serial>/<console> sources ("" = keep)
  std::vector<PortForward> forwards;  // replaces the hostfwd list of the user netdev (required if there is one)
};

// Rewrites a saved image's domain XML (virDomainSaveImageGetXMLDesc, or the header XML of the file) for a new
// instance: exactly /domain/name, /domain/uuid, the first disk's source file, the console log and the hostfwd
// list of the `-netdev user` argument, each found by structure (not by text search, so nothing else that happens
// to look like a name or uuid is touched). Everything else, the guest ABI, stays as saved. The result goes to *xml;
// CL_EINVAL when the identity is invalid or the saved XML lacks what it must have (*xml is left alone then).
Status domain_xml_rewrite(const std::string& saved_xml, const InstanceIdentity& id, std::string* xml);

// What a domain XML says about identity and forwards (for checks, reconciliation and tests).
struct DomainSummary {
  std::string type, name, uuid, disk_path, console_log;
  std::vector<PortForward> forwards;
};
// CL_EINVAL when xml is not a domain XML.
Status domain_xml_summary(const std::string& xml, DomainSummary* out);

bool valid_domain_name(const std::string& name);
bool valid_uuid(const std::string& uuid);
// A random (version 4) UUID from the kernel's CSPRNG.
std::string uuid_generate();

}  // namespace cloudlet::virt
