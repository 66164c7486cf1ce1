#include "adb/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace cloudlet::adb {

namespace {
constexpr size_t kStageSize = 64 * 1024;
constexpr int kReadsPerEvent = 32;  // fairness: let other watches run between bursts
constexpr int kIovMax = 32;
}  // namespace

TcpTransport::TcpTransport(Reactor& reactor, int fd, std::string peer)
    : reactor_(reactor), fd_(fd), peer_(std::move(peer)) {
  int one = 1;
  // Acknowledgements (OKAY) are tiny and gate the next WRTE: never let Nagle hold them back.
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // Only one WRTE per stream is in flight, so each must leave in one piece: a fresh socket's send buffer
  // (16 KiB, grown slowly by autotuning) would split a 256 KiB WRTE into many wake-ups.
  int have = 0;
  socklen_t len = sizeof have;
  if (getsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &have, &len) == 0 && have < int(kMaxPayload)) {
    int want = int(kMaxPayload);
    setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
  }
}

TcpTransport::~TcpTransport() { close(); }

void TcpTransport::start(TransportEvents* events, uint32_t max_payload) {
  events_ = events;
  max_payload_ = max_payload;
  stage_.resize(kStageSize);
  io_ = reactor_.io_start(fd_, Reactor::kReadable, [this](int status, uint32_t ev) { on_io(status, ev); });
  watching_ = Reactor::kReadable;
  if (!io_) fail(Error(Errc::io, fmt::format("cannot watch the socket to {}", peer_)));
}

void TcpTransport::close() {
  if (closed_) return;
  closed_ = true;
  *alive_ = false;
  if (io_) reactor_.io_stop(io_);
  io_ = 0;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  out_.clear();
  pending_bytes_ = 0;
}

void TcpTransport::fail(Error err) {
  if (failed_ || closed_) return;
  failed_ = true;
  if (io_) reactor_.io_stop(io_);
  io_ = 0;
  // Never call the owner back from inside one of its own calls (send): deliver on a clean stack. An owner
  // that closed or destroyed us in the meantime cleared the flag first.
  reactor_.post([this, alive = alive_, err = std::move(err)]() mutable {
    if (!*alive) return;
    events_->transport_error(std::move(err));
  });
}

void TcpTransport::on_io(int status, uint32_t events) {
  if (status < 0) {
    fail(Error(Errc::io, fmt::format("socket to {} failed", peer_)));
    return;
  }
  if (events & Reactor::kWritable) write_some();
  if (!failed_ && !closed_ && (events & (Reactor::kReadable | Reactor::kDisconnect))) read_some();
}

void TcpTransport::read_some() {
  for (int i = 0; i < kReadsPerEvent && !failed_ && !closed_; i++) {
    ssize_t n;
    if (in_payload_ && cur_.payload.size() - payload_got_ >= kStageSize) {
      // Large payloads go straight into the message: no copy through the staging buffer.
      n = ::read(fd_, cur_.payload.data() + payload_got_, cur_.payload.size() - payload_got_);
      if (n > 0) {
        payload_got_ += size_t(n);
        if (payload_got_ == cur_.payload.size()) {
          in_payload_ = false;
          events_->transport_message(std::move(cur_));
          cur_ = Message();
        }
        continue;
      }
    } else {
      n = ::read(fd_, stage_.data(), stage_.size());
      if (n > 0) {
        parse(stage_.data(), size_t(n));
        continue;
      }
    }
    if (n == 0) {
      fail(Error(Errc::closed, fmt::format("device {} closed the connection", peer_)));
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    fail(Error(Errc::io, fmt::format("reading from {}: {}", peer_, std::strerror(errno))));
    return;
  }
}

void TcpTransport::parse(const uint8_t* p, size_t n) {
  while (n > 0 && !failed_ && !closed_) {
    if (!in_payload_) {
      size_t take = std::min(n, kHeaderSize - hdr_got_);
      std::memcpy(hdr_ + hdr_got_, p, take);
      hdr_got_ += take;
      p += take;
      n -= take;
      if (hdr_got_ < kHeaderSize) return;
      hdr_got_ = 0;
      cur_ = Message();
      cur_.header = header_decode(hdr_);
      std::string fault = header_check(cur_.header, max_payload_);
      if (!fault.empty()) {
        fail(Error(Errc::protocol, fmt::format("from {}: {}", peer_, fault)));
        return;
      }
      if (cur_.header.length == 0) {
        events_->transport_message(std::move(cur_));
        cur_ = Message();
        continue;
      }
      cur_.payload.resize(cur_.header.length);
      payload_got_ = 0;
      in_payload_ = true;
    }
    size_t take = std::min(n, cur_.payload.size() - payload_got_);
    std::memcpy(cur_.payload.data() + payload_got_, p, take);
    payload_got_ += take;
    p += take;
    n -= take;
    if (payload_got_ == cur_.payload.size()) {
      in_payload_ = false;
      events_->transport_message(std::move(cur_));
      cur_ = Message();
    }
  }
}

void TcpTransport::send(Message&& msg) {
  if (closed_ || failed_) return;
  Out o;
  header_encode(msg.header, o.hdr);
  o.payload = std::move(msg.payload);
  pending_bytes_ += kHeaderSize + o.payload.size();
  out_.push_back(std::move(o));
  // Write at once unless the socket already pushed back (then the writable event drains the queue).
  if (!(watching_ & Reactor::kWritable)) write_some();
}

void TcpTransport::write_some() {
  while (!out_.empty() && !failed_ && !closed_) {
    iovec iov[kIovMax];
    int cnt = 0;
    size_t skip = out_off_;
    for (auto it = out_.begin(); it != out_.end() && cnt + 2 <= kIovMax; ++it) {
      if (skip < kHeaderSize) {
        iov[cnt++] = {it->hdr + skip, kHeaderSize - skip};
        skip = 0;
      } else {
        skip -= kHeaderSize;
      }
      if (skip < it->payload.size()) iov[cnt++] = {it->payload.data() + skip, it->payload.size() - skip};
      skip = 0;
    }
    ssize_t n = ::writev(fd_, iov, cnt);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      fail(Error(errno == EPIPE || errno == ECONNRESET ? Errc::closed : Errc::io,
                 fmt::format("writing to {}: {}", peer_, std::strerror(errno))));
      return;
    }
    size_t done = size_t(n);
    pending_bytes_ -= done;
    while (done > 0) {
      size_t left = kHeaderSize + out_.front().payload.size() - out_off_;
      if (done >= left) {
        done -= left;
        out_.pop_front();
        out_off_ = 0;
      } else {
        out_off_ += done;
        done = 0;
      }
    }
  }
  watch_update();
}

void TcpTransport::watch_update() {
  if (!io_ || failed_ || closed_) return;
  uint32_t want = Reactor::kReadable | (out_.empty() ? 0 : Reactor::kWritable);
  if (want != watching_) {
    if (!reactor_.io_update(io_, want)) fail(Error(Errc::io, fmt::format("cannot watch the socket to {}", peer_)));
    watching_ = want;
  }
}

bool hostport_parse(std::string_view text, std::string* host, std::string* port, std::string* err) {
  std::string_view h, p;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      *err = fmt::format("'{}' is not [address]:port", text);
      return false;
    }
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      *err = fmt::format("'{}' is not host:port", text);
      return false;
    }
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  if (h.empty() || h.size() > 253) {
    *err = fmt::format("'{}' has no usable host", text);
    return false;
  }
  for (char c : h) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '%' || c == '_')) {
      *err = fmt::format("'{}' has an invalid host name", text);
      return false;
    }
  }
  unsigned long v = 0;
  if (p.empty() || p.size() > 5) v = 0;
  else
    for (char c : p) v = isdigit(static_cast<unsigned char>(c)) ? v * 10 + unsigned(c - '0') : 100000;
  if (v == 0 || v > 65535) {
    *err = fmt::format("'{}' has an invalid port", text);
    return false;
  }
  host->assign(h);
  port->assign(p);
  return true;
}

// ---- TcpConnector ---------------------------------------------------------------------------------------

struct TcpConnector::State : std::enable_shared_from_this<State> {
  Reactor* reactor;
  std::string hostport, host, port;
  Callback cb;
  bool cancelled = false;
  Reactor::Id timer = 0, io = 0;
  int fd = -1;
  std::vector<sockaddr_storage> addrs;
  std::vector<socklen_t> lens;
  size_t next = 0;
  std::string last_error;

  void finish(Error err, std::unique_ptr<Transport> t) {
    if (timer) reactor->timer_stop(timer);
    timer = 0;
    if (io) reactor->io_stop(io);
    io = 0;
    if (fd >= 0 && !t) ::close(fd);
    fd = -1;
    auto fn = std::move(cb);
    cb = nullptr;
    if (fn && !cancelled) fn(std::move(err), std::move(t));
  }

  void try_next() {
    while (next < addrs.size()) {
      const sockaddr_storage& sa = addrs[next];
      socklen_t len = lens[next];
      next++;
      fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        last_error = std::strerror(errno);
        continue;
      }
      if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), len) == 0) {
        connected();
        return;
      }
      if (errno == EINPROGRESS) {
        auto self = shared_from_this();
        io = reactor->io_start(fd, Reactor::kWritable, [self](int status, uint32_t) { self->on_writable(status); });
        if (io) return;
        last_error = "cannot watch the socket";
      } else {
        last_error = std::strerror(errno);
      }
      ::close(fd);
      fd = -1;
    }
    finish(Error(Errc::unavailable, fmt::format("cannot connect to {}: {}", hostport, last_error)), nullptr);
  }

  void on_writable(int status) {
    reactor->io_stop(io);
    io = 0;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (status < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
      last_error = std::strerror(soerr ? soerr : EIO);
      ::close(fd);
      fd = -1;
      try_next();
      return;
    }
    connected();
  }

  void connected() {
    int sock = fd;
    auto t = std::make_unique<TcpTransport>(*reactor, sock, hostport);
    finish(Error(), std::move(t));
  }
};

TcpConnector::TcpConnector(Reactor& reactor, std::string hostport, uint64_t timeout_ms, Callback cb)
    : st_(std::make_shared<State>()) {
  st_->reactor = &reactor;
  st_->hostport = std::move(hostport);
  st_->cb = std::move(cb);
  std::string err;
  if (!hostport_parse(st_->hostport, &st_->host, &st_->port, &err)) {
    auto st = st_;
    reactor.post([st, err] { st->finish(Error(Errc::invalid, err), nullptr); });
    return;
  }
  std::weak_ptr<State> weak = st_;
  st_->timer = reactor.timer_start(timeout_ms, [weak, timeout_ms] {
    if (auto st = weak.lock()) {
      st->timer = 0;
      st->finish(Error(Errc::timeout, fmt::format("connecting to {} timed out after {} ms", st->hostport, timeout_ms)),
                 nullptr);
    }
  });
  // getaddrinfo may block on DNS: resolve on a worker. The result lives in `res`, shared with the worker.
  struct Res {
    std::string host, port;
    int rc = 0;
    std::vector<sockaddr_storage> addrs;
    std::vector<socklen_t> lens;
  };
  auto res = std::make_shared<Res>();
  res->host = st_->host;
  res->port = st_->port;
  bool queued = reactor.work_queue(
      [res] {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        addrinfo* ai = nullptr;
        res->rc = getaddrinfo(res->host.c_str(), res->port.c_str(), &hints, &ai);
        for (addrinfo* a = ai; a; a = a->ai_next) {
          if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
          sockaddr_storage ss{};
          std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
          res->addrs.push_back(ss);
          res->lens.push_back(a->ai_addrlen);
        }
        if (ai) freeaddrinfo(ai);
      },
      [weak, res](bool cancelled) {
        auto st = weak.lock();
        if (!st || !st->cb) return;
        if (cancelled || res->rc != 0 || res->addrs.empty()) {
          st->finish(Error(Errc::unavailable, fmt::format("cannot resolve {}: {}", st->host,
                                                          cancelled ? "cancelled" : gai_strerror(res->rc))),
                     nullptr);
          return;
        }
        st->addrs = std::move(res->addrs);
        st->lens = std::move(res->lens);
        st->try_next();
      });
  if (!queued) {
    auto st = st_;
    reactor.post([st] { st->finish(Error(Errc::cancelled, "the loop is closing"), nullptr); });
  }
}

TcpConnector::~TcpConnector() {
  st_->cancelled = true;
  st_->finish(Error(Errc::cancelled, "connector destroyed"), nullptr);
}

}  // namespace cloudlet::adb
