// The pure parts of the proc_* slots (ABI 1.1), shared by the core (host_api.cc) and tests/fakehost so both
// read a cl_proc_desc_t and report an exit the same way. The processes themselves run in core/loop/child.h.
#pragma once

#include <string>

#include "cloudlet_plugin.h"
#include "loop/child.h"

namespace cloudlet {

// Checks a plugin's process description and turns it into options: CL_OK or CL_EINVAL (struct too small,
// unknown flags, no argv, more than 4096 arguments or environment strings, an environment string without
// '=', more than 1 MiB of strings). cwd NULL becomes default_cwd; env NULL becomes PATH and LANG.
cl_status_t proc_options(const cl_proc_desc_t* desc, const std::string& default_cwd, ChildOptions* out);

// The exit the plugin sees. x's strings point into e: valid while e is.
void proc_exit_fill(const ChildExit& e, cl_proc_exit_t* x);

// Signals proc_kill accepts (SIGTERM, SIGKILL, SIGHUP, SIGINT).
bool proc_signal_allowed(int32_t signum);

}  // namespace cloudlet
