// The core side of the plugin ABI: one cl_host_s per loaded plugin, the function table, and the loader.
//
// This directory is the only place that implements abi/cloudlet_plugin.h. Every table slot is an extern "C"
// trampoline (host_api.cc) that checks its arguments and thread, catches exceptions and returns a status. Every
// call into plugin code — hooks, callbacks, lent-memory releases — goes through guard() (guard_worker() on
// worker threads) behind a check of the plugin's phase, so nothing reaches a plugin that is unloading or gone.
//
// Lifecycle (lifecycle.cc, abi/cloudlet_plugin.h's header comment): loading -> running -> unloading -> finishing
// -> gone. Unloading stops every new call into the plugin and waits, by counting, for the completions the
// plugin is owed (work, posts, lent writes, commits, operation results, body streams); then fini runs, what is
// left is released, and the code may be unmapped. Nothing here ever runs the loop.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "cloudlet_plugin.h"
#include "loop/child.h"
#include "ops/operations.h"
#include "store/store.h"

namespace cloudlet {

class Loop;
class EventBus;
class Jobs;
namespace http {
class Fetch;
class Server;
class WsSession;
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
  Jobs* jobs = nullptr;  // the job registry (job_* slots); may be null in tests without one (CL_EUNAVAIL)
};

// One plugin as configured.
struct PluginSpec {
  std::string name;                   // expected descriptor name (also the default file name)
  std::string path;                   // absolute path of the .so
  std::string config_json = "{}";     // the plugin's "config" object
  std::vector<std::string> prefixes;  // URL prefixes its routes may use; default "/plugins/<name>/"
  std::vector<std::string> guards;    // listeners whose guard it may set (listener_guard_set)
  std::string files_dir;              // its own files (static_add); "" = default_plugin_files_dir(name)
  std::vector<std::string> grants;    // privileged operations it may call (CL_OP_F_PRIVILEGED)
};

// Where a plugin's own files live (host fact "plugin_files_dir"): the source tree's plugins/<name> when the
// server runs from its build tree (development), else /usr/share/cloudletd/plugins/<name>.
std::string default_plugin_files_dir(const std::string& name);

const cl_host_api_t* host_api_table();

}  // namespace cloudlet

struct cl_txn_s {
  cl_host_s* host;
  std::unique_ptr<cloudlet::Store::Txn> txn;
};

struct cl_op_call_s {
  cl_host_s* host;
  cloudlet::Operations::Reply reply;  // also carries the caller (op_caller)
};

// A job the plugin created (job_create). Owned by its host: deleted by job_finish, or, for a job the core
// finished at unload, when the host releases everything after fini.
struct cl_job_s {
  cl_host_s* host;
  std::string id;  // the registry's id ("job-42")
  cl_job_cancel_cb cancel;
  void* ud;
  bool finished = false;  // finished by the core at unload; the plugin's job_finish then gets CL_ESTATE
};

// A child process the plugin started (proc_spawn). Owned by its host: deleted after the exit callback returns
// (or when the host is abandoned, after detaching the child).
struct cl_proc_s {
  cl_host_s* host;
  cloudlet::Child* child;
  cl_proc_output_cb on_output;
  cl_proc_exit_cb on_exit;
  void* ud;
};

// An outbound request the plugin started (fetch_start). Owned by its host: deleted after the final body callback
// returns (or when the host is abandoned, after detaching the exchange).
struct cl_fetch_s {
  cl_host_s* host;
  cloudlet::http::Fetch* fetch;
  cl_fetch_response_cb on_response;
  cl_fetch_body_cb on_body;
  void* ud;
};

// A WebSocket the plugin accepted (ws_accept). Owned by its host: deleted after the close callback returns (or
// when the host is abandoned, after detaching the session).
struct cl_ws_s {
  cl_host_s* host;
  cloudlet::http::WsSession* session;
  cl_ws_message_cb on_message;
  cl_ws_close_cb on_close;
  void* ud;
};

struct cl_host_s {
  struct IoWatch;
  struct LentWrite;

  enum Phase : int { loading, running, unloading, finishing, gone };

  // The part of a host that callbacks may reach after the host itself is gone (results of operations it
  // called, queued posts, writes the HTTP layer still holds): they check `phase` before touching the host.
  struct Life {
    std::atomic<int> phase{loading};
    std::mutex post_mutex;
    bool posts_open = true;             // guarded by post_mutex: closed just before fini
    std::atomic<size_t> posts_queued{0};  // accepted posts not yet delivered
  };

  // A request the plugin's handler accepted, until its response completes. The HTTP layer calls the core's
  // trampolines (host_api.cc), which find the plugin's callbacks here.
  struct Held {
    cl_req_close_cb close_cb = nullptr;
    void* close_ud = nullptr;
    cl_body_cb body_cb = nullptr;
    void* body_ud = nullptr;
    bool body_open = false;  // a body stream owes the plugin its final call (counted in `owed`)
  };

  // An operation result the plugin waits for (op_call). Shared with the Operations callback, which may come
  // after the plugin got CL_ECANCELED for it at unload.
  struct Awaited {
    cl_op_done_cb cb;
    void* ud;
    bool delivered = false;
  };

  cloudlet::HostServices* svc = nullptr;
  cloudlet::PluginSpec spec;
  const cl_plugin_desc_t* desc = nullptr;
  void* dl = nullptr;
  void* state = nullptr;
  bool init_succeeded = false;  // fini is called only then
  std::shared_ptr<Life> life = std::make_shared<Life>();

  // Completions the plugin is owed (loop thread): work items, lent writes, commits, operation results, body
  // streams, process exits, WebSocket closes, final fetch calls. Posts are counted in life->posts_queued (any thread).
  size_t owed = 0;
  // Set by the manager when unloading begins: runs (deferred, clean stack) once nothing is owed any more.
  std::function<void()> on_quiet;
  bool quiet_scheduled = false;

  std::set<uint64_t> timers;
  std::map<uint64_t, IoWatch*> io;
  std::set<uint64_t> subs;
  std::set<uint64_t> work;
  std::map<cl_request_s*, Held> requests;
  std::set<cl_op_call_s*> calls;
  std::set<std::shared_ptr<Awaited>> awaited;
  std::map<std::string, cl_job_s*> jobs;  // by id: the plugin's jobs not finished by job_finish
  std::set<cl_proc_s*> procs;             // its child processes whose exit callback has not run
  std::set<cl_ws_s*> websockets;          // its WebSockets whose close callback has not run
  std::set<cl_fetch_s*> fetches;          // its outbound requests whose final body callback has not run
  cloudlet::Caller caller;                // how its op_call reaches callees: CL_CALLER_PLUGIN, its name, grants
  std::atomic<int64_t> json_docs{0};  // documents parsed and not freed (any thread): reported at unload
  cl_txn_s* txn = nullptr;
  uint64_t next_io_id = 1;

  const std::string& name() const { return spec.name; }
  int phase() const { return life->phase.load(); }
  // True while the plugin takes new calls (hooks, notifications): from init until unloading begins.
  bool open() const { return phase() <= running; }
  // True while completions are still delivered to the plugin: until fini.
  bool owed_delivery() const { return phase() <= unloading; }
  // Maps a plugin's collection name to its private store collection.
  std::string collection(std::string_view coll) const;

  // ---- lifecycle (lifecycle.cc) ----
  // Stops every new call into the plugin, cancels what can be cancelled (delivering CL_ECANCELED), and calls
  // on_quiet once everything owed was delivered.
  void begin_unload();
  // One owed completion was delivered (or is no longer owed).
  void settle();
  // While unloading: once nothing is owed, closes post() and, when the last accepted post was delivered,
  // schedules on_quiet. Called after every delivery.
  void check_quiet();
  // Calls fini (when init had succeeded), then releases whatever the plugin still holds. Phase becomes gone.
  void finish();
  // Releases everything without waiting (a manager destroyed with plugins loaded): nothing is called again.
  void abandon();

 private:
  void stop_notifications();
  void finish_jobs();
  void release_procs();
  void release_websockets();
  void release_fetches();
  void release_all();
};

namespace cloudlet {

// Logs an exception that plugin code let escape (guard's slow path), and a hook that held the loop.
void report_hook_exception(const cl_host_s* h, const char* what, const char* detail);
void report_slow_hook(const cl_host_s* h, const char* what, uint64_t ms);

// Every op_call_s a plugin may still answer, so a stale pointer (a second op_reply) is refused, not followed.
std::unordered_set<cl_op_call_s*>& live_op_calls();
// Every cl_job_s a plugin may still use, so a stale pointer (a second job_finish) is refused, not followed.
std::unordered_set<cl_job_s*>& live_jobs();
// Every cl_proc_s a plugin may still use, so a stale pointer (a write after the exit callback) is refused.
std::unordered_set<cl_proc_s*>& live_procs();
// Every cl_ws_s a plugin may still use, so a stale pointer (a send after the close callback) is refused.
std::unordered_set<cl_ws_s*>& live_websockets();
// Every cl_fetch_s a plugin may still use, so a stale pointer (a write after the final call) is refused.
std::unordered_set<cl_fetch_s*>& live_fetches();
// Stops an fd watch and frees it from its close callback.
void close_io_watch(cl_host_s::IoWatch* w);

// Runs plugin code on a worker thread, catching any exception at the boundary (rule E3). Not timed: a worker
// is allowed to be slow. Returns false when the code threw.
template <typename F>
bool guard_worker(const cl_host_s* h, const char* what, F&& f) {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    report_hook_exception(h, what, e.what());
  } catch (...) {
    report_hook_exception(h, what, "non-standard exception");
  }
  return false;
}

// Runs plugin code on the loop thread: as guard_worker, and warns when it held the loop for 10 ms or more
// (the loop must never block).
template <typename F>
bool guard(const cl_host_s* h, const char* what, F&& f) {
  uint64_t start = uv_hrtime();
  bool ok = guard_worker(h, what, std::forward<F>(f));
  uint64_t ms = (uv_hrtime() - start) / 1000000;
  if (ms >= 10) report_slow_hook(h, what, ms);
  return ok;
}

// Loads the configured plugins and unloads them at shutdown.
class PluginManager {
 public:
  explicit PluginManager(HostServices& svc) : svc_(svc) {}
  // A manager destroyed with plugins still loaded abandons them (fini, release, no dlclose); use unload_all.
  ~PluginManager();

  // Loads one plugin. On any failure logs one clear line and returns the reason; the plugin takes no new calls
  // and its code is unmapped once the completions its init started were delivered.
  cl_status_t load(const PluginSpec& spec, std::string* error);
  // Unloads every plugin, last loaded first, one after the other: unloading, fini, release, and dlclose()
  // when `dlclose_plugins` (tests and development: production keeps code mapped, since a stray callback into
  // unmapped code would crash) and the plugin allows it. `done` runs from a clean stack once every plugin,
  // including ones whose init failed, is gone. Never runs the loop: the caller's loop keeps turning.
  void unload_all(bool dlclose_plugins, std::function<void()> done);

  size_t count() const { return hosts_.size(); }
  // Plugins unloading (at shutdown, or after a failed init) whose code is still mapped.
  size_t retiring() const { return retiring_.size(); }
  std::vector<const cl_host_s*> plugins() const;

 private:
  void retire(std::unique_ptr<cl_host_s> host, bool unmap, std::function<void()> then);
  void unload_next();
  void maybe_done();

  HostServices& svc_;
  std::vector<std::unique_ptr<cl_host_s>> hosts_;
  std::vector<std::unique_ptr<cl_host_s>> retiring_;
  bool unloading_all_ = false;
  bool dlclose_all_ = false;
  uint64_t progress_timer_ = 0;
  std::function<void()> all_done_;
};

}  // namespace cloudlet
