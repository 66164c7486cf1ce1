// Internal: one multiplexed stream of a connection (OPEN ... CLSE) and the interface it uses to reach the
// connection. Services (sync.cc, shell.cc) subclass Stream. Not part of the library's public surface.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "adb/error.h"

namespace cloudlet::adb {

class Reactor;
class Stream;

class StreamHost {
 public:
  virtual ~StreamHost() = default;
  // Sends one WRTE; allowed only when the stream is open and not awaiting an OKAY.
  virtual void stream_write(Stream& s, std::vector<uint8_t> payload) = 0;
  // Sends CLSE (when open) and forgets the stream; no more calls reach it afterwards.
  virtual void stream_close(Stream& s) = 0;
  // Largest WRTE payload the device takes.
  virtual uint32_t stream_max_payload() const = 0;
  virtual Reactor& reactor() = 0;
  // Runs a user callback later, on a clean stack (never inside the library's own frames).
  virtual void complete(std::function<void()> fn) = 0;
};

class Stream {
 public:
  enum class State { opening, open, done };

  explicit Stream(StreamHost& host, std::string service) : host_(host), service_(std::move(service)) {}
  virtual ~Stream() = default;

  const std::string& service() const { return service_; }
  uint32_t local_id = 0;
  uint32_t remote_id = 0;
  State state = State::opening;
  bool awaiting_okay = false;
  uint64_t last_activity = 0;  // loop time of the last message from the device (or of our last request)

  // The device accepted OPEN.
  virtual void opened() = 0;
  // The device consumed our last WRTE: the stream may write again.
  virtual void ready() = 0;
  // The device wrote to us.
  virtual void data(const uint8_t* p, size_t n) = 0;
  // The device closed the stream (or refused to open it, when state is still opening).
  virtual void remote_closed() = 0;
  // The stream dies with err (connection lost or closed, a timeout): report it to the caller. The connection
  // forgets the stream afterwards.
  virtual void failed(const Error& err) = 0;
  // True while the stream is waiting for something from the device (then a silence of io_timeout fails it).
  virtual bool waiting_device() const = 0;
  // "push of /sdcard/x (1024 of 4096 bytes sent)", for error messages.
  virtual std::string describe() const = 0;

 protected:
  // Ends the caller's wait: exactly once (cb is moved out), later on a clean stack, the error prefixed with
  // what the stream was doing (described before the value is taken). On an error the caller gets the default
  // value (no partial output). The value is taken by reference so that describe() still sees it.
  template <class... Value>
  void deliver(std::function<void(Error, Value...)>& cb, Error err, std::type_identity_t<Value>&... value) {
    if (err) err.message = describe() + " failed: " + err.message;
    auto done = std::move(cb);
    cb = nullptr;
    if (err) {
      host_.complete([done = std::move(done), err]() mutable { done(err, Value()...); });
    } else {
      host_.complete([done = std::move(done), err, ... v = std::move(value)]() mutable { done(err, std::move(v)...); });
    }
  }

  StreamHost& host_;
  std::string service_;
};

}  // namespace cloudlet::adb
