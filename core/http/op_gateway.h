// Answers an HTTP request with the result of an operation: the thin translation every JSON front end needs.
#pragma once

#include <string>
#include <string_view>

#include "cloudlet_plugin.h"

struct cl_request_s;

namespace cloudlet {
class Operations;
namespace http {

// Calls `name` with args_json and answers req with its JSON result: ok_status on success, else the HTTP status
// mapped from the operation's status (core/http/status.h) with its {"error": ...} body. Returns CL_OK (the
// request will be answered) — use it as a route handler's return value.
cl_status_t answer_with_operation(Operations& ops, ::cl_request_s& req, std::string_view name, std::string args_json,
                                  uint32_t ok_status = 200);

}  // namespace http
}  // namespace cloudlet
