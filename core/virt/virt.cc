#include "virt/virt.h"

#include <fmt/format.h>

#include "events/bus.h"
#include "http/op_gateway.h"
#include "http/request.h"
#include "http/server.h"
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
bool body_with(http::Request& r, const char* key, const char* param, std::string* out, std::string* error) {
  json::Document d;
  if (r.body.empty()) {
    d.SetObject();
  } else if (!json::parse_object(r.body, &d, error)) {
    return false;
  }
  if (key) {
    std::string_view v;
    r.param(param, &v);
    json::Value val(v.data(), static_cast<rapidjson::SizeType>(v.size()), d.GetAllocator());
    if (d.HasMember(key)) d.RemoveMember(key);
    d.AddMember(json::Value(key, d.GetAllocator()), val, d.GetAllocator());
  }
  *out = json::stringify(d);
  return true;
}

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

void Virt::add_routes(http::Server& server) {
  http::Router* router = server.router("manager");
  if (!router) return;
  auto add = [&](const char* method, const char* pattern, const char* op, const char* key, const char* param) {
    http::Route r;
    r.method = method;
    r.pattern = pattern;
    r.json_body = true;
    std::string name = op;
    r.handler = [this, name, key, param](http::Request& req) -> cl_status_t {
      std::string args, error;
      if (!body_with(req, key, param, &args, &error)) {
        return req.send(400, "application/json", json::error_object("the body must be a JSON object: " + error));
      }
      return http::answer_with_operation(ops_, req, name, std::move(args));
    };
    router->add(std::move(r));
  };
  add("GET", "/manager/api/services", "service.list", nullptr, nullptr);
  add("POST", "/manager/api/services", "service.create", nullptr, nullptr);
  add("GET", "/manager/api/services/{id}", "service.get", "service_id", "id");
  add("POST", "/manager/api/services/{id}", "service.update", "service_id", "id");
  add("POST", "/manager/api/services/{id}/refresh", "service.refresh", "service_id", "id");
  add("DELETE", "/manager/api/services/{id}", "service.delete", "service_id", "id");
  add("GET", "/manager/api/instances", "instance.list", nullptr, nullptr);
  add("POST", "/manager/api/instances", "instance.start", nullptr, nullptr);
  add("GET", "/manager/api/instances/{id}", "instance.get", "id", "id");
  add("POST", "/manager/api/instances/{id}/stop", "instance.stop", "id", "id");
  add("POST", "/manager/api/instances/{id}/pause", "instance.pause", "id", "id");
  add("POST", "/manager/api/instances/{id}/resume", "instance.resume", "id", "id");
  add("GET", "/manager/api/jobs", "job.list", nullptr, nullptr);
  add("GET", "/manager/api/jobs/{id}", "job.get", "job_id", "id");
  add("POST", "/manager/api/jobs/{id}/cancel", "job.cancel", "job_id", "id");
  // The operator ends an instance for everyone (instance.stop with force).
  http::Route del;
  del.method = "DELETE";
  del.pattern = "/manager/api/instances/{id}";
  del.handler = [this](http::Request& req) -> cl_status_t {
    std::string_view id;
    req.param("id", &id);
    std::string args = "{\"id\":";
    json::append_quoted(&args, id);
    return http::answer_with_operation(ops_, req, "instance.stop", args + ",\"force\":true}");
  };
  router->add(std::move(del));
}

}  // namespace cloudlet::virt
