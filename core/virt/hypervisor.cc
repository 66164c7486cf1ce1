#include "virt/hypervisor.h"

#include <fmt/format.h>

#include <algorithm>

#include "events/bus.h"
#include "json/json.h"
#include "log/log.h"
#include "virt/domain_type.h"
#include "virt/event_impl.h"
#include "virt/libvirt_shim.h"

namespace cloudlet::virt {

Hypervisor::Hypervisor(Loop& loop, EventBus& events, HypervisorOptions options)
    : loop_(loop),
      events_(events),
      o_(std::move(options)),
      ports_(o_.forward_address, o_.port_min, o_.port_max) {
  ConnectionOptions co;
  co.uri = o_.uri;
  conn_ = std::make_unique<Connection>(loop_, co);
  conn_->on_domain_event([this](const DomainEvent& ev) { handle_event(ev); });
  conn_->on_state([this](bool up, const std::string& detail) {
    if (up) {
      reason_.clear();
      for (auto& fn : connected_fns_) fn();
    } else if (!stopping_) {
      reason_ = fmt::format("the libvirt connection {} was lost ({}); re-opening", o_.uri, detail);
    }
  });
}

Hypervisor::~Hypervisor() {
  *alive_ = false;
  if (reopen_timer_) loop_.timer_stop(reopen_timer_);
}

void Hypervisor::start() {
  if (started_ || stopping_) return;
  started_ = true;
  if (!ports_.valid()) log::error("virt", "host ports: {}", ports_.status().message());
  // libvirt is loaded on first use (libvirt_shim.h), on a worker: mapping it takes tens of milliseconds.
  auto loaded = std::make_shared<Status>();
  std::weak_ptr<bool> alive = alive_;
  loop_.queue_work([loaded] { *loaded = libvirt_load(); },
                   [this, alive, loaded](bool cancelled) {
                     if (alive.expired() || stopping_) return;
                     if (cancelled || !loaded->ok()) {
                       fail_start(cancelled ? "cancelled" : loaded->message());
                       return;
                     }
                     connect();
                   });
}

void Hypervisor::fail_start(const std::string& why) {
  first_open_done_ = true;
  reason_ = why;
  log::error("virt", "{}", reason_);
  auto waiters = std::move(connect_waiters_);
  connect_waiters_.clear();
  for (auto& w : waiters) w(unavailable());
}

void Hypervisor::connect() {
  if (!event_impl_register(loop_)) {
    fail_start("libvirt's event loop is bound to another loop in this process");
    return;
  }
  open();
}

void Hypervisor::open() {
  std::weak_ptr<bool> alive = alive_;
  conn_->open([this, alive](Status status) {
    if (alive.expired() || stopping_) return;
    bool first = !first_open_done_;
    first_open_done_ = true;
    if (status.ok()) {
      backoff_ms_ = 0;
    } else {
      reason_ = fmt::format("the libvirt connection {} is not available: {}", o_.uri, status.message());
      if (first || backoff_ms_ >= o_.reopen_max_ms) log::warn("virt", "{} (retrying in the background)", reason_);
      schedule_reopen();
    }
    auto waiters = std::move(connect_waiters_);
    connect_waiters_.clear();
    for (auto& w : waiters) w(status.ok() ? Status() : unavailable());
  });
}

void Hypervisor::schedule_reopen() {
  if (stopping_ || reopen_timer_) return;
  backoff_ms_ = backoff_ms_ == 0 ? o_.reopen_min_ms : std::min(backoff_ms_ * 2, o_.reopen_max_ms);
  reopen_timer_ = loop_.timer_start(backoff_ms_, 0, [this] {
    reopen_timer_ = 0;
    if (!stopping_ && !conn_->connected()) open();
  });
}

void Hypervisor::stop(std::function<void()> done) {
  stopping_ = true;
  reason_ = "the server is shutting down";
  if (reopen_timer_) {
    loop_.timer_stop(reopen_timer_);
    reopen_timer_ = 0;
  }
  auto waiters = std::move(connect_waiters_);
  connect_waiters_.clear();
  for (auto& w : waiters) w(unavailable());
  if (!started_) return loop_.defer(std::move(done));
  conn_->close(std::move(done));
}

bool Hypervisor::connected() const { return conn_->connected(); }

void Hypervisor::when_connected(std::function<void(Status status)> fn) {
  if (!started_) start();
  if (conn_->connected()) {
    loop_.defer([fn = std::move(fn)] { fn(Status()); });
  } else if (!first_open_done_ && !stopping_) {
    connect_waiters_.push_back(std::move(fn));
  } else {
    loop_.defer([fn = std::move(fn), s = unavailable()] { fn(s); });
  }
}

void Hypervisor::domain_type(std::function<void(DomainType type)> fn) {
  if (type_known_) {
    loop_.defer([fn = std::move(fn), t = type_] { fn(t); });
    return;
  }
  type_waiters_.push_back(std::move(fn));
  if (probing_) return;
  auto decide = [this](DomainType t, const std::string& why) {
    probing_ = false;
    type_known_ = true;
    type_ = t;
    log::info("virt", "new domains are of type {}: {}", domain_type_name(t), why);
    auto waiters = std::move(type_waiters_);
    type_waiters_.clear();
    for (auto& w : waiters) w(t);
  };
  probing_ = true;
  if (o_.domain_type == "qemu" || o_.domain_type == "kvm") {
    // Forced: no probe, no libvirt call.
    std::weak_ptr<bool> alive = alive_;
    loop_.defer([alive, decide, t = o_.domain_type == "kvm" ? DomainType::kvm : DomainType::qemu] {
      if (!alive.expired()) decide(t, "virt.domain_type says so");
    });
    return;
  }
  DomainTypeProbe probe;
  probe.setting = o_.domain_type;
  probe.kernel = o_.probe_kernel;
  probe.initrd = o_.probe_initrd;
  probe.work_dir = o_.work_dir;
  log::info("virt", "deciding between kvm and qemu (TCG) for new domains");
  using Result = std::pair<int, std::string>;
  std::weak_ptr<bool> alive = alive_;
  conn_->call<Result>(
      [probe](virConnectPtr c) {
        std::string why;
        DomainType t = domain_type_probe(c, probe, &why);
        return Result{static_cast<int>(t), why};
      },
      [this, alive, decide](Result r, Status status) {
        if (alive.expired()) return;
        if (!status.ok() && r.second.empty()) {
          // No connection to test with: answer qemu for now and test again next time.
          probing_ = false;
          log::warn("virt", "the KVM test could not run ({}): using qemu (TCG) for now", status.message());
          auto waiters = std::move(type_waiters_);
          type_waiters_.clear();
          for (auto& w : waiters) w(DomainType::qemu);
          return;
        }
        decide(r.first == static_cast<int>(DomainType::kvm) ? DomainType::kvm : DomainType::qemu, r.second);
      });
}

void Hypervisor::handle_event(const DomainEvent& ev) {
  std::string p = "{\"uuid\":";
  json::append_quoted(&p, ev.uuid);
  p += ",\"name\":";
  json::append_quoted(&p, ev.name);
  p += ",\"event\":";
  json::append_quoted(&p, DomainEvent::kind_name(ev.kind));
  p += ",\"detail\":";
  json::append_quoted(&p, ev.detail_name());
  p += "}";
  log::debug("virt", "domain {} {}: {}", ev.name, DomainEvent::kind_name(ev.kind), ev.detail_name());
  events_.publish("vm.lifecycle", std::move(p));
  for (auto& fn : event_fns_) fn(ev);
}

}  // namespace cloudlet::virt
