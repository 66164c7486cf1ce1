// qemu-img: overlays, image info, conversion. Spawned with an argv (never a shell); exit codes and stderr are
// checked and reported. The *_sync functions block (worker threads); the others run them on the loop's worker
// pool and call `done` on the loop.
//
// Failure codes: CL_EINVAL for a refused argument (relative path, unknown format, zero size), CL_EEXIST when the
// file to create exists, CL_ENOENT when the backing file is missing, CL_EUNAVAIL when qemu-img cannot be started,
// CL_ETIMEDOUT when it hangs, CL_EIO when it fails or prints nonsense, CL_ECANCELED when the work never ran.
//
// Paths must be absolute: qemu-img reads "proto:..." and "json:{...}" file names as protocol specifications,
// which an absolute path can never be.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "loop/loop.h"
#include "system/status.h"

namespace cloudlet::virt::qemu_img {

// The qemu-img binary; "qemu-img" (PATH lookup) unless changed (tests, unusual installs). Set before use.
void set_program(const std::string& path);

struct Info {
  std::string format;          // "qcow2", "raw", ...
  uint64_t virtual_size = 0;   // bytes the guest sees
  uint64_t actual_size = 0;    // bytes used on the host
  std::string backing_file;    // empty when none
  std::string backing_format;  // empty when not recorded
  std::string data_file;       // qcow2 external data file (empty when none): it reads another file too
};

// Creates `overlay` (qcow2) on top of `backing`, backing format always given (qemu-img refuses to guess).
// Fails if `overlay` exists or `backing` is missing.
Status create_overlay_sync(const std::string& backing, const std::string& backing_format,
                           const std::string& overlay);
// Creates an empty image of `size_bytes` (fails if `path` exists).
Status create_sync(const std::string& path, const std::string& format, uint64_t size_bytes);
// Reads an image's description (qemu-img info --output=json).
Status info_sync(const std::string& path, Info* out);
// Converts `src` (format src_format, or "" to let qemu-img probe a trusted file) into `dst` (dst_format).
Status convert_sync(const std::string& src, const std::string& src_format, const std::string& dst,
                    const std::string& dst_format);

void create_overlay(Loop& loop, std::string backing, std::string backing_format, std::string overlay,
                    std::function<void(Status status)> done);
void info(Loop& loop, std::string path, std::function<void(Info info, Status status)> done);
void convert(Loop& loop, std::string src, std::string src_format, std::string dst, std::string dst_format,
             std::function<void(Status status)> done);

// Parses qemu-img's JSON info output (exposed for tests).
Status parse_info_json(const std::string& json, Info* out);

}  // namespace cloudlet::virt::qemu_img
