// The text of a cl_status_t (the `strerror` slot), shared by the real host and tests/fakehost.
#pragma once

#include "cloudlet_plugin.h"

namespace cloudlet {

// A static, human-readable name ("invalid argument"); "unknown status" for values this build does not know.
const char* status_text(cl_status_t status);

}  // namespace cloudlet
