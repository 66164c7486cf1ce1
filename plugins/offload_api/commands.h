// The mobile API's commands, shared by the open routes (GET /api/<path>) and the encrypted tunnel
// (POST /api/command): each one validates its parameters, calls core operations, and produces an Answer.
// Statuses and messages follow pycloud (../shared/reference/pycloud-server.md 1.1) because phones show them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "command_path.h"
#include "params.h"

namespace cloudlet::offload {

struct Plugin;

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
