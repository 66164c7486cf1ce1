// The hypervisor as the rest of the server sees it: one libvirt connection that is (re)opened in the background,
// the domain type for new domains decided once at run time, the host port pool, and domain lifecycle events
// published on the event bus.
//
// Nothing here blocks the loop or start-up: the connection opens on a worker; a first open that fails is retried
// with backoff (libvirtd may come up after us), and a dropped connection is re-opened by Connection itself. While
// the connection is not open, callers learn why at once (when_connected) and answer CL_EUNAVAIL.
//
// libvirt is touched only once something needs it: start() (the owner calls it at start-up when there are VMs to
// re-attach or leftovers to clean up) or the first when_connected(). A server that never runs a VM never loads
// libvirt's QEMU driver (about 10 MiB of resident library pages). start() also binds libvirt's event
// implementation to the loop (event_impl_register) before the first libvirt call.
//
// The domain type (kvm or qemu) matters only for domains booted from scratch (service creation, cold-boot
// fallback): restores use the type stored in the saved state. With "auto" the probe (domain_type.h: it boots a
// real kernel under KVM, up to ~10 s) therefore runs on a worker the first time a cold boot needs it, and every
// caller that asked meanwhile waits for its answer.
//
// Events: every lifecycle event goes to the listeners and is published as "vm.lifecycle"
// {"uuid", "name", "event", "detail"}.
//
// Thread rule: loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loop/loop.h"
#include "virt/connection.h"
#include "virt/domain_xml.h"
#include "virt/ports.h"

namespace cloudlet {
class EventBus;
}

namespace cloudlet::virt {

struct HypervisorOptions {
  std::string uri;                       // required
  std::string domain_type = "auto";      // auto | kvm | qemu
  std::string forward_address = "127.0.0.1";
  uint16_t port_min = 20000, port_max = 20999;
  std::string work_dir;                  // absolute; the KVM probe writes its console log here
  std::string probe_kernel, probe_initrd;  // a guest to test KVM with ("" = auto means qemu)
  uint64_t reopen_min_ms = 1000, reopen_max_ms = 30000;  // retrying a first open that failed
};

class Hypervisor {
 public:
  using EventFn = std::function<void(const DomainEvent&)>;

  Hypervisor(Loop& loop, EventBus& events, HypervisorOptions options);
  ~Hypervisor();
  Hypervisor(const Hypervisor&) = delete;
  Hypervisor& operator=(const Hypervisor&) = delete;

  // Starts opening the connection (in the background). Idempotent.
  void start();
  bool started() const { return started_; }
  // Stops retrying, closes the connection (on a worker); done() on the loop. Callers make sure their own calls
  // have come back first (calls are refused afterwards).
  void stop(std::function<void()> done);

  // fn(success) once the connection is open: at once if it is, after the open in progress if one is (the very
  // first one), else at once with CL_EUNAVAIL and the reason it is unavailable. fn always runs later, from a clean
  // stack.
  void when_connected(std::function<void(Status status)> fn);
  bool connected() const;
  // Why the connection is not open ("" when it is).
  const std::string& unavailable_reason() const { return reason_; }

  // The type for domains booted from scratch; probes once (see above). fn runs later, on the loop.
  void domain_type(std::function<void(DomainType type)> fn);
  // Known without waiting? (for logs and tests)
  bool domain_type_known() const { return type_known_; }

  // Called after every successful open and re-open (e.g. to reconcile state with the hypervisor).
  void on_connected(std::function<void()> fn) { connected_fns_.push_back(std::move(fn)); }
  void on_domain_event(EventFn fn) { event_fns_.push_back(std::move(fn)); }

  Connection& connection() { return *conn_; }
  PortAllocator& ports() { return ports_; }
  const HypervisorOptions& options() const { return o_; }

 private:
  void open();
  void connect();
  void fail_start(const std::string& why);
  Status unavailable() const { return Status::error(CL_EUNAVAIL, reason_); }
  void schedule_reopen();
  void handle_event(const DomainEvent& ev);

  Loop& loop_;
  EventBus& events_;
  HypervisorOptions o_;
  std::unique_ptr<Connection> conn_;
  PortAllocator ports_;
  std::string reason_ = "the libvirt connection is being opened";
  bool started_ = false;
  bool first_open_done_ = false;  // the first open attempt has finished (either way)
  bool stopping_ = false;
  uint64_t backoff_ms_ = 0;
  Loop::TimerId reopen_timer_ = 0;
  std::vector<std::function<void(Status)>> connect_waiters_;
  std::vector<std::function<void()>> connected_fns_;
  std::vector<EventFn> event_fns_;
  bool type_known_ = false, probing_ = false;
  DomainType type_ = DomainType::qemu;
  std::vector<std::function<void(DomainType)>> type_waiters_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace cloudlet::virt
