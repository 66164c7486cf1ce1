// What services and instances share: the server's loop, store, operations, events and jobs, the hypervisor,
// the work-in-flight counter, the data directory layout and the settings. Plus small helpers both use: running
// an operation as a job, and committing one store document with a callback once it is durable.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "cloudlet_plugin.h"
#include "jobs/jobs.h"
#include "loop/loop.h"  // wall_ms
#include "ops/operations.h"
#include "store/store.h"
#include "virt/hypervisor.h"
#include "virt/pending.h"

namespace cloudlet {
class EventBus;
}

namespace cloudlet::virt {

struct VirtContext {
  Loop& loop;
  Store& store;
  Operations& ops;
  EventBus& events;
  Jobs& jobs;
  Hypervisor& hv;
  Pending& pending;
  std::string data_dir;       // absolute
  std::string services_dir;   // <data_dir>/services
  std::string instances_dir;  // <data_dir>/instances
  std::string prefix;         // domain names of this data directory: "cloudlet-<tag>-"
  std::string forward_address;
  uint32_t ready_timeout_ms = 30000;
  uint32_t boot_timeout_ms = 300000;
  bool stopping = false;
};

constexpr const char* kServicesCollection = "services";
constexpr const char* kInstancesCollection = "instances";

// Every long operation is a job. With wait, reply gets the job's outcome when it ends; without, reply gets
// {"job_id"} at once. Returns the job id; the caller ends the job with ctx.jobs.finish().
std::string job_begin(VirtContext& ctx, std::string_view kind, std::string_view subject, bool wait,
                      Operations::Reply reply, std::function<void()> cancel = {});

// Writes (value non-empty) or deletes (value empty) one document; done(status) runs once it is durable, or at
// once (deferred) with the reason the commit could not be made.
void commit_one(VirtContext& ctx, const char* collection, const std::string& key, const std::string& value,
                std::function<void(cl_status_t)> done);

// The error object for a failed step: {"error": message}.
std::string error_json(std::string_view message);

}  // namespace cloudlet::virt
