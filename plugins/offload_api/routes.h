// The HTTP side: the open routes (GET /api/<path>) and the encrypted tunnel (POST /api/command), registered
// on the `api` listener according to the API mode.
#pragma once

#include <string>

#include "cloudlet_plugin.h"
#include "commands.h"

namespace cloudlet::offload {

struct Plugin;

struct RouteSlot {
  Plugin* p;
  Command command;
};

// The largest command the tunnel accepts (Base64 text, after URL decoding).
constexpr size_t kMaxCommandBytes = 64 * 1024;

// Adds the routes the API mode asks for (open: the GET routes; encrypted: POST /api/command; both).
cl_status_t routes_add(Plugin& p);

// The cloudlet address this client connected to (what it used to reach us), "" if unknown.
std::string local_ip(Plugin& p, cl_request_t* req);

// POST /api/command (command_route.cc).
cl_status_t on_command_route(void* ud, cl_request_t* req) noexcept;

}  // namespace cloudlet::offload
