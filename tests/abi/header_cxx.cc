// The ABI header compiles as C++ (-pedantic) too: C++ plugins include it directly.
#include "cloudlet_plugin.h"

int abi_cxx_probe(const cl_host_api_t* api) { return CL_HAS(api, log) ? 1 : 0; }
