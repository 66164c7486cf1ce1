// Host ports for forwarding into guests, from a configurable range.
//
// A port is handed out only if it is not reserved here and a bind test on the listen address succeeds (with
// SO_REUSEADDR, as QEMU's user networking binds its forwards). Reservations live in memory under one mutex, so two
// concurrent reservations never get the same port; the bind test cannot stop another process from taking the
// port before QEMU binds it, so a start that fails to bind should release and retry with a new port.
// Thread-safe: any thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "system/status.h"

namespace cloudlet::virt {

class PortAllocator {
 public:
  // listen_address: numeric IPv4 or IPv6 address the forwards bind to (e.g. "127.0.0.1", "0.0.0.0").
  // Ports first..last inclusive, 1 <= first <= last <= 65535. Check valid() / status() after construction.
  PortAllocator(std::string listen_address, uint16_t first, uint16_t last);

  bool valid() const { return status_.ok(); }
  // Why the allocator is not valid (CL_EINVAL: the address or the range); success when it is.
  const Status& status() const { return status_; }
  const std::string& listen_address() const { return address_; }
  uint16_t first() const { return first_; }
  uint16_t last() const { return last_; }

  // Reserves one free port into *port. CL_EBUSY when none is free, CL_EUNAVAIL when the allocator is not valid
  // (its configuration is wrong: no port can be handed out until it is fixed).
  Status reserve(uint16_t* port);
  // Reserves `count` distinct ports at once (*ports gets them), or none at all (*ports is left alone).
  Status reserve_many(size_t count, std::vector<uint16_t>* ports);
  // Marks a port taken without the bind test (re-attaching an instance whose QEMU already listens on it).
  // False if it is outside the range or already reserved.
  bool reserve_exact(uint16_t port);
  // Returns a port to the pool; false if it was not reserved.
  bool release(uint16_t port);

  bool is_reserved(uint16_t port) const;
  size_t reserved_count() const;

  // True if a listening socket could bind address:port right now (exposed for tests).
  static bool bind_test(const std::string& address, uint16_t port);

 private:
  std::string address_;
  uint16_t first_, last_;
  Status status_;
  mutable std::mutex mu_;
  std::set<uint16_t> reserved_;  // guarded by mu_
  uint32_t cursor_ = 0;          // guarded by mu_: where the next search starts (spreads reuse of ports)
};

}  // namespace cloudlet::virt
