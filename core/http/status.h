// HTTP status codes: reason phrases, and the mapping from the core's status codes (cl_status_t) to HTTP.
#pragma once

#include <cstdint>
#include <string_view>

#include "cloudlet_plugin.h"

namespace cloudlet::http {

std::string_view reason_phrase(uint32_t status);
// CL_EINVAL -> 400, CL_ENOENT -> 404, CL_EPERM -> 403, ... (see abi/cloudlet_plugin.h); unknown -> 500.
uint32_t status_from_cl(cl_status_t st);

}  // namespace cloudlet::http
