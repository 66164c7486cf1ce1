// Files of services and instances under the data directory: creating, removing, protecting and confining them.
//
// Every function here blocks on the disk: call them on worker threads. Errors come back as one line of text
// ("" on success) naming the path and the cause.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace cloudlet::virt {

// mkdir -p; each created component gets `mode`.
std::string files_make_dirs(const std::string& path, mode_t mode = 0700);

// Removes a file or a whole tree (like rm -rf). A path that does not exist is not an error. Refuses "/" and
// relative paths (a bug must not wipe the machine).
std::string files_remove_tree(const std::string& path);

// Resolves `path` (symlinks, "..") and checks it names an existing regular file strictly inside `root`. On
// success *real is the resolved absolute path. This is how client-supplied paths are confined to the data
// directory: never an arbitrary file of the server.
std::string files_confine(const std::string& root, const std::string& path, std::string* real);

// Copies src to dst (which must not exist), fsyncs it and sets `mode`. A failed copy leaves no dst.
std::string files_copy(const std::string& src, const std::string& dst, mode_t mode);

// Writes `content` to path atomically (temporary file, fsync, rename) with `mode`.
std::string files_write(const std::string& path, const std::string& content, mode_t mode);

// Reads a whole (small) file; "" error on success. Bounded by max_bytes.
std::string files_read(const std::string& path, std::string* out, size_t max_bytes = 1 << 20);

// chmod 0444 for each regular file directly in `dir` (not recursive): saved service images are read-only.
std::string files_protect(const std::string& dir);

// Names of the entries of `dir` (no "." or ".."); empty if it does not exist.
std::vector<std::string> files_list(const std::string& dir);

bool files_exists(const std::string& path);

// fsync of a directory (so renames and creations in it survive a crash).
void files_sync_dir(const std::string& dir);

}  // namespace cloudlet::virt
