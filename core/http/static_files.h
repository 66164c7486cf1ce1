// Static files: the webroot of a listener, and plugin responses made of a file (resp_file).
//
// Small files are cached in memory and revalidated with stat() at most once a second, so a hot page costs no
// disk access. Large files are streamed in chunks read on the thread pool, paced by the client (each chunk is
// read after the previous one was written). ETag/If-None-Match, HEAD and single byte ranges are handled.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cloudlet_plugin.h"

struct cl_request_s;

namespace cloudlet {
class Loop;
}

namespace cloudlet::http {

using Request = ::cl_request_s;

class StaticFiles {
 public:
  explicit StaticFiles(Loop& loop) : loop_(loop) {}

  // Answers a GET/HEAD for `path` (decoded, starting with '/') from `root`. Traversal outside root (.., symlinks)
  // gives 404, as does a missing file. Directories serve `index`.
  void serve(Request& req, const std::string& root, const std::string& index);
  // The same for rel_path (decoded, starting with '/', or "" for root itself) instead of the request's path: a
  // directory mounted under a URL prefix (static_add). Redirects still use the request's path.
  void serve(Request& req, const std::string& root, std::string_view rel_path, const std::string& index);

  // Answers with the file at abs_path (already confined by the caller). CL_ENOENT if it is not a regular file.
  cl_status_t send_file(Request& req, const std::string& abs_path, std::string_view content_type);

  static constexpr size_t kCacheMaxFile = 256 * 1024;
  static constexpr size_t kCacheMaxTotal = 8 * 1024 * 1024;

 private:
  struct Entry {
    std::string data;  // contents when cached (size <= kCacheMaxFile)
    bool cached = false;
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t ino = 0;
    std::string etag;
    uint64_t checked_ms = 0;
    // The webroot check (realpath) passed for this file identity. A changed file gets a fresh entry, so a file
    // replaced by a symlink leading out of the webroot is checked again.
    bool confined = false;
  };
  // Finds or refreshes the entry for abs_path; nullptr if it is not a regular file.
  Entry* lookup(const std::string& abs_path);
  cl_status_t respond(Request& req, const std::string& abs_path, Entry& e, std::string_view content_type);

  Loop& loop_;
  std::unordered_map<std::string, Entry> cache_;
  size_t cached_bytes_ = 0;
};

// True when `path` (decoded) has no "..", "." or empty segment tricks, no backslash and no NUL.
bool is_safe_relative_path(std::string_view path);

}  // namespace cloudlet::http
