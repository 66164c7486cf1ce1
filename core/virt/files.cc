#include "virt/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace cloudlet::virt {

Status files_make_dirs(const std::string& path, mode_t mode) {
  if (path.empty() || path[0] != '/') return Status::invalid(fmt::format("'{}' is not an absolute path", path));
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    std::string cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      return Status::io(fmt::format("mkdir {}: {}", cur, strerror(errno)));
    }
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::io(fmt::format("{} is not a directory", path));
  }
  return {};
}

Status files_remove_tree(const std::string& path) {
  if (path.size() < 2 || path[0] != '/') return Status::invalid(fmt::format("refusing to remove '{}'", path));
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return Status::io(fmt::format("cannot remove {}: {}", path, ec.message()));
  return {};
}

Status files_confine(const std::string& root, const std::string& path, std::string* real) {
  if (path.empty() || path.size() > 4096) return Status::invalid("the path is empty or too long");
  if (path.find('\0') != std::string::npos) return Status::invalid("the path contains NUL");
  char root_real[PATH_MAX], path_real[PATH_MAX];
  if (!realpath(root.c_str(), root_real)) {
    return Status::io(fmt::format("data directory {}: {}", root, strerror(errno)));
  }
  // Relative paths are relative to the data directory (never to the server's working directory).
  std::string full = path[0] == '/' ? path : root + "/" + path;
  if (!realpath(full.c_str(), path_real)) return Status::invalid(fmt::format("{}: {}", path, strerror(errno)));
  std::string r(root_real), p(path_real);
  if (r != "/" && (p.size() <= r.size() + 1 || p.compare(0, r.size(), r) != 0 || p[r.size()] != '/')) {
    return Status::invalid(fmt::format("{} is outside the data directory", path));
  }
  struct stat st;
  if (stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::invalid(fmt::format("{} is not a regular file", path));
  }
  *real = p;
  return {};
}

Status files_copy(const std::string& src, const std::string& dst, mode_t mode) {
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Status::io(fmt::format("cannot open {}: {}", src, strerror(errno)));
  int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    int e = errno;
    ::close(in);
    return Status::error(e == EEXIST ? CL_EEXIST : CL_EIO, fmt::format("cannot create {}: {}", dst, strerror(e)));
  }
  std::string err;
  char buf[1 << 16];
  while (err.empty()) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      err = fmt::format("read {}: {}", src, strerror(errno));
      break;
    }
    for (ssize_t off = 0; off < n && err.empty();) {
      ssize_t w = ::write(out, buf + off, static_cast<size_t>(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) err = fmt::format("write {}: {}", dst, strerror(errno));
      else off += w;
    }
  }
  if (err.empty() && fsync(out) != 0) err = fmt::format("fsync {}: {}", dst, strerror(errno));
  if (err.empty() && fchmod(out, mode) != 0) err = fmt::format("chmod {}: {}", dst, strerror(errno));
  ::close(in);
  ::close(out);
  if (err.empty()) return {};
  ::unlink(dst.c_str());
  return Status::io(err);
}

Status files_write(const std::string& path, const std::string& content, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::io(fmt::format("cannot create {}: {}", tmp, strerror(errno)));
  bool ok = true;
  for (size_t off = 0; ok && off < content.size();) {
    ssize_t w = ::write(fd, content.data() + off, content.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) ok = false;
    else off += static_cast<size_t>(w);
  }
  ok = ok && fsync(fd) == 0 && fchmod(fd, mode) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(tmp.c_str());
    return Status::io(fmt::format("cannot write {}: {}", path, strerror(saved)));
  }
  return {};
}

Status files_read(const std::string& path, std::string* out, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Status::error(e == ENOENT ? CL_ENOENT : CL_EIO, fmt::format("cannot open {}: {}", path, strerror(e)));
  }
  std::string data;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return Status::io(fmt::format("read {}: {}", path, strerror(e)));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > max_bytes) {
      ::close(fd);
      return Status::error(CL_ETOOBIG, fmt::format("{} is larger than {} bytes", path, max_bytes));
    }
  }
  ::close(fd);
  *out = std::move(data);
  return {};
}

Status files_protect(const std::string& dir) {
  for (const auto& name : files_list(dir)) {
    std::string p = dir + "/" + name;
    struct stat st;
    if (lstat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (chmod(p.c_str(), 0444) != 0) return Status::io(fmt::format("chmod {}: {}", p, strerror(errno)));
  }
  return {};
}

std::vector<std::string> files_list(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  closedir(d);
  return out;
}

bool files_exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

Status files_sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::io(fmt::format("cannot open directory {}: {}", dir, strerror(errno)));
  int rc = fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) return Status::io(fmt::format("fsync {}: {}", dir, strerror(e)));
  return {};
}

}  // namespace cloudlet::virt
