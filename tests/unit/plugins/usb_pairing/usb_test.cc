// The USB side of the ADB library. This kernel has no USB at all, so:
//  - adb_interface_find is checked on synthetic descriptors;
//  - device matching, opening, claiming and hotplug are checked against fake devices that umockdev makes
//    libusb see (sysfs, udev and uevents). Those tests run in a child process started through
//    `umockdev-wrapper` (the preload library must be in place from process start);
//  - umockdev's own device nodes cannot carry bulk transfers (plain files, no URBs), which device_open must
//    report; but with our own usbdevfs ioctl handler attached (usb_bridge.h) they can: the USB transport then
//    runs end to end (serial number, CNXN/AUTH, push, pull, shell, zero-length packets, close with
//    transfers in flight, unplugging) against the same device-side peer the real adb client validated.
#include <umockdev.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "adb/connection.h"
#include "adb/reactor_uv.h"
#include "adb/usb_context.h"
#include "adb/usb_transport.h"
#include "peer/adb_peer.h"
#include "support/test_support.h"
#include "usb_bridge.h"

using namespace cloudlet::adb;
using namespace cloudlet::adb::test;

namespace {

struct Ep {
  uint8_t addr, attr;
  uint16_t mps;
};
struct Itf {
  uint8_t cls, sub, proto;
  std::vector<Ep> eps;
};

const Itf kAdb{0xff, 0x42, 0x01, {{0x81, 2, 512}, {0x01, 2, 512}}};
const Itf kMtp{0x06, 0x01, 0x01, {{0x82, 2, 512}, {0x02, 2, 512}, {0x83, 3, 28}}};
const Itf kFastboot{0xff, 0x42, 0x03, {{0x81, 2, 512}, {0x01, 2, 512}}};
const Itf kAdbInterrupt{0xff, 0x42, 0x01, {{0x81, 3, 64}, {0x01, 2, 512}}};

void le16(std::vector<uint8_t>* v, uint16_t x) {
  v->push_back(uint8_t(x));
  v->push_back(uint8_t(x >> 8));
}

std::vector<uint8_t> config_make(const std::vector<Itf>& itfs) {
  std::vector<uint8_t> body;
  for (size_t n = 0; n < itfs.size(); n++) {
    const Itf& i = itfs[n];
    body.insert(body.end(), {9, 4, uint8_t(n), 0, uint8_t(i.eps.size()), i.cls, i.sub, i.proto, 0});
    for (const Ep& e : i.eps) {
      body.insert(body.end(), {7, 5, e.addr, e.attr});
      le16(&body, e.mps);
      body.push_back(0);
    }
  }
  std::vector<uint8_t> cfg = {9, 2};
  le16(&cfg, uint16_t(9 + body.size()));
  cfg.insert(cfg.end(), {uint8_t(itfs.size()), 1, 0, 0x80, 250});
  cfg.insert(cfg.end(), body.begin(), body.end());
  return cfg;
}

std::string hex(const std::vector<uint8_t>& v) {
  std::string s;
  for (uint8_t b : v) s += fmt::format("{:02x}", b);
  return s;
}

// A device as umockdev-record would describe it: sysfs attributes (with the raw descriptors libusb reads)
// and udev properties.
std::string umockdev_device(int port, int devnum, uint16_t vid, uint16_t pid, const std::vector<Itf>& itfs) {
  std::vector<uint8_t> d = {18, 1};
  le16(&d, 0x200);
  d.insert(d.end(), {0, 0, 0, 64});
  le16(&d, vid);
  le16(&d, pid);
  le16(&d, 0x100);
  d.insert(d.end(), {1, 2, 3, 1});
  std::vector<uint8_t> cfg = config_make(itfs);
  d.insert(d.end(), cfg.begin(), cfg.end());
  return fmt::format(
      "P: /devices/pci0000:00/0000:00:14.0/usb1/1-{0}\n"
      "N: bus/usb/001/{1:03}\n"
      "E: BUSNUM=001\nE: DEVNAME=/dev/bus/usb/001/{1:03}\nE: DEVNUM={1:03}\nE: DEVTYPE=usb_device\nE: DRIVER=usb\n"
      "E: MAJOR=189\nE: MINOR={2}\nE: PRODUCT={3:x}/{4:x}/100\nE: SUBSYSTEM=usb\nE: TYPE=0/0/0\n"
      "A: bConfigurationValue=1\nA: bDeviceClass=00\nA: bNumConfigurations=1\nA: bNumInterfaces={5:2}\n"
      "A: busnum=1\nA: devnum={1}\nA: idProduct={4:04x}\nA: idVendor={3:04x}\nA: speed=480\n"
      "H: descriptors={6}\n\n",
      port, devnum, devnum - 1, vid, pid, itfs.size(), hex(d));
}

const libusb_config_descriptor* config_parse(const std::vector<uint8_t>& raw, libusb_config_descriptor* storage,
                                             std::vector<libusb_interface>* itfs,
                                             std::vector<std::vector<libusb_interface_descriptor>>* alts,
                                             std::vector<std::vector<libusb_endpoint_descriptor>>* eps) {
  // A small parser for the synthetic descriptors above (libusb offers none for raw buffers).
  std::memset(storage, 0, sizeof *storage);
  storage->bNumInterfaces = raw[4];
  storage->bConfigurationValue = raw[5];
  size_t pos = 9;
  alts->clear();
  eps->clear();
  while (pos < raw.size()) {
    if (raw[pos + 1] == 4) {
      libusb_interface_descriptor d{};
      d.bInterfaceNumber = raw[pos + 2];
      d.bAlternateSetting = raw[pos + 3];
      d.bNumEndpoints = raw[pos + 4];
      d.bInterfaceClass = raw[pos + 5];
      d.bInterfaceSubClass = raw[pos + 6];
      d.bInterfaceProtocol = raw[pos + 7];
      alts->push_back({d});
      eps->push_back({});
    } else if (raw[pos + 1] == 5) {
      libusb_endpoint_descriptor e{};
      e.bEndpointAddress = raw[pos + 2];
      e.bmAttributes = raw[pos + 3];
      e.wMaxPacketSize = uint16_t(raw[pos + 4] | raw[pos + 5] << 8);
      eps->back().push_back(e);
    }
    pos += raw[pos];
  }
  itfs->clear();
  for (size_t i = 0; i < alts->size(); i++) {
    (*alts)[i][0].endpoint = (*eps)[i].data();
    libusb_interface itf{};
    itf.altsetting = (*alts)[i].data();
    itf.num_altsetting = 1;
    itfs->push_back(itf);
  }
  storage->interface = itfs->data();
  return storage;
}

bool find_in(const std::vector<Itf>& itfs, UsbDeviceInfo* info) {
  libusb_config_descriptor cfg;
  std::vector<libusb_interface> i;
  std::vector<std::vector<libusb_interface_descriptor>> a;
  std::vector<std::vector<libusb_endpoint_descriptor>> e;
  return adb_interface_find(config_parse(config_make(itfs), &cfg, &i, &a, &e), info);
}

TEST(AdbUsb, InterfaceMatchingByClassAndEndpoints) {
  UsbDeviceInfo info;
  ASSERT_TRUE(find_in({kAdb}, &info));
  EXPECT_EQ(info.interface_number, 0);
  EXPECT_EQ(info.ep_in, 0x81);
  EXPECT_EQ(info.ep_out, 0x01);
  EXPECT_EQ(info.max_packet_out, 512);
  ASSERT_TRUE(find_in({kMtp, kAdb}, &info));  // composite: MTP first, ADB second
  EXPECT_EQ(info.interface_number, 1);
  EXPECT_FALSE(find_in({kMtp}, &info));
  EXPECT_FALSE(find_in({kFastboot}, &info)) << "ff/42/03 is fastboot, not adb";
  EXPECT_FALSE(find_in({kAdbInterrupt}, &info)) << "both endpoints must be bulk";
}

TEST(AdbUsb, ContextStartsWithoutUsbHardware) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    UvReactor reactor(&loop);
    Error err;
    auto ctx = UsbContext::create(reactor, &err);
    ASSERT_TRUE(ctx) << err.text();
    std::vector<UsbDeviceInfo> list = ctx->devices_list(&err);
    EXPECT_FALSE(err) << err.text();
  }
  loop_drain(&loop);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// Runs the AdbUsbMock and AdbUsbBridged tests below in a child under umockdev-wrapper; all must pass.
TEST(AdbUsb, UnderUmockdev) {
  ASSERT_EQ(access("/usr/bin/umockdev-wrapper", X_OK), 0) << "umockdev is a test dependency (debian/control)";
  char self[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", self, sizeof self - 1), 0);
  // ASan (sanitized builds) insists on being first in the preload list; umockdev's preload has to be there.
  RunResult r = run({"umockdev-wrapper", self, "--gtest_filter=AdbUsbMock.*:AdbUsbBridged.*"},
                    {{"ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=1"}}, 60000);
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("[  PASSED  ] 5 tests."), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("SKIPPED"), std::string::npos) << r.out;
}

class AdbUsbMock : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* preload = getenv("LD_PRELOAD");
    if (!preload || !std::strstr(preload, "libumockdev-preload")) {
      GTEST_SKIP() << "runs inside AdbUsb.UnderUmockdev";
    }
    uv_loop_init(&loop_);
    tb_ = umockdev_testbed_new();
    ASSERT_TRUE(add(umockdev_device(2, 5, 0x18d1, 0x4ee7, {kAdb})));
    ASSERT_TRUE(add(umockdev_device(3, 6, 0x04e8, 0x6860, {kMtp, kAdb})));
    ASSERT_TRUE(add(umockdev_device(4, 7, 0x18d1, 0x4ee0, {kFastboot})));
    ASSERT_TRUE(add(umockdev_device(5, 8, 0x0781, 0x5581, {kMtp})));
    reactor_ = std::make_unique<UvReactor>(&loop_, CL_LOG_ERROR);
    Error err;
    ctx_ = UsbContext::create(*reactor_, &err);
    ASSERT_TRUE(ctx_) << err.text();
  }
  void TearDown() override {
    if (!tb_) return;
    ctx_.reset();
    reactor_.reset();
    loop_drain(&loop_);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    g_object_unref(tb_);
  }
  bool add(const std::string& desc) {
    GError* gerr = nullptr;
    bool ok = umockdev_testbed_add_from_string(tb_, desc.c_str(), &gerr);
    if (gerr) {
      ADD_FAILURE() << gerr->message;
      g_error_free(gerr);
    }
    return ok;
  }

  UMockdevTestbed* tb_ = nullptr;
  uv_loop_t loop_;
  std::unique_ptr<UvReactor> reactor_;
  std::unique_ptr<UsbContext> ctx_;
};

TEST_F(AdbUsbMock, ListsOnlyAdbInterfaces) {
  Error err;
  std::vector<UsbDeviceInfo> list = ctx_->devices_list(&err);
  ASSERT_FALSE(err) << err.text();
  std::sort(list.begin(), list.end(), [](auto& a, auto& b) { return a.port_path < b.port_path; });
  ASSERT_EQ(list.size(), 2u) << "fastboot and MTP-only devices must not match";
  EXPECT_EQ(list[0].id(), "usb:1-2");
  EXPECT_EQ(list[0].vendor, 0x18d1);
  EXPECT_EQ(list[0].product, 0x4ee7);
  EXPECT_EQ(list[0].interface_number, 0);
  EXPECT_EQ(list[0].serial_index, 3);
  EXPECT_EQ(list[1].id(), "usb:1-3");
  EXPECT_EQ(list[1].vendor, 0x04e8);
  EXPECT_EQ(list[1].interface_number, 1);
  EXPECT_EQ(list[1].ep_in, 0x81);
  EXPECT_EQ(list[1].ep_out, 0x01);
}

TEST_F(AdbUsbMock, HotplugReportsArrivalAndRemoval) {
  std::vector<std::pair<bool, std::string>> seen;
  Error err = ctx_->hotplug_start([&](bool arrived, const UsbDeviceInfo& info) { seen.emplace_back(arrived, info.id()); });
  ASSERT_FALSE(err) << err.text();
  // Devices already present are reported first.
  ASSERT_TRUE(run_until(&loop_, [&] { return seen.size() >= 2; }, 5000));
  EXPECT_EQ(seen.size(), 2u);

  ASSERT_TRUE(add(umockdev_device(6, 9, 0x18d1, 0x4ee2, {kMtp, kAdb})));
  umockdev_testbed_uevent(tb_, "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-6", "add");
  ASSERT_TRUE(add(umockdev_device(7, 10, 0x0781, 0x5581, {kMtp})));  // not ADB: no event
  umockdev_testbed_uevent(tb_, "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-7", "add");
  ASSERT_TRUE(run_until(&loop_, [&] { return seen.size() >= 3; }, 5000)) << "no arrival event";
  EXPECT_EQ(seen[2], std::make_pair(true, std::string("usb:1-6")));

  umockdev_testbed_uevent(tb_, "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-6", "remove");
  umockdev_testbed_remove_device(tb_, "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-6");
  ASSERT_TRUE(run_until(&loop_, [&] { return seen.size() >= 4; }, 5000)) << "no removal event";
  EXPECT_EQ(seen[3], std::make_pair(false, std::string("usb:1-6")));
  run_until(&loop_, [] { return false; }, 200);
  EXPECT_EQ(seen.size(), 4u) << "the MTP-only device must not be reported";
  ctx_->hotplug_stop();
}

// Opening and claiming work under umockdev, but its device nodes are plain files that epoll refuses (and
// its usbdevfs has no URBs): device_open must say so instead of handing out a transport that would hang.
TEST_F(AdbUsbMock, OpensClaimsAndRefusesAnUnwatchableDevice) {
  Error err;
  std::vector<UsbDeviceInfo> list = ctx_->devices_list(&err);
  ASSERT_FALSE(list.empty());
  std::sort(list.begin(), list.end(), [](auto& a, auto& b) { return a.port_path < b.port_path; });
  std::optional<Error> open_err;
  std::unique_ptr<UsbTransport> transport;
  ctx_->device_open(list[0], [&](Error e, std::unique_ptr<UsbTransport> t) {
    open_err = e;
    transport = std::move(t);
  });
  ASSERT_TRUE(run_until(&loop_, [&] { return open_err.has_value(); }, 5000));
  // Got past libusb_open and libusb_claim_interface (those report "cannot open" / "cannot claim").
  EXPECT_EQ(open_err->code, Errc::unavailable) << open_err->text();
  EXPECT_EQ(open_err->message, "usb:1-2: its usbfs file descriptor cannot be watched by the loop");
  EXPECT_FALSE(transport);

  // Unknown or vanished devices.
  UsbDeviceInfo ghost = list[0];
  ghost.address = 99;
  open_err.reset();
  ctx_->device_open(ghost, [&](Error e, std::unique_ptr<UsbTransport>) { open_err = e; });
  ASSERT_TRUE(run_until(&loop_, [&] { return open_err.has_value(); }, 5000));
  EXPECT_EQ(open_err->code, Errc::unavailable) << open_err->text();
  EXPECT_NE(open_err->message.find("no such ADB device"), std::string::npos) << open_err->message;
}

// ---- end to end over the bridge ------------------------------------------------------------------------------

// umockdev's device nodes are regular files, which epoll refuses (the library rightly refuses such a device,
// see above). poll() calls them always ready, which is what this reactor tells the library, on a 1 ms tick,
// for fds the real reactor cannot watch. Everything else goes to the real reactor.
class AlwaysReadyReactor final : public Reactor {
 public:
  explicit AlwaysReadyReactor(Reactor& inner) : inner_(inner) {}
  ~AlwaysReadyReactor() override {
    if (tick_) inner_.timer_stop(tick_);
  }
  Id io_start(int fd, uint32_t events, IoCb cb) override {
    Id id = inner_.io_start(fd, events, cb);
    if (id) return id;
    Id fake = kFakeBase + next_++;
    fakes_[fake] = {events, std::move(cb)};
    tick_arm();
    return fake;
  }
  bool io_update(Id id, uint32_t events) override {
    auto it = fakes_.find(id);
    if (it == fakes_.end()) return inner_.io_update(id, events);
    it->second.first = events;
    return true;
  }
  void io_stop(Id id) override {
    if (!fakes_.erase(id)) inner_.io_stop(id);
  }
  Id timer_start(uint64_t ms, std::function<void()> cb) override { return inner_.timer_start(ms, std::move(cb)); }
  void timer_stop(Id id) override { inner_.timer_stop(id); }
  bool post(std::function<void()> fn) override { return inner_.post(std::move(fn)); }
  bool work_queue(std::function<void()> w, std::function<void(bool)> d) override {
    return inner_.work_queue(std::move(w), std::move(d));
  }
  uint64_t now_ms() override { return inner_.now_ms(); }
  bool log_enabled(int level) override { return inner_.log_enabled(level); }
  void log(int level, const std::string& msg) override { inner_.log(level, msg); }

 private:
  static constexpr Id kFakeBase = Id(1) << 62;
  void tick_arm() {
    if (tick_ || fakes_.empty()) return;
    tick_ = inner_.timer_start(1, [this] {
      tick_ = 0;
      std::vector<Id> ids;
      for (auto& [id, w] : fakes_) ids.push_back(id);
      for (Id id : ids) {
        auto it = fakes_.find(id);
        if (it != fakes_.end()) {
          IoCb cb = it->second.second;  // a copy: the callback may stop its own watch
          cb(0, it->second.first);
        }
      }
      tick_arm();
    });
  }
  Reactor& inner_;
  std::map<Id, std::pair<uint32_t, IoCb>> fakes_;
  Id next_ = 1;
  Id tick_ = 0;
};

class AdbUsbBridged : public AdbUsbMock {
 protected:
  void SetUp() override {
    AdbUsbMock::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // Same libusb context, but watched through the always-ready reactor.
    ctx_.reset();
    ready_ = std::make_unique<AlwaysReadyReactor>(*reactor_);
    Error err;
    ctx_ = UsbContext::create(*ready_, &err);
    ASSERT_TRUE(ctx_) << err.text();
    key_ = HostKey::load_or_create(keydir_ / "k", "cloudletd@usb", &err);
    ASSERT_TRUE(key_) << err.text();
    peer::PeerOptions po;
    po.dir = keydir_ / "peer";
    peer_ = std::make_unique<peer::Peer>(po);
    std::string perr;
    ASSERT_TRUE(peer_->listen("127.0.0.1", 0, &perr)) << perr;
    ASSERT_TRUE(file_write(peer_->keys_path(), key_->public_key() + "\n"));
    bridge_ = std::make_unique<UsbBridge>(tb_, "/dev/bus/usb/001/005", "PEERUSB01", peer_->port());
    ASSERT_TRUE(bridge_->ok());
  }
  void TearDown() override {
    if (!tb_) return;  // skipped: nothing was set up
    conn_.reset();
    loop_settle(&loop_, 50);
    ctx_.reset();
    ready_.reset();
    bridge_.reset();
    peer_.reset();
    AdbUsbMock::TearDown();
  }

  // Opens usb:1-2 and completes the ADB handshake over it.
  void connect() {
    Error err;
    std::vector<UsbDeviceInfo> list = ctx_->devices_list(&err);
    std::sort(list.begin(), list.end(), [](auto& a, auto& b) { return a.port_path < b.port_path; });
    ASSERT_FALSE(list.empty());
    std::optional<Error> open_err;
    std::unique_ptr<UsbTransport> transport;
    ctx_->device_open(list[0], [&](Error e, std::unique_ptr<UsbTransport> t) {
      open_err = e;
      transport = std::move(t);
    });
    ASSERT_TRUE(run_until(&loop_, [&] { return open_err.has_value(); }, 10000));
    ASSERT_FALSE(*open_err) << open_err->text();
    EXPECT_EQ(transport->serial(), "PEERUSB01") << "read with asynchronous control transfers";
    EXPECT_EQ(bridge_->claims(), 1);
    conn_ = Connection::create(*ready_, std::move(transport), key_);
    conn_->on_close([this](Error e) { closed_ = e; });
    std::optional<Error> start_err;
    conn_->start([&](Error e) { start_err = e; });
    ASSERT_TRUE(run_until(&loop_, [&] { return start_err.has_value(); }, 10000));
    ASSERT_FALSE(*start_err) << start_err->text();
  }

  std::unique_ptr<AlwaysReadyReactor> ready_;
  TempDir keydir_{"adbusb"};
  std::shared_ptr<const HostKey> key_;
  std::unique_ptr<peer::Peer> peer_;
  std::unique_ptr<UsbBridge> bridge_;
  std::shared_ptr<Connection> conn_;
  std::optional<Error> closed_;
};

TEST_F(AdbUsbBridged, PushPullShellOverUsb) {
  connect();
  ASSERT_TRUE(conn_ && conn_->online());
  EXPECT_EQ(conn_->name(), "usb:1-2");
  EXPECT_EQ(conn_->device().max_payload, 256u * 1024);
  EXPECT_TRUE(peer_->has_event("auth: signature accepted"));

  std::string local = keydir_ / "device.key";
  ASSERT_TRUE(file_make(local, 3 * 1024 * 1024 + 100, 77, 0600));
  PushRequest req;
  req.local_path = local;
  req.remote_path = "/sdcard/cloudlet/adb/device.key";
  req.mode = 0600;
  std::optional<Error> push_err;
  conn_->file_push(req, [&](Error e) { push_err = e; });
  ASSERT_TRUE(run_until(&loop_, [&] { return push_err.has_value(); }, 30000));
  ASSERT_FALSE(*push_err) << push_err->text();
  EXPECT_TRUE(file_read(peer_->fs_root() + req.remote_path) == file_read(local));

  std::optional<std::pair<Error, std::string>> pulled;
  conn_->file_pull(req.remote_path, 8 * 1024 * 1024, [&](Error e, std::string d) { pulled.emplace(e, std::move(d)); });
  ASSERT_TRUE(run_until(&loop_, [&] { return pulled.has_value(); }, 30000));
  ASSERT_FALSE(pulled->first) << pulled->first.text();
  EXPECT_TRUE(pulled->second == file_read(local));

  std::optional<std::pair<Error, std::string>> out;
  conn_->shell_run("echo over usb", 1024, [&](Error e, std::string d) { out.emplace(e, std::move(d)); });
  ASSERT_TRUE(run_until(&loop_, [&] { return out.has_value(); }, 10000));
  ASSERT_FALSE(out->first) << out->first.text();
  EXPECT_EQ(out->second, "over usb\n");

  // Every message went out as a header transfer and a payload transfer; payloads that fill their last
  // 512-byte packet exactly (the full 256 KiB WRTEs) carry the zero-length-packet flag, nothing else does.
  int full = 0;
  for (const auto& u : bridge_->out_urbs()) {
    bool fills = u.length > 0 && u.length % 512 == 0;
    EXPECT_EQ(u.zero_packet, fills) << u.length;
    if (u.length == 256 * 1024) full++;
  }
  EXPECT_GE(full, 10);

  // Closing with a read in flight: the transfer is discarded, then the interface is released.
  conn_->close();
  ASSERT_TRUE(run_until(&loop_, [&] { return bridge_->releases() == 1; }, 5000));
  EXPECT_GE(bridge_->discarded(), 1);
}

TEST_F(AdbUsbBridged, UnplugDuringAPushIsAClearError) {
  connect();
  ASSERT_TRUE(conn_ && conn_->online());
  std::string local = keydir_ / "big";
  ASSERT_TRUE(file_make(local, 24 * 1024 * 1024, 5));
  PushRequest req;
  req.local_path = local;
  req.remote_path = "/sdcard/big";
  std::optional<Error> push_err;
  conn_->file_push(req, [&](Error e) { push_err = e; });
  auto sent = [&] {
    size_t n = 0;
    for (const auto& u : bridge_->out_urbs()) n += u.length;
    return n;
  };
  ASSERT_TRUE(run_until(&loop_, [&] { return sent() > 2 * 1024 * 1024 || push_err.has_value(); }, 20000));
  ASSERT_FALSE(push_err.has_value()) << "the push ended before the unplug";
  bridge_->unplug();
  ASSERT_TRUE(run_until(&loop_, [&] { return push_err.has_value(); }, 10000));
  EXPECT_EQ(push_err->code, Errc::closed) << push_err->text();
  EXPECT_NE(push_err->message.find("usb:1-2"), std::string::npos) << push_err->message;
  EXPECT_NE(push_err->message.find("unplugged"), std::string::npos) << push_err->message;
  ASSERT_TRUE(run_until(&loop_, [&] { return closed_.has_value(); }, 5000));
  EXPECT_FALSE(conn_->online());
}

}  // namespace
