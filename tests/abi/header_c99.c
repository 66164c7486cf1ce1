/* The ABI header is C99 with no extensions: this file compiles with -std=c99 -pedantic -Werror. */
#include "cloudlet_plugin.h"

int abi_c99_probe(const cl_host_api_t *api);
int abi_c99_probe(const cl_host_api_t *api) {
  cl_str_t s = CL_STR_LIT("x");
  cl_route_desc_t d = {0};
  d.struct_size = sizeof d;
  (void)s;
  return CL_HAS(api, sse_send) && d.struct_size > 0;
}
