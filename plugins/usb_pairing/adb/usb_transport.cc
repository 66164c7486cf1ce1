#include "adb/usb_transport.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace cloudlet::adb {

namespace {

// A submitted OUT transfer and the bytes it sends (libusb does not copy them).
struct WriteReq {
  UsbLink* link;
  std::vector<uint8_t> buf;
};

const char* status_text(int status) {
  switch (status) {
    case LIBUSB_TRANSFER_ERROR: return "transfer error";
    case LIBUSB_TRANSFER_TIMED_OUT: return "timed out";
    case LIBUSB_TRANSFER_CANCELLED: return "cancelled";
    case LIBUSB_TRANSFER_STALL: return "endpoint stalled";
    case LIBUSB_TRANSFER_NO_DEVICE: return "device unplugged";
    case LIBUSB_TRANSFER_OVERFLOW: return "device sent more than asked (overflow)";
    default: return "completed";
  }
}

void LIBUSB_CALL read_done(libusb_transfer* t);
void LIBUSB_CALL write_done(libusb_transfer* t);

}  // namespace

UsbLink::~UsbLink() { release(); }

void UsbLink::release() {
  if (reader && !reading) {
    libusb_free_transfer(reader);
    reader = nullptr;
  }
  if (!handle) return;
  libusb_release_interface(handle, info.interface_number);
  libusb_close(handle);
  handle = nullptr;
}

void UsbLink::fail(Error err) {
  if (failed || closing) return;
  failed = true;
  // Reported from a clean stack (we are inside libusb's event handling, or inside send()).
  auto flag = alive;
  UsbLink* self = this;
  ctx->reactor().post([flag, self, err] {
    if (*flag && self->events && !self->closing) self->events->transport_error(err);
  });
}

void UsbLink::cancel_all() {
  closing = true;
  if (reader && reading) libusb_cancel_transfer(reader);
  for (libusb_transfer* w : writes) libusb_cancel_transfer(w);
}

void UsbLink::read_submit() {
  if (closing || failed) return;
  size_t want = reading_header ? kHeaderSize : header.length;
  read_buf.resize(want);
  if (!reader) reader = libusb_alloc_transfer(0);
  if (!reader) {
    fail(Error(Errc::io, "out of memory for a USB transfer"));
    return;
  }
  libusb_fill_bulk_transfer(reader, handle, info.ep_in, read_buf.data(), int(want), read_done, this, 0);
  int rc = libusb_submit_transfer(reader);
  if (rc != 0) {
    fail(rc == LIBUSB_ERROR_NO_DEVICE ? Error(Errc::closed, fmt::format("{}: device unplugged", info.id()))
                                      : Error(Errc::io, fmt::format("{}: cannot read: {}", info.id(), libusb_strerror(rc))));
    return;
  }
  reading = true;
  inflight++;
}

namespace {

void read_done(libusb_transfer* t) {
  auto* link = static_cast<UsbLink*>(t->user_data);
  link->inflight--;
  link->reading = false;
  if (link->closing) {
    libusb_free_transfer(t);
    link->reader = nullptr;
    if (link->inflight == 0) link->ctx->link_reaped(link);
    return;
  }
  if (t->status != LIBUSB_TRANSFER_COMPLETED) {
    link->fail(Error(t->status == LIBUSB_TRANSFER_NO_DEVICE ? Errc::closed : Errc::io,
                     fmt::format("{}: read failed: {}", link->info.id(), status_text(t->status))));
    return;
  }
  size_t got = size_t(t->actual_length);
  if (link->reading_header) {
    if (got != kHeaderSize) {
      link->fail(Error(Errc::protocol, fmt::format("{}: a {} byte message header", link->info.id(), got)));
      return;
    }
    link->header = header_decode(link->read_buf.data());
    std::string fault = header_check(link->header, link->max_payload);
    if (!fault.empty()) {
      link->fail(Error(Errc::protocol, fmt::format("from {}: {}", link->info.id(), fault)));
      return;
    }
    if (link->header.length > 0) {
      link->reading_header = false;
      link->read_submit();
      return;
    }
    Message m;
    m.header = link->header;
    link->events->transport_message(std::move(m));
  } else {
    if (got != link->header.length) {
      link->fail(Error(Errc::protocol, fmt::format("{}: payload of {} bytes, the header announced {}",
                                                   link->info.id(), got, link->header.length)));
      return;
    }
    Message m;
    m.header = link->header;
    m.payload = std::move(link->read_buf);
    link->read_buf = {};
    link->reading_header = true;
    link->events->transport_message(std::move(m));
  }
  // The owner may have closed the transport while handling the message.
  if (!link->closing && !link->failed) link->read_submit();
}

void write_done(libusb_transfer* t) {
  auto* req = static_cast<WriteReq*>(t->user_data);
  UsbLink* link = req->link;
  link->inflight--;
  link->pending_bytes -= req->buf.size();
  auto it = std::find(link->writes.begin(), link->writes.end(), t);
  if (it != link->writes.end()) link->writes.erase(it);
  int status = t->status;
  bool short_write = t->actual_length != t->length;
  delete req;
  libusb_free_transfer(t);
  if (link->closing) {
    if (link->inflight == 0) link->ctx->link_reaped(link);
    return;
  }
  if (status != LIBUSB_TRANSFER_COMPLETED || short_write) {
    link->fail(Error(status == LIBUSB_TRANSFER_NO_DEVICE ? Errc::closed : Errc::io,
                     fmt::format("{}: write failed: {}", link->info.id(),
                                 short_write ? "short write" : status_text(status))));
  }
}

// Submits one OUT transfer. zlp: end it with a zero-length packet when it fills its last packet exactly.
bool write_submit(UsbLink* link, std::vector<uint8_t> bytes, bool zlp) {
  libusb_transfer* t = libusb_alloc_transfer(0);
  if (!t) return false;
  auto* req = new WriteReq{link, std::move(bytes)};
  libusb_fill_bulk_transfer(t, link->handle, link->info.ep_out, req->buf.data(), int(req->buf.size()), write_done,
                            req, 0);
  if (zlp) t->flags |= LIBUSB_TRANSFER_ADD_ZERO_PACKET;
  int rc = libusb_submit_transfer(t);
  if (rc == LIBUSB_ERROR_NOT_SUPPORTED && zlp) {
    // No kernel support for the flag: send the zero-length packet as a transfer of its own.
    t->flags &= uint8_t(~LIBUSB_TRANSFER_ADD_ZERO_PACKET);
    rc = libusb_submit_transfer(t);
    if (rc == 0) {
      link->inflight++;
      link->pending_bytes += req->buf.size();
      link->writes.push_back(t);
      return write_submit(link, {}, false);
    }
  }
  if (rc != 0) {
    delete req;
    libusb_free_transfer(t);
    link->fail(rc == LIBUSB_ERROR_NO_DEVICE
                   ? Error(Errc::closed, fmt::format("{}: device unplugged", link->info.id()))
                   : Error(Errc::io, fmt::format("{}: cannot write: {}", link->info.id(), libusb_strerror(rc))));
    return false;
  }
  link->inflight++;
  link->pending_bytes += req->buf.size();
  link->writes.push_back(t);
  return true;
}

}  // namespace

UsbTransport::~UsbTransport() { close(); }

void UsbTransport::start(TransportEvents* events, uint32_t max_payload) {
  link_->events = events;
  link_->max_payload = max_payload;
  link_->read_submit();
}

void UsbTransport::send(Message&& msg) {
  UsbLink* link = link_.get();
  if (closed_ || link->failed || link->closing) return;
  std::vector<uint8_t> hdr(kHeaderSize);
  header_encode(msg.header, hdr.data());
  uint16_t mps = link->info.max_packet_out ? link->info.max_packet_out : 512;
  if (!write_submit(link, std::move(hdr), false)) return;
  if (!msg.payload.empty()) {
    bool zlp = msg.payload.size() % mps == 0;
    write_submit(link, std::move(msg.payload), zlp);
  }
}

void UsbTransport::close() {
  if (closed_) return;
  closed_ = true;
  UsbLink* link = link_.get();
  link->events = nullptr;
  *link->alive = false;
  link->cancel_all();
  if (link->inflight > 0) link->ctx->link_park(link_);  // released when the cancelled transfers are back
  else link->release();
}

}  // namespace cloudlet::adb
