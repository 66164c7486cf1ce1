#include "adb/file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace cloudlet::adb {

// Shared with the worker: the worker touches only fd/path and the block it fills; everything else is the
// loop's. `gone` tells a late completion that the reader was destroyed.
struct FileReader::Core {
  std::string path;
  int fd = -1;
  bool opened = false;
  bool inflight = false;
  bool read_all = false;  // the worker saw end of file
  bool gone = false;
  uint64_t size = 0;
  int64_t mtime = 0;
  uint32_t mode = 0;
  Error error;
  std::deque<std::vector<uint8_t>> blocks;
  size_t front_off = 0;

  ~Core() {
    if (fd >= 0) ::close(fd);
  }
};

FileReader::FileReader(Reactor& reactor, std::string path, std::function<void()> on_ready)
    : reactor_(reactor), core_(std::make_shared<Core>()), on_ready_(std::move(on_ready)) {
  core_->path = std::move(path);
  read_more();
}

FileReader::~FileReader() { core_->gone = true; }

bool FileReader::opened() const { return core_->opened; }
uint64_t FileReader::size() const { return core_->size; }
int64_t FileReader::mtime() const { return core_->mtime; }
uint32_t FileReader::mode() const { return core_->mode; }
const Error& FileReader::error() const { return core_->error; }

const uint8_t* FileReader::data() const {
  return core_->blocks.empty() ? nullptr : core_->blocks.front().data() + core_->front_off;
}

size_t FileReader::available() const {
  return core_->blocks.empty() ? 0 : core_->blocks.front().size() - core_->front_off;
}

void FileReader::consume(size_t n) {
  Core& c = *core_;
  consumed_ += n;
  c.front_off += n;
  if (!c.blocks.empty() && c.front_off >= c.blocks.front().size()) {
    c.blocks.pop_front();
    c.front_off = 0;
    read_more();
  }
}

bool FileReader::eof() const { return core_->read_all && core_->blocks.empty(); }

void FileReader::read_more() {
  Core& c = *core_;
  if (c.inflight || c.read_all || c.error || c.blocks.size() >= kDepth) return;
  c.inflight = true;
  struct Job {
    std::vector<uint8_t> block;
    int err = 0;
    const char* what = nullptr;
  };
  auto core = core_;
  auto job = std::make_shared<Job>();
  bool queued = reactor_.work_queue(
      [core, job] {
        if (core->gone) return;
        if (core->fd < 0) {
          int fd = ::open(core->path.c_str(), O_RDONLY | O_CLOEXEC);
          if (fd < 0) {
            job->err = errno;
            job->what = "open";
            return;
          }
          struct stat st;
          if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            job->err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
            job->what = "open";
            ::close(fd);
            return;
          }
          // Written before the loop reads it: the work/done hand-off orders the accesses.
          core->fd = fd;
          core->size = uint64_t(st.st_size);
          core->mtime = int64_t(st.st_mtim.tv_sec);
          core->mode = uint32_t(st.st_mode & 07777);
        }
        job->block.resize(kBlock);
        size_t got = 0;
        while (got < kBlock) {
          ssize_t n = ::read(core->fd, job->block.data() + got, kBlock - got);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) {
            job->err = errno;
            job->what = "read";
            return;
          }
          if (n == 0) break;
          got += size_t(n);
        }
        job->block.resize(got);
      },
      [this, core, job](bool cancelled) {
        if (core->gone) return;
        core->inflight = false;
        if (cancelled) {
          core->error = Error(Errc::cancelled, fmt::format("reading {} was cancelled", core->path));
        } else if (job->err) {
          core->error = Error(Errc::local_io, fmt::format("cannot {} {}: {}", job->what, core->path,
                                                          std::strerror(job->err)));
        } else {
          core->opened = true;
          if (job->block.empty()) core->read_all = true;
          else {
            if (job->block.size() < kBlock) core->read_all = true;
            core->blocks.push_back(std::move(job->block));
          }
          read_more();
        }
        on_ready_();
      });
  if (!queued) {
    c.inflight = false;
    c.error = Error(Errc::cancelled, "the loop is closing");
    reactor_.post([core, this] {
      if (!core->gone) on_ready_();
    });
  }
}

}  // namespace cloudlet::adb
