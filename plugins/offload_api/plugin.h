// The offload_api plugin's state and the two helpers every part uses: calling an operation and logging.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.hpp"
#include "replay.h"
#include "services_cache.h"

namespace cloudlet::offload {

// The result of an operation call. `missing` is set when nothing provides the operation (the app store is a
// later plugin, for example); status is then CL_ENOENT.
using OpDone = std::function<void(cl_status_t status, std::string_view result_json, bool missing)>;

struct PendingOp;
struct RouteSlot;

struct Plugin {
  cl::Host host;
  std::string mode;                                            // "open", "encrypted" or "both"
  std::set<PendingOp*> pending;                                // operation calls not answered yet (freed by fini)
  std::vector<std::unique_ptr<RouteSlot>> slots;               // route handler contexts
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);  // false after fini (late work completions)
  ServicesCache services;
  cl_sub_id_t services_sub = 0;
  ReplayCache replays;  // ciphertext blocks of the tunnel commands each device sent

  void log(int32_t level, std::string_view text) const { host.log(level, text); }
  // Calls an operation. done runs exactly once: later, or at once when the call cannot be made.
  void call(std::string_view name, const std::string& args_json, OpDone done);
};

}  // namespace cloudlet::offload
