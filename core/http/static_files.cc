#include "http/static_files.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <memory>

#include "http/header_text.h"
#include "http/mime.h"
#include "http/request.h"
#include "http/url.h"
#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet::http {

namespace {
constexpr uint64_t kRevalidateMs = 1000;
constexpr size_t kChunk = 256 * 1024;

bool read_whole(const std::string& path, uint64_t size, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->resize(size);
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, out->data() + got, size - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  out->resize(got);
  return got == size;
}

// Parses a single "bytes=a-b" range against size. Returns 0 (no usable Range: send everything), 1 (range in
// *first..*last) or -1 (unsatisfiable: 416).
int parse_range(std::string_view h, uint64_t size, uint64_t* first, uint64_t* last) {
  if (h.rfind("bytes=", 0) != 0) return 0;
  h.remove_prefix(6);
  if (h.find(',') != std::string_view::npos) return 0;  // multiple ranges: answer with the whole file
  size_t dash = h.find('-');
  if (dash == std::string_view::npos) return 0;
  auto num = [](std::string_view s, uint64_t* v) {
    if (s.empty() || s.size() > 19) return false;
    uint64_t x = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
      x = x * 10 + static_cast<uint64_t>(c - '0');
    }
    *v = x;
    return true;
  };
  std::string_view a = h.substr(0, dash), b = h.substr(dash + 1);
  uint64_t x = 0, y = 0;
  if (a.empty()) {  // suffix: the last y bytes
    if (!num(b, &y)) return 0;
    if (y == 0 || size == 0) return -1;
    *first = y >= size ? 0 : size - y;
    *last = size - 1;
    return 1;
  }
  if (!num(a, &x)) return 0;
  if (x >= size) return -1;
  if (b.empty()) {
    *last = size - 1;
  } else {
    if (!num(b, &y) || y < x) return 0;
    *last = y >= size ? size - 1 : y;
  }
  *first = x;
  return 1;
}

// If-None-Match (RFC 9110 13.1.2): "*", or a list of entity tags compared weakly (a W/ prefix is ignored on
// either side). A tag must match whole: a substring of the header is not a match.
bool none_match(std::string_view header, std::string_view etag) {
  auto opaque = [](std::string_view t) {
    if (t.size() > 2 && t[0] == 'W' && t[1] == '/') t.remove_prefix(2);
    return t;
  };
  return for_each_list_element(header, [&](std::string_view tag) { return tag == "*" || opaque(tag) == opaque(etag); });
}

// Streams [offset, offset+remaining) of an open file, one chunk per completed write (client-paced).
struct FileStream {
  Loop* loop;
  Request* req;
  int fd;
  uint64_t offset, remaining;
  std::unique_ptr<char[]> buf{new char[kChunk]};
  uv_fs_t fs;
  bool client_gone = false;

  void finish() {
    ::close(fd);
    req->end();  // frees req (a short body closes the connection)
    delete this;
  }
  void read_next() {
    if (remaining == 0 || client_gone) {
      finish();
      return;
    }
    uv_buf_t b = uv_buf_init(buf.get(), static_cast<unsigned>(remaining < kChunk ? remaining : kChunk));
    fs.data = this;
    int rc = uv_fs_read(loop->uv(), &fs, fd, &b, 1, static_cast<int64_t>(offset), [](uv_fs_t* f) {
      auto* s = static_cast<FileStream*>(f->data);
      ssize_t n = f->result;
      uv_fs_req_cleanup(f);
      if (n <= 0) {
        log::warn("http", "file read failed: {}", n < 0 ? uv_strerror(static_cast<int>(n)) : "unexpected end");
        s->finish();
        return;
      }
      s->offset += static_cast<uint64_t>(n);
      s->remaining -= static_cast<uint64_t>(n);
      cl_status_t st = s->req->write(s->buf.get(), static_cast<size_t>(n),
                                     [](void*, void* hint) { static_cast<FileStream*>(hint)->read_next(); }, s);
      if (st == CL_ECLOSING) s->client_gone = true;  // the write's done callback still continues the chain
    });
    if (rc != 0) finish();
  }
};
}  // namespace

bool is_safe_relative_path(std::string_view path) {
  if (path.empty() || path[0] != '/') return false;
  if (path.find('\0') != std::string_view::npos || path.find('\\') != std::string_view::npos) return false;
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    std::string_view seg = path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (seg == ".." || seg == ".") return false;
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return true;
}

StaticFiles::Entry* StaticFiles::lookup(const std::string& abs_path) {
  uint64_t now = loop_.now_ms();
  auto it = cache_.find(abs_path);
  if (it != cache_.end() && now - it->second.checked_ms < kRevalidateMs) return &it->second;
  struct stat st;
  if (stat(abs_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    if (it != cache_.end()) {
      cached_bytes_ -= it->second.data.size();
      cache_.erase(it);
    }
    return nullptr;
  }
  int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (it != cache_.end() && it->second.mtime_ns == mtime_ns && it->second.size == size &&
      it->second.ino == static_cast<uint64_t>(st.st_ino)) {
    it->second.checked_ms = now;
    return &it->second;
  }
  Entry& e = cache_[abs_path];
  cached_bytes_ -= e.data.size();
  e = Entry{};
  e.size = size;
  e.mtime_ns = mtime_ns;
  e.ino = static_cast<uint64_t>(st.st_ino);
  // Size and modification time only: the inode number is nobody's business (and changes with a copy).
  e.etag = fmt::format("\"{:x}-{:x}\"", size, mtime_ns);
  e.checked_ms = now;
  if (size <= kCacheMaxFile && cached_bytes_ + size <= kCacheMaxTotal && read_whole(abs_path, size, &e.data)) {
    e.cached = true;
    cached_bytes_ += e.data.size();
  }
  return &e;
}

void StaticFiles::serve(Request& req, const std::string& root, const std::string& index) {
  serve(req, root, req.path, index);
}

void StaticFiles::serve(Request& req, const std::string& root, std::string_view rel_path, const std::string& index) {
  // "" is the mount point itself without its slash (a plugin's /prefix): redirected below like a directory.
  if (!rel_path.empty() && !is_safe_relative_path(rel_path)) {
    req.send_error(404);
    return;
  }
  std::string path = root + std::string(rel_path);
  if (path.back() == '/') path += index;
  auto confined = [&](const std::string& p) {
    // Symlinks must not lead outside the webroot. Checked once per cache entry (hot files skip it).
    char real[PATH_MAX], real_root[PATH_MAX];
    if (!realpath(p.c_str(), real) || !realpath(root.c_str(), real_root)) return false;
    size_t n = strlen(real_root);
    return strncmp(real, real_root, n) == 0 && (real[n] == '/' || real[n] == '\0');
  };
  Entry* e = lookup(path);
  if (!e) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      // A directory without the trailing slash: redirect so relative links in its index work. req.path is
      // decoded: encode each segment again, or a name with '?', '#', '%' or a space would change the URL.
      std::string loc;
      for (size_t from = 0;;) {
        size_t slash = req.path.find('/', from);
        size_t len = slash == std::string::npos ? std::string::npos : slash - from;
        percent_encode(std::string_view(req.path).substr(from, len), &loc);
        if (slash == std::string::npos) break;
        loc += '/';
        from = slash + 1;
      }
      loc += '/';
      if (!req.query.empty()) loc += "?" + req.query;
      if (req.add_header("Location", loc) == CL_OK) {
        req.send(301, "text/plain; charset=utf-8", "301 Moved Permanently\n");
        return;
      }
    }
    req.send_error(404);
    return;
  }
  if (!e->confined) {
    if (!confined(path)) {
      cached_bytes_ -= e->data.size();
      cache_.erase(path);
      req.send_error(404);
      return;
    }
    e->confined = true;
  }
  respond(req, path, *e, mime_type_for(path));
}

cl_status_t StaticFiles::send_file(Request& req, const std::string& abs_path, std::string_view content_type) {
  Entry* e = lookup(abs_path);
  if (!e) return CL_ENOENT;
  return respond(req, abs_path, *e, content_type.empty() ? mime_type_for(abs_path) : content_type);
}

cl_status_t StaticFiles::respond(Request& req, const std::string& abs_path, Entry& e, std::string_view ctype) {
  std::string_view inm;
  req.add_header("ETag", e.etag);
  if (req.header("if-none-match", &inm) == CL_OK && none_match(inm, e.etag)) {
    if (req.method == "GET" || req.method == "HEAD") return req.send(304, {}, {});
    return req.send(412, "text/plain; charset=utf-8", "412 Precondition Failed\n");
  }
  req.add_header("Accept-Ranges", "bytes");
  uint64_t first = 0, last = e.size ? e.size - 1 : 0;
  uint32_t status = 200;
  std::string_view range;
  if (req.method == "GET" && req.header("range", &range) == CL_OK) {
    int r = parse_range(range, e.size, &first, &last);
    if (r < 0) {
      req.add_header("Content-Range", fmt::format("bytes */{}", e.size));
      return req.send(416, "text/plain; charset=utf-8", "416 Range Not Satisfiable\n");
    }
    if (r > 0) {
      status = 206;
      req.add_header("Content-Range", fmt::format("bytes {}-{}/{}", first, last, e.size));
    }
  }
  uint64_t length = e.size == 0 ? 0 : last - first + 1;
  if (e.cached) {
    return req.send(status, ctype, std::string_view(e.data).substr(first, length));
  }
  int fd = open(abs_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return CL_ENOENT;
  req.add_header("Content-Type", ctype);
  cl_status_t st = req.start(status, static_cast<int64_t>(length));
  if (req.head || length == 0 || st != CL_OK) {
    ::close(fd);
    req.end();
    return CL_OK;
  }
  auto* s = new FileStream{&loop_, &req, fd, first, length};
  s->read_next();
  return CL_OK;
}

}  // namespace cloudlet::http
