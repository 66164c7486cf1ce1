// POST /api/command: the encrypted tunnel (../shared/reference/mobile-clients.md 1.3, pycloud-security.md 3).
// Checks, in pycloud's order: the device (401 unknown, 403 revoked or expired), then the command (400 when it
// cannot be decoded, decrypted or parsed; 404 when it names no command). Errors are in clear and never quote
// decrypted text: with no MAC in the protocol, echoing it would let anyone decrypt captured traffic.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "answer.h"
#include "plugin.h"
#include "routes.h"
#include "wire.h"

namespace cloudlet::offload {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void reply(Plugin& p, cl_request_t* req, uint32_t status, std::string_view message) {
  Answer a = Answer::error(status, message);
  p.api->resp_send(req, a.status, cs(a.content_type), cs(a.body));
}

std::string member_string(const rapidjson::Document& d, const char* name) {
  auto it = d.FindMember(name);
  return it != d.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString(), it->value.GetStringLength())
                                                     : std::string();
}

// The device is authorized: decrypt, parse and run the command.
void run_sealed(Plugin& p, cl_request_t* req, const std::string& device, const std::string& command,
                const TunnelKey& key) {
  std::string plaintext;
  OpenError e = tunnel_open(command, key, &plaintext);
  if (e != OpenError::none) return reply(p, req, 400, tunnel_error_text(e));
  Call c;
  std::string path, error;
  if (!parse_command(plaintext, &path, &c.params, &error)) return reply(p, req, 400, error);
  std::optional<Command> cmd = command_of(path);
  if (!cmd) return reply(p, req, 404, "Command not found");
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
    cl_str_t header;
    std::string device;
    if (p.api->req_header(req, cs("X-Device-ID"), &header) == CL_OK) device = std::string(trim(sv(header)));
    if (device.empty()) {
      reply(p, req, 400, "Must provide the X-Device-ID header");
      return CL_OK;
    }
    // The query string or an x-www-form-urlencoded body (pycloud read request.params: both worked).
    std::string command;
    cl_str_t value;
    if (p.api->req_param(req, cs("command"), &value) == CL_OK) {
      command = std::string(sv(value));
    } else {
      Params form;
      parse_urlencoded(sv(p.api->req_body(req)), &form);
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
    rapidjson::StringBuffer b;
    rapidjson::Writer<rapidjson::StringBuffer> w(b);
    w.StartObject();
    w.Key("device_id");
    w.String(device.data(), static_cast<rapidjson::SizeType>(device.size()));
    w.EndObject();
    p.call("device.auth", std::string(b.GetString(), b.GetSize()),
           [&p, req, device, command](cl_status_t st, std::string_view r, bool missing) {
             std::string who = quote_safe(device);
             if (st == CL_ENOENT && !missing) {
               return reply(p, req, 401, "Device with id " + who + " is not paired to this cloudlet");
             }
             if (st != CL_OK) {
               return reply(p, req, missing ? 503 : http_status(st),
                            missing ? "Device authorization is not available" : op_error_message(r, st));
             }
             rapidjson::Document d;
             d.Parse(r.data(), r.size());
             if (d.HasParseError() || !d.IsObject())
               return reply(p, req, 500, "device.auth returned an unexpected result");
             std::string state = member_string(d, "state"), password = member_string(d, "api_password");
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
