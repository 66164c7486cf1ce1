// Jobs: long operations (instance start, saving a memory state, imports, migration) with an id, progress,
// cancellation and a final result. Operations that take long create a job and either answer when it finishes
// or, when called with {"wait": false}, answer {"job_id": ...} at once; callers then follow "job.progress" /
// "job.done" events or poll "job.get". Registered operations: job.get, job.list, job.cancel. Plugins run jobs
// here too, through the ABI's job_* slots (core/plugin/host_api.cc).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet {

class Loop;
class EventBus;
class Operations;

class Jobs {
 public:
  using Done = std::function<void(cl_status_t status, const std::string& result_json)>;

  Jobs(Loop& loop, EventBus& events, Operations& ops);

  // Starts tracking a job of `kind` ("instance.start"); `cancel` (may be empty) is asked to stop it early and
  // must still end it with finish(). Returns the job id ("job-42").
  std::string create(std::string_view kind, std::string_view subject, std::function<void()> cancel = {});
  // Progress in [0, 1] with a short human message; published as "job.progress".
  void progress(const std::string& id, double fraction, std::string_view message);
  // Ends the job (exactly once; later calls are ignored). Runs its waiters and publishes "job.done".
  void finish(const std::string& id, cl_status_t status, std::string result_json);
  // Calls done when the job ends (at once, asynchronously, if it already has). False for an unknown id.
  bool wait(const std::string& id, Done done);
  // Asks a running job to stop. CL_ENOENT unknown, CL_ESTATE already finished, CL_ENOTSUP not cancellable.
  cl_status_t cancel(const std::string& id);

  std::string describe(const std::string& id) const;  // JSON, "" if unknown
  size_t running() const;

  static constexpr size_t kKeepFinished = 200;  // finished jobs remembered for job.get

 private:
  struct Job {
    std::string id, kind, subject, state = "running", message;
    double progress = 0;
    cl_status_t status = CL_OK;
    std::string result = "null";
    uint64_t created_ms = 0, finished_ms = 0;
    std::function<void()> cancel;
    bool cancel_requested = false;
    std::vector<Done> waiters;
  };
  std::string to_json(const Job& j) const;
  void publish(const char* topic, const Job& j);

  Loop& loop_;
  EventBus& events_;
  uint64_t next_ = 1;
  std::map<std::string, Job> jobs_;
  std::deque<std::string> finished_order_;
};

}  // namespace cloudlet
