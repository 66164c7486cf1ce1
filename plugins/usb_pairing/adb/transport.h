// A transport carries whole ADB messages to and from one device: TCP (tcp_transport.h) or a USB interface
// (usb_transport.h). The connection (connection.h) speaks the protocol on top of it.
//
// Rules: everything runs on the loop thread; events are never delivered from inside a call the owner made
// (send() reports failures later, through transport_error); after close() no event is delivered at all.
#pragma once

#include <cstdint>
#include <string>

#include "adb/error.h"
#include "adb/message.h"

namespace cloudlet::adb {

class TransportEvents {
 public:
  virtual ~TransportEvents() = default;
  // A complete message whose header passed header_check(). The payload checksum is the protocol's concern.
  virtual void transport_message(Message&& msg) = 0;
  // The transport is dead (device gone, I/O error, a header that failed the checks). Delivered at most once.
  virtual void transport_error(Error err) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Starts delivering messages. max_payload bounds the payload length a received header may announce.
  virtual void start(TransportEvents* events, uint32_t max_payload) = 0;
  // Queues a message. Messages go out in order.
  virtual void send(Message&& msg) = 0;
  // Bytes queued and not yet handed to the kernel / the USB stack.
  virtual size_t pending_bytes() const = 0;
  // "tcp:127.0.0.1:5555", "usb:1-1.4".
  virtual std::string name() const = 0;
  // Stops all I/O and releases the device; no event is delivered afterwards. Idempotent.
  virtual void close() = 0;
};

}  // namespace cloudlet::adb
