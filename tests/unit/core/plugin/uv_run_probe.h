// Counts uv_run calls and catches re-entry (uv_run called while another uv_run is on the stack, which libuv
// forbids). Tests that link uv_run_probe.cc are linked with -Wl,--wrap=uv_run, so every call the core makes
// goes through the probe.
#pragma once

namespace cloudlet::test {

// uv_run calls so far.
int uv_run_calls();
// Calls that started while another uv_run was running (must stay 0).
int uv_run_reentries();

}  // namespace cloudlet::test
