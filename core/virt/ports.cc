#include "virt/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>

namespace cloudlet::virt {
namespace {

bool make_sockaddr(const std::string& address, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
  std::memset(ss, 0, sizeof *ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof *v4;
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof *v6;
    return true;
  }
  return false;
}

}  // namespace

PortAllocator::PortAllocator(std::string listen_address, uint16_t first, uint16_t last)
    : address_(std::move(listen_address)), first_(first), last_(last) {
  sockaddr_storage ss;
  socklen_t len;
  if (!make_sockaddr(address_, 0, &ss, &len)) {
    status_ = Status::invalid(fmt::format("listen address '{}' is not a numeric IP address", address_));
  } else if (first == 0 || first > last) {
    status_ = Status::invalid(fmt::format("bad port range {}-{}", first, last));
  }
}

bool PortAllocator::bind_test(const std::string& address, uint16_t port) {
  sockaddr_storage ss;
  socklen_t len;
  if (!make_sockaddr(address, port, &ss, &len)) return false;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 && listen(fd, 1) == 0;
  ::close(fd);
  return ok;
}

Status PortAllocator::reserve(uint16_t* port) {
  std::vector<uint16_t> one;
  Status s = reserve_many(1, &one);
  if (s.ok()) *port = one.front();
  return s;
}

Status PortAllocator::reserve_many(size_t count, std::vector<uint16_t>* ports) {
  if (!valid()) return Status::error(CL_EUNAVAIL, status_.message());
  uint32_t span = static_cast<uint32_t>(last_) - first_ + 1;
  std::vector<uint16_t> got;
  // The bind tests run under the lock: they take microseconds, and holding it is what makes two concurrent
  // callers never see the same port as free.
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < span && got.size() < count; i++) {
    uint16_t port = static_cast<uint16_t>(first_ + (cursor_ + i) % span);
    if (reserved_.count(port)) continue;
    if (!bind_test(address_, port)) continue;
    got.push_back(port);
    reserved_.insert(port);
  }
  if (got.size() < count) {
    for (auto p : got) reserved_.erase(p);
    return Status::error(CL_EBUSY, fmt::format("no free port in {}-{} on {} ({} reserved by cloudletd)", first_, last_,
                                               address_, reserved_.size()));
  }
  if (!got.empty()) cursor_ = (static_cast<uint32_t>(got.back()) - first_ + 1) % span;
  *ports = std::move(got);
  return Status();
}

bool PortAllocator::reserve_exact(uint16_t port) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!valid() || port < first_ || port > last_) return false;
  return reserved_.insert(port).second;
}

bool PortAllocator::release(uint16_t port) {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_.erase(port) > 0;
}

bool PortAllocator::is_reserved(uint16_t port) const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_.count(port) > 0;
}

size_t PortAllocator::reserved_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_.size();
}

}  // namespace cloudlet::virt
