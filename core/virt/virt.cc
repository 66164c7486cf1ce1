#include "virt/virt.h"

#include <fmt/format.h>

#include "events/bus.h"
#include "jobs/jobs.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "store/store.h"
#include "virt/context.h"
#include "virt/demo.h"
#include "virt/domain_xml.h"
#include "virt/hypervisor.h"
#include "virt/instances.h"
#include "virt/pending.h"
#include "virt/services.h"

namespace cloudlet::virt {
namespace {

constexpr const char* kVirtCollection = "virt";

// A random tag per data directory: the prefix of its domain names, so that reconciliation can tell its own
// domains from anyone else's on a shared hypervisor.
std::string domain_tag(Store& store) {
  std::string tag;
  if (store.get(kVirtCollection, "tag", &tag) == CL_OK && tag.size() == 8) return tag;
  tag = uuid_generate().substr(0, 8);
  auto txn = store.begin();
  if (txn && txn->put(kVirtCollection, "tag", tag) == CL_OK) store.commit(std::move(txn), {});
  return tag;
}

// The request's JSON body (or {}), with `key` set to the path parameter `param`. False with *error saying why
// when the body is not a JSON object.
}  // namespace

Virt::Virt(Loop& loop, Store& store, Operations& ops, EventBus& events, Jobs& jobs, VirtOptions options)
    : loop_(loop), store_(store), ops_(ops), events_(events), jobs_(jobs), o_(std::move(options)) {
  uri_ = o_.config.uri.empty() ? "qemu:///embed?root=" + o_.data_dir + "/libvirt" : o_.config.uri;
}

Virt::~Virt() = default;

void Virt::start() {
  pending_ = std::make_unique<Pending>(loop_);
  std::string demo_dir = o_.config.demo_dir.empty() ? demo_guest_dir_default() : o_.config.demo_dir;
  HypervisorOptions ho;
  ho.uri = uri_;
  ho.domain_type = o_.config.domain_type;
  ho.forward_address = o_.config.forward_address;
  ho.port_min = o_.config.port_min;
  ho.port_max = o_.config.port_max;
  ho.work_dir = o_.data_dir + "/tmp";
  ho.probe_kernel = demo_dir + "/vmlinuz";
  ho.probe_initrd = demo_dir + "/initrd.img";
  hv_ = std::make_unique<Hypervisor>(loop_, events_, ho);
  ctx_ = std::unique_ptr<VirtContext>(new VirtContext{loop_, store_, ops_, events_, jobs_, *hv_, *pending_});
  ctx_->data_dir = o_.data_dir;
  ctx_->services_dir = o_.data_dir + "/services";
  ctx_->instances_dir = o_.data_dir + "/instances";
  ctx_->prefix = "cloudlet-" + domain_tag(store_) + "-";
  ctx_->forward_address = o_.config.forward_address;
  ctx_->ready_timeout_ms = o_.config.ready_timeout_ms;
  ctx_->boot_timeout_ms = o_.config.boot_timeout_ms;
  services_ = std::make_unique<Services>(*ctx_);
  instances_ = std::make_unique<Instances>(*ctx_, *services_);
  services_->instance_count = [this](const std::string& id) { return instances_->count(id); };
  hv_->on_domain_event([this](const DomainEvent& ev) {
    instances_->on_domain_event(ev);
    services_->on_domain_event(ev);
  });
  services_->start();
  instances_->start();  // opens libvirt only when there is something to re-attach or clean up
  started_ = true;
  log::info("virt", "Service VMs on {} (domains named {}*, host ports {}-{} on {})", uri_, ctx_->prefix,
            o_.config.port_min, o_.config.port_max, o_.config.forward_address);
  if (o_.demo) demo_register(loop_, *services_, demo_dir);
}

void Virt::stop(std::function<void()> done) {
  if (!started_) return loop_.defer(std::move(done));
  ctx_->stopping = true;
  services_->stop();
  instances_->stop();
  if (pending_->count() > 0) log::info("virt", "waiting for {} VM operation(s) to finish", pending_->count());
  pending_->when_idle([this, done = std::move(done)] {
    size_t n = instances_->size();
    if (n > 0) {
      log::info("virt", "{} instance(s) keep running; the next start re-attaches them", n);
    }
    hv_->stop([done] { done(); });
  });
}

}  // namespace cloudlet::virt
