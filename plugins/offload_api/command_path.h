// The mobile API's commands by name: the open routes' paths and the tunnel's "/controller/action" words map to
// the same commands. Pure parsing, in the wire library (unit tests and the fuzzer use it without the plugin).
#pragma once

#include <optional>
#include <string_view>

namespace cloudlet::offload {

enum class Command { services, service_get, start, stop, apps, app_get, system, messages };

struct CommandPath {
  Command command;
  const char* route;       // the open route: "/api/services"
  const char* controller;  // the tunnel's words: "services"
  const char* action;      // "" for a controller's list action
};
extern const CommandPath kCommandPaths[8];

// The tunnel's path, parsed as pycloud did: split on '/', word 1 is the controller, word 2 the action ("" if
// absent), word 0 is ignored. Anything else (and every migration action, which another plugin will own) is
// unknown.
std::optional<Command> command_of(std::string_view tunnel_path);

}  // namespace cloudlet::offload
