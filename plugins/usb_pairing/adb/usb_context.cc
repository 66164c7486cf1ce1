#include "adb/usb_context.h"

#include <poll.h>
#include <sys/time.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "adb/usb_transport.h"

namespace cloudlet::adb {

namespace {

constexpr uint8_t kAdbClass = 0xff;
constexpr uint8_t kAdbSubclass = 0x42;
constexpr uint8_t kAdbProtocol = 0x01;
constexpr unsigned kControlTimeoutMs = 1000;
constexpr int kDrainRounds = 100;  // x 10 ms when the context goes away with transfers still cancelling

uint32_t poll_to_reactor(short events) {
  return ((events & POLLIN) ? Reactor::kReadable : 0u) | ((events & POLLOUT) ? Reactor::kWritable : 0u);
}

// The serial-number read: two control transfers (the language list, then the string), asynchronous.
struct SerialRead {
  UsbContext* ctx;
  std::shared_ptr<UsbLink> link;
  UsbContext::OpenCb cb;
  std::shared_ptr<bool> ctx_alive;
  uint16_t langid = 0;
  bool want_langs = true;
  std::vector<uint8_t> buf;
};

void serial_submit(SerialRead* sr);

void serial_finish(SerialRead* sr, std::string serial, const char* problem) {
  UsbContext* ctx = sr->ctx;
  std::shared_ptr<UsbLink> link = std::move(sr->link);
  UsbContext::OpenCb cb = std::move(sr->cb);
  auto alive = sr->ctx_alive;
  delete sr;
  if (!*alive) return;
  if (link->closing) return;  // the context is shutting down
  if (problem) {
    // Not fatal: the port path still identifies the device; say why the serial is missing.
    ctx->reactor().log(CL_LOG_WARN, fmt::format("{}: no serial number ({})", link->info.id(), problem));
  }
  link->serial = std::move(serial);
  ctx->link_unpark(link.get());  // the transport owns it from here
  ctx->reactor().post([alive, link, cb] {
    if (!*alive) return;
    cb(Error(), std::make_unique<UsbTransport>(link));
  });
}

void LIBUSB_CALL serial_done(libusb_transfer* t) {
  auto* sr = static_cast<SerialRead*>(t->user_data);
  sr->link->inflight--;
  int status = t->status;
  int len = t->actual_length;
  const uint8_t* data = libusb_control_transfer_get_data(t);
  std::vector<uint8_t> got(data, data + std::max(len, 0));
  libusb_free_transfer(t);
  if (status != LIBUSB_TRANSFER_COMPLETED || len < 2 || got[1] != LIBUSB_DT_STRING) {
    serial_finish(sr, "", status == LIBUSB_TRANSFER_COMPLETED ? "malformed string descriptor"
                                                              : libusb_error_name(LIBUSB_ERROR_IO));
    return;
  }
  size_t n = std::min<size_t>(got[0], got.size());
  if (sr->want_langs) {
    if (n < 4) {
      serial_finish(sr, "", "no string languages");
      return;
    }
    sr->langid = uint16_t(got[2] | got[3] << 8);
    sr->want_langs = false;
    serial_submit(sr);
    return;
  }
  std::string serial;
  for (size_t i = 2; i + 1 < n; i += 2) {
    uint16_t c = uint16_t(got[i] | got[i + 1] << 8);
    serial.push_back(c >= 0x20 && c < 0x7f ? char(c) : '?');
  }
  serial_finish(sr, serial, nullptr);
}

void serial_submit(SerialRead* sr) {
  libusb_transfer* t = libusb_alloc_transfer(0);
  sr->buf.assign(LIBUSB_CONTROL_SETUP_SIZE + 255, 0);
  uint8_t index = sr->want_langs ? 0 : sr->link->info.serial_index;
  libusb_fill_control_setup(sr->buf.data(),
                            uint8_t(unsigned(LIBUSB_ENDPOINT_IN) | unsigned(LIBUSB_REQUEST_TYPE_STANDARD) |
                                    unsigned(LIBUSB_RECIPIENT_DEVICE)),
                            LIBUSB_REQUEST_GET_DESCRIPTOR, uint16_t(LIBUSB_DT_STRING << 8 | index),
                            sr->want_langs ? 0 : sr->langid, 255);
  libusb_fill_control_transfer(t, sr->link->handle, sr->buf.data(), serial_done, sr, kControlTimeoutMs);
  int rc = t ? libusb_submit_transfer(t) : LIBUSB_ERROR_NO_MEM;
  if (rc != 0) {
    if (t) libusb_free_transfer(t);
    serial_finish(sr, "", libusb_error_name(rc));
    return;
  }
  sr->link->inflight++;
}

}  // namespace

bool adb_interface_find(const libusb_config_descriptor* config, UsbDeviceInfo* info) {
  for (int i = 0; i < config->bNumInterfaces; i++) {
    const libusb_interface& itf = config->interface[i];
    // Only the first alternate setting: choosing another would need a blocking SET_INTERFACE, and adbd
    // never uses one.
    if (itf.num_altsetting < 1) continue;
    const libusb_interface_descriptor& d = itf.altsetting[0];
    if (d.bInterfaceClass != kAdbClass || d.bInterfaceSubClass != kAdbSubclass ||
        d.bInterfaceProtocol != kAdbProtocol || d.bNumEndpoints != 2) {
      continue;
    }
    uint8_t in = 0, out = 0;
    uint16_t in_max = 0, out_max = 0;
    for (int e = 0; e < d.bNumEndpoints; e++) {
      const libusb_endpoint_descriptor& ep = d.endpoint[e];
      if ((ep.bmAttributes & 0x03) != LIBUSB_TRANSFER_TYPE_BULK) continue;
      if (ep.bEndpointAddress & LIBUSB_ENDPOINT_IN) {
        in = ep.bEndpointAddress;
        in_max = ep.wMaxPacketSize;
      } else {
        out = ep.bEndpointAddress;
        out_max = ep.wMaxPacketSize;
      }
    }
    if (!in || !out || !in_max || !out_max) continue;
    info->config_value = config->bConfigurationValue;
    info->interface_number = d.bInterfaceNumber;
    info->alt_setting = d.bAlternateSetting;
    info->ep_in = in;
    info->ep_out = out;
    info->max_packet_in = in_max;
    info->max_packet_out = out_max;
    return true;
  }
  return false;
}

std::unique_ptr<UsbContext> UsbContext::create(Reactor& reactor, Error* err) {
  libusb_context* ctx = nullptr;
  int rc = libusb_init(&ctx);
  if (rc != 0) {
    *err = Error(Errc::unsupported, fmt::format("libusb cannot start: {}", libusb_strerror(rc)));
    return nullptr;
  }
  std::unique_ptr<UsbContext> uc(new UsbContext(reactor));
  uc->ctx_ = ctx;
  libusb_set_pollfd_notifiers(ctx, &UsbContext::on_pollfd_added, &UsbContext::on_pollfd_removed, uc.get());
  const libusb_pollfd** fds = libusb_get_pollfds(ctx);
  if (!fds) {
    *err = Error(Errc::unsupported, "libusb offers no file descriptors to watch on this system");
    return nullptr;
  }
  for (const libusb_pollfd** p = fds; *p; p++) on_pollfd_added((*p)->fd, (*p)->events, uc.get());
  libusb_free_pollfds(fds);
  uc->timeout_arm();
  *err = Error();
  return uc;
}

UsbContext::~UsbContext() {
  *alive_ = false;
  hotplug_stop();
  // Let cancelled transfers come back before their handles close (bounded).
  for (auto& link : parked_) link->cancel_all();
  for (int i = 0; i < kDrainRounds; i++) {
    bool busy = false;
    for (auto& link : parked_) busy = busy || link->inflight > 0;
    if (!busy) break;
    timeval tv{0, 10000};
    libusb_handle_events_timeout_completed(ctx_, &tv, nullptr);
  }
  for (auto& link : parked_) link->release();
  parked_.clear();
  if (timer_) reactor_.timer_stop(timer_);
  libusb_set_pollfd_notifiers(ctx_, nullptr, nullptr, nullptr);
  for (auto& [fd, id] : watches_) reactor_.io_stop(id);
  watches_.clear();
  libusb_exit(ctx_);
}

void UsbContext::on_pollfd_added(int fd, short events, void* ud) {
  auto* self = static_cast<UsbContext*>(ud);
  uint32_t ev = poll_to_reactor(events);
  auto it = self->watches_.find(fd);
  if (it != self->watches_.end()) {
    self->reactor_.io_update(it->second, ev);
    return;
  }
  Reactor::Id id = self->reactor_.io_start(fd, ev, [self](int, uint32_t) { self->events_handle(); });
  if (id) {
    self->watches_[fd] = id;
  } else {
    // Reported to whoever opened the device (device_open checks this counter).
    self->watch_failures_++;
    self->reactor_.log(CL_LOG_DEBUG, fmt::format("libusb: cannot watch fd {}", fd));
  }
}

void UsbContext::on_pollfd_removed(int fd, void* ud) {
  auto* self = static_cast<UsbContext*>(ud);
  auto it = self->watches_.find(fd);
  if (it == self->watches_.end()) return;
  self->reactor_.io_stop(it->second);
  self->watches_.erase(it);
}

void UsbContext::events_handle() {
  timeval zero{0, 0};
  libusb_handle_events_timeout_completed(ctx_, &zero, nullptr);
  timeout_arm();
}

void UsbContext::timeout_arm() {
  // Linux libusb keeps its transfer timeouts in a timerfd among the pollfds; elsewhere we time them.
  if (libusb_pollfds_handle_timeouts(ctx_)) return;
  timeval tv{};
  if (libusb_get_next_timeout(ctx_, &tv) != 1) return;
  if (timer_) reactor_.timer_stop(timer_);
  uint64_t ms = uint64_t(tv.tv_sec) * 1000 + uint64_t(tv.tv_usec + 999) / 1000;
  timer_ = reactor_.timer_start(ms, [this] {
    timer_ = 0;
    events_handle();
  });
}

bool UsbContext::device_describe(libusb_device* dev, UsbDeviceInfo* info) {
  libusb_device_descriptor dd{};
  if (libusb_get_device_descriptor(dev, &dd) != 0) return false;
  libusb_config_descriptor* cfg = nullptr;
  if (libusb_get_active_config_descriptor(dev, &cfg) != 0 && libusb_get_config_descriptor(dev, 0, &cfg) != 0) {
    return false;
  }
  bool found = adb_interface_find(cfg, info);
  libusb_free_config_descriptor(cfg);
  if (!found) return false;
  info->vendor = dd.idVendor;
  info->product = dd.idProduct;
  info->serial_index = dd.iSerialNumber;
  info->bus = libusb_get_bus_number(dev);
  info->address = libusb_get_device_address(dev);
  uint8_t ports[8];
  int n = libusb_get_port_numbers(dev, ports, sizeof ports);
  info->port_path = std::to_string(info->bus);
  for (int i = 0; i < n; i++) info->port_path += (i == 0 ? "-" : ".") + std::to_string(ports[i]);
  return true;
}

std::vector<UsbDeviceInfo> UsbContext::devices_list(Error* err) {
  std::vector<UsbDeviceInfo> out;
  libusb_device** list = nullptr;
  ssize_t n = libusb_get_device_list(ctx_, &list);
  if (n < 0) {
    *err = Error(Errc::io, fmt::format("cannot list USB devices: {}", libusb_strerror(int(n))));
    return out;
  }
  for (ssize_t i = 0; i < n; i++) {
    UsbDeviceInfo info;
    if (device_describe(list[i], &info)) out.push_back(info);
  }
  libusb_free_device_list(list, 1);
  *err = Error();
  return out;
}

bool UsbContext::hotplug_supported() const { return libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG) != 0; }

int LIBUSB_CALL UsbContext::on_hotplug(libusb_context*, libusb_device* dev, libusb_hotplug_event event, void* ud) {
  // Runs inside libusb's event handling: only look at descriptors here and tell the user later.
  auto* self = static_cast<UsbContext*>(ud);
  std::pair<uint8_t, uint8_t> key{libusb_get_bus_number(dev), libusb_get_device_address(dev)};
  bool arrived = event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED;
  UsbDeviceInfo info;
  if (arrived) {
    if (!self->device_describe(dev, &info)) return 0;
    self->known_[key] = info;
  } else {
    auto it = self->known_.find(key);
    if (it == self->known_.end()) return 0;
    info = it->second;
    self->known_.erase(it);
  }
  auto alive = self->alive_;
  self->reactor_.post([self, alive, arrived, info] {
    if (*alive && self->hotplug_cb_) self->hotplug_cb_(arrived, info);
  });
  return 0;
}

Error UsbContext::hotplug_start(HotplugCb cb) {
  if (!hotplug_supported()) return Error(Errc::unsupported, "libusb has no hotplug support on this system");
  if (hotplug_registered_) return Error(Errc::invalid, "hotplug is already started");
  hotplug_cb_ = std::move(cb);
  int rc = libusb_hotplug_register_callback(
      ctx_, libusb_hotplug_event(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT),
      LIBUSB_HOTPLUG_ENUMERATE, LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
      &UsbContext::on_hotplug, this, &hotplug_handle_);
  if (rc != LIBUSB_SUCCESS) {
    hotplug_cb_ = nullptr;
    return Error(Errc::unsupported, fmt::format("libusb hotplug registration failed: {}", libusb_strerror(rc)));
  }
  hotplug_registered_ = true;
  return Error();
}

void UsbContext::hotplug_stop() {
  if (!hotplug_registered_) return;
  libusb_hotplug_deregister_callback(ctx_, hotplug_handle_);
  hotplug_registered_ = false;
  hotplug_cb_ = nullptr;
  known_.clear();
}

void UsbContext::device_open(const UsbDeviceInfo& want, OpenCb cb) {
  auto fail = [this, cb](Errc code, std::string msg) {
    auto alive = alive_;
    reactor_.post([alive, cb, code, msg] {
      if (*alive) cb(Error(code, msg), nullptr);
    });
  };
  // Find the device again: it may have left, or another one may now use the address.
  libusb_device** list = nullptr;
  ssize_t n = libusb_get_device_list(ctx_, &list);
  libusb_device* dev = nullptr;
  UsbDeviceInfo info;
  for (ssize_t i = 0; i < n && !dev; i++) {
    UsbDeviceInfo cand;
    if (libusb_get_bus_number(list[i]) == want.bus && libusb_get_device_address(list[i]) == want.address &&
        device_describe(list[i], &cand) && cand.port_path == want.port_path) {
      dev = list[i];
      info = cand;
    }
  }
  if (!dev) {
    if (n >= 0) libusb_free_device_list(list, 1);
    fail(Errc::unavailable, fmt::format("{}: no such ADB device (unplugged?)", want.id()));
    return;
  }
  libusb_device_handle* handle = nullptr;
  uint64_t failures = watch_failures_;
  int rc = libusb_open(dev, &handle);
  libusb_free_device_list(list, 1);
  if (rc != 0) {
    std::string why = rc == LIBUSB_ERROR_ACCESS
                          ? fmt::format("permission denied on /dev/bus/usb/{:03}/{:03} (udev rule for the phone's "
                                        "vendor id {:04x}?)",
                                        info.bus, info.address, info.vendor)
                          : libusb_strerror(rc);
    fail(Errc::unavailable, fmt::format("{}: cannot open: {}", info.id(), why));
    return;
  }
  // Detach a kernel driver only when one is bound (and give the interface back to it on release).
  if (libusb_kernel_driver_active(handle, info.interface_number) == 1) libusb_set_auto_detach_kernel_driver(handle, 1);
  rc = libusb_claim_interface(handle, info.interface_number);
  if (rc != 0) {
    libusb_close(handle);
    std::string why = rc == LIBUSB_ERROR_BUSY ? "the interface is busy (is an adb server running?)" : libusb_strerror(rc);
    fail(Errc::unavailable, fmt::format("{}: cannot claim interface {}: {}", info.id(), info.interface_number, why));
    return;
  }
  if (watch_failures_ != failures) {
    // Its transfers would never complete on the loop.
    libusb_release_interface(handle, info.interface_number);
    libusb_close(handle);
    fail(Errc::unavailable, fmt::format("{}: its usbfs file descriptor cannot be watched by the loop", info.id()));
    return;
  }
  auto link = std::make_shared<UsbLink>();
  link->ctx = this;
  link->handle = handle;
  link->info = info;
  parked_.insert(link);  // ours until the serial is read
  auto* sr = new SerialRead{this, link, std::move(cb), alive_};
  if (info.serial_index == 0) {
    serial_finish(sr, "", "the device has no serial number string");
    return;
  }
  serial_submit(sr);
}

void UsbContext::link_park(std::shared_ptr<UsbLink> link) { parked_.insert(std::move(link)); }

std::shared_ptr<UsbLink> UsbContext::link_unpark(UsbLink* link) {
  for (auto it = parked_.begin(); it != parked_.end(); ++it) {
    if (it->get() != link) continue;
    std::shared_ptr<UsbLink> keep = *it;
    parked_.erase(it);
    return keep;
  }
  return nullptr;
}

void UsbContext::link_reaped(UsbLink* link) {
  std::shared_ptr<UsbLink> keep = link_unpark(link);
  if (!keep) return;
  // Released on a clean stack (we are inside one of the link's own transfer callbacks): the interface goes
  // back at once, even if the closed transport object itself lives on.
  reactor_.post([keep] { keep->release(); });
}

}  // namespace cloudlet::adb
