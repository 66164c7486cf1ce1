// ADB over TCP ("adb connect host:port"; the same messages as over USB, on one socket).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "adb/reactor.h"
#include "adb/transport.h"

namespace cloudlet::adb {

class TcpTransport final : public Transport {
 public:
  // Takes ownership of a connected, non-blocking socket.
  TcpTransport(Reactor& reactor, int fd, std::string peer);
  ~TcpTransport() override;

  void start(TransportEvents* events, uint32_t max_payload) override;
  void send(Message&& msg) override;
  size_t pending_bytes() const override { return pending_bytes_; }
  std::string name() const override { return "tcp:" + peer_; }
  void close() override;

 private:
  void on_io(int status, uint32_t events);
  void read_some();
  void parse(const uint8_t* p, size_t n);
  void write_some();
  void fail(Error err);
  void watch_update();

  Reactor& reactor_;
  int fd_;
  std::string peer_;
  TransportEvents* events_ = nullptr;
  uint32_t max_payload_ = kMaxPayload;
  Reactor::Id io_ = 0;
  uint32_t watching_ = 0;
  bool closed_ = false;
  bool failed_ = false;
  // Cleared by close(): a deferred error must not reach an owner that has closed (or destroyed) us.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  // Receive state: the header being assembled, then the payload being filled.
  uint8_t hdr_[kHeaderSize];
  size_t hdr_got_ = 0;
  Message cur_;
  size_t payload_got_ = 0;
  bool in_payload_ = false;
  std::vector<uint8_t> stage_;

  // Send queue: encoded headers with their payloads; off_ is how much of the front one is written.
  struct Out {
    uint8_t hdr[kHeaderSize];
    std::vector<uint8_t> payload;
  };
  std::deque<Out> out_;
  size_t out_off_ = 0;
  size_t pending_bytes_ = 0;
};

// Parses "host:port", "[v6addr]:port". Returns false with a message for anything else.
bool hostport_parse(std::string_view text, std::string* host, std::string* port, std::string* err);

// Connects to host:port without blocking the loop (name resolution runs on a worker). cb runs exactly once
// unless the connector is destroyed first (then never).
class TcpConnector {
 public:
  using Callback = std::function<void(Error, std::unique_ptr<Transport>)>;
  TcpConnector(Reactor& reactor, std::string hostport, uint64_t timeout_ms, Callback cb);
  ~TcpConnector();
  TcpConnector(const TcpConnector&) = delete;
  TcpConnector& operator=(const TcpConnector&) = delete;

 private:
  struct State;
  std::shared_ptr<State> st_;
};

}  // namespace cloudlet::adb
