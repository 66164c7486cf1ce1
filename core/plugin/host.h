// The core side of the plugin ABI: one cl_host_s per loaded plugin, the function table, and the loader.
//
// This directory is the only place that implements abi/cloudlet_plugin.h. Every table slot is an extern "C"
// trampoline (host_api.cc) that checks its arguments and thread, catches exceptions and returns a status; every
// call into plugin code goes through guard(), which catches what a C++ plugin lets escape. The host records
// everything a plugin starts (timers, watches, subscriptions, work, requests, operation calls) so that a
// plugin that fails to initialise, or is unloaded, leaves nothing behind.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.h"
#include "ops/operations.h"
#include "store/store.h"

namespace cloudlet {

class Loop;
class EventBus;
namespace http {
class Server;
}

// What plugins reach through their host. Owned by main; outlives every plugin.
struct HostServices {
  Loop& loop;
  http::Server& server;
  Store* store;  // may be null in tests without a store
  Operations& ops;
  EventBus& events;
  std::string version;
  std::string data_dir;
  std::string cloudlet_name;
  std::string api_mode;
};

// One plugin as configured.
struct PluginSpec {
  std::string name;                   // expected descriptor name (also the default file name)
  std::string path;                   // absolute path of the .so
  std::string config_json = "{}";     // the plugin's "config" object
  std::vector<std::string> prefixes;  // URL prefixes its routes may use; default "/plugins/<name>/"
};

const cl_host_api_t* host_api_table();

}  // namespace cloudlet

struct cl_txn_s {
  cl_host_s* host;
  std::unique_ptr<cloudlet::Store::Txn> txn;
};

struct cl_op_call_s {
  cl_host_s* host;
  cloudlet::Operations::Reply reply;
};

struct cl_host_s {
  struct IoWatch;

  cloudlet::HostServices* svc = nullptr;
  cloudlet::PluginSpec spec;
  const cl_plugin_desc_t* desc = nullptr;
  void* dl = nullptr;
  void* state = nullptr;
  bool initializing = false;
  bool active = false;
  // Cleared when the plugin is unloaded: posts, work completions and operation results check it, since they
  // may arrive afterwards (from other threads or queued callbacks) and must not enter unloaded code.
  std::shared_ptr<std::atomic<bool>> alive = std::make_shared<std::atomic<bool>>(true);

  std::set<uint64_t> timers;
  std::map<uint64_t, IoWatch*> io;
  std::set<uint64_t> subs;
  std::set<uint64_t> work;
  std::set<cl_request_s*> requests;
  std::set<cl_op_call_s*> calls;
  cl_txn_s* txn = nullptr;
  uint64_t next_io_id = 1;

  const std::string& name() const { return spec.name; }
  // Cancels and frees everything the plugin still holds (after fini, or after a failed init).
  void release_all();
  // Maps a plugin's collection name to its private store collection.
  std::string collection(std::string_view coll) const;
};

namespace cloudlet {

// Logs an exception that plugin code let escape (guard's slow path).
void report_hook_exception(const cl_host_s* h, const char* what, const char* detail);
void report_slow_hook(const cl_host_s* h, const char* what, uint64_t ms);

// Runs plugin code, catching any exception at the boundary (rule E3) and warning about slow hooks (the loop
// must never block). Returns false when the hook threw.
template <typename F>
bool guard(cl_host_s* h, const char* what, F&& f) {
  uint64_t start = uv_hrtime();
  bool ok = true;
  try {
    f();
  } catch (const std::exception& e) {
    report_hook_exception(h, what, e.what());
    ok = false;
  } catch (...) {
    report_hook_exception(h, what, "non-standard exception");
    ok = false;
  }
  uint64_t ms = (uv_hrtime() - start) / 1000000;
  if (ms >= 10) report_slow_hook(h, what, ms);
  return ok;
}

// Loads the configured plugins and unloads them at shutdown.
class PluginManager {
 public:
  explicit PluginManager(HostServices& svc) : svc_(svc) {}
  ~PluginManager();

  // Loads one plugin. On any failure logs one clear line, leaves nothing registered, and returns the reason.
  cl_status_t load(const PluginSpec& spec, std::string* error);
  // Calls fini in reverse load order, releases leftovers; dlclose()s only when `dlclose_plugins` (tests and
  // development: production keeps code mapped, since a stray callback into unmapped code would crash).
  void unload_all(bool dlclose_plugins);

  size_t count() const { return hosts_.size(); }
  std::vector<const cl_host_s*> plugins() const;

 private:
  HostServices& svc_;
  std::vector<std::unique_ptr<cl_host_s>> hosts_;
};

}  // namespace cloudlet
