// The peer's transport, handshake and stream multiplexing. Services (sync:, shell:) are in peer_services.cc.
#include "peer/adb_peer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "adb/host_key.h"
#include "adb/message.h"
#include "peer/peer_services.h"

namespace cloudlet::adb::peer {

namespace {
constexpr int kPollMs = 100;

bool mkdir_p(const std::string& dir) {
  std::string path;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    path = dir.substr(0, pos);
    if (!path.empty() && mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return true;
}
}  // namespace

struct Peer::Conn : ConnIo {
  Peer* peer = nullptr;
  int fd = -1;
  bool online = false;
  bool dead = false;
  uint32_t version = kVersionMin;
  uint32_t max_payload = kMaxPayload;
  bool checksum = true;
  uint8_t token[kAuthTokenSize];
  uint64_t rx_bytes = 0;
  bool fault_armed = false;  // a message fault waits for the next message after CNXN
  bool stalled = false;
  uint32_t next_id = 1;
  std::map<uint32_t, std::unique_ptr<Service>> streams;

  ~Conn() override {
    if (fd >= 0) ::close(fd);
  }

  void trace(const char* dir, const Header& h) {
    if (peer->opts_.verbose) {
      std::fprintf(stderr, "peer %s %s %#x %#x len=%u\n", dir, command_name(h.command).c_str(), h.arg0, h.arg1,
                   h.length);
    }
  }

  bool write_all(const uint8_t* p, size_t n) {
    while (n > 0) {
      if (peer->stopping_) return false;
      pollfd pfd{fd, POLLOUT, 0};
      int r = poll(&pfd, 1, kPollMs);
      if (r < 0 && errno != EINTR) return false;
      if (r <= 0) continue;
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return false;
      }
      p += w;
      n -= size_t(w);
    }
    return true;
  }

  bool read_all(uint8_t* p, size_t n) {
    while (n > 0) {
      if (peer->stopping_) return false;
      pollfd pfd{fd, POLLIN, 0};
      int r = poll(&pfd, 1, kPollMs);
      if (r < 0 && errno != EINTR) return false;
      if (r <= 0) continue;
      ssize_t got = ::recv(fd, p, n, 0);
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (got <= 0) return false;
      p += got;
      n -= size_t(got);
    }
    return true;
  }

  void send_msg(uint32_t cmd, uint32_t a0, uint32_t a1, const std::string& payload) override {
    if (dead) return;
    Header h;
    h.command = cmd;
    h.arg0 = a0;
    h.arg1 = a1;
    h.length = uint32_t(payload.size());
    h.check = checksum ? payload_checksum(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()) : 0;
    h.magic = cmd ^ 0xffffffffu;
    bool send_payload = true;
    Fault f = peer->opts_.fault;
    if (fault_armed && online) {
      if (f == Fault::bad_magic) {
        h.magic ^= 0x01000000u;
        fault_armed = false;
        peer->event("fault: sent a bad magic");
      } else if (f == Fault::oversized) {
        h.length = 0x7fffffffu;
        send_payload = false;
        fault_armed = false;
        peer->event("fault: announced a 2 GiB payload");
      } else if (f == Fault::bad_checksum && cmd == kCmdWrte && !payload.empty()) {
        h.check ^= 0x5555u;
        fault_armed = false;
        peer->event("fault: sent a bad checksum");
      }
    }
    trace("->", h);
    uint8_t hdr[kHeaderSize];
    header_encode(h, hdr);
    if (!write_all(hdr, kHeaderSize) ||
        (send_payload && !write_all(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()))) {
      dead = true;
    }
  }

  uint32_t payload_max() const override { return max_payload; }
  Peer& owner() override { return *peer; }

  void send_token() {
    RAND_bytes(token, sizeof token);
    send_msg(kCmdAuth, kAuthToken, 0, std::string(reinterpret_cast<char*>(token), sizeof token));
  }

  void send_cnxn() {
    send_msg(kCmdCnxn, peer->opts_.version, peer->opts_.max_payload, peer->opts_.banner);
    online = true;
    fault_armed = true;
    peer->event("online");
  }

  // Writes as much of a stream's pending output as flow control allows.
  void pump(Service& s) override {
    while (!dead && !s.awaiting_okay) {
      if (s.out.empty()) s.refill(*this);
      if (s.out.empty()) break;
      size_t n = std::min<size_t>(s.out.size(), max_payload);
      std::string chunk = s.out.substr(0, n);
      s.out.erase(0, n);
      s.awaiting_okay = true;
      send_msg(kCmdWrte, s.local, s.remote, chunk);
    }
    if (!dead && s.out.empty() && !s.awaiting_okay && s.close_when_drained && !s.closed) {
      s.closed = true;
      send_msg(kCmdClse, s.local, s.remote, "");
    }
  }

  bool key_trusted_signature(const std::vector<uint8_t>& sig) {
    std::lock_guard<std::mutex> lock(peer->keys_mutex_);
    std::ifstream in(peer->keys_path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      EVP_PKEY* key = nullptr;
      std::string err;
      if (!pubkey_decode(line, &key, &err)) {
        peer->event("auth: skipping a malformed adb_keys line: " + err);
        continue;
      }
      bool ok = signature_verify(key, token, sizeof token, sig.data(), sig.size());
      EVP_PKEY_free(key);
      if (ok) return true;
    }
    return false;
  }

  void handle_auth(const Message& m) {
    if (m.header.arg0 == kAuthSignature) {
      if (key_trusted_signature(m.payload)) {
        peer->event("auth: signature accepted");
        send_cnxn();
      } else {
        peer->event("auth: signature rejected");
        send_token();
      }
      return;
    }
    if (m.header.arg0 == kAuthPublicKey) {
      std::string line(m.payload.begin(), m.payload.end());
      while (!line.empty() && line.back() == '\0') line.pop_back();
      EVP_PKEY* key = nullptr;
      std::string err;
      if (!pubkey_decode(line, &key, &err)) {
        peer->event("auth: offered key is malformed: " + err);
        dead = true;
        return;
      }
      EVP_PKEY_free(key);
      switch (peer->opts_.offer) {
        case Offer::accept:
          peer->event("auth: offered key accepted");
          send_cnxn();
          return;
        case Offer::accept_save: {
          // Remembered once, however many connections offer it (adb may retry while the prompt is up).
          std::lock_guard<std::mutex> lock(peer->keys_mutex_);
          std::ifstream in(peer->keys_path());
          std::string known;
          bool have = false;
          while (std::getline(in, known)) have = have || known == line;
          if (!have) {
            std::ofstream out(peer->keys_path(), std::ios::app);
            out << line << "\n";
            out.close();  // saved before the host hears back
          }
          peer->event("auth: offered key accepted and saved");
          send_cnxn();
          return;
        }
        case Offer::deny:
          peer->event("auth: offered key denied");
          dead = true;
          return;
        case Offer::ignore:
          peer->event("auth: offered key ignored");
          return;
      }
    }
    peer->event(fmt::format("auth: unexpected AUTH type {}", m.header.arg0));
  }

  void handle(Message& m) {
    const Header& h = m.header;
    if (!online) {
      if (h.command == kCmdCnxn) {
        std::string banner(m.payload.begin(), m.payload.end());
        while (!banner.empty() && banner.back() == '\0') banner.pop_back();
        version = std::min(peer->opts_.version, h.arg0);
        max_payload = std::min(peer->opts_.max_payload, h.arg1);
        checksum = version < kVersionSkipChecksum;
        peer->event(fmt::format("cnxn: version={:#x} maxdata={} banner={}", h.arg0, h.arg1, banner));
        if (peer->opts_.fault == Fault::stall_handshake) {
          peer->event("fault: not answering CNXN");
          return;
        }
        if (peer->opts_.require_auth) send_token();
        else send_cnxn();
      } else if (h.command == kCmdAuth) {
        handle_auth(m);
      } else {
        peer->event("unexpected " + command_name(h.command) + " before CNXN");
      }
      return;
    }
    switch (h.command) {
      case kCmdOpen: {
        std::string name(m.payload.begin(), m.payload.end());
        while (!name.empty() && name.back() == '\0') name.pop_back();
        peer->event("open " + name);
        std::unique_ptr<Service> s = service_make(*this, name);
        if (!s) {
          send_msg(kCmdClse, 0, h.arg0, "");
          return;
        }
        s->local = next_id++;
        s->remote = h.arg0;
        Service& ref = *s;
        streams[s->local] = std::move(s);
        send_msg(kCmdOkay, ref.local, ref.remote, "");
        ref.start(*this);
        pump(ref);
        reap(ref.local);
        return;
      }
      case kCmdWrte: {
        auto it = streams.find(h.arg1);
        if (it == streams.end() || it->second->closed) return;
        Service& s = *it->second;
        rx_bytes += m.payload.size();
        s.input(*this, m.payload.data(), m.payload.size());
        send_msg(kCmdOkay, s.local, s.remote, "");
        pump(s);
        reap(s.local);
        return;
      }
      case kCmdOkay: {
        auto it = streams.find(h.arg1);
        if (it == streams.end()) return;
        it->second->awaiting_okay = false;
        pump(*it->second);
        reap(h.arg1);
        return;
      }
      case kCmdClse: {
        auto it = streams.find(h.arg1);
        if (it == streams.end()) return;
        it->second->host_closed(*this);
        streams.erase(it);
        return;
      }
      default:
        peer->event("ignored " + command_name(h.command));
    }
  }

  void reap(uint32_t id) {
    auto it = streams.find(id);
    if (it != streams.end() && it->second->closed) streams.erase(it);
  }
};

Peer::Peer(PeerOptions opts) : opts_(std::move(opts)) {}

Peer::~Peer() { stop(); }

void Peer::event(const std::string& line) {
  std::lock_guard<std::mutex> lock(mutex_);
  events_.push_back(line);
  if (opts_.verbose) std::fprintf(stderr, "peer event: %s\n", line.c_str());
  FILE* f = std::fopen((opts_.dir + "/events.log").c_str(), "a");
  if (f) {
    std::fprintf(f, "%s\n", line.c_str());
    std::fclose(f);
  }
}

std::vector<std::string> Peer::events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_;
}

bool Peer::has_event(const std::string& sub) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& e : events_)
    if (e.find(sub) != std::string::npos) return true;
  return false;
}

bool Peer::listen(const std::string& host, uint16_t port, std::string* err) {
  if (!mkdir_p(fs_root())) {
    *err = "cannot create " + fs_root();
    return false;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(fd, 16) != 0) {
    *err = fmt::format("cannot listen on {}:{}: {}", host, port, std::strerror(errno));
    ::close(fd);
    return false;
  }
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);
  listen_fd_ = fd;
  if (pipe2(wake_, O_CLOEXEC) != 0) {
    *err = "pipe failed";
    return false;
  }
  acceptor_ = std::thread([this] { accept_loop(); });
  return true;
}

void Peer::accept_loop() {
  while (!stopping_) {
    pollfd pfd[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int r = poll(pfd, 2, kPollMs);
    if (r <= 0 || stopping_) continue;
    if (!(pfd[0].revents & POLLIN)) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_shared<Conn>();
    c->peer = this;
    c->fd = fd;
    total_++;
    open_++;
    std::lock_guard<std::mutex> lock(mutex_);
    conns_.push_back(c);
    threads_.emplace_back([this, c] {
      serve(c);
      open_--;
    });
  }
}

void Peer::serve(std::shared_ptr<Conn> c) {
  event("connection accepted");
  while (!stopping_ && !c->dead) {
    uint8_t hdr[kHeaderSize];
    if (!c->read_all(hdr, kHeaderSize)) break;
    Message m;
    m.header = header_decode(hdr);
    c->trace("<-", m.header);
    uint32_t limit = c->online ? c->max_payload : kMaxPayload;
    std::string fault = header_check(m.header, limit);
    if (!fault.empty()) {
      event("bad message from host: " + fault);
      break;
    }
    m.payload.resize(m.header.length);
    if (m.header.length && !c->read_all(m.payload.data(), m.payload.size())) break;
    if (c->checksum && m.header.length && c->online &&
        payload_checksum(m.payload.data(), m.payload.size()) != m.header.check) {
      event("bad checksum from host on " + command_name(m.header.command));
      break;
    }
    if (c->online && m.header.command == kCmdWrte) {
      uint64_t after = c->rx_bytes + m.payload.size();
      Fault f = opts_.fault;
      if ((f == Fault::close_after || f == Fault::stall_after) && after >= opts_.fault_bytes) {
        if (f == Fault::close_after) {
          event(fmt::format("fault: dropping the connection after {} bytes", after));
          break;
        }
        event(fmt::format("fault: stalling after {} bytes", after));
        while (!stopping_) usleep(kPollMs * 1000);
        break;
      }
    }
    c->handle(m);
  }
  for (auto& [id, s] : c->streams) s->host_closed(*c);
  c->streams.clear();
  shutdown(c->fd, SHUT_RDWR);
  event("connection closed");
}

void Peer::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_[1] >= 0) (void)!write(wake_[1], "x", 1);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& c : conns_) shutdown(c->fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  conns_.clear();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  for (int& fd : wake_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

}  // namespace cloudlet::adb::peer
