/* Built against tests/abi/headers/cloudlet_plugin_1.0.h, the header as released: proves that today's core
 * still loads a 1.0 plugin and that the 1.0 slots still do what they did. */
#include FROZEN_HEADER

static cl_status_t on_ping(void *ud, cl_op_call_t *call, cl_str_t args) {
  const cl_host_api_t *api = ud;
  (void)args;
  return api->op_reply(call, CL_OK, CL_STR_LIT("{\"pong\":true}"));
}
static cl_status_t init(cl_host_t *h, const cl_host_api_t *api, cl_str_t config, void **state) {
  (void)config;
  *state = 0;
  return api->op_register(h, CL_STR_LIT("frozen.ping"), on_ping, (void *)api);
}
static const cl_plugin_desc_t desc = {sizeof(cl_plugin_desc_t), 1, 0, "frozen_1_0", "1.0", 0, init, 0, {0}};
CL_PLUGIN_DEFINE(desc)
