/*
 * offload_api: the mobile-device API on the `api` listener, wire-compatible with KD-Cloudlet's clients
 * (client-lib, cloudlet-client). It translates each request into core operations (service.*, instance.*,
 * device.*, message.*, system.info, and app.* from the app store when loaded) and never touches VMs itself.
 *
 * The API mode (host fact "api_mode") chooses the routes: "open" the plain GET routes, "encrypted" only the
 * tunnel POST /api/command, "both" both at once. The contract is ../shared/reference/mobile-clients.md 1-3.
 */
#include <exception>

#include "cloudlet_plugin.hpp"
#include "plugin.h"
#include "routes.h"

namespace cloudlet::offload {

struct PendingOp {
  Plugin* p;
  OpDone done;
};

namespace {

void on_op_done(void* ud, cl_status_t status, cl_str_t result) {
  auto* op = static_cast<PendingOp*>(ud);
  Plugin* p = op->p;
  p->pending.erase(op);
  OpDone done = std::move(op->done);
  delete op;
  try {
    done(status, cl::view(result), false);
  } catch (const std::exception& e) {
    p->log(CL_LOG_ERROR, std::string("operation result handler failed: ") + e.what());
  }
}

void on_service_changed(void* ud, cl_str_t, cl_str_t) { services_invalidate(*static_cast<Plugin*>(ud)); }

cl_status_t offload_init(cl_host_t* h, const cl_host_api_t* api, cl_str_t config, void** state) noexcept {
  (void)config;
  Plugin* p = nullptr;
  try {
    p = new Plugin;
    p->host = cl::Host(h, api);
    p->mode = cl::host_get(p->host, "api_mode").value_or("open");
    if (p->mode != "open" && p->mode != "encrypted" && p->mode != "both") {
      p->log(CL_LOG_ERROR, "unknown api_mode '" + p->mode + "' (open, encrypted or both)");
      delete p;
      return CL_EINVAL;
    }
    cl_status_t st = p->host.event_subscribe("service.changed", on_service_changed, p, &p->services_sub);
    if (st == CL_OK) st = routes_add(*p);
    if (st != CL_OK) {
      delete p;  // the core removes whatever was registered
      return st;
    }
    p->log(CL_LOG_INFO, "ready: mobile API in " + p->mode + " mode");
    *state = p;
    return CL_OK;
  } catch (const std::exception&) {
    delete p;
    return CL_ENOMEM;
  }
}

void offload_fini(cl_host_t*, void* state) noexcept {
  auto* p = static_cast<Plugin*>(state);
  if (p->services_sub) p->host.event_unsubscribe(p->services_sub);
  *p->alive = false;
  // No operation result is delivered after fini: the calls' contexts (and the requests they would answer,
  // which the core now answers itself) are released here.
  for (PendingOp* op : p->pending) delete op;
  p->pending.clear();
  delete p;
}

const cl_plugin_desc_t offload_desc = {sizeof(cl_plugin_desc_t),
                                       CL_ABI_MAJOR,
                                       CL_ABI_MINOR,
                                       "offload_api",
                                       "1.0.0",
                                       0,
                                       offload_init,
                                       offload_fini,
                                       {nullptr, nullptr, nullptr, nullptr}};

}  // namespace

void Plugin::call(std::string_view name, const std::string& args_json, OpDone done) {
  auto* op = new PendingOp{this, std::move(done)};
  pending.insert(op);
  cl_status_t st = host.api()->op_call(host.handle(), cl::str(name), cl::str(args_json), on_op_done, op);
  if (st != CL_OK) {
    pending.erase(op);
    OpDone d = std::move(op->done);
    delete op;
    std::string error = st == CL_ENOENT ? "{\"error\":\"no such operation\"}" : "{\"error\":\"invalid arguments\"}";
    d(st, error, st == CL_ENOENT);
  }
}

}  // namespace cloudlet::offload

CL_PLUGIN_DEFINE(cloudlet::offload::offload_desc)
