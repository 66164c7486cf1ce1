// A fake ADB device on a fake USB bus, for the USB transport tests: umockdev shows libusb a device node
// whose usbdevfs ioctls we answer here (claim, URB submit/reap/discard, string descriptors), and the bulk
// endpoints are bridged to a TCP connection to the device-side test peer. So the very peer that the real
// adb client validated also answers over "USB", and the transport's transfers (header then payload, zero-
// length packets, cancellation, unplugging) are exercised for real. Test code only.
//
// The ioctl handler runs on its own GLib thread; the peer connection is read by another thread.
#pragma once

#include <umockdev.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cloudlet::adb::test {

class UsbBridge {
 public:
  struct OutUrb {
    size_t length;
    bool zero_packet;
  };

  // devnode: "/dev/bus/usb/001/005" of a device already in the testbed. serial: its iSerialNumber string.
  UsbBridge(UMockdevTestbed* tb, std::string devnode, std::string serial, uint16_t peer_port);
  ~UsbBridge();
  UsbBridge(const UsbBridge&) = delete;
  UsbBridge& operator=(const UsbBridge&) = delete;

  bool ok() const { return ok_; }
  // The device is pulled out: pending and future transfers fail with ENODEV, the peer connection drops.
  void unplug();

  // What the host did (for assertions).
  std::vector<OutUrb> out_urbs() const;
  int discarded() const { return discarded_.load(); }
  int claims() const { return claims_.load(); }
  int releases() const { return releases_.load(); }

  struct Impl;

 private:
  Impl* impl_;
  bool ok_ = false;
  std::atomic<int> discarded_{0}, claims_{0}, releases_{0};
};

}  // namespace cloudlet::adb::test
