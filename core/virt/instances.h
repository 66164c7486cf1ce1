// Instances: instance.start/stop/pause/resume/get/list (core/ops/README.md).
//
// Start = two host ports from the pool (service port and 22), a unique name and UUID, a qcow2 overlay on the
// service's read-only disk, the saved state's XML rewritten for that identity, and a restore straight to running
// through a per-instance FIFO (save_image.h: one shared state file, many instances at once). If the restore
// fails, the same overlay is cold booted from the saved domain XML and the result says "memory_restored": false.
// With wait_ready the answer waits until the service answers on its forwarded port (port_probe.h), at most
// virt.ready_timeout_ms; a start that fails or times out leaves nothing (domain, overlay, ports, record).
// Each start is a job; the answer comes once the record is durable.
//
// Sharing: a start with join on a shared service (num_users > 0) joins a running or starting instance that has
// room, instead of starting a new one; users are counted in memory and in the record, in one loop turn (atomic).
// Stop removes one user (instance_def.h) and destroys the VM when none is left; the overlay and instance
// directory go, the ports return to the pool, the record is deleted and "instance.state" {"id", "service_id",
// "state": "stopped"} is published. The same happens when a VM stops on its own (guest power-off, crash).
//
// Reconciliation (reconcile.h) runs after every (re)connect to the hypervisor.
//
// Thread rule: loop thread only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "system/status.h"
#include "virt/connection.h"
#include "virt/context.h"
#include "virt/instance_def.h"

namespace cloudlet::virt {

class Services;

class Instances {
 public:
  Instances(VirtContext& ctx, Services& services);
  ~Instances();

  // Loads the records (their ports stay reserved), registers the operations, reconciles on every connect.
  void start();
  // Cancels starts in progress (they clean up). Callers then wait for ctx.pending.
  void stop();

  int64_t count(const std::string& service_id) const;
  size_t size() const { return insts_.size(); }
  void on_domain_event(const DomainEvent& ev);
  void reconcile();

  struct Inst;
  struct Start;

 private:
  using Done = std::function<void(cl_status_t, const std::string&)>;

  void register_operations();
  void op_start(std::string_view args, Operations::Reply reply);
  void op_stop(std::string_view args, Operations::Reply reply);
  void op_pause_resume(std::string_view args, Operations::Reply reply, bool pause);

  void start_instance(std::shared_ptr<Start> s);
  void start_new(std::shared_ptr<Start> s, const struct ServiceDef& svc);
  void start_restore(std::shared_ptr<Start> s);
  void start_running(std::shared_ptr<Start> s);
  void start_fail(std::shared_ptr<Start> s, cl_status_t status, const std::string& error);
  void start_commit(std::shared_ptr<Start> s, Inst& inst);
  void start_answer(std::shared_ptr<Start> s);

  // Destroys the domain, removes the files, releases the ports, deletes the record, publishes "stopped". done
  // gets success or the reason the domain could not be destroyed (then nothing changed but the state); either
  // way the failure is logged here.
  void teardown(const std::string& id, bool destroy, const std::string& why, std::function<void(Status)> done);
  void publish_state(const Inst& inst, const char* state);
  void commit(const Inst& inst, std::function<void(cl_status_t)> done);
  std::string dir(const std::string& id) const;

  VirtContext& ctx_;
  Services& services_;
  std::map<std::string, std::shared_ptr<Inst>> insts_;
  bool reconciling_ = false, reconcile_again_ = false;
};

}  // namespace cloudlet::virt
