// Preparing the root of libvirt's embedded QEMU driver (qemu:///embed?root=DIR) before it is opened.
//
// The driver reads DIR/etc/qemu.conf. It is written (when its content differs) with: QEMU as root:root (with an
// unprivileged user every domain start took 44 s here, libvirt re-probing QEMU because that user cannot open
// /dev/kvm), security_driver "none", no cgroups (no systemd, no cgroup delegation for an embedded driver),
// stdio_handler "file" (no virtlogd) and remember_owner 0: with owner xattrs recorded, a process that re-opened
// the root after another one had started a domain ("Invalid XATTR timestamp") killed that domain on reconnect;
// without them running domains survive a restart of the process. The driver also refuses to initialize ("Failed
// to parse user 'libvirt-qemu'") unless the compiled-in default user libvirt-qemu exists, even though qemu.conf
// overrides it: when running as root the user is created (useradd --system), otherwise the error says what to do.
#pragma once

#include <string>

#include "system/status.h"

namespace cloudlet::virt {

// The root of a "qemu:///embed?root=/abs/dir" URI. False if `uri` is not an embed URI with an absolute root.
bool embed_root_from_uri(const std::string& uri, std::string* root);

// VNC ports of one embedded root. Every embedded driver has its own port allocator, and each starts at 5900:
// two cloudletd processes (or test processes) on one host, each with its own root, raced for the same port and
// one QEMU failed to start. Each root gets a block of its own, chosen by a hash of its path: 54 blocks of 256
// ports from 5900 up to 19723, below the forwarded ports' default range (20000-) and Linux's ephemeral ports
// (32768-). Two roots share a block with a chance of 1 in 54; the allocator's bind check still keeps them apart
// then, as it did before.
constexpr int kVncPortBase = 5900;
constexpr int kVncBlockSize = 256;
constexpr int kVncBlocks = 54;
struct EmbedVncBlock {
  int min, max;
};
EmbedVncBlock embed_vnc_block(const std::string& root);

// The qemu.conf the embedded driver with this root gets.
std::string embed_qemu_conf(const std::string& root);

// Blocking (worker): creates DIR/etc, writes DIR/etc/qemu.conf if needed, ensures the libvirt-qemu user.
// CL_EINVAL for a relative root, CL_EIO when a file cannot be written, CL_EUNAVAIL when the user is missing and
// cannot be created.
Status embed_prepare(const std::string& root);

// Blocking: makes sure the system user libvirt-qemu exists (creating it when running as root); CL_EUNAVAIL if it
// does not and cannot.
Status embed_ensure_qemu_user();

}  // namespace cloudlet::virt
