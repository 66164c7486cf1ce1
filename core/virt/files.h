// Files of services and instances under the data directory: creating, removing, protecting and confining them.
//
// Every function here blocks on the disk: call them on worker threads. A failure's message is one line naming the
// path and the cause; its code is CL_EINVAL for a path refused before touching the disk, CL_EIO for the system's
// failures, or another one named below.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "system/status.h"

namespace cloudlet::virt {

// mkdir -p; each created component gets `mode`.
Status files_make_dirs(const std::string& path, mode_t mode = 0700);

// Removes a file or a whole tree (like rm -rf). A path that does not exist is not an error. Refuses "/" and
// relative paths (a bug must not wipe the machine).
Status files_remove_tree(const std::string& path);

// Resolves `path` (symlinks, "..") and checks it names an existing regular file strictly inside `root`. On
// success *real is the resolved absolute path. This is how client-supplied paths are confined to the data
// directory: never an arbitrary file of the server. A path that fails these checks is CL_EINVAL (the client's
// mistake); a data directory that cannot be resolved is CL_EIO.
Status files_confine(const std::string& root, const std::string& path, std::string* real);

// Copies src to dst (which must not exist: CL_EEXIST), fsyncs it and sets `mode`. A failed copy leaves no dst.
Status files_copy(const std::string& src, const std::string& dst, mode_t mode);

// Writes `content` to path atomically (temporary file, fsync, rename) with `mode`.
Status files_write(const std::string& path, const std::string& content, mode_t mode);

// Reads a whole (small) file, bounded by max_bytes (CL_ETOOBIG beyond). A missing file is CL_ENOENT.
Status files_read(const std::string& path, std::string* out, size_t max_bytes = 1 << 20);

// chmod 0444 for each regular file directly in `dir` (not recursive): saved service images are read-only.
Status files_protect(const std::string& dir);

// Names of the entries of `dir` (no "." or ".."); empty if it does not exist.
std::vector<std::string> files_list(const std::string& dir);

bool files_exists(const std::string& path);

// fsync of a directory (so renames and creations in it survive a crash).
Status files_sync_dir(const std::string& dir);

}  // namespace cloudlet::virt
