#include "system/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cloudlet {

bool notify_send(std::string_view state) {
  const char* path = getenv("NOTIFY_SOCKET");
  if (!path || !*path) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) return false;
  memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract socket
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  socklen_t alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  ssize_t n = sendto(fd, state.data(), state.size(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
                     alen);
  close(fd);
  return n == static_cast<ssize_t>(state.size());
}

uint64_t notify_watchdog_ms() {
  const char* usec = getenv("WATCHDOG_USEC");
  if (!usec || !*usec) return 0;
  if (const char* pid = getenv("WATCHDOG_PID"); pid && *pid && std::strtol(pid, nullptr, 10) != getpid()) return 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(usec, &end, 10);
  if (!end || *end || v == 0) return 0;
  return v / 1000 > 0 ? v / 1000 : 1;
}

}  // namespace cloudlet
