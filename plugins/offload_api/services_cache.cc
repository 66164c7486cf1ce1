#include "services_cache.h"

#include "plugin.h"
#include "wire.h"

namespace cloudlet::offload {

namespace {

void fetch(Plugin& p) {
  ServicesCache& c = p.services;
  c.fetching = true;
  uint64_t gen = c.generation;
  p.call("service.list", "{}", [&p, gen](cl_status_t st, std::string_view result, bool missing) {
    ServicesCache& cache = p.services;
    cache.fetching = false;
    std::string array, body, error;
    if (st == CL_OK && !services_array(result, &array)) {
      st = CL_EIO;
      error = "service.list returned an unexpected result";
    } else if (st != CL_OK) {
      error = missing ? "Services are not available on this cloudlet (no service.list operation)"
                      : op_error_message(result, st);
    }
    if (st == CL_OK) {
      body = "{\"services\":" + array + "}";
      if (gen == cache.generation) {
        cache.array = array;
        cache.body = body;
        cache.valid = true;
        cache.fetched_ms = p.host.now_ms();
      }
    }
    // Requests that came after a change must not get a list fetched before it: they wait for the next one.
    std::vector<std::pair<uint64_t, ServicesDone>> answer, later;
    for (auto& w : cache.waiters) (w.first == gen ? answer : later).push_back(std::move(w));
    cache.waiters = std::move(later);
    if (!cache.waiters.empty()) fetch(p);
    for (auto& w : answer) w.second(st, array, body, error, missing);
  });
}

}  // namespace

void services_fetch(Plugin& p, ServicesDone done) {
  ServicesCache& c = p.services;
  if (c.valid && p.host.now_ms() - c.fetched_ms < ServicesCache::kMaxAgeMs) {
    return done(CL_OK, c.array, c.body, std::string(), false);
  }
  c.waiters.emplace_back(c.generation, std::move(done));
  if (!c.fetching) fetch(p);
}

void services_invalidate(Plugin& p) {
  p.services.generation++;
  p.services.valid = false;
}

}  // namespace cloudlet::offload
