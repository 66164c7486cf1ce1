// libvirt QEMU save images (what virDomainSave writes), and restoring one saved state as many instances.
//
// Layout (libvirt's qemu_saveimage.h, format version 2): 16-byte magic "LibvirtQemudSave", then 19 native uint32:
// version, data_len, was_running, format (0 raw, 1 gzip, ...), cookie_offset, 14 unused; then data_len bytes
// holding the domain XML (NUL-terminated) and, from cookie_offset, a cookie XML; then QEMU's migration stream.
//
// Why a new header per instance: libvirt refuses a restore whose XML changes the saved domain's name or UUID
// ("Target domain uuid ... does not match source"), yet every instance needs its own. pycloud copied the whole
// multi-GB file per instance and regex-edited every <name>/<uuid> in place. Here the shared file is never copied
// or modified: the instance's file is a FIFO that a writer thread fills with a new header carrying the rewritten
// XML, then splices the original migration stream into it (zero copy), while libvirt restores from the FIFO.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdint>
#include <string>

#include "system/status.h"

namespace cloudlet::virt {

struct SaveImage {
  uint32_t version = 0;
  uint32_t was_running = 0;
  uint32_t format = 0;  // 0 = raw (uncompressed)
  std::string xml;      // the domain XML as stored
  std::string cookie;   // the cookie XML ("" if none)
  uint64_t stream_offset = 0;  // where QEMU's migration stream starts
  uint64_t file_size = 0;
};

// Reads and checks the header of `path` (regular file; data_len bounded to 16 MiB). A missing file is CL_ENOENT,
// one that is not a save image this code reads is CL_EINVAL.
Status save_image_read(const std::string& path, SaveImage* out);

// The bytes of a header + data area carrying `xml` and the image's cookie (exposed for tests).
std::string save_image_header(const SaveImage& image, const std::string& xml);

// Blocking: writes header(xml) + the migration stream of `src_path` to the already opened `dest_fd` (FIFO or
// file). For a non-blocking FIFO, waits at most stall_ms for the reader each time the pipe is full (CL_ETIMEDOUT).
Status save_image_write(const std::string& src_path, const SaveImage& image, const std::string& xml, int dest_fd,
                        int stall_ms = 30000);

struct RestoreOptions {
  std::string fifo_path;      // where to create the per-instance FIFO (removed afterwards)
  bool running = true;        // VIR_DOMAIN_SAVE_RUNNING, else VIR_DOMAIN_SAVE_PAUSED
  int open_timeout_ms = 30000;  // how long the writer waits for libvirt to open the FIFO
};

// Blocking (worker thread): restores the saved state at `state_path` as a new domain described by `xml` (a
// domain_xml_rewrite() of the image's XML, with the instance's name, uuid, disk and ports), through a FIFO, so
// several instances can restore from one state file at once. On success *domain is the new domain (caller
// frees); a failure carries libvirt's message when libvirt failed.
Status save_image_restore_as(virConnectPtr conn, const std::string& state_path, const std::string& xml,
                             const RestoreOptions& options, virDomainPtr* domain);

}  // namespace cloudlet::virt
