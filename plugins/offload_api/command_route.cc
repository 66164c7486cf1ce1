// POST /api/command: the encrypted tunnel (../shared/reference/mobile-clients.md 1.3, pycloud-security.md 3).
// Checks, in pycloud's order: the device (401 unknown, 403 revoked or expired), then the command (400 when it
// cannot be decoded, decrypted or parsed; 404 when it names no command; 400 when it reuses a ciphertext block
// the device already sent, replay.h). Errors are in clear and never quote decrypted text: with no MAC in the
// protocol, echoing it would let anyone decrypt captured traffic (answer.h).
#include "answer.h"
#include "json/json.h"
#include "params.h"
#include "plugin.h"
#include "routes.h"
#include "wire.h"

namespace cloudlet::offload {

namespace {

void reply(Plugin& p, cl_request_t* req, uint32_t status, std::string_view message) {
  Answer a = Answer::error(status, message);
  cl::Request(p.host, req).send(a.status, a.content_type, a.body);
}

// The device is authorized: decrypt, parse and run the command.
void run_sealed(Plugin& p, cl_request_t* req, const std::string& device, const std::string& command,
                const TunnelKey& key) {
  std::string plaintext, ciphertext;
  OpenError e = tunnel_open(command, key, &plaintext, &ciphertext);
  if (e != OpenError::none) return reply(p, req, 400, tunnel_error_text(e));
  Call c;
  std::string path, error;
  if (!parse_command(plaintext, &path, &c.params, &error)) return reply(p, req, 400, error);
  std::optional<Command> cmd = command_of(path);
  if (!cmd) return reply(p, req, 404, "Command not found");
  // Only real commands are remembered, so garbage cannot push a device's history out of the cache.
  if (!p.replays.admit(device, tunnel_key_id(key), ciphertext)) {
    p.log(CL_LOG_WARN, "refused a replayed command from device " + quote_safe(device));
    return reply(p, req, 400, "This command was already received (replayed commands are refused)");
  }
  c.command = *cmd;
  c.device_id = device;
  c.authenticated = true;
  if (c.command == Command::start) c.local_ip = local_ip(p, req);
  command_run(p, std::move(c), [&p, req, key](Answer a) { answer_send_sealed(p, req, std::move(a), key); });
}

}  // namespace

cl_status_t on_command_route(void* ud, cl_request_t* req) noexcept {
  Plugin& p = *static_cast<RouteSlot*>(ud)->p;
  try {
    cl::Request request(p.host, req);
    std::string device(trim(request.header("X-Device-ID").value_or("")));
    if (device.empty()) {
      reply(p, req, 400, "Must provide the X-Device-ID header");
      return CL_OK;
    }
    // The query string or an x-www-form-urlencoded body (pycloud read request.params: both worked).
    std::string command;
    if (auto value = request.param("command")) {
      command = std::string(*value);
    } else {
      Params form;
      parse_urlencoded(request.body(), &form);
      if (const std::string* c = form.get("command")) command = *c;
    }
    if (command.empty()) {
      reply(p, req, 400, "Must provide the command parameter (x-www-form-urlencoded body or query string)");
      return CL_OK;
    }
    if (command.size() > kMaxCommandBytes) {
      reply(p, req, 413, "The command is too large (at most " + std::to_string(kMaxCommandBytes) + " bytes)");
      return CL_OK;
    }
    std::string args = "{\"device_id\":";
    json::append_quoted(&args, device);
    p.call("device.auth", args + "}",
           [&p, req, device, command](cl_status_t st, std::string_view r, bool missing) {
             std::string who = quote_safe(device);
             if (st == CL_ENOENT && !missing) {
               return reply(p, req, 401, "Device with id " + who + " is not paired to this cloudlet");
             }
             if (st != CL_OK) {
               return reply(p, req, missing ? 503 : http_status(st),
                            missing ? "Device authorization is not available" : op_error_message(r, st));
             }
             json::Document d;
             if (!json::parse(r, &d, nullptr) || !d.IsObject())
               return reply(p, req, 500, "device.auth returned an unexpected result");
             std::string state(json::get_string(d, "state").value_or(""));
             std::string password(json::get_string(d, "api_password").value_or(""));
             if (state == "revoked")
               return reply(p, req, 403, "Authorization has been revoked for device with id " + who);
             if (state == "expired") return reply(p, req, 403, "Authorization has expired for device with id " + who);
             if (state != "ok" || password.empty()) {
               return reply(p, req, 403, "Device with id " + who + " is not authorized");
             }
             TunnelKey key = tunnel_key(password);
             run_sealed(p, req, device, command, key);
           });
    return CL_OK;
  } catch (const std::exception& e) {
    p.log(CL_LOG_ERROR, std::string("command route failed: ") + e.what());
    return CL_ENOMEM;
  }
}

}  // namespace cloudlet::offload
