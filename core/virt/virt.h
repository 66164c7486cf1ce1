// The Service VM subsystem as the daemon assembles it: the hypervisor connection, services, instances, the demo
// service, and their manager routes.
//
// Start-up never waits for the hypervisor: start() returns at once, the connection opens in the background, and
// operations that need it answer CL_EUNAVAIL with the reason while it is not there. Shutdown: stop() refuses new
// work, cancels jobs (each cleans up), waits for everything in flight, then closes the connection. Running
// instances keep running: the next start re-attaches them (reconcile.h).
//
// Order with the rest of the server: event_impl_register(loop) before start(); after stop()'s done, call
// event_impl_shutdown() and only then close the store and the loop.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "config/config.h"

namespace cloudlet {
class Loop;
class Store;
class Operations;
class EventBus;
class Jobs;
}  // namespace cloudlet

namespace cloudlet::virt {

class Hypervisor;
class Services;
class Instances;
class Pending;
struct VirtContext;

struct VirtOptions {
  std::string data_dir;  // absolute
  VirtConfig config;
  bool demo = false;
};

class Virt {
 public:
  Virt(Loop& loop, Store& store, Operations& ops, EventBus& events, Jobs& jobs, VirtOptions options);
  ~Virt();

  void start();
  void stop(std::function<void()> done);

  // The libvirt URI in use.
  const std::string& uri() const { return uri_; }

 private:
  Loop& loop_;
  Store& store_;
  Operations& ops_;
  EventBus& events_;
  Jobs& jobs_;
  VirtOptions o_;
  std::string uri_;
  std::unique_ptr<Pending> pending_;
  std::unique_ptr<Hypervisor> hv_;
  std::unique_ptr<VirtContext> ctx_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<Instances> instances_;
  bool started_ = false;
};

}  // namespace cloudlet::virt
