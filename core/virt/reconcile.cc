#include "virt/reconcile.h"

#include <charconv>
#include <map>

namespace cloudlet::virt {
namespace {

constexpr std::string_view kProbePrefix = "cloudlet-kvm-probe-";

bool probe_domain_pid(const std::string& name, int* pid) {
  if (name.rfind(kProbePrefix, 0) != 0) return false;
  std::string_view rest(name);
  rest.remove_prefix(kProbePrefix.size());
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), *pid);
  return ec == std::errc() && p == rest.data() + rest.size() && *pid > 0;
}

}  // namespace

ReconcilePlan reconcile_plan(const ReconcileInput& in) {
  ReconcilePlan plan;
  std::map<std::string, const DomainInfo*> by_uuid;
  for (const auto& d : in.domains) by_uuid[d.uuid] = &d;
  std::set<std::string> known;  // ids with a record or in flight
  for (const auto& r : in.records) {
    known.insert(r.id);
    if (in.in_flight.count(r.id)) continue;  // its own operation decides
    auto it = by_uuid.find(r.id);
    if (it != by_uuid.end() && it->second->active) {
      plan.keep.push_back({r.id, it->second->paused});
    } else {
      plan.reap.push_back(r.id);
    }
  }
  for (const auto& id : in.in_flight) known.insert(id);
  for (const auto& d : in.domains) {
    if (!d.active || known.count(d.uuid) || in.busy_domains.count(d.uuid)) continue;
    int pid = 0;
    if (!in.prefix.empty() && d.name.rfind(in.prefix, 0) == 0) {
      plan.destroy.push_back(d);
    } else if (probe_domain_pid(d.name, &pid) && in.pid_alive && !in.pid_alive(pid)) {
      plan.destroy.push_back(d);
    }
  }
  // Reaped records' directories go with their records; in-flight ones belong to their operation.
  for (const auto& dir : in.instance_dirs) {
    if (!known.count(dir)) plan.remove_dirs.push_back(dir);
  }
  return plan;
}

}  // namespace cloudlet::virt
