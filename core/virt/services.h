// Services: the operations service.list/get/create/refresh/update/delete (core/ops/README.md), their records and
// image files (service_def.h), and the jobs that make saved memory states.
//
// create = copy the disk image (or make a blank disk for a direct-kernel guest), boot it, wait until the service
// port answers through a forwarded port (port_probe.h), save the memory state, protect the files, then commit the
// record. refresh = the same from the current state (restored onto an overlay, or cold booted if that fails),
// flattened into a new image directory. Both are jobs with progress and can be cancelled; on failure or
// cancellation nothing is left: no domain, no directory, no record, no port. Every change publishes
// "service.changed" {"service_id"}.
//
// Rules: refresh and delete are refused (CL_EBUSY) while the service has instances, because instances overlay
// the current disk; instance starts wait while the service is being created or refreshed.
//
// Thread rule: loop thread only; file and libvirt work runs on workers.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "virt/connection.h"
#include "virt/context.h"
#include "virt/service_def.h"

namespace cloudlet::virt {

class Services {
 public:
  explicit Services(VirtContext& ctx);
  ~Services();

  // Loads the records, removes files no record refers to (on a worker), registers the operations.
  void start();
  // Cancels running jobs (they clean up and end). Callers then wait for ctx.pending.
  void stop();

  // Where a service's files are.
  std::string dir(const std::string& id) const;
  std::string image_dir(const ServiceDef& s) const;

  // The service an instance start needs: waits while it is being created or refreshed, then fn(CL_OK, "", def).
  // Otherwise CL_ENOENT (unknown or being deleted) or CL_ESTATE (no saved state) with a message.
  void when_startable(const std::string& id,
                      std::function<void(cl_status_t status, const std::string& error, const ServiceDef* def)> fn);
  const ServiceDef* find(const std::string& id) const;  // stored services only

  // Domains that service jobs are using right now (reconciliation must not take them for strays).
  std::set<std::string> busy_domains() const;
  void on_domain_event(const DomainEvent& ev);

  // Set by the owner: how many instances a service has (starting ones included).
  std::function<int64_t(const std::string& service_id)> instance_count;

  // Where a new service's image comes from. Paths are trusted here (the operation confines client paths to the
  // data directory first).
  struct Source {
    std::string disk_image;    // a qcow2 image to copy, or "" for a blank disk
    std::string kernel, initrd, cmdline;
    int64_t blank_disk_mib = 64;
  };
  // Starts creating a service (a job, returned). done runs with the job's status and result.
  std::string create(ServiceDef def, Source src, bool confine, std::function<void(cl_status_t, const std::string&)> done);

  struct Run;  // a create or refresh in progress

 private:
  struct Entry {
    ServiceDef def;
    bool stored = false;     // has a committed record
    bool deleting = false;
    std::string job;         // create or refresh in progress
    std::shared_ptr<Run> run;
    std::vector<std::function<void()>> waiters;  // run when the job ends
    // service.json rewrites (service.update) still on a worker, and what waits for them: a delete must not
    // remove the directory while a write puts a file back into it.
    int file_writes = 0;
    std::vector<std::function<void()>> after_writes;
  };

  void register_operations();
  void op_create(std::string_view args, Operations::Reply reply);
  void op_refresh(std::string_view args, Operations::Reply reply);
  void op_update(std::string_view args, Operations::Reply reply);
  void op_delete(std::string_view args, Operations::Reply reply);
  // One service.json rewrite of service.update finished (or failed): runs what waited for the last one.
  void files_written(const std::string& sid);
  std::string json_of(const Entry& e) const;
  // The live service named by args' "service_id"; nullptr after replying CL_EINVAL or CL_ENOENT.
  Entry* entry_for(const json::Value& args, Operations::Reply& reply);

  void run_start(std::shared_ptr<Run> run);
  void run_boot(std::shared_ptr<Run> run);
  void run_wait_port(std::shared_ptr<Run> run);
  void run_save(std::shared_ptr<Run> run);
  void run_commit(std::shared_ptr<Run> run);
  void run_fail(std::shared_ptr<Run> run, cl_status_t status, const std::string& error);
  void run_end(std::shared_ptr<Run> run);
  void progress(Run& run, double fraction, const std::string& message);

  VirtContext& ctx_;
  std::map<std::string, Entry> entries_;
  bool swept_ = false;
  std::vector<std::function<void()>> sweep_waiters_;
};

}  // namespace cloudlet::virt
