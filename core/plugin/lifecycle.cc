// Unloading one plugin without ever running the loop: stop new calls, deliver or cancel what the plugin is
// owed, wait (by counting) for the rest, then fini and release. The order and the guarantees are the ABI's
// (abi/cloudlet_plugin.h, header comment; rule E2 of abi/README.md).
#include "events/bus.h"
#include "http/client.h"
#include "http/request.h"
#include "http/server.h"
#include "http/ws_session.h"
#include "jobs/jobs.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "plugin/host.h"

using cloudlet::guard;

namespace {
constexpr cl_str_t kUnloadingResult{"{\"error\":\"the calling plugin is unloading\"}", 43};
}  // namespace

void cl_host_s::stop_notifications() {
  if (!timers.empty() || !io.empty() || !subs.empty()) {
    cloudlet::log::info(name(), "unloading: stopped {} timer(s), {} watch(es), {} subscription(s)", timers.size(),
                        io.size(), subs.size());
  }
  for (uint64_t id : timers) svc->loop.timer_stop(id);
  timers.clear();
  for (auto& [id, w] : io) cloudlet::close_io_watch(w);
  io.clear();
  for (uint64_t id : subs) svc->events.unsubscribe(id);
  subs.clear();
  svc->events.remove_owner(this);
  svc->ops.remove_owner(this);
  svc->server.remove_routes(this);
  svc->server.remove_guards(this);  // its listeners refuse requests from now on (fail closed)
}

void cl_host_s::finish_jobs() {
  // Jobs the plugin never finished end now, once each (job.done with CL_ECANCELED); their handles stay valid
  // until fini returns (job_finish then answers CL_ESTATE), and the cancel callback is not called any more.
  size_t n = 0;
  for (auto& [id, job] : jobs) {
    if (job->finished) continue;
    job->finished = true;
    n++;
    if (svc->jobs) {
      svc->jobs->finish(id, CL_ECANCELED, cloudlet::json::error_object("the plugin '" + name() + "' is unloading"));
    }
  }
  if (n > 0) cloudlet::log::info(name(), "unloading: finished {} open job(s) as cancelled", n);
}

void cl_host_s::begin_unload() {
  life->phase = unloading;
  stop_notifications();
  finish_jobs();
  // Queued work that has not started is cancelled: its done gets CL_ECANCELED on a later loop turn. Running
  // work finishes and its done gets CL_OK. Either way it is owed, and waited for.
  for (uint64_t id : work) svc->loop.cancel_work(id);
  // Child processes are killed (SIGTERM, SIGKILL 2 s later); their exit callback, owed, gets CL_ECANCELED.
  if (!procs.empty()) cloudlet::log::info(name(), "unloading: stopping {} child process(es)", procs.size());
  for (cl_proc_s* p : procs) p->child->stop();
  // WebSockets are closed with 1001; their close callback, owed, gets CL_ECANCELED.
  if (!websockets.empty()) cloudlet::log::info(name(), "unloading: closing {} WebSocket(s)", websockets.size());
  for (cl_ws_s* w : websockets) w->session->shutdown(CL_ECANCELED, "the plugin is unloading");
  // Outbound requests are abandoned; their final body callback, owed, gets CL_ECANCELED.
  if (!fetches.empty()) cloudlet::log::info(name(), "unloading: cancelling {} outbound request(s)", fetches.size());
  for (cl_fetch_s* f : fetches) f->fetch->cancel(CL_ECANCELED);
  // Operation results still to come: CL_ECANCELED now, from a clean stack; the real result is dropped.
  for (const auto& a : awaited) {
    a->delivered = true;
    svc->loop.defer([this, a, l = life] {
      if (l->phase.load() != unloading) return;
      guard(this, "operation result", [&] { a->cb(a->ud, CL_ECANCELED, kUnloadingResult); });
      settle();
    });
  }
  awaited.clear();
  // Body streams still open end with CL_ECANCELED. The HTTP layer stops delivering to the plugin at once (the
  // request keeps its unread chunks), and the core answers the request after fini unless the plugin does.
  for (auto& [req, held] : requests) {
    if (!held.body_open) continue;
    req->body_cb = nullptr;
    cl_request_s* r = req;
    svc->loop.defer([this, r, l = life] {
      if (l->phase.load() != unloading) return;
      auto it = requests.find(r);
      if (it == requests.end() || !it->second.body_open) return;  // completed meanwhile: settled there
      it->second.body_open = false;
      cl_body_cb cb = it->second.body_cb;
      void* ud = it->second.body_ud;
      guard(this, "body callback", [&] { cb(ud, r, CL_ECANCELED, cl_str_t{nullptr, 0}); });
      settle();
    });
  }
  check_quiet();
}

void cl_host_s::settle() {
  if (owed > 0) owed--;
  check_quiet();
}

void cl_host_s::check_quiet() {
  if (phase() != unloading || quiet_scheduled || owed > 0) return;
  {
    // From here post() refuses (CL_ECANCELED): what was accepted is delivered, then fini may run.
    std::lock_guard<std::mutex> lock(life->post_mutex);
    life->posts_open = false;
  }
  if (life->posts_queued.load() > 0) return;  // the last queued post calls check_quiet again
  quiet_scheduled = true;
  svc->loop.defer([this, l = life] {
    if (l->phase.load() != unloading || !on_quiet) return;
    auto fn = std::move(on_quiet);  // it destroys this host: keep it alive on this stack while it runs
    fn();
  });
}

void cl_host_s::finish() {
  life->phase = finishing;
  if (init_succeeded && desc->fini) guard(this, "fini", [&] { desc->fini(this, state); });
  release_all();
  life->phase = gone;
}

void cl_host_s::abandon() {
  if (phase() >= finishing) return;
  bool was_open = open();
  stop_notifications();
  finish_jobs();
  for (uint64_t id : work) svc->loop.cancel_work(id);
  release_procs();
  release_websockets();
  release_fetches();
  life->phase = finishing;
  for (const auto& a : awaited) a->delivered = true;
  awaited.clear();
  {
    std::lock_guard<std::mutex> lock(life->post_mutex);
    life->posts_open = false;
  }
  if (init_succeeded && was_open && desc->fini) guard(this, "fini", [&] { desc->fini(this, state); });
  release_all();
  life->phase = gone;
}

void cl_host_s::release_all() {
  if (!calls.empty() || !requests.empty()) {
    cloudlet::log::info(name(), "unloaded: answering {} pending call(s) and {} request(s) it left", calls.size(),
                        requests.size());
  }
  if (int64_t docs = json_docs.load(); docs > 0) {
    cloudlet::log::warn(name(), "unloaded without freeing {} JSON document(s) (json_free)", docs);
  }
  release_procs();
  release_websockets();
  release_fetches();
  for (auto& [id, job] : jobs) {
    cloudlet::live_jobs().erase(job);
    delete job;
  }
  jobs.clear();
  for (cl_op_call_s* c : calls) {
    cloudlet::live_op_calls().erase(c);
    c->reply.error(CL_ECANCELED, "the plugin was unloaded before answering");
    delete c;
  }
  calls.clear();
  if (txn) {
    delete txn;
    txn = nullptr;
  }
  // Requests still held: answer them (503) if their client waits, else end what was started.
  std::map<cl_request_s*, Held> left;
  left.swap(requests);
  for (auto& [r, held] : left) {
    r->done_hook = nullptr;
    r->close_cb = nullptr;
    r->body_cb = nullptr;
    if (r->resp == cl_request_s::Resp::none) {
      r->send_error(503, "the plugin handling this request was unloaded");
    } else if (r->resp == cl_request_s::Resp::started) {
      r->keep_alive = false;
      r->end();
    }
  }
}

namespace {

// Frees one kind of handle without calling back (only when nothing may be waited for any more): detach(x)
// lets what runs it end on its own, then the handle is forgotten.
template <typename T, typename Detach>
void release_handles(std::set<T*>* handles, std::unordered_set<T*>& live, Detach detach) {
  for (T* x : *handles) {
    detach(x);
    live.erase(x);
    delete x;
  }
  handles->clear();
}

}  // namespace

void cl_host_s::release_procs() {
  // The children are killed and reaped.
  release_handles(&procs, cloudlet::live_procs(), [](cl_proc_s* p) { p->child->detach(); });
}

void cl_host_s::release_websockets() {
  // The sockets close cleanly.
  release_handles(&websockets, cloudlet::live_websockets(), [](cl_ws_s* w) { w->session->detach(); });
}

void cl_host_s::release_fetches() {
  // The connections close.
  release_handles(&fetches, cloudlet::live_fetches(), [](cl_fetch_s* f) { f->fetch->detach(); });
}
