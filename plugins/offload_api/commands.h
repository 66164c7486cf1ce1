// The mobile API's commands, shared by the open routes (GET /api/<path>) and the encrypted tunnel
// (POST /api/command): each one validates its parameters, calls core operations, and produces an Answer.
// Statuses and messages follow pycloud (../shared/reference/pycloud-server.md 1.1) because phones show them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "params.h"

namespace cloudlet::offload {

struct Plugin;

enum class Command { services, service_get, start, stop, apps, app_get, system, messages };

// The open routes' paths and the tunnel's "/controller/action" words map to the same commands.
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

struct Call {
  Command command = Command::services;
  Params params;
  std::string device_id;       // X-Device-ID, or the tunnel's authenticated device
  bool authenticated = false;  // true in the tunnel: instances are then tied to the device
  std::string local_ip;        // the cloudlet address the client used (filled for start only)
};

struct Answer {
  uint32_t status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string file_path;  // set: send this file instead of body (an app's APK)
  std::string file_name;
  std::function<void()> undelivered;  // runs when the client left before the answer reached it
  // The error text is fixed (constants, at most the X-Device-ID header's device id): it can be sent as is after
  // a tunnel command was decrypted. Every other error text may quote the command (its parameters, or an
  // operation's message about them) and is replaced in the tunnel by a fixed text for its status.
  bool fixed_text = false;

  static Answer json(std::string body);
  static Answer error(uint32_t status, std::string_view message);
  static Answer fixed_error(uint32_t status, std::string_view message);
};

using AnswerDone = std::function<void(Answer)>;

// Runs a command; done is called exactly once (possibly before this returns).
void command_run(Plugin& p, Call call, AnswerDone done);

}  // namespace cloudlet::offload
