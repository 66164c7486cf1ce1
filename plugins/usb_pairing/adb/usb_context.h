// libusb on the loop. The context's file descriptors (libusb_get_pollfds, kept current through
// libusb_set_pollfd_notifiers) are watched by the reactor, and events are handled with a zero timeout, so
// libusb never blocks the loop and runs no event thread of its own.
//
// ADB devices are the ones with an interface of class ff, subclass 42, protocol 01 and one bulk endpoint in
// each direction (how adbd presents itself, alone or next to MTP, RNDIS, ...).
#pragma once

#include <libusb.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "adb/error.h"
#include "adb/reactor.h"

namespace cloudlet::adb {

class UsbTransport;
struct UsbLink;

struct UsbDeviceInfo {
  uint8_t bus = 0;
  uint8_t address = 0;
  std::string port_path;  // "1-2.3": stable while the device stays in the same socket
  uint16_t vendor = 0;
  uint16_t product = 0;
  uint8_t serial_index = 0;  // iSerialNumber (0: none)
  uint8_t config_value = 0;
  uint8_t interface_number = 0;
  uint8_t alt_setting = 0;
  uint8_t ep_in = 0;
  uint8_t ep_out = 0;
  uint16_t max_packet_in = 0;
  uint16_t max_packet_out = 0;
  // "usb:1-2.3"
  std::string id() const { return "usb:" + port_path; }
};

// Looks for the ADB interface in a configuration descriptor. Exposed for tests.
bool adb_interface_find(const libusb_config_descriptor* config, UsbDeviceInfo* info);

class UsbContext {
 public:
  using HotplugCb = std::function<void(bool arrived, const UsbDeviceInfo& info)>;
  using OpenCb = std::function<void(Error, std::unique_ptr<UsbTransport>)>;

  // Fails (unsupported) when libusb cannot initialise here (no usbfs, no permission to /dev/bus/usb).
  static std::unique_ptr<UsbContext> create(Reactor& reactor, Error* err);
  // Transports opened from this context must be destroyed first. Transfers still being cancelled are waited
  // for (bounded) before libusb is shut down.
  ~UsbContext();
  UsbContext(const UsbContext&) = delete;
  UsbContext& operator=(const UsbContext&) = delete;

  // The ADB devices plugged in now (descriptors come from the kernel's cache: no I/O to the devices).
  std::vector<UsbDeviceInfo> devices_list(Error* err);

  // Reports ADB devices arriving and leaving, on the loop, never from inside libusb. Returns unsupported
  // where libusb has no hotplug (then poll devices_list with a timer).
  Error hotplug_start(HotplugCb cb);
  void hotplug_stop();
  bool hotplug_supported() const;

  // Opens the device, claims its ADB interface and reads its serial number (asynchronously), then hands
  // over a transport. Errors: unavailable (gone, busy: another adb server holds it, no permission).
  void device_open(const UsbDeviceInfo& info, OpenCb cb);

  Reactor& reactor() { return reactor_; }
  libusb_context* ctx() { return ctx_; }

  // Internal (UsbTransport / UsbLink): links whose transfers are being cancelled (or whose serial number is
  // being read) are kept here until done; link_reaped releases the device afterwards.
  void link_park(std::shared_ptr<UsbLink> link);
  std::shared_ptr<UsbLink> link_unpark(UsbLink* link);
  void link_reaped(UsbLink* link);

 private:
  explicit UsbContext(Reactor& reactor) : reactor_(reactor) {}
  static void on_pollfd_added(int fd, short events, void* ud);
  static void on_pollfd_removed(int fd, void* ud);
  static int LIBUSB_CALL on_hotplug(libusb_context* ctx, libusb_device* dev, libusb_hotplug_event event, void* ud);
  void events_handle();
  void timeout_arm();
  bool device_describe(libusb_device* dev, UsbDeviceInfo* info);

  Reactor& reactor_;
  libusb_context* ctx_ = nullptr;
  std::map<int, Reactor::Id> watches_;
  uint64_t watch_failures_ = 0;
  Reactor::Id timer_ = 0;
  bool hotplug_registered_ = false;
  libusb_hotplug_callback_handle hotplug_handle_ = 0;
  HotplugCb hotplug_cb_;
  std::map<std::pair<uint8_t, uint8_t>, UsbDeviceInfo> known_;  // (bus, address) of ADB devices seen
  std::set<std::shared_ptr<UsbLink>> parked_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace cloudlet::adb
