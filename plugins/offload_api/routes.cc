#include "routes.h"

#include <cstring>

#include "answer.h"
#include "plugin.h"

namespace cloudlet::offload {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

cl_status_t on_open_route(void* ud, cl_request_t* req) noexcept {
  auto* slot = static_cast<RouteSlot*>(ud);
  Plugin& p = *slot->p;
  try {
    if ((slot->command == Command::start || slot->command == Command::stop) && sv(p.api->req_method(req)) == "HEAD") {
      // HEAD must not change anything: it would start or stop a VM (pycloud did so).
      p.api->resp_header_add(req, cs("Allow"), cs("GET"));
      return p.api->resp_send(req, 405, cs("text/plain"), cs("405 Method Not Allowed\n"));
    }
    Call c;
    c.command = slot->command;
    cl_str_t name, value;
    for (size_t i = 0; p.api->req_param_at(req, i, &name, &value) == CL_OK; i++) {
      c.params.add(std::string(sv(name)), std::string(sv(value)));
    }
    cl_str_t device;
    if (p.api->req_header(req, cs("X-Device-ID"), &device) == CL_OK) c.device_id = std::string(trim(sv(device)));
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
  cl_status_t st = p.api->route_add(p.h, &d);
  if (st != CL_OK) p.log(CL_LOG_ERROR, std::string("cannot add route ") + method + " " + pattern);
  return st;
}

}  // namespace

std::string local_ip(Plugin& p, cl_request_t* req) {
  cl_str_t ip{nullptr, 0};
  uint16_t port = 0;
  if (p.api->req_local_addr(req, &ip, &port) != CL_OK) return "";
  return std::string(sv(ip));
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
