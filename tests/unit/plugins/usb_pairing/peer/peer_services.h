// The peer's services: "sync:" (STAT, LIST, SEND, RECV, QUIT) on its fs/ folder and "shell:<command>" for a
// fixed set of commands. Test code only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "peer/adb_peer.h"

namespace cloudlet::adb::peer {

class Service;

// What a service needs from its connection.
class ConnIo {
 public:
  virtual ~ConnIo() = default;
  virtual void send_msg(uint32_t cmd, uint32_t a0, uint32_t a1, const std::string& payload) = 0;
  virtual void pump(Service& s) = 0;
  virtual uint32_t payload_max() const = 0;
  virtual Peer& owner() = 0;
};

class Service {
 public:
  virtual ~Service() = default;
  uint32_t local = 0, remote = 0;
  std::string out;             // bytes for the host, sent as WRTEs under flow control
  bool awaiting_okay = false;  // one WRTE in flight
  bool close_when_drained = false;
  bool closed = false;

  virtual void start(ConnIo&) {}
  virtual void input(ConnIo&, const uint8_t*, size_t) {}
  // Called when out is empty and the stream may write: streaming producers add the next piece here.
  virtual void refill(ConnIo&) {}
  // The host closed the stream (or the connection ended).
  virtual void host_closed(ConnIo&) {}
};

// nullptr for services the peer does not offer (the host then gets CLSE).
std::unique_ptr<Service> service_make(ConnIo& io, const std::string& name);

}  // namespace cloudlet::adb::peer
