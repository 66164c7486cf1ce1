#include "adb/connection.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "adb/services.h"

namespace cloudlet::adb {

namespace {
constexpr size_t kMaxOrphans = 64;
constexpr size_t kMaxBanner = 4096;
}  // namespace

bool DeviceInfo::has_feature(std::string_view f) const {
  return std::find(features.begin(), features.end(), f) != features.end();
}

std::shared_ptr<Connection> Connection::create(Reactor& reactor, std::unique_ptr<Transport> transport,
                                               std::shared_ptr<const HostKey> key, ConnectionOptions opts) {
  return std::shared_ptr<Connection>(new Connection(reactor, std::move(transport), std::move(key), std::move(opts)));
}

Connection::Connection(Reactor& reactor, std::unique_ptr<Transport> transport, std::shared_ptr<const HostKey> key,
                       ConnectionOptions opts)
    : reactor_(reactor), transport_(std::move(transport)), key_(std::move(key)), opts_(std::move(opts)) {
  if (opts_.max_payload < kMaxPayloadV1) opts_.max_payload = kMaxPayloadV1;
  if (opts_.max_payload > kMaxPayload) opts_.max_payload = kMaxPayload;
}

Connection::~Connection() {
  *alive_ = false;
  if (timer_) reactor_.timer_stop(timer_);
  if (watchdog_) reactor_.timer_stop(watchdog_);
  if (transport_) transport_->close();
  streams_.clear();
}

std::string Connection::name() const { return transport_ ? transport_->name() : "adb"; }

void Connection::complete(std::function<void()> fn) {
  // If the loop is closing the callback cannot run any more; dropping it is all that is left.
  reactor_.post(std::move(fn));
}

void Connection::send(uint32_t cmd, uint32_t arg0, uint32_t arg1, std::vector<uint8_t> payload) {
  transport_->send(message_make(cmd, arg0, arg1, std::move(payload), checksum_tx_));
}

void Connection::start(DoneCb cb) {
  if (state_ != State::idle) {
    complete([cb] { cb(Error(Errc::invalid, "the connection was already started")); });
    return;
  }
  if (!key_) {
    complete([cb] { cb(Error(Errc::invalid, "no host key")); });
    return;
  }
  start_cb_ = std::move(cb);
  state_ = State::handshake;
  transport_->start(this, opts_.max_payload);
  const std::string& b = opts_.banner;
  send(kCmdCnxn, kVersion, opts_.max_payload, std::vector<uint8_t>(b.begin(), b.end()));
  timer_arm(opts_.handshake_timeout_ms);
}

void Connection::timer_arm(uint64_t ms) {
  if (timer_) reactor_.timer_stop(timer_);
  std::weak_ptr<Connection> weak = weak_from_this();
  timer_ = reactor_.timer_start(ms, [weak, ms] {
    auto self = weak.lock();
    if (!self) return;
    self->timer_ = 0;
    if (self->state_ == State::key_offered) {
      self->fail(Error(Errc::timeout, fmt::format("{} did not accept our key within {} ms: unlock the device and "
                                                  "accept \"Allow USB debugging\"",
                                                  self->name(), ms)),
                 true);
    } else if (self->state_ != State::online && self->state_ != State::closed) {
      self->fail(Error(Errc::timeout, fmt::format("{} did not complete the handshake within {} ms", self->name(), ms)),
                 true);
    }
  });
}

void Connection::transport_message(Message&& msg) {
  if (state_ == State::closed) return;
  // Before the versions are negotiated a device may or may not fill in the checksum; afterwards an old
  // version must, a new one does not.
  if (msg.header.length > 0 && (checksum_rx_ || (state_ != State::online && msg.header.check != 0))) {
    uint32_t sum = payload_checksum(msg.payload.data(), msg.payload.size());
    if (sum != msg.header.check) {
      fail(Error(Errc::protocol, fmt::format("corrupt message from {}: {} payload checksum {:#x}, expected {:#x}",
                                             name(), command_name(msg.header.command), msg.header.check, sum)),
           true);
      return;
    }
  }
  if (state_ == State::online) stream_message(msg);
  else handshake_message(msg);
}

void Connection::transport_error(Error err) { fail(std::move(err), true); }

void Connection::handshake_message(Message& msg) {
  switch (msg.header.command) {
    case kCmdAuth:
      if (msg.header.arg0 == kAuthToken) auth_token(msg);
      return;
    case kCmdCnxn:
      device_connected(msg);
      return;
    case kCmdStls:
      fail(Error(Errc::unsupported, fmt::format("{} asks for TLS (wireless debugging), which is not supported", name())),
           true);
      return;
    default:
      fail(Error(Errc::protocol, fmt::format("{} sent {} before accepting the connection", name(),
                                             command_name(msg.header.command))),
           true);
  }
}

void Connection::auth_token(const Message& msg) {
  if (msg.payload.size() != kAuthTokenSize) {
    fail(Error(Errc::protocol, fmt::format("{} sent a {} byte AUTH token, expected {}", name(), msg.payload.size(),
                                           kAuthTokenSize)),
         true);
    return;
  }
  if (state_ == State::signing) return;  // a signature is on its way; the device gets that one
  tokens_seen_++;
  if (tokens_seen_ == 1) {
    // RSA-2048 signing takes about a millisecond (more on a busy machine): off the loop.
    state_ = State::signing;
    struct Job {
      std::vector<uint8_t> token, sig;
      bool ok = false;
    };
    auto job = std::make_shared<Job>();
    job->token = msg.payload;
    auto key = key_;
    std::weak_ptr<Connection> weak = weak_from_this();
    bool queued = reactor_.work_queue([job, key] { job->ok = key->sign(job->token.data(), job->token.size(), &job->sig); },
                                      [weak, job](bool cancelled) {
                                        auto self = weak.lock();
                                        if (!self || self->state_ != State::signing) return;
                                        if (cancelled || !job->ok) {
                                          self->fail(Error(Errc::local_io, "signing the AUTH token failed"), true);
                                          return;
                                        }
                                        self->state_ = State::signed_token;
                                        self->send(kCmdAuth, kAuthSignature, 0, std::move(job->sig));
                                      });
    if (!queued) fail(Error(Errc::cancelled, "the loop is closing"), true);
    return;
  }
  if (tokens_seen_ == 2) {
    // The device does not know our key: offer it. The phone now asks its user, which may take a while.
    const std::string& pub = key_->public_key();
    std::vector<uint8_t> payload(pub.begin(), pub.end());
    payload.push_back(0);
    send(kCmdAuth, kAuthPublicKey, 0, std::move(payload));
    state_ = State::key_offered;
    reactor_.log(CL_LOG_INFO, fmt::format("{} does not know our key yet: offered it, waiting for the user to accept",
                                          name()));
    timer_arm(opts_.auth_timeout_ms);
    return;
  }
  fail(Error(Errc::auth_refused, fmt::format("{} rejected our public key", name())), true);
}

void Connection::device_connected(const Message& msg) {
  uint32_t version = msg.header.arg0, maxp = msg.header.arg1;
  if (version < kVersionMin || maxp == 0) {
    fail(Error(Errc::protocol, fmt::format("{} sent CNXN with version {:#x} and max payload {}", name(), version, maxp)),
         true);
    return;
  }
  if (msg.payload.size() > kMaxBanner) {
    fail(Error(Errc::protocol, fmt::format("{} sent a {} byte banner", name(), msg.payload.size())), true);
    return;
  }
  device_.version = std::min(kVersion, version);
  device_.max_payload = std::min(opts_.max_payload, maxp);
  checksum_tx_ = checksum_rx_ = device_.version < kVersionSkipChecksum;

  std::string banner(msg.payload.begin(), msg.payload.end());
  while (!banner.empty() && banner.back() == '\0') banner.pop_back();
  device_.banner = banner;
  // "<state>:<serial>:<props>" where props are "key=value;" pairs and features is a comma list.
  size_t c1 = banner.find(':');
  device_.state = banner.substr(0, c1);
  size_t c2 = c1 == std::string::npos ? std::string::npos : banner.find(':', c1 + 1);
  std::string props = c2 == std::string::npos ? "" : banner.substr(c2 + 1);
  size_t pos = 0;
  while (pos < props.size()) {
    size_t end = props.find(';', pos);
    std::string kv = props.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    size_t eq = kv.find('=');
    if (eq != std::string::npos) {
      std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
      if (k == "features") {
        size_t fpos = 0;
        while (fpos <= v.size()) {
          size_t comma = v.find(',', fpos);
          std::string f = v.substr(fpos, comma == std::string::npos ? std::string::npos : comma - fpos);
          if (!f.empty()) device_.features.push_back(f);
          if (comma == std::string::npos) break;
          fpos = comma + 1;
        }
      } else {
        device_.props[k] = v;
      }
    }
    if (end == std::string::npos) break;
    pos = end + 1;
  }

  state_ = State::online;
  if (timer_) reactor_.timer_stop(timer_);
  timer_ = 0;
  reactor_.log(CL_LOG_DEBUG, fmt::format("{} online: version {:#x}, max payload {}, banner \"{}\"", name(),
                                         device_.version, device_.max_payload, device_.banner));
  if (auto cb = std::move(start_cb_)) complete([cb] { cb(Error()); });
  start_cb_ = nullptr;
}

void Connection::stream_message(Message& msg) {
  const Header& h = msg.header;
  switch (h.command) {
    case kCmdOkay: {
      auto it = streams_.find(h.arg1);
      if (it == streams_.end()) {
        // The answer to an OPEN we gave up on: close the device's end too.
        auto o = std::find(orphans_.begin(), orphans_.end(), h.arg1);
        if (o != orphans_.end()) {
          orphans_.erase(o);
          if (h.arg0 != 0) send(kCmdClse, h.arg1, h.arg0, {});
        }
        return;
      }
      std::shared_ptr<Stream> s = it->second;
      s->last_activity = reactor_.now_ms();
      if (s->state == Stream::State::opening) {
        if (h.arg0 == 0) {
          fail(Error(Errc::protocol, fmt::format("{} accepted stream {} with remote id 0", name(), h.arg1)), true);
          return;
        }
        s->remote_id = h.arg0;
        s->state = Stream::State::open;
        s->opened();
      } else if (h.arg0 == s->remote_id && s->awaiting_okay) {
        s->awaiting_okay = false;
        s->ready();
      }
      return;
    }
    case kCmdWrte: {
      auto it = streams_.find(h.arg1);
      if (it == streams_.end() || it->second->state != Stream::State::open || it->second->remote_id != h.arg0) return;
      std::shared_ptr<Stream> s = it->second;
      s->last_activity = reactor_.now_ms();
      s->data(msg.payload.data(), msg.payload.size());
      // Acknowledge unless the data finished the stream (then it has sent CLSE already).
      if (state_ == State::online && s->state == Stream::State::open) send(kCmdOkay, s->local_id, s->remote_id, {});
      return;
    }
    case kCmdClse: {
      auto it = streams_.find(h.arg1);
      if (it == streams_.end()) {
        auto o = std::find(orphans_.begin(), orphans_.end(), h.arg1);
        if (o != orphans_.end()) orphans_.erase(o);
        return;
      }
      std::shared_ptr<Stream> s = it->second;
      if (s->state == Stream::State::open && h.arg0 != 0 && h.arg0 != s->remote_id) return;
      streams_.erase(it);
      s->state = Stream::State::done;
      s->remote_closed();
      reactor_.post([s] {});  // release on a clean stack
      return;
    }
    case kCmdOpen:
      // Reverse connections (device to host) are not offered.
      if (h.arg0 != 0) send(kCmdClse, 0, h.arg0, {});
      return;
    case kCmdCnxn:
      fail(Error(Errc::closed, fmt::format("{} restarted the connection", name())), true);
      return;
    default:
      return;  // AUTH after the handshake, unknown commands: ignored, as adb does
  }
}

bool Connection::op_check(const std::string& what, const std::function<void(Error)>& fail_cb) {
  Error err;
  if (state_ != State::online) {
    err = Error(state_ == State::closed ? Errc::closed : Errc::invalid,
                fmt::format("{}: {} is not connected", what, name()));
  } else if (streams_.size() >= opts_.max_streams) {
    err = Error(Errc::busy, fmt::format("{}: {} already has {} operations running", what, name(), streams_.size()));
  }
  if (!err) return true;
  complete([fail_cb, err] { fail_cb(err); });
  return false;
}

void Connection::stream_open(std::shared_ptr<Stream> s) {
  uint32_t id = next_id_++;
  if (next_id_ == 0) next_id_ = 1;
  s->local_id = id;
  s->last_activity = reactor_.now_ms();
  streams_[id] = s;
  std::vector<uint8_t> payload(s->service().begin(), s->service().end());
  payload.push_back(0);
  send(kCmdOpen, id, 0, std::move(payload));
  watchdog_arm();
}

void Connection::stream_write(Stream& s, std::vector<uint8_t> payload) {
  if (state_ != State::online || s.state != Stream::State::open || s.awaiting_okay) return;
  s.awaiting_okay = true;
  s.last_activity = reactor_.now_ms();
  send(kCmdWrte, s.local_id, s.remote_id, std::move(payload));
}

void Connection::stream_close(Stream& s) {
  if (s.state == Stream::State::done) return;
  if (state_ == State::online) {
    if (s.state == Stream::State::open) {
      send(kCmdClse, s.local_id, s.remote_id, {});
    } else if (orphans_.size() < kMaxOrphans) {
      orphans_.push_back(s.local_id);
    }
  }
  s.state = Stream::State::done;
  auto it = streams_.find(s.local_id);
  if (it != streams_.end()) {
    // The caller is usually a method of s: keep s alive until the stack has unwound.
    reactor_.post([keep = std::move(it->second)] {});
    streams_.erase(it);
  }
}

void Connection::watchdog_arm() {
  if (watchdog_ || streams_.empty()) return;
  uint64_t tick = std::clamp<uint64_t>(opts_.io_timeout_ms / 4, 10, 1000);
  std::weak_ptr<Connection> weak = weak_from_this();
  watchdog_ = reactor_.timer_start(tick, [weak] {
    if (auto self = weak.lock()) {
      self->watchdog_ = 0;
      self->watchdog_tick();
    }
  });
}

void Connection::watchdog_tick() {
  if (state_ != State::online) return;
  uint64_t now = reactor_.now_ms();
  std::vector<std::shared_ptr<Stream>> late;
  for (auto& [id, s] : streams_) {
    if (s->waiting_device() && now - s->last_activity >= opts_.io_timeout_ms) late.push_back(s);
  }
  for (auto& s : late) {
    Error err(Errc::timeout, fmt::format("{} stopped responding (nothing for {} ms)", name(), opts_.io_timeout_ms));
    stream_close(*s);
    s->failed(err);
  }
  watchdog_arm();
}

void Connection::fail(Error err, bool notify) {
  if (state_ == State::closed) return;
  State prev = state_;
  state_ = State::closed;
  if (timer_) reactor_.timer_stop(timer_);
  timer_ = 0;
  if (watchdog_) reactor_.timer_stop(watchdog_);
  watchdog_ = 0;
  transport_->close();
  if (prev == State::key_offered && (err.code == Errc::closed || err.code == Errc::io)) {
    err = Error(Errc::auth_refused,
                fmt::format("{} refused our key (it dropped the connection after the key offer: {})", name(), err.message));
  }
  reactor_.log(notify ? CL_LOG_WARN : CL_LOG_DEBUG, fmt::format("{}: connection ends: {}", name(), err.text()));
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) {
    s->state = Stream::State::done;
    s->failed(err);
  }
  // Stream objects may be inside their own frames (a failure during a write): release them later.
  reactor_.post([keep = std::move(streams)] {});
  if (auto cb = std::move(start_cb_)) complete([cb, err] { cb(err); });
  start_cb_ = nullptr;
  if (notify && on_close_) {
    auto cb = std::move(on_close_);
    complete([cb, err] { cb(err); });
  }
  on_close_ = nullptr;
}

void Connection::close() { fail(Error(Errc::cancelled, fmt::format("{}: connection closed by the host", name())), false); }

void Connection::file_push(PushRequest req, DoneCb cb) {
  std::string what = "push to " + req.remote_path;
  std::string err;
  if (!remote_path_check(req.remote_path, &err)) {
    complete([cb, err, what] { cb(Error(Errc::invalid, what + ": " + err)); });
    return;
  }
  if (req.mode > 0777) {
    complete([cb, what] { cb(Error(Errc::invalid, what + ": mode must be permission bits (at most 0777)")); });
    return;
  }
  if (!op_check(what, cb)) return;
  stream_open(push_stream_make(*this, std::move(req), std::move(cb)));
}

void Connection::file_pull(std::string remote_path, size_t max_bytes, DataCb cb) {
  std::string what = "pull of " + remote_path;
  std::string err;
  if (!remote_path_check(remote_path, &err)) {
    complete([cb, err, what] { cb(Error(Errc::invalid, what + ": " + err), {}); });
    return;
  }
  auto fail_cb = [cb](Error e) { cb(std::move(e), {}); };
  if (!op_check(what, fail_cb)) return;
  stream_open(pull_stream_make(*this, std::move(remote_path), max_bytes, std::move(cb)));
}

void Connection::file_stat(std::string remote_path, std::function<void(Error, RemoteStat)> cb) {
  std::string what = "stat of " + remote_path;
  std::string err;
  if (!remote_path_check(remote_path, &err)) {
    complete([cb, err, what] { cb(Error(Errc::invalid, what + ": " + err), {}); });
    return;
  }
  auto fail_cb = [cb](Error e) { cb(std::move(e), {}); };
  if (!op_check(what, fail_cb)) return;
  stream_open(stat_stream_make(*this, std::move(remote_path), std::move(cb)));
}

void Connection::shell_run(std::string command, size_t max_output, DataCb cb) {
  std::string what = "shell command";
  if (command.empty() || command.size() > 8192 || command.find('\0') != std::string::npos) {
    complete([cb, what] { cb(Error(Errc::invalid, what + ": must be 1..8192 bytes without NUL"), {}); });
    return;
  }
  auto fail_cb = [cb](Error e) { cb(std::move(e), {}); };
  if (!op_check(what, fail_cb)) return;
  stream_open(shell_stream_make(*this, std::move(command), max_output, std::move(cb)));
}

std::string shell_quote(std::string_view arg) {
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'') out += "'\\''";
    else out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out.push_back(' ');
    out += shell_quote(a);
  }
  return out;
}

bool remote_path_check(std::string_view path, std::string* err) {
  if (path.empty() || path.front() != '/') {
    *err = "the remote path must be absolute";
    return false;
  }
  if (path.size() > kSyncPathMax) {
    *err = fmt::format("the remote path is longer than {} bytes", kSyncPathMax);
    return false;
  }
  for (char c : path) {
    if (c == '\0' || c == '\n' || c == '\r') {
      *err = "the remote path contains NUL or a line break";
      return false;
    }
  }
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    std::string_view comp = path.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    if (comp == "." || comp == "..") {
      *err = "the remote path contains a '.' or '..' component";
      return false;
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return true;
}

}  // namespace cloudlet::adb
