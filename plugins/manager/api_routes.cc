// The manager's JSON API: every route is a thin translation to one core operation. A route names the
// operation and the argument that gets the path's {id}; the body, when there is one, must be a JSON object
// (CL_ROUTE_F_JSON refuses other content types with 415) and supplies the other arguments. The answer is the
// operation's JSON with the route's success status, or its {"error": ...} with the HTTP status of its code.
// One row has no operation: GET /manager/api/openapi.json serves the document describing every route
// (openapi.json, embedded at build time; tests/unit/plugins/manager checks it against what is registered).
#include <string>

#include "json/json.h"
#include "plugin.h"

namespace cloudlet::manager {

struct ApiRoute {
  const char* method;
  const char* pattern;
  const char* op;  // nullptr: the OpenAPI document
  const char* id_key;  // the argument the path's {id} fills (it wins over the body's); nullptr: no {id}
  uint32_t ok_status;
  bool force;  // adds "force": true (the operator ends an instance for every device sharing it)
};

namespace {

constexpr ApiRoute kRoutes[] = {
    {"GET", "/manager/api/info", "server.info", nullptr, 200, false},
    {"GET", "/manager/api/system", "system.info", nullptr, 200, false},
    {"GET", "/manager/api/peers", "peer.list", nullptr, 200, false},
    {"GET", "/manager/api/openapi.json", nullptr, nullptr, 200, false},
    {"GET", "/manager/api/services", "service.list", nullptr, 200, false},
    {"POST", "/manager/api/services", "service.create", nullptr, 200, false},
    {"GET", "/manager/api/services/{id}", "service.get", "service_id", 200, false},
    {"POST", "/manager/api/services/{id}", "service.update", "service_id", 200, false},
    {"POST", "/manager/api/services/{id}/refresh", "service.refresh", "service_id", 200, false},
    {"DELETE", "/manager/api/services/{id}", "service.delete", "service_id", 200, false},
    {"GET", "/manager/api/instances", "instance.list", nullptr, 200, false},
    {"POST", "/manager/api/instances", "instance.start", nullptr, 200, false},
    {"GET", "/manager/api/instances/{id}", "instance.get", "id", 200, false},
    {"POST", "/manager/api/instances/{id}/stop", "instance.stop", "id", 200, false},
    {"POST", "/manager/api/instances/{id}/pause", "instance.pause", "id", 200, false},
    {"POST", "/manager/api/instances/{id}/resume", "instance.resume", "id", 200, false},
    {"DELETE", "/manager/api/instances/{id}", "instance.stop", "id", 200, true},
    {"GET", "/manager/api/jobs", "job.list", nullptr, 200, false},
    {"GET", "/manager/api/jobs/{id}", "job.get", "job_id", 200, false},
    {"POST", "/manager/api/jobs/{id}/cancel", "job.cancel", "job_id", 200, false},
    {"GET", "/manager/api/devices", "device.list", nullptr, 200, false},
    {"POST", "/manager/api/devices", "device.pair", nullptr, 201, false},
    {"GET", "/manager/api/devices/{id}", "device.get", "device_id", 200, false},
    {"POST", "/manager/api/devices/{id}/revoke", "device.revoke", "device_id", 200, false},
    {"DELETE", "/manager/api/devices/{id}", "device.unpair", "device_id", 200, false},
};

// The operation's arguments: the body's object with the route's own members set.
bool arguments(const ApiRoute& route, const cl::Request& req, std::string* out, std::string* error) {
  json::Document d;
  std::string_view body = req.body();
  if (body.empty()) {
    d.SetObject();
  } else if (!json::parse_object(body, &d, error)) {
    return false;
  }
  auto& a = d.GetAllocator();
  auto set = [&](const char* key, json::Value v) {
    d.RemoveMember(key);
    d.AddMember(json::Value(key, a), v, a);
  };
  if (route.id_key) {
    std::string_view id = req.param("id").value_or("");
    set(route.id_key, json::Value(id.data(), static_cast<rapidjson::SizeType>(id.size()), a));
  }
  if (route.force) set("force", json::Value(true));
  *out = json::stringify(d);
  return true;
}

cl_status_t on_api_request(void* ud, cl_request_t* r) noexcept {
  return cl::guarded([&] {
    auto* entry = static_cast<Manager::ApiEntry*>(ud);
    const ApiRoute& route = *entry->route;
    cl::Host host = entry->m->host;
    cl::Request req(host, r);
    if (!route.op) return req.send_json(200, openapi_document());
    std::string args, error;
    if (!arguments(route, req, &args, &error)) {
      return req.send_json(400, json::error_object("the body must be a JSON object: " + error));
    }
    uint32_t ok = route.ok_status;
    // The request stays ours until answered, even if the client leaves; the result comes before fini.
    // On behalf of whom the guard authenticated (the callee sees "user:NAME" or "token:NAME").
    auto done = [host, r, ok](cl_status_t s, std::string_view result) {
      cl::Request(host, r).send_json(s == CL_OK ? ok : cl::http_status(s), result);
    };
    std::string_view principal = req.principal().value_or("");
    cl_status_t st = principal.empty() ? cl::op_call(host, route.op, args, done)
                                       : cl::op_call_as(host, route.op, args, principal, done);
    if (st == CL_OK) return CL_OK;
    return req.send_json(st == CL_ENOENT ? 503 : 400,
                         json::error_object(st == CL_ENOENT ? std::string("operation ") + route.op + " is not available"
                                                            : std::string("invalid arguments")));
  });
}

}  // namespace

cl_status_t api_routes_add(Manager& m) {
  m.api_entries.reserve(std::size(kRoutes));  // the routes keep pointers into it
  for (const ApiRoute& route : kRoutes) {
    m.api_entries.push_back({&m, &route});
    cl_status_t st =
        manager_route_add(m, route.method, route.pattern, CL_ROUTE_F_JSON, on_api_request, &m.api_entries.back());
    if (st != CL_OK) return st;
  }
  return CL_OK;
}

}  // namespace cloudlet::manager
