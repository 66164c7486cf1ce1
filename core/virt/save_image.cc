#include "virt/save_image.h"

#include <fcntl.h>
#include <libvirt/virterror.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "log/log.h"
#include "loop/loop.h"
#include "virt/domain_xml.h"

namespace cloudlet::virt {
namespace {

constexpr char kMagic[] = "LibvirtQemudSave";
constexpr size_t kMagicLen = 16;
constexpr size_t kHeaderLen = kMagicLen + 19 * 4;
constexpr uint32_t kMaxDataLen = 16u << 20;

Status last_libvirt_error(const char* what) {
  virErrorPtr e = virGetLastError();
  return Status::io(fmt::format("{}: {}", what, e && e->message ? e->message : "unknown libvirt error"));
}

Status cancelled() { return Status::error(CL_ECANCELED, "cancelled"); }
Status reader_stalled() { return Status::error(CL_ETIMEDOUT, "reader stalled"); }

// Writes all of buf to a possibly non-blocking fd, waiting up to stall_ms whenever it is full.
Status write_all(int fd, const char* buf, size_t len, const std::atomic<bool>* cancel, int stall_ms) {
  int64_t stall_deadline = monotonic_ms() + stall_ms;
  while (len > 0) {
    if (cancel && cancel->load()) return cancelled();
    ssize_t n = ::write(fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= static_cast<size_t>(n);
      stall_deadline = monotonic_ms() + stall_ms;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (monotonic_ms() > stall_deadline) return reader_stalled();
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, 100);
      continue;
    }
    return Status::io(fmt::format("write: {}", strerror(errno)));
  }
  return {};
}

}  // namespace

Status save_image_read(const std::string& path, SaveImage* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Status::error(e == ENOENT ? CL_ENOENT : CL_EIO,
                         fmt::format("cannot open saved state {}: {}", path, strerror(e)));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    return Status::invalid(fmt::format("saved state {} is not a regular file", path));
  }
  char head[kHeaderLen];
  ssize_t n = pread(fd, head, sizeof head, 0);
  if (n != static_cast<ssize_t>(sizeof head)) {
    ::close(fd);
    return Status::invalid(fmt::format("saved state {} is too short for a header", path));
  }
  if (std::memcmp(head, kMagic, kMagicLen) != 0) {
    ::close(fd);
    return Status::invalid(fmt::format("{} is not a libvirt QEMU save image (bad magic)", path));
  }
  uint32_t v[19];
  std::memcpy(v, head + kMagicLen, sizeof v);
  SaveImage img;
  img.version = v[0];
  uint32_t data_len = v[1];
  img.was_running = v[2];
  img.format = v[3];
  uint32_t cookie_offset = v[4];
  if (img.version != 2) {
    ::close(fd);
    return Status::invalid(fmt::format("save image version {} is not supported (want 2)", img.version));
  }
  if (data_len == 0 || data_len > kMaxDataLen || kHeaderLen + static_cast<uint64_t>(data_len) > static_cast<uint64_t>(sb.st_size)) {
    ::close(fd);
    return Status::invalid(fmt::format("save image data length {} is out of bounds", data_len));
  }
  std::string data(data_len, '\0');
  n = pread(fd, data.data(), data_len, kHeaderLen);
  ::close(fd);
  if (n != static_cast<ssize_t>(data_len)) return Status::io("short read of the save image's XML");
  size_t xml_end = data.find('\0');
  if (xml_end == std::string::npos || xml_end == 0) return Status::invalid("save image XML is not NUL-terminated");
  img.xml = data.substr(0, xml_end);
  if (cookie_offset != 0) {
    if (cookie_offset <= xml_end || cookie_offset >= data_len) {
      return Status::invalid("save image cookie offset is out of bounds");
    }
    size_t cookie_end = data.find('\0', cookie_offset);
    if (cookie_end == std::string::npos) return Status::invalid("save image cookie is not NUL-terminated");
    img.cookie = data.substr(cookie_offset, cookie_end - cookie_offset);
  }
  img.stream_offset = kHeaderLen + static_cast<uint64_t>(data_len);
  img.file_size = static_cast<uint64_t>(sb.st_size);
  *out = std::move(img);
  return {};
}

std::string save_image_header(const SaveImage& image, const std::string& xml) {
  std::string area = xml;
  area.push_back('\0');
  uint32_t cookie_offset = 0;
  if (!image.cookie.empty()) {
    cookie_offset = static_cast<uint32_t>(area.size());
    area += image.cookie;
    area.push_back('\0');
  }
  uint32_t v[19] = {};
  v[0] = image.version;
  v[1] = static_cast<uint32_t>(area.size());
  v[2] = image.was_running;
  v[3] = image.format;
  v[4] = cookie_offset;
  std::string out(kMagic, kMagicLen);
  out.append(reinterpret_cast<const char*>(v), sizeof v);
  out += area;
  return out;
}

namespace {

Status write_image(const std::string& src_path, const SaveImage& image, const std::string& xml, int dest_fd,
                   const std::atomic<bool>* cancel, int stall_ms) {
  if (xml.empty() || xml.size() > kMaxDataLen) return Status::invalid("replacement XML is empty or too large");
  if (xml.find('\0') != std::string::npos) return Status::invalid("replacement XML contains NUL");
  int src = ::open(src_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    int e = errno;
    return Status::error(e == ENOENT ? CL_ENOENT : CL_EIO,
                         fmt::format("cannot open saved state {}: {}", src_path, strerror(e)));
  }
  std::string head = save_image_header(image, xml);
  Status err = write_all(dest_fd, head.data(), head.size(), cancel, stall_ms);
  loff_t off = static_cast<loff_t>(image.stream_offset);
  const loff_t end = static_cast<loff_t>(image.file_size);
  bool use_splice = true;
  std::string buf;
  int64_t stall_deadline = monotonic_ms() + stall_ms;
  while (err.ok() && off < end) {
    if (cancel && cancel->load()) {
      err = cancelled();
      break;
    }
    size_t want = static_cast<size_t>(std::min<loff_t>(end - off, 1 << 20));
    ssize_t n;
    if (use_splice) {
      n = splice(src, &off, dest_fd, nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && errno == EINVAL) {  // destination is not a pipe: copy through a buffer
        use_splice = false;
        continue;
      }
    } else {
      buf.resize(want);
      n = pread(src, buf.data(), want, off);
      if (n > 0) {
        err = write_all(dest_fd, buf.data(), static_cast<size_t>(n), cancel, stall_ms);
        off += n;
      }
    }
    if (n > 0) {
      stall_deadline = monotonic_ms() + stall_ms;
      continue;
    }
    if (n == 0) {
      err = Status::io("saved state ended early");
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (monotonic_ms() > stall_deadline) {
        err = reader_stalled();
        break;
      }
      pollfd p{dest_fd, POLLOUT, 0};
      poll(&p, 1, 100);
      continue;
    }
    err = Status::io(fmt::format("copying the migration stream: {}", strerror(errno)));
  }
  ::close(src);
  return err;
}

}  // namespace

Status save_image_write(const std::string& src_path, const SaveImage& image, const std::string& xml, int dest_fd,
                        int stall_ms) {
  return write_image(src_path, image, xml, dest_fd, nullptr, stall_ms);
}

Status save_image_restore_as(virConnectPtr conn, const std::string& state_path, const std::string& xml,
                             const RestoreOptions& options, virDomainPtr* domain) {
  *domain = nullptr;
  DomainSummary summary;
  if (Status e = domain_xml_summary(xml, &summary); !e.ok()) return e.prefixed("instance XML: ");
  if (!valid_uuid(summary.uuid)) return Status::invalid("instance XML has no valid uuid");
  SaveImage image;
  if (auto e = save_image_read(state_path, &image); !e.ok()) return e;
  const std::string& fifo = options.fifo_path;
  if (fifo.empty() || fifo[0] != '/') return Status::invalid("FIFO path must be absolute");
  struct stat sb;
  if (lstat(fifo.c_str(), &sb) == 0) {
    if (!S_ISFIFO(sb.st_mode)) return Status::error(CL_EEXIST, fmt::format("{} exists and is not a FIFO", fifo));
    ::unlink(fifo.c_str());  // left over from a crash
  }
  if (mkfifo(fifo.c_str(), 0600) != 0) return Status::io(fmt::format("mkfifo {}: {}", fifo, strerror(errno)));

  std::atomic<bool> cancel{false};
  Status writer_err;
  std::thread writer([&] {
    // A reader that goes away must give EPIPE here, not kill the process.
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
    // Blocks until libvirt opens the FIFO (or until the canceller below opens it to wake us).
    int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      writer_err = Status::io(fmt::format("open {}: {}", fifo, strerror(errno)));
      return;
    }
    if (cancel.load()) {
      ::close(fd);
      return;
    }
    fcntl(fd, F_SETPIPE_SZ, 1 << 20);  // fewer wake-ups; the kernel may refuse, which only costs speed
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    writer_err = write_image(state_path, image, xml, fd, &cancel, options.open_timeout_ms);
    ::close(fd);
  });

  unsigned flags = options.running ? VIR_DOMAIN_SAVE_RUNNING : VIR_DOMAIN_SAVE_PAUSED;
  int rc = virDomainRestoreFlags(conn, fifo.c_str(), xml.c_str(), flags);
  Status restore_err = rc < 0 ? last_libvirt_error("restore") : Status();
  // Wake a writer still waiting for a reader (libvirt failed before opening the FIFO) and stop one still writing.
  cancel.store(true);
  int wake = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  writer.join();
  if (wake >= 0) ::close(wake);
  ::unlink(fifo.c_str());

  bool writer_failed = !writer_err.ok() && writer_err.code() != CL_ECANCELED;
  if (rc < 0) {
    if (writer_failed) return Status::io(restore_err.message() + " (stream: " + writer_err.message() + ")");
    return restore_err;
  }
  virDomainPtr dom = virDomainLookupByUUIDString(conn, summary.uuid.c_str());
  if (!dom) return last_libvirt_error("restored domain not found");
  if (writer_failed) {
    log::warn("virt", "restore of {} succeeded but the stream writer reported: {}", summary.name,
              writer_err.message());
  }
  *domain = dom;
  return {};
}

}  // namespace cloudlet::virt
