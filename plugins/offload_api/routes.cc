#include "routes.h"

#include <cstring>

#include "answer.h"
#include "params.h"
#include "plugin.h"

namespace cloudlet::offload {

namespace {

cl_status_t on_open_route(void* ud, cl_request_t* req) noexcept {
  auto* slot = static_cast<RouteSlot*>(ud);
  Plugin& p = *slot->p;
  try {
    cl::Request r(p.host, req);
    if ((slot->command == Command::start || slot->command == Command::stop) && r.method() == "HEAD") {
      // HEAD must not change anything: it would start or stop a VM (pycloud did so).
      r.add_header("Allow", "GET");
      return r.send(405, "text/plain", "405 Method Not Allowed\n");
    }
    Call c;
    c.command = slot->command;
    for (size_t i = 0; auto param = r.param_at(i); i++) {
      c.params.add(std::string(param->first), std::string(param->second));
    }
    c.device_id = std::string(trim(r.header("X-Device-ID").value_or("")));
    if (c.command == Command::start) c.local_ip = local_ip(p, req);  // two syscalls: only when needed
    command_run(p, std::move(c), [&p, req](Answer a) { answer_send(p, req, std::move(a)); });
    return CL_OK;
  } catch (const std::exception& e) {
    p.log(CL_LOG_ERROR, std::string("route failed: ") + e.what());
    return CL_ENOMEM;
  }
}

cl_status_t add(Plugin& p, const char* method, const char* pattern, cl_route_cb handler, void* ud, uint64_t max_body) {
  cl_route_desc_t d;
  std::memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.listener = "api";
  d.method = method;
  d.pattern = pattern;
  d.max_body = max_body;
  d.handler = handler;
  d.ud = ud;
  cl_status_t st = p.host.route_add(d);
  if (st != CL_OK) p.log(CL_LOG_ERROR, std::string("cannot add route ") + method + " " + pattern);
  return st;
}

}  // namespace

std::string local_ip(Plugin& p, cl_request_t* req) {
  return std::string(cl::Request(p.host, req).local_ip().value_or(""));
}

cl_status_t routes_add(Plugin& p) {
  bool open = p.mode == "open" || p.mode == "both";
  bool tunnel = p.mode == "encrypted" || p.mode == "both";
  if (open) {
    for (const auto& c : kCommandPaths) {
      p.slots.push_back(std::make_unique<RouteSlot>(RouteSlot{&p, c.command}));
      // GET only: pycloud's handlers were GET_<action> (HEAD is served by the GET route).
      cl_status_t st = add(p, "GET", c.route, on_open_route, p.slots.back().get(), 0);
      if (st != CL_OK) return st;
    }
  }
  if (tunnel) {
    p.slots.push_back(std::make_unique<RouteSlot>(RouteSlot{&p, Command::services}));
    // URL encoding can triple Base64 ('+', '/', '=' become %XX): room for that, the limit is checked after.
    cl_status_t st = add(p, "POST", "/api/command", on_command_route, p.slots.back().get(), 4 * kMaxCommandBytes);
    if (st != CL_OK) return st;
  }
  return CL_OK;
}

}  // namespace cloudlet::offload
