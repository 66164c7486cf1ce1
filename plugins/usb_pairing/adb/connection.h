// One ADB connection to one device, host side: the CNXN/AUTH handshake, then streams multiplexed over the
// transport. Operations: push a file (sync SEND), pull a file (sync RECV), stat a path, run a shell command.
//
// Everything runs on the loop thread and never blocks it: RSA signing and local file reads go to workers.
// Every operation's callback runs exactly once, on the loop, never from inside the call that started it.
// Operations may run concurrently (each has its own stream).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "adb/error.h"
#include "adb/host_key.h"
#include "adb/message.h"
#include "adb/reactor.h"
#include "adb/stream.h"
#include "adb/transport.h"

namespace cloudlet::adb {

struct ConnectionOptions {
  // The payload size we accept and offer; the smaller of ours and the device's is used for WRTE.
  uint32_t max_payload = kMaxPayload;
  // The CNXN/AUTH exchange up to the point where we offer our public key.
  uint64_t handshake_timeout_ms = 10000;
  // After the key offer: the user has to unlock the phone and accept "Allow USB debugging".
  uint64_t auth_timeout_ms = 30000;
  // An operation fails when the device says nothing for this long while we wait for it.
  uint64_t io_timeout_ms = 15000;
  // Concurrent streams (operations) per connection.
  size_t max_streams = 32;
  // Our CNXN banner. We implement the version-1 services only, so we announce no features.
  std::string banner = "host::features=";
};

// What the device told us in its CNXN.
struct DeviceInfo {
  std::string banner;  // raw: "device::ro.product.name=x;ro.product.model=y;features=a,b"
  std::string state;   // "device", "recovery", "sideload", "bootloader", ...
  std::map<std::string, std::string> props;
  std::vector<std::string> features;
  uint32_t version = 0;      // negotiated protocol version
  uint32_t max_payload = 0;  // negotiated WRTE payload size
  bool has_feature(std::string_view f) const;
};

struct PushRequest {
  std::string local_path;   // the file to push (read on workers); or, when empty,
  std::string data;         // these bytes
  std::string remote_path;  // absolute path on the device
  uint32_t mode = 0644;     // permission bits the device gives the file
  int64_t mtime = -1;       // seconds since the epoch; -1: the local file's (now for data)
};

struct RemoteStat {
  uint32_t mode = 0;  // 0: does not exist
  uint32_t size = 0;
  uint32_t mtime = 0;
  bool exists() const { return mode != 0; }
};

class Connection final : public std::enable_shared_from_this<Connection>,
                         private TransportEvents,
                         private StreamHost {
 public:
  using DoneCb = std::function<void(Error)>;
  using DataCb = std::function<void(Error, std::string)>;

  static std::shared_ptr<Connection> create(Reactor& reactor, std::unique_ptr<Transport> transport,
                                            std::shared_ptr<const HostKey> key, ConnectionOptions opts = {});
  // Drops the connection without calling any pending callback.
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs the handshake; cb(ok) once the device sent CNXN, or the error (auth_refused: the device turned our
  // key down; timeout: nobody accepted the prompt; closed/io/protocol).
  void start(DoneCb cb);

  bool online() const { return state_ == State::online; }
  const DeviceInfo& device() const { return device_; }
  std::string name() const;

  // Pushes a file (or bytes) to remote_path with the given mode and mtime.
  void file_push(PushRequest req, DoneCb cb);
  // Pulls a remote file into memory; files larger than max_bytes fail with too_big.
  void file_pull(std::string remote_path, size_t max_bytes, DataCb cb);
  // Stats a remote path (mode 0 when it does not exist).
  void file_stat(std::string remote_path, std::function<void(Error, RemoteStat)> cb);
  // Runs "shell:<command>" and returns what it printed (stdout and stderr, as one stream). Output beyond
  // max_output fails with too_big. Use shell_quote/shell_join to build the command from arguments.
  void shell_run(std::string command, size_t max_output, DataCb cb);

  // Called once when the connection dies for any reason other than close() (device unplugged, I/O error,
  // protocol error). Pending operations have got their errors by then.
  void on_close(DoneCb cb) { on_close_ = std::move(cb); }

  // Fails pending operations with `cancelled` (their callbacks still run, later) and releases the device.
  void close();

  size_t streams_active() const { return streams_.size(); }

 private:
  enum class State { idle, handshake, signing, signed_token, key_offered, online, closed };

  Connection(Reactor& reactor, std::unique_ptr<Transport> transport, std::shared_ptr<const HostKey> key,
             ConnectionOptions opts);

  // TransportEvents
  void transport_message(Message&& msg) override;
  void transport_error(Error err) override;

  // StreamHost
  void stream_write(Stream& s, std::vector<uint8_t> payload) override;
  void stream_close(Stream& s) override;
  uint32_t stream_max_payload() const override { return device_.max_payload; }
  Reactor& reactor() override { return reactor_; }
  void complete(std::function<void()> fn) override;

  void send(uint32_t cmd, uint32_t arg0, uint32_t arg1, std::vector<uint8_t> payload);
  void handshake_message(Message& msg);
  void auth_token(const Message& msg);
  void device_connected(const Message& msg);
  void stream_message(Message& msg);
  void stream_open(std::shared_ptr<Stream> s);
  bool op_check(const std::string& what, const std::function<void(Error)>& fail);
  void timer_arm(uint64_t ms);
  void watchdog_arm();
  void watchdog_tick();
  void fail(Error err, bool notify);  // the connection dies

  Reactor& reactor_;
  std::unique_ptr<Transport> transport_;
  std::shared_ptr<const HostKey> key_;
  ConnectionOptions opts_;
  State state_ = State::idle;
  DeviceInfo device_;
  DoneCb start_cb_;
  DoneCb on_close_;
  Reactor::Id timer_ = 0;
  Reactor::Id watchdog_ = 0;
  uint32_t next_id_ = 1;
  bool checksum_tx_ = true;   // send payload checksums (until a version that skips them is negotiated)
  bool checksum_rx_ = false;  // verify them (negotiated version < kVersionSkipChecksum)
  int tokens_seen_ = 0;
  std::map<uint32_t, std::shared_ptr<Stream>> streams_;
  // Streams we gave up on while their OPEN was pending: when the device's OKAY arrives, we close its end.
  std::vector<uint32_t> orphans_;
  // Cleared by the destructor so that posted work finds out it is late.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Quotes one argument for the device's /system/bin/sh: 'it'\''s'. Safe for any byte except NUL.
std::string shell_quote(std::string_view arg);
// Quotes and joins arguments into one command line.
std::string shell_join(const std::vector<std::string>& argv);

// Remote paths for sync: absolute, at most 1024 bytes, no NUL or newline, no "." or ".." components.
bool remote_path_check(std::string_view path, std::string* err);

}  // namespace cloudlet::adb
