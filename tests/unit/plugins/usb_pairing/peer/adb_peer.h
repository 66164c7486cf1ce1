// A device-side ADB peer for tests: what adbd does on a phone, over TCP, enough for cloudletd's needs and for
// the real `adb` client (adb connect / push / pull / shell). Test code only.
//
// Layout under PeerOptions::dir:
//   fs/         the device's file system: device path /sdcard/x is dir/fs/sdcard/x
//   adb_keys    trusted host keys, one adbkey.pub line each (like /data/misc/adb/adb_keys)
//   events.log  one line per notable event ("auth signature accepted", "open sync:", ...)
//   am.log      one line per `am startservice` call
//
// Threads: one accept thread and one thread per connection, each with blocking I/O bounded by poll()
// timeouts so that stop() always finishes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cloudlet::adb::peer {

enum class Offer {
  accept,       // the user taps "Allow" once
  accept_save,  // the user ticks "Always allow": the key is appended to adb_keys
  deny,         // the user taps "Deny": the connection is dropped
  ignore,       // nobody answers the prompt
};

enum class Fault {
  none,
  close_after,      // drop the connection once fault_bytes of stream data have arrived
  stall_after,      // stop reading and answering once fault_bytes of stream data have arrived
  bad_magic,        // the first message after CNXN has a broken magic
  bad_checksum,     // the first WRTE the peer sends has a wrong checksum (use with version = 0x01000000)
  oversized,        // the first message after CNXN announces a 2 GiB payload
  stall_handshake,  // never answer CNXN
};

struct PeerOptions {
  std::string dir;
  bool require_auth = true;
  Offer offer = Offer::accept_save;
  uint32_t version = 0x01000001;
  uint32_t max_payload = 256 * 1024;
  std::string banner = "device::ro.product.name=cloudlet_peer;ro.product.model=AdbTestPeer;ro.product.device=peer;"
                       "features=";
  Fault fault = Fault::none;
  uint64_t fault_bytes = 0;
  bool verbose = false;  // trace messages to stderr
};

class Peer {
 public:
  explicit Peer(PeerOptions opts);
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  // Creates the directory layout and listens on host:port (port 0: any free port).
  bool listen(const std::string& host, uint16_t port, std::string* err);
  uint16_t port() const { return port_; }
  // Closes the listener and every connection, joins all threads.
  void stop();

  std::vector<std::string> events() const;
  bool has_event(const std::string& substring) const;
  void event(const std::string& line);
  // Connections accepted so far / still open.
  int connections_total() const { return total_.load(); }
  int connections_open() const { return open_.load(); }

  const PeerOptions& options() const { return opts_; }
  std::string fs_root() const { return opts_.dir + "/fs"; }
  std::string keys_path() const { return opts_.dir + "/adb_keys"; }
  std::string am_log_path() const { return opts_.dir + "/am.log"; }

 private:
  struct Conn;
  void accept_loop();
  void serve(std::shared_ptr<Conn> c);

  PeerOptions opts_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mutex_;
  std::mutex keys_mutex_;  // adb_keys: each connection has its own thread, adb may offer a key on two at once
  std::vector<std::string> events_;
  std::vector<std::shared_ptr<Conn>> conns_;
  std::vector<std::thread> threads_;
  std::atomic<int> total_{0}, open_{0};
};

// Runs one shell command line the way the peer's "device" would; returns its output. Exposed for tests.
std::string peer_shell(Peer& peer, const std::string& command);

// Maps an absolute device path into the peer's fs root. False for relative paths and ".." components.
bool peer_path(const Peer& peer, const std::string& device_path, std::string* out);

}  // namespace cloudlet::adb::peer
