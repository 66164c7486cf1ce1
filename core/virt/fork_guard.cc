#include "virt/fork_guard.h"

#include <fcntl.h>
#include <unistd.h>

#include <mutex>

namespace cloudlet::virt {
namespace {

constexpr int kFirst = 3;
constexpr int kLast = 18;

std::mutex g_mu;
bool g_installed = false;
bool g_complete = false;

}  // namespace

bool fork_guard_install() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_installed) return g_complete;
  g_installed = true;
  bool complete = true;
  for (int fd = kFirst; fd <= kLast; fd++) {
    // Already open (an inherited fd, a log file): occupied is all that matters, as long as it stays open.
    if (fcntl(fd, F_GETFD) >= 0) continue;
    int nfd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nfd < 0) return false;
    if (nfd != fd) {
      // Lower numbers were free after all (opened concurrently?): move it where it belongs.
      int moved = fcntl(nfd, F_DUPFD_CLOEXEC, fd);
      ::close(nfd);
      if (moved != fd) {
        if (moved >= 0) ::close(moved);
        complete = false;
      }
    }
  }
  g_complete = complete;
  return complete;
}

bool fork_guard_intact() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_installed) return false;
  for (int fd = kFirst; fd <= kLast; fd++) {
    if (fcntl(fd, F_GETFD) < 0) return false;
  }
  return true;
}

namespace {
// Before main(): before anything can create a uv loop (which creates libuv's pipe).
[[gnu::constructor]] void install_early() { fork_guard_install(); }
}  // namespace

}  // namespace cloudlet::virt
