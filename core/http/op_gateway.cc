#include "http/op_gateway.h"

#include "http/request.h"
#include "http/status.h"
#include "json/json.h"
#include "ops/operations.h"

namespace cloudlet::http {

cl_status_t answer_with_operation(Operations& ops, Request& req, std::string_view name, std::string args_json,
                                  uint32_t ok_status) {
  Request* r = &req;  // alive until answered, even if the client leaves (then the answer goes nowhere)
  cl_status_t st = ops.call(name, args_json, [r, ok_status](cl_status_t s, std::string_view result) {
    r->send(s == CL_OK ? ok_status : status_from_cl(s), "application/json", result);
  });
  if (st != CL_OK) {
    return req.send(st == CL_ENOENT ? 503 : 400, "application/json",
                    json::error_object(st == CL_ENOENT ? "operation " + std::string(name) + " is not available"
                                                       : std::string("invalid arguments")));
  }
  return CL_OK;
}

}  // namespace cloudlet::http
