// GET /api/services is what every phone asks every cloudlet it discovers, so the reshaped list is kept until
// the core publishes service.changed (or for at most kMaxAgeMs, in case an event is missed), and requests that
// arrive while it is being fetched share one service.list call.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet::offload {

struct Plugin;

// array: the services array; body: {"services": array}. On error: status, a message, and whether service.list
// is missing altogether.
using ServicesDone = std::function<void(cl_status_t status, const std::string& array, const std::string& body,
                                        const std::string& error, bool missing)>;

struct ServicesCache {
  static constexpr uint64_t kMaxAgeMs = 1000;
  std::string array, body;
  bool valid = false;
  bool fetching = false;
  uint64_t fetched_ms = 0;
  uint64_t generation = 0;                                 // bumped by every service.changed
  std::vector<std::pair<uint64_t, ServicesDone>> waiters;  // with the generation they asked in
};

// Answers from the cache when it is fresh (synchronously), else after one shared service.list call.
void services_fetch(Plugin& p, ServicesDone done);
// Forgets the cached list (service.changed).
void services_invalidate(Plugin& p);

}  // namespace cloudlet::offload
