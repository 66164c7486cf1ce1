// Reconciling what the store says with what the hypervisor runs, at start-up and after every re-connect.
//
// pycloud destroyed every VM when it started. Here nothing is destroyed that might be in use:
//   - a stored instance whose domain still runs (or is paused) is kept and re-attached (its ports re-reserved);
//   - a stored instance whose domain is gone or shut off is reaped (record, overlay and directory removed);
//   - a running domain is destroyed only if it is ours (its name has this data directory's prefix) and nothing
//     knows it: no record and no start in progress (a start that died with the process, or a service boot);
//     a leftover KVM test domain of a process that no longer exists is destroyed too;
//   - an instance directory that belongs to no record and no start in progress is removed.
// Domains of anyone else (other names) are never touched.
//
// The plan is computed here without side effects (unit-tested); the caller executes it.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "virt/instance_def.h"

namespace cloudlet::virt {

struct DomainInfo {
  std::string uuid, name;
  bool active = false;   // running or paused (has a QEMU process)
  bool paused = false;
};

struct ReconcileInput {
  std::vector<InstanceDef> records;     // from the store
  std::set<std::string> in_flight;      // ids (= uuids) of instances starting or stopping in memory
  std::set<std::string> busy_domains;   // uuids of domains used by work in progress (service boots)
  std::vector<DomainInfo> domains;      // virConnectListAllDomains
  std::vector<std::string> instance_dirs;  // entries of <data_dir>/instances
  std::string prefix;                   // "cloudlet-<tag>-"
  std::function<bool(int pid)> pid_alive;  // for "cloudlet-kvm-probe-<pid>" domains
};

struct ReconcilePlan {
  struct Keep {
    std::string id;
    bool paused = false;
  };
  std::vector<Keep> keep;                 // records whose domain runs
  std::vector<std::string> reap;          // record ids whose domain is gone
  std::vector<DomainInfo> destroy;        // stray domains of ours
  std::vector<std::string> remove_dirs;   // instance directory names to remove
};

ReconcilePlan reconcile_plan(const ReconcileInput& in);

}  // namespace cloudlet::virt
