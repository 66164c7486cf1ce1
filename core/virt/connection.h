// The libvirt connection, driven from the loop.
//
// Opening runs on a worker (never on the loop): for qemu:///embed?root=DIR it first prepares DIR (embed.h), then
// opens, turns on keepalive (remote URIs), registers a close callback and the domain lifecycle callback. Lifecycle
// events arrive on the loop (through the event implementation, event_impl.h) and go to on_domain_event. When the
// connection drops (libvirtd restarted, keepalive timeout) it is re-opened with exponential backoff and on_state
// reports both transitions. Blocking libvirt calls go through call(): the function runs on a worker with its own
// reference to the connection, and the result comes back on the loop with libvirt's error text from that worker.
//
// Thread rule: every method is loop-thread-only. Requires event_impl_register() first.
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <functional>
#include <memory>
#include <string>

#include "loop/loop.h"
#include "system/status.h"

namespace cloudlet::virt {

struct DomainEvent {
  enum class Kind { defined, undefined, started, suspended, resumed, stopped, shutdown, pmsuspended, crashed, unknown };
  std::string uuid;
  std::string name;
  Kind kind = Kind::unknown;
  int detail = 0;  // libvirt's VIR_DOMAIN_EVENT_<KIND>_* value

  static const char* kind_name(Kind kind);  // "started", "stopped", ...
  std::string detail_name() const;          // "booted", "restored", "destroyed", "crashed", ... or the number
  static Kind kind_from_libvirt(int event);
};

struct ConnectionOptions {
  std::string uri = "test:///default";
  int keepalive_interval_s = 5;  // remote URIs only; local drivers have no keepalive
  unsigned keepalive_count = 3;
  uint64_t reconnect_min_ms = 500;
  uint64_t reconnect_max_ms = 30000;
};

class Connection {
 public:
  using EventFn = std::function<void(const DomainEvent&)>;
  using StateFn = std::function<void(bool connected, const std::string& detail)>;

  Connection(Loop& loop, ConnectionOptions options);
  // Close first (close()); a connection still open here is closed synchronously with a warning.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void on_domain_event(EventFn fn);
  void on_state(StateFn fn);

  // Opens on a worker; done(status) on the loop. A failed first open is not retried: the caller decides (bad URI
  // vs. daemon not up yet). After a successful open, drops are re-opened automatically. Failures: CL_EINVAL (an
  // embed URI without an absolute root), CL_EUNAVAIL (libvirt refused), CL_EIO (the embedded root could not be
  // prepared), CL_ESTATE (already open or opening), CL_ECLOSING (closed while opening), CL_ECANCELED.
  void open(std::function<void(Status status)> done);
  // Deregisters the callbacks and closes on a worker; no reconnect afterwards. done() on the loop.
  void close(std::function<void()> done);

  bool connected() const;
  const std::string& uri() const;
  // How many times a dropped connection has been re-opened.
  unsigned reconnects() const;

  // Runs fn(conn) on a worker; done(result, status) on the loop. status is CL_EIO with libvirt's last error on
  // that worker after fn (success if fn set none), CL_EUNAVAIL "libvirt connection is not open", or CL_ECANCELED
  // "cancelled". R must be default-constructible and own its resources (e.g. copy strings out of libvirt, free
  // libvirt objects inside fn).
  template <class R>
  void call(std::function<R(virConnectPtr)> fn, std::function<void(R, Status status)> done) {
    auto result = std::make_shared<R>();
    run_call([fn = std::move(fn), result](virConnectPtr c) { *result = fn(c); },
             [result, done = std::move(done)](Status status) { done(std::move(*result), std::move(status)); });
  }

  // For tests: simulate a dropped connection as if libvirt's close callback had fired.
  void simulate_drop(const std::string& reason);

  struct Core;

 private:
  void run_call(std::function<void(virConnectPtr)> work, std::function<void(Status status)> done);
  std::shared_ptr<Core> core_;
};

// libvirt's last error on this thread as text ("unknown libvirt error" if none is set).
std::string libvirt_last_error();

}  // namespace cloudlet::virt
