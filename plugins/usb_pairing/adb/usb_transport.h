// ADB over a USB interface: every message is a 24-byte header transfer followed, when there is a payload, by
// a payload transfer; a payload that fills its last packet exactly is followed by a zero-length packet so the
// device sees the transfer end. Asynchronous libusb transfers only, completed on the loop by UsbContext.
#pragma once

#include <libusb.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "adb/transport.h"
#include "adb/usb_context.h"

namespace cloudlet::adb {

// The transfer state shared with libusb callbacks; it may outlive the UsbTransport while cancelled transfers
// drain (then the UsbContext keeps it).
struct UsbLink {
  UsbContext* ctx = nullptr;
  libusb_device_handle* handle = nullptr;
  UsbDeviceInfo info;
  std::string serial;
  TransportEvents* events = nullptr;
  uint32_t max_payload = 0;
  int inflight = 0;
  bool closing = false;
  bool failed = false;
  bool reading_header = true;
  Header header;
  std::vector<uint8_t> read_buf;
  libusb_transfer* reader = nullptr;  // reused for every read; freed when the link is released
  bool reading = false;               // the reader is submitted
  std::deque<libusb_transfer*> writes;  // submitted, in order
  size_t pending_bytes = 0;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  ~UsbLink();
  void read_submit();
  void fail(Error err);
  void cancel_all();
  void release();
};

class UsbTransport final : public Transport {
 public:
  explicit UsbTransport(std::shared_ptr<UsbLink> link) : link_(std::move(link)) {}
  ~UsbTransport() override;

  void start(TransportEvents* events, uint32_t max_payload) override;
  void send(Message&& msg) override;
  size_t pending_bytes() const override { return link_->pending_bytes; }
  std::string name() const override { return link_->info.id(); }
  void close() override;

  const std::string& serial() const { return link_->serial; }
  const UsbDeviceInfo& info() const { return link_->info; }

 private:
  std::shared_ptr<UsbLink> link_;
  bool closed_ = false;
};

}  // namespace cloudlet::adb
