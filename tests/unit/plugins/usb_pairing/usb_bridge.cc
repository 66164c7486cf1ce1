#include "usb_bridge.h"

#include <arpa/inet.h>
#include <linux/usbdevice_fs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "adb/message.h"

namespace cloudlet::adb::test {

struct UsbBridge::Impl {
  UsbBridge* owner = nullptr;
  UMockdevTestbed* tb = nullptr;
  std::string devnode, serial;
  GMainContext* ctx = nullptr;
  GMainLoop* loop = nullptr;
  UMockdevIoctlBase* base = nullptr;
  std::thread glib_thread, reader;
  int sock = -1;
  std::atomic<bool> unplugged{false}, stopping{false};

  mutable std::mutex mutex;
  std::deque<std::vector<uint8_t>> in_chunks;  // device -> host transfers: each header, each payload
  std::vector<OutUrb> outs;

  // Only touched on the GLib thread.
  std::deque<UMockdevIoctlData*> pending_in;  // submitted IN urbs (owned refs)
  std::deque<UMockdevIoctlData*> completed;   // ready to be reaped (owned refs)

  static void urb_finish(UMockdevIoctlData* u, int status, int actual) {
    auto* urb = reinterpret_cast<usbdevfs_urb*>(u->data);
    urb->status = status;
    urb->actual_length = actual;
    // Marks the structure dirty so the client sees the new fields when it reaps.
    umockdev_ioctl_data_update(u, offsetof(usbdevfs_urb, status), reinterpret_cast<guint8*>(&urb->status),
                               sizeof urb->status);
    umockdev_ioctl_data_update(u, offsetof(usbdevfs_urb, actual_length),
                               reinterpret_cast<guint8*>(&urb->actual_length), sizeof urb->actual_length);
  }

  // Moves device data into pending IN urbs, one transfer per chunk (as adbd writes them).
  void in_satisfy() {
    if (unplugged) {
      while (!pending_in.empty()) {
        urb_finish(pending_in.front(), -ENODEV, 0);
        completed.push_back(pending_in.front());
        pending_in.pop_front();
      }
      return;
    }
    std::lock_guard<std::mutex> lock(mutex);
    while (!pending_in.empty() && !in_chunks.empty()) {
      UMockdevIoctlData* u = pending_in.front();
      auto* urb = reinterpret_cast<usbdevfs_urb*>(u->data);
      std::vector<uint8_t>& chunk = in_chunks.front();
      if (chunk.size() > size_t(urb->buffer_length)) {
        urb_finish(u, -EOVERFLOW, 0);
      } else {
        GError* err = nullptr;
        UMockdevIoctlData* buf = umockdev_ioctl_data_resolve(u, offsetof(usbdevfs_urb, buffer), urb->buffer_length, &err);
        if (buf) {
          umockdev_ioctl_data_update(buf, 0, chunk.data(), int(chunk.size()));
          g_object_unref(buf);
        }
        if (err) g_error_free(err);
        urb_finish(u, 0, int(chunk.size()));
      }
      in_chunks.pop_front();
      completed.push_back(u);
      pending_in.pop_front();
    }
  }

  bool write_peer(const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(sock, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= size_t(w);
    }
    return true;
  }

  // GET_DESCRIPTOR(STRING) on the control endpoint: the language list, then the serial.
  void control(usbdevfs_urb* urb, UMockdevIoctlData* buf) {
    const uint8_t* setup = buf->data;
    uint8_t type = setup[0], req = setup[1], index = setup[2], dtype = setup[3];
    uint16_t wlength = uint16_t(setup[6] | setup[7] << 8);
    std::vector<uint8_t> reply;
    if (type == 0x80 && req == 6 && dtype == 3) {
      if (index == 0) {
        reply = {4, 3, 0x09, 0x04};
      } else {
        reply = {uint8_t(2 + 2 * serial.size()), 3};
        for (char c : serial) {
          reply.push_back(uint8_t(c));
          reply.push_back(0);
        }
      }
    }
    if (reply.empty()) {
      urb->status = -EPIPE;  // stall: not a request this device knows
      urb->actual_length = 0;
      return;
    }
    size_t n = std::min<size_t>(reply.size(), wlength);
    std::memcpy(buf->data + 8, reply.data(), n);
    urb->status = 0;
    urb->actual_length = int(n);
  }

  gboolean on_ioctl(UMockdevIoctlClient* client) {
    gulong req = umockdev_ioctl_client_get_request(client);
    UMockdevIoctlData* arg = umockdev_ioctl_client_get_arg(client);
    GError* err = nullptr;
    long ret = 0;
    int eno = 0;
    if (req == USBDEVFS_GET_CAPABILITIES) {
      UMockdevIoctlData* d = umockdev_ioctl_data_resolve(arg, 0, 4, &err);
      // What a current kernel on an xHCI controller offers: with scatter-gather, libusb submits each bulk
      // transfer as one URB, so one URB here is one transfer of the device.
      uint32_t caps = USBDEVFS_CAP_ZERO_PACKET | USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
                      USBDEVFS_CAP_BULK_SCATTER_GATHER;
      if (d) {
        umockdev_ioctl_data_update(d, 0, reinterpret_cast<guint8*>(&caps), 4);
        g_object_unref(d);
      }
    } else if (req == USBDEVFS_CLAIMINTERFACE) {
      owner->claims_++;
    } else if (req == USBDEVFS_RELEASEINTERFACE) {
      owner->releases_++;
    } else if (req == USBDEVFS_SUBMITURB) {
      if (unplugged) {
        ret = -1;
        eno = ENODEV;
      } else {
        UMockdevIoctlData* u = umockdev_ioctl_data_resolve(arg, 0, sizeof(usbdevfs_urb), &err);
        auto* urb = reinterpret_cast<usbdevfs_urb*>(u->data);
        if (urb->type == USBDEVFS_URB_TYPE_CONTROL) {
          UMockdevIoctlData* buf = umockdev_ioctl_data_resolve(u, offsetof(usbdevfs_urb, buffer), urb->buffer_length, &err);
          control(urb, buf);
          g_object_unref(buf);
          completed.push_back(u);
        } else if (urb->endpoint & 0x80) {
          pending_in.push_back(u);
          in_satisfy();
        } else {
          UMockdevIoctlData* buf = nullptr;
          if (urb->buffer_length > 0) {
            buf = umockdev_ioctl_data_resolve(u, offsetof(usbdevfs_urb, buffer), urb->buffer_length, &err);
          }
          {
            std::lock_guard<std::mutex> lock(mutex);
            outs.push_back({size_t(urb->buffer_length), (urb->flags & USBDEVFS_URB_ZERO_PACKET) != 0});
          }
          bool ok = urb->buffer_length == 0 || write_peer(buf->data, size_t(urb->buffer_length));
          if (buf) g_object_unref(buf);
          urb->status = ok ? 0 : -EPROTO;
          urb->actual_length = ok ? urb->buffer_length : 0;
          completed.push_back(u);
        }
      }
    } else if (req == USBDEVFS_REAPURBNDELAY || req == USBDEVFS_REAPURB) {
      in_satisfy();
      if (completed.empty()) {
        ret = -1;
        eno = unplugged ? ENODEV : EAGAIN;
      } else {
        UMockdevIoctlData* u = completed.front();
        completed.pop_front();
        UMockdevIoctlData* p = umockdev_ioctl_data_resolve(arg, 0, sizeof(void*), &err);
        umockdev_ioctl_data_set_ptr(p, 0, u);
        g_object_unref(p);
        g_object_unref(u);
      }
    } else if (req == USBDEVFS_DISCARDURB) {
      // The argument is the client's URB address itself.
      unsigned long addr = *reinterpret_cast<unsigned long*>(arg->data);
      ret = -1;
      eno = EINVAL;
      for (auto it = pending_in.begin(); it != pending_in.end(); ++it) {
        if ((*it)->client_addr != addr) continue;
        urb_finish(*it, -ENOENT, 0);
        completed.push_back(*it);
        pending_in.erase(it);
        owner->discarded_++;
        ret = 0;
        eno = 0;
        break;
      }
    } else if (req == USBDEVFS_GETDRIVER) {
      ret = -1;
      eno = ENODATA;
    } else {
      ret = -1;
      eno = ENOTTY;
    }
    if (err) g_error_free(err);
    umockdev_ioctl_client_complete(client, ret, eno);
    return TRUE;
  }

  // Splits the peer's byte stream into the transfers adbd would send: header, then payload.
  void read_loop() {
    std::vector<uint8_t> hdr(kHeaderSize);
    auto read_exact = [&](uint8_t* p, size_t n) {
      while (n > 0) {
        pollfd pfd{sock, POLLIN, 0};
        int r = poll(&pfd, 1, 100);
        if (stopping || unplugged) return false;
        if (r <= 0) continue;
        ssize_t got = ::recv(sock, p, n, 0);
        if (got <= 0) return false;
        p += got;
        n -= size_t(got);
      }
      return true;
    };
    while (!stopping && !unplugged) {
      if (!read_exact(hdr.data(), kHeaderSize)) break;
      Header h = header_decode(hdr.data());
      std::vector<uint8_t> payload(h.length > kMaxPayload ? 0 : h.length);
      if (!payload.empty() && !read_exact(payload.data(), payload.size())) break;
      std::lock_guard<std::mutex> lock(mutex);
      in_chunks.push_back(hdr);
      if (!payload.empty()) in_chunks.push_back(std::move(payload));
    }
  }
};

UsbBridge::UsbBridge(UMockdevTestbed* tb, std::string devnode, std::string serial, uint16_t peer_port)
    : impl_(new Impl) {
  impl_->owner = this;
  impl_->tb = tb;
  impl_->devnode = std::move(devnode);
  impl_->serial = std::move(serial);
  impl_->sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(peer_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(impl_->sock, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return;
  int one = 1;
  setsockopt(impl_->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  impl_->ctx = g_main_context_new();
  impl_->loop = g_main_loop_new(impl_->ctx, FALSE);
  impl_->base = umockdev_ioctl_base_new();
  g_signal_connect(impl_->base, "handle-ioctl",
                   G_CALLBACK(+[](UMockdevIoctlBase*, UMockdevIoctlClient* client, gpointer ud) -> gboolean {
                     return static_cast<Impl*>(ud)->on_ioctl(client);
                   }),
                   impl_);
  // The handler serves in the context that is thread-default while attaching: our GLib thread's.
  g_main_context_push_thread_default(impl_->ctx);
  GError* err = nullptr;
  bool attached = umockdev_testbed_attach_ioctl(tb, impl_->devnode.c_str(), impl_->base, &err);
  g_main_context_pop_thread_default(impl_->ctx);
  if (!attached) {
    if (err) g_error_free(err);
    return;
  }
  impl_->glib_thread = std::thread([im = impl_] {
    g_main_context_push_thread_default(im->ctx);
    g_main_loop_run(im->loop);
    g_main_context_pop_thread_default(im->ctx);
  });
  impl_->reader = std::thread([im = impl_] { im->read_loop(); });
  ok_ = true;
}

UsbBridge::~UsbBridge() {
  impl_->stopping = true;
  if (impl_->reader.joinable()) impl_->reader.join();
  if (impl_->sock >= 0) {
    shutdown(impl_->sock, SHUT_RDWR);
    close(impl_->sock);
  }
  if (impl_->base) umockdev_testbed_detach_ioctl(impl_->tb, impl_->devnode.c_str(), nullptr);
  if (impl_->loop) {
    g_main_loop_quit(impl_->loop);
    if (impl_->glib_thread.joinable()) impl_->glib_thread.join();
    // Let cancelled listeners and clients finish on their context.
    while (g_main_context_iteration(impl_->ctx, FALSE)) {
    }
  }
  for (auto* u : impl_->pending_in) g_object_unref(u);
  for (auto* u : impl_->completed) g_object_unref(u);
  if (impl_->base) g_object_unref(impl_->base);
  if (impl_->loop) g_main_loop_unref(impl_->loop);
  if (impl_->ctx) g_main_context_unref(impl_->ctx);
  delete impl_;
}

void UsbBridge::unplug() {
  impl_->unplugged = true;
  shutdown(impl_->sock, SHUT_RDWR);
}

std::vector<UsbBridge::OutUrb> UsbBridge::out_urbs() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->outs;
}

}  // namespace cloudlet::adb::test
