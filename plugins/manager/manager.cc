/*
 * manager: the operator's web manager on the `manager` listener. The core's domain modules only register
 * operations; this plugin maps the manager's HTTP routes onto them: the JSON API under /manager/api/
 * (api_routes.cc, with its OpenAPI document at /manager/api/openapi.json) and the live event stream
 * /manager/api/events (event_stream.cc).
 *
 * Configuration ({"config": {...}} of its plugins[] entry):
 *   max_event_streams     open /manager/api/events streams at most (default 64, 1..4096)
 *   session_idle_minutes  a login ends after this long unused (default 30, 1..1440)
 *   session_max_hours     and this long after it began, used or not (default 12, 1..720)
 * It guards the manager listener (plugins[].guards: ["manager"]): every request needs a session or an API
 * token, except the login page, the login route and /healthz (login.cc).
 * Its routes call privileged operations, which the configuration grants it (plugins[].grants): device.pair,
 * device.revoke, device.unpair, service.delete, and instance.stop.force (the DELETE of an instance stops it for
 * every device sharing it). An operation not granted answers 403.
 */
#include <exception>

#include "plugin.h"

namespace cloudlet::manager {

cl_status_t manager_route_add(Manager& m, const char* method, const char* pattern, uint32_t flags, cl_route_cb handler,
                              void* ud) {
  cl_route_desc_t d{};
  d.struct_size = sizeof d;
  d.flags = flags;
  d.listener = "manager";
  d.method = method;
  d.pattern = pattern;
  d.handler = handler;
  d.ud = ud;
  cl_status_t st = m.host.route_add(d);
  if (st != CL_OK) m.host.error(std::string("cannot add ") + method + " " + pattern + ": " + m.host.strerror(st));
  return st;
}

namespace {

cl_status_t read_config(Manager& m, cl_str_t config) {
  cl::Json doc;
  std::string_view text = cl::view(config);
  cl_status_t st = cl::Json::parse(m.host, text.empty() ? "{}" : text, &doc);
  int32_t type = 0;
  if (st != CL_OK || doc.type("", &type) != CL_OK || type != CL_JSON_OBJECT) {
    m.host.error("config: must be a JSON object");
    return CL_EINVAL;
  }
  int64_t max = static_cast<int64_t>(m.max_event_streams);
  st = doc.get("/max_event_streams", &max);
  if (st != CL_OK && st != CL_ENOENT) {
    m.host.error("config.max_event_streams: must be an integer");
    return CL_EINVAL;
  }
  if (max < 1 || max > 4096) {
    m.host.error("config.max_event_streams: must be between 1 and 4096");
    return CL_EINVAL;
  }
  m.max_event_streams = static_cast<size_t>(max);
  struct Bound {
    const char* key;
    int64_t lo, hi;
    uint64_t unit_ms;
    uint64_t* out;
  };
  for (const Bound& b : {Bound{"session_idle_minutes", 1, 1440, 60000, &m.auth.idle_ms},
                         Bound{"session_max_hours", 1, 720, 3600000, &m.auth.absolute_ms}}) {
    int64_t v = static_cast<int64_t>(*b.out / b.unit_ms);
    st = doc.get(std::string("/") + b.key, &v);
    if ((st != CL_OK && st != CL_ENOENT) || v < b.lo || v > b.hi) {
      m.host.error(std::string("config.") + b.key + ": must be an integer from " + std::to_string(b.lo) + " to " +
                   std::to_string(b.hi));
      return CL_EINVAL;
    }
    *b.out = static_cast<uint64_t>(v) * b.unit_ms;
  }
  return CL_OK;
}

cl_status_t manager_init(cl_host_t* h, const cl_host_api_t* api, cl_str_t config, void** state) noexcept {
  auto* m = new (std::nothrow) Manager;
  if (!m) return CL_ENOMEM;
  m->host = cl::Host(h, api);
  cl_status_t st = cl::guarded([&] {
    cl_status_t s = read_config(*m, config);
    if (s == CL_OK) s = login_add(*m);
    if (s == CL_OK) s = api_routes_add(*m);
    if (s == CL_OK) s = event_stream_add(*m);
    // The pages (www/: plain HTML, CSS and ES modules), behind the guard like everything on the listener.
    if (s == CL_OK) s = m->host.static_add("manager", "/manager/", "www");
    return s;
  });
  if (st != CL_OK) {
    delete m;  // the core removes whatever was registered
    return st;
  }
  *state = m;
  return CL_OK;
}

void manager_fini(cl_host_t*, void* state) noexcept {
  auto* m = static_cast<Manager*>(state);
  cl::guarded_void([&] { event_streams_end_all(*m); });
  if (m->stopping_sub) m->host.event_unsubscribe(m->stopping_sub);
  delete m;
}

const cl_plugin_desc_t manager_desc = {sizeof(cl_plugin_desc_t),
                                       CL_ABI_MAJOR,
                                       CL_ABI_MINOR,
                                       "manager",
                                       "1.0.0",
                                       0,
                                       manager_init,
                                       manager_fini,
                                       {nullptr, nullptr, nullptr, nullptr}};

}  // namespace
}  // namespace cloudlet::manager

CL_PLUGIN_DEFINE(cloudlet::manager::manager_desc)
