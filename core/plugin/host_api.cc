// The host function table: one extern "C" trampoline per slot, in slot order, named host_<slot>.
//
// Each trampoline checks the loop thread (all slots but post, log, log_enabled, strerror, buf_free and the
// json_* slots are loop-only: rule T1), its pointers and struct sizes, converts between cl_str_t and the core's
// types, and never lets an exception out. Plugin callbacks never go to the core's subsystems as they are: each
// is wrapped in a core lambda or trampoline that checks the plugin's phase, runs it through guard(), and
// settles what the plugin is owed (rule E2), so that unloading can wait for exactly those completions.
#include <sys/stat.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_set>

#include "events/bus.h"
#include "http/client.h"
#include "http/form_reader.h"
#include "http/request.h"
#include "http/server.h"
#include "http/static_files.h"
#include "http/ws_session.h"
#include "jobs/jobs.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "plugin/fetch_slots.h"
#include "plugin/host.h"
#include "plugin/json_doc.h"
#include "plugin/proc_slots.h"
#include "plugin/status_text.h"

using cloudlet::guard;
using cloudlet::guard_worker;
using cloudlet::Loop;
using Life = cl_host_s::Life;

struct cl_host_s::IoWatch {
  uv_poll_t poll;
  cl_host_s* host;
  uint64_t id;
  int fd;
  cl_io_cb cb;
  void* ud;
};

// A write whose bytes the plugin lent: the HTTP layer calls lent_write_done (core code), never the plugin's
// free callback itself.
struct cl_host_s::LentWrite {
  cl_host_s* host;
  std::shared_ptr<Life> life;
  cl_free_cb done;
  void* hint;
};

namespace {

std::string_view sv(cl_str_t s) { return std::string_view(s.ptr ? s.ptr : "", s.ptr ? s.len : 0); }
cl_str_t cs(std::string_view s) { return cl_str_t{s.data(), s.size()}; }
constexpr cl_str_t kEmpty{nullptr, 0};
constexpr size_t kMaxJobText = 1024;   // a job's subject and progress message (abi/cloudlet_plugin.h)
constexpr size_t kMaxPrincipal = 256;  // op_call_as, req_set_principal

bool before(const std::shared_ptr<Life>& life, int phase) { return life->phase.load() <= phase; }

bool on_loop(cl_host_s* h, const char* slot) {
  if (h->svc->loop.on_loop_thread()) return true;
  cloudlet::log::error(h->name(), "{} called off the loop thread (only the slots marked \"any thread\" may be)", slot);
  return false;
}

// The host of a handle the plugin may still use (one of `live`), on the loop thread; null for a stale handle
// or another thread (logged): stale pointers are compared, never followed.
template <typename T>
cl_host_s* live_host(T* x, const std::unordered_set<T*>& live, const char* slot) {
  if (!x || !live.count(x)) return nullptr;
  return on_loop(x->host, slot) ? x->host : nullptr;
}

#define LOOP_ONLY(h, slot)                     \
  do {                                         \
    if (!(h)) return CL_EINVAL;                \
    if (!on_loop((h), slot)) return CL_ESTATE; \
  } while (0)

// Request slots have no host argument: the request's server knows the loop, its owner the plugin's name.
bool req_on_loop(cl_request_t* r, const char* slot) {
  if (r->listener->server->loop().on_loop_thread()) return true;
  auto* h = static_cast<cl_host_s*>(r->owner);
  cloudlet::log::error(h ? std::string_view(h->name()) : std::string_view("http"),
                       "{} called off the loop thread (only the slots marked \"any thread\" may be)", slot);
  return false;
}

#define REQ_LOOP_ONLY(r, slot, refused)            \
  do {                                             \
    if (!(r)) return refused;                      \
    if (!req_on_loop((r), slot)) return refused;   \
  } while (0)

cl_status_t copy_out(const std::string& value, cl_buf_t* out) {
  char* p = static_cast<char*>(malloc(value.size() + 1));
  if (!p) return CL_ENOMEM;
  memcpy(p, value.data(), value.size());
  p[value.size()] = '\0';
  out->ptr = p;
  out->len = value.size();
  return CL_OK;
}

cloudlet::log::Level level_of(int32_t level) {
  if (level < CL_LOG_ERROR) level = CL_LOG_ERROR;
  if (level > CL_LOG_TRACE) level = CL_LOG_TRACE;
  return static_cast<cloudlet::log::Level>(level);
}

// ---- diagnostics and memory ----------------------------------------------------------------------------

void host_log(cl_host_t* h, int32_t level, cl_str_t msg) {
  if (!h) return;
  auto l = level_of(level);
  if (cloudlet::log::enabled(l)) cloudlet::log::write(l, h->name(), sv(msg));
}

int host_log_enabled(cl_host_t*, int32_t level) { return cloudlet::log::enabled(level_of(level)) ? 1 : 0; }

const char* host_strerror(cl_status_t st) { return cloudlet::status_text(st); }

void host_buf_free(cl_host_t*, cl_buf_t* buf) {
  if (!buf) return;
  free(buf->ptr);
  buf->ptr = nullptr;
  buf->len = 0;
}

// The plugin's own directory under the data directory (data/plugins/<name>, 0700), created when missing.
bool plugin_data_dir(cl_host_s* h, std::string* out) {
  std::string dir = h->svc->data_dir + "/plugins";
  mkdir(dir.c_str(), 0700);
  dir += "/" + h->name();
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
  *out = std::move(dir);
  return true;
}

cl_status_t host_host_get(cl_host_t* h, cl_str_t key, cl_buf_t* out) {
  LOOP_ONLY(h, "host_get");
  if (!out) return CL_EINVAL;
  *out = cl_buf_t{nullptr, 0};
  std::string_view k = sv(key);
  const auto& s = *h->svc;
  if (k == "version") return copy_out(s.version, out);
  if (k == "data_dir") return copy_out(s.data_dir, out);
  if (k == "cloudlet_name") return copy_out(s.cloudlet_name, out);
  if (k == "api_mode") return copy_out(s.api_mode, out);
  if (k == "plugin_files_dir") return copy_out(h->spec.files_dir, out);
  if (k.rfind("listener_tls.", 0) == 0) {
    auto* l = s.server.listener(k.substr(13));
    if (!l) return CL_ENOENT;
    return copy_out(l->options.tls_cert.empty() ? "false" : "true", out);
  }
  if (k == "plugin_data_dir") {
    std::string dir;
    if (!plugin_data_dir(h, &dir)) return CL_EIO;
    return copy_out(dir, out);
  }
  return CL_ENOENT;
}

uint64_t host_now_ms(cl_host_t* h) {
  if (!h || !on_loop(h, "now_ms")) return 0;
  return h->svc->loop.now_ms();
}

// ---- loop services ------------------------------------------------------------------------------------

cl_status_t host_timer_start(cl_host_t* h, uint64_t timeout_ms, uint64_t repeat_ms, cl_timer_cb cb, void* ud,
                             cl_timer_id_t* out) {
  LOOP_ONLY(h, "timer_start");
  if (!cb) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  auto id = std::make_shared<uint64_t>(0);
  std::shared_ptr<Life> life = h->life;
  *id = h->svc->loop.timer_start(timeout_ms, repeat_ms, [h, cb, ud, id, repeat_ms, life] {
    if (!before(life, cl_host_s::running)) return;
    if (repeat_ms == 0) h->timers.erase(*id);  // a one-shot timer is forgotten before its callback
    guard(h, "timer callback", [&] { cb(ud, *id); });
  });
  h->timers.insert(*id);
  if (out) *out = *id;
  return CL_OK;
}

cl_status_t host_timer_stop(cl_host_t* h, cl_timer_id_t id) {
  LOOP_ONLY(h, "timer_stop");
  if (h->timers.erase(id) == 0) return CL_ENOENT;  // also: not this plugin's timer
  h->svc->loop.timer_stop(id);
  return CL_OK;
}

cl_status_t host_post(cl_host_t* h, cl_post_cb cb, void* ud) {
  if (!h || !cb) return CL_EINVAL;
  std::shared_ptr<Life> life = h->life;
  {
    // Closed just before fini: every post accepted until then is delivered before fini runs.
    std::lock_guard<std::mutex> lock(life->post_mutex);
    if (!life->posts_open) return CL_ECANCELED;
    life->posts_queued++;
  }
  bool ok = h->svc->loop.post([h, cb, ud, life] {
    if (!before(life, cl_host_s::unloading)) return;  // abandoned with its manager: nothing is delivered
    guard(h, "post callback", [&] { cb(ud); });
    life->posts_queued--;
    h->check_quiet();
  });
  if (!ok) {
    // The loop is closing, which happens only after every plugin is gone: nobody waits for this count.
    life->posts_queued--;
    return CL_ECLOSING;
  }
  return CL_OK;
}

cl_status_t host_work_queue(cl_host_t* h, cl_work_cb work, cl_done_cb done, void* ud, cl_work_id_t* out) {
  LOOP_ONLY(h, "work_queue");
  if (!work) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  auto id = std::make_shared<uint64_t>(0);
  std::shared_ptr<Life> life = h->life;
  h->owed++;
  *id = h->svc->loop.queue_work(
      // A worker may take its time: only loop-thread hooks are timed (guard_worker does not time).
      [h, work, ud] { guard_worker(h, "work function", [&] { work(ud); }); },
      [h, done, ud, id, life](bool cancelled) {
        if (!before(life, cl_host_s::unloading)) return;
        h->work.erase(*id);
        if (done) guard(h, "work completion", [&] { done(ud, cancelled ? CL_ECANCELED : CL_OK); });
        h->settle();
      });
  h->work.insert(*id);
  if (out) *out = *id;
  return CL_OK;
}

cl_status_t host_work_cancel(cl_host_t* h, cl_work_id_t id) {
  LOOP_ONLY(h, "work_cancel");
  if (!h->work.count(id)) return CL_ENOENT;
  return h->svc->loop.cancel_work(id) ? CL_OK : CL_EBUSY;
}

int uv_events_of(uint32_t events) {
  int e = 0;
  if (events & CL_IO_READABLE) e |= UV_READABLE;
  if (events & CL_IO_WRITABLE) e |= UV_WRITABLE;
  return e | UV_DISCONNECT;
}

void on_poll(uv_poll_t* p, int status, int events) {
  auto* w = static_cast<cl_host_s::IoWatch*>(p->data);
  if (!w->host->open()) return;
  uint32_t ev = 0;
  if (events & UV_READABLE) ev |= CL_IO_READABLE;
  if (events & UV_WRITABLE) ev |= CL_IO_WRITABLE;
  if (events & UV_DISCONNECT) ev |= CL_IO_DISCONNECT;
  cl_status_t st = status < 0 ? CL_EIO : CL_OK;
  guard(w->host, "io callback", [&] { w->cb(w->ud, w->id, st, ev); });
}

cl_status_t host_io_start(cl_host_t* h, int fd, uint32_t events, cl_io_cb cb, void* ud, cl_io_id_t* out) {
  LOOP_ONLY(h, "io_start");
  if (fd < 0 || !cb) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  for (const auto& [id, w] : h->io) {
    if (w->fd == fd) return CL_EEXIST;
  }
  auto* w = new cl_host_s::IoWatch{{}, h, h->next_io_id++, fd, cb, ud};
  if (uv_poll_init(h->svc->loop.uv(), &w->poll, fd) != 0) {
    delete w;
    return CL_EINVAL;
  }
  w->poll.data = w;
  uv_poll_start(&w->poll, uv_events_of(events), on_poll);
  h->io.emplace(w->id, w);
  if (out) *out = w->id;
  return CL_OK;
}

cl_status_t host_io_update(cl_host_t* h, cl_io_id_t id, uint32_t events) {
  LOOP_ONLY(h, "io_update");
  auto it = h->io.find(id);
  if (it == h->io.end()) return CL_ENOENT;
  uv_poll_start(&it->second->poll, uv_events_of(events), on_poll);
  return CL_OK;
}

cl_status_t host_io_stop(cl_host_t* h, cl_io_id_t id) {
  LOOP_ONLY(h, "io_stop");
  auto it = h->io.find(id);
  if (it == h->io.end()) return CL_ENOENT;
  cloudlet::close_io_watch(it->second);
  h->io.erase(it);
  return CL_OK;
}

// ---- events ---------------------------------------------------------------------------------------------

cl_status_t host_event_subscribe(cl_host_t* h, cl_str_t topic, cl_event_cb cb, void* ud, cl_sub_id_t* out) {
  LOOP_ONLY(h, "event_subscribe");
  if (!cb) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  std::shared_ptr<Life> life = h->life;
  uint64_t id = h->svc->events.subscribe(
      sv(topic),
      [h, cb, ud, life](std::string_view t, std::string_view payload) {
        if (before(life, cl_host_s::running)) guard(h, "event callback", [&] { cb(ud, cs(t), cs(payload)); });
      },
      h);
  if (id == 0) return CL_EINVAL;
  h->subs.insert(id);
  if (out) *out = id;
  return CL_OK;
}

cl_status_t host_event_unsubscribe(cl_host_t* h, cl_sub_id_t id) {
  LOOP_ONLY(h, "event_unsubscribe");
  if (h->subs.erase(id) == 0) return CL_ENOENT;
  h->svc->events.unsubscribe(id);
  return CL_OK;
}

cl_status_t host_event_publish(cl_host_t* h, cl_str_t topic, cl_str_t payload) {
  LOOP_ONLY(h, "event_publish");
  if (!cloudlet::EventBus::valid_topic(sv(topic)) || !cloudlet::json::is_object(sv(payload))) return CL_EINVAL;
  h->svc->events.publish(sv(topic), std::string(sv(payload)));
  return CL_OK;
}

// ---- operations ------------------------------------------------------------------------------------------

cl_status_t op_register_flags(cl_host_t* h, const char* slot, cl_str_t name, uint32_t flags, cl_op_cb cb, void* ud) {
  LOOP_ONLY(h, slot);
  if (!cb) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  std::shared_ptr<Life> life = h->life;
  return h->svc->ops.add(
      sv(name),
      [h, cb, ud, life](std::string_view args, cloudlet::Operations::Reply reply) {
        if (!before(life, cl_host_s::running)) {
          reply.error(CL_EUNAVAIL, "the plugin providing this operation is unloading");
          return;
        }
        auto* call = new cl_op_call_s{h, reply};
        h->calls.insert(call);
        cloudlet::live_op_calls().insert(call);
        cl_status_t st = CL_EIO;
        if (!guard(h, "operation handler", [&] { st = cb(ud, call, cs(args)); })) st = CL_EIO;
        if (st != CL_OK && h->calls.count(call)) {
          // Refused (or threw): the handler's status is the answer; it must not reply itself.
          h->calls.erase(call);
          cloudlet::live_op_calls().erase(call);
          call->reply.error(st, std::string("operation failed: ") + host_strerror(st));
          delete call;
        }
      },
      h, flags);  // unknown flags: CL_EINVAL
}

cl_status_t host_op_register(cl_host_t* h, cl_str_t name, cl_op_cb cb, void* ud) {
  return op_register_flags(h, "op_register", name, 0, cb, ud);
}

// op_call and op_call_as: the plugin calls as `caller` (itself, or itself for a principal).
cl_status_t op_call_from(cl_host_t* h, const cloudlet::Caller& caller, cl_str_t name, cl_str_t args, cl_op_done_cb cb,
                         void* ud) {
  if (!cb) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  std::shared_ptr<Life> life = h->life;
  auto awaited = std::make_shared<cl_host_s::Awaited>(cl_host_s::Awaited{cb, ud});
  h->awaited.insert(awaited);
  h->owed++;
  std::string_view a = sv(args);
  cl_status_t st = h->svc->ops.call_as(caller, sv(name), a.empty() ? std::string_view("{}") : a,
                                       [h, awaited, life](cl_status_t s, std::string_view result) {
                                         // Delivered already when unloading gave the plugin CL_ECANCELED.
                                         if (awaited->delivered || !before(life, cl_host_s::unloading)) return;
                                         awaited->delivered = true;
                                         h->awaited.erase(awaited);
                                         guard(h, "operation result",
                                               [&] { awaited->cb(awaited->ud, s, cs(result)); });
                                         h->settle();
                                       });
  if (st != CL_OK) {
    h->awaited.erase(awaited);
    h->owed--;
  }
  return st;
}

cl_status_t host_op_call(cl_host_t* h, cl_str_t name, cl_str_t args, cl_op_done_cb cb, void* ud) {
  LOOP_ONLY(h, "op_call");
  return op_call_from(h, h->caller, name, args, cb, ud);
}

cl_status_t host_op_reply(cl_op_call_t* call, cl_status_t status, cl_str_t result) {
  if (!call || !cloudlet::live_op_calls().count(call)) return CL_ESTATE;
  cl_host_s* h = call->host;
  LOOP_ONLY(h, "op_reply");
  if (h->calls.erase(call) == 0) return CL_ESTATE;
  cloudlet::live_op_calls().erase(call);
  call->reply(status, std::string(sv(result)));
  delete call;
  return CL_OK;
}

// ---- store ------------------------------------------------------------------------------------------------

bool valid_plugin_collection(std::string_view c) {
  if (c.empty() || c.size() > 64) return false;
  for (char ch : c) {
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-')) return false;
  }
  return true;
}

cl_status_t host_store_get(cl_host_t* h, cl_str_t coll, cl_str_t key, cl_buf_t* out) {
  LOOP_ONLY(h, "store_get");
  if (!out) return CL_EINVAL;
  *out = cl_buf_t{nullptr, 0};
  if (!h->svc->store) return CL_EUNAVAIL;
  if (!valid_plugin_collection(sv(coll))) return CL_EINVAL;
  std::string value;
  cl_status_t st = h->svc->store->get(h->collection(sv(coll)), sv(key), &value);
  return st == CL_OK ? copy_out(value, out) : st;
}

cl_status_t host_store_scan(cl_host_t* h, cl_str_t coll, cl_str_t prefix, cl_scan_cb cb, void* ud) {
  LOOP_ONLY(h, "store_scan");
  if (!cb) return CL_EINVAL;
  if (!h->svc->store) return CL_EUNAVAIL;
  if (!valid_plugin_collection(sv(coll))) return CL_EINVAL;
  return h->svc->store->scan(h->collection(sv(coll)), sv(prefix), [&](std::string_view k, std::string_view v) {
    int stop = 1;
    guard(h, "store scan callback", [&] { stop = cb(ud, cs(k), cs(v)); });
    return stop == 0;
  });
}

cl_status_t host_txn_begin(cl_host_t* h, cl_txn_t** out) {
  LOOP_ONLY(h, "txn_begin");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!h->svc->store) return CL_EUNAVAIL;
  if (h->txn) return CL_EBUSY;
  cl_status_t st = CL_OK;
  auto txn = h->svc->store->begin(&st);
  if (!txn) return st == CL_OK ? CL_EBUSY : st;
  h->txn = new cl_txn_s{h, std::move(txn)};
  // A transaction may not outlive the loop turn that opened it (that is what makes it atomic).
  std::shared_ptr<Life> life = h->life;
  h->svc->loop.defer([h, t = h->txn, life] {
    if (!before(life, cl_host_s::finishing)) return;  // released with the host
    if (h->txn == t) {
      cloudlet::log::error(h->name(), "store transaction left open past its loop turn: aborted");
      delete t;
      h->txn = nullptr;
    }
  });
  *out = h->txn;
  return CL_OK;
}

bool txn_valid(cl_txn_t* t) { return t && t->host && t->host->txn == t; }

cl_status_t host_txn_get(cl_txn_t* t, cl_str_t coll, cl_str_t key, cl_buf_t* out) {
  if (!txn_valid(t) || !out) return CL_EINVAL;
  LOOP_ONLY(t->host, "txn_get");
  *out = cl_buf_t{nullptr, 0};
  if (!valid_plugin_collection(sv(coll))) return CL_EINVAL;
  std::string value;
  cl_status_t st = t->txn->get(t->host->collection(sv(coll)), sv(key), &value);
  return st == CL_OK ? copy_out(value, out) : st;
}

cl_status_t host_txn_put(cl_txn_t* t, cl_str_t coll, cl_str_t key, cl_str_t value) {
  if (!txn_valid(t)) return CL_EINVAL;
  LOOP_ONLY(t->host, "txn_put");
  if (!valid_plugin_collection(sv(coll)) || !cloudlet::json::valid(sv(value))) return CL_EINVAL;
  return t->txn->put(t->host->collection(sv(coll)), sv(key), sv(value));
}

cl_status_t host_txn_del(cl_txn_t* t, cl_str_t coll, cl_str_t key) {
  if (!txn_valid(t)) return CL_EINVAL;
  LOOP_ONLY(t->host, "txn_del");
  if (!valid_plugin_collection(sv(coll))) return CL_EINVAL;
  return t->txn->del(t->host->collection(sv(coll)), sv(key));
}

cl_status_t host_txn_commit(cl_txn_t* t, cl_commit_cb cb, void* ud) {
  if (!txn_valid(t)) return CL_EINVAL;
  cl_host_s* h = t->host;
  LOOP_ONLY(h, "txn_commit");
  h->txn = nullptr;
  std::unique_ptr<cloudlet::Store::Txn> txn = std::move(t->txn);
  delete t;
  // A commit from fini still happens, but its callback could only arrive after fini: it is not owed.
  bool owed = cb && h->owed_delivery();
  if (owed) h->owed++;
  std::shared_ptr<Life> life = h->life;
  cl_status_t st = h->svc->store->commit(std::move(txn), [h, cb, ud, life, owed](cl_status_t s) {
    if (!owed || !before(life, cl_host_s::unloading)) return;
    guard(h, "commit callback", [&] { cb(ud, s); });
    h->settle();
  });
  if (st != CL_OK && owed) h->owed--;  // the store calls nothing on error
  return st;
}

void host_txn_abort(cl_txn_t* t) {
  if (!txn_valid(t)) return;
  if (!on_loop(t->host, "txn_abort")) return;  // the end of its loop turn aborts it
  t->host->txn = nullptr;
  delete t;
}

// ---- HTTP ----------------------------------------------------------------------------------------------

bool prefix_granted(const cl_host_s* h, std::string_view pattern) {
  for (const auto& p : h->spec.prefixes) {
    if (pattern.substr(0, p.size()) == p) return true;
    // "/plugins/hello/" also grants "/plugins/hello" itself.
    if (!p.empty() && p.back() == '/' && pattern == std::string_view(p).substr(0, p.size() - 1)) return true;
  }
  return false;
}

// The response of a request the plugin held is complete: completing it also ends its body stream (no more
// body callbacks: rule of req_body_read), so that completion is no longer owed.
void request_finished(void* ud, cl_request_s* r) {
  auto* h = static_cast<cl_host_s*>(ud);
  auto it = h->requests.find(r);
  if (it == h->requests.end()) return;
  bool body_owed = it->second.body_open;
  h->requests.erase(it);
  if (body_owed) h->settle();
}

// What the HTTP layer calls when a held request's client leaves (cl_request_s::close_cb).
void request_closed(void* ud, cl_request_s* r) {
  auto* h = static_cast<cl_host_s*>(ud);
  auto it = h->requests.find(r);
  if (it == h->requests.end() || !it->second.close_cb || !h->open()) return;
  cl_req_close_cb cb = it->second.close_cb;
  void* cb_ud = it->second.close_ud;
  it->second.close_cb = nullptr;  // at most once
  guard(h, "request close callback", [&] { cb(cb_ud, r); });
}

// What the HTTP layer calls with each body chunk of a held request (cl_request_s::body_cb).
void request_body(void* ud, cl_request_s* r, cl_status_t st, cl_str_t chunk) {
  auto* h = static_cast<cl_host_s*>(ud);
  auto it = h->requests.find(r);
  if (it == h->requests.end() || !it->second.body_open) return;
  bool last = st != CL_OK || chunk.len == 0;
  cl_body_cb cb = it->second.body_cb;
  void* cb_ud = it->second.body_ud;
  if (last) it->second.body_open = false;
  if (h->owed_delivery()) guard(h, "body callback", [&] { cb(cb_ud, r, st, chunk); });
  if (last) h->settle();
}

// What the HTTP layer calls when lent bytes are released (the free callback given to cl_request_s::write).
void lent_write_done(void* ptr, void* hint) {
  auto* w = static_cast<cl_host_s::LentWrite*>(hint);
  std::shared_ptr<Life> life = std::move(w->life);
  if (before(life, cl_host_s::unloading)) {
    cl_host_s* h = w->host;
    guard(h, "write completion", [&] { w->done(ptr, w->hint); });
    delete w;
    h->settle();
    return;
  }
  delete w;  // abandoned with its manager: the plugin is not called any more
}

cl_status_t host_route_add(cl_host_t* h, const cl_route_desc_t* d) {
  LOOP_ONLY(h, "route_add");
  if (!d || d->struct_size < offsetof(cl_route_desc_t, ud) + sizeof(void*) || !d->handler || !d->pattern ||
      !d->listener) {
    return CL_EINVAL;
  }
  if (h->phase() != cl_host_s::loading) return CL_ESTATE;
  cloudlet::http::Router* router = h->svc->server.router(d->listener);
  if (!router) return CL_ENOENT;
  if (!prefix_granted(h, d->pattern)) {
    cloudlet::log::error(h->name(), "route {} is outside the prefixes granted to this plugin", d->pattern);
    return CL_EPERM;
  }
  cloudlet::http::Route route;
  route.method = d->method ? d->method : "";
  route.pattern = d->pattern;
  route.flags = d->flags;
  route.max_body = d->max_body;
  route.json_body = (d->flags & CL_ROUTE_F_JSON) != 0;
  route.owner = h;
  cl_route_cb cb = d->handler;
  void* ud = d->ud;
  std::shared_ptr<Life> life = h->life;
  route.handler = [h, cb, ud, life](cloudlet::http::Request& r) -> cl_status_t {
    if (!before(life, cl_host_s::running)) return CL_EUNAVAIL;
    h->requests.emplace(&r, cl_host_s::Held{});
    r.done_hook = request_finished;
    r.done_hook_ud = h;
    cl_status_t st = CL_EIO;
    if (!guard(h, "route handler", [&] { st = cb(ud, &r); })) st = CL_EIO;
    auto it = h->requests.find(&r);
    if (st != CL_OK && it != h->requests.end()) {
      // Declined or failed: the plugin does not own the request (the core answers or passes it on).
      bool body_owed = it->second.body_open;
      h->requests.erase(it);
      r.done_hook = nullptr;
      r.close_cb = nullptr;
      r.body_cb = nullptr;
      if (body_owed) h->settle();
    }
    return st;
  };
  return router->add(std::move(route));
}

cl_str_t host_req_method(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_method", kEmpty);
  return cs(r->method);
}
cl_str_t host_req_path(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_path", kEmpty);
  return cs(r->path);
}
cl_str_t host_req_query(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_query", kEmpty);
  return cs(r->query);
}

cl_status_t host_req_header(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_header", CL_ESTATE);
  if (!out) return CL_EINVAL;
  std::string_view v;
  cl_status_t st = r->header(sv(name), &v);
  *out = st == CL_OK ? cs(v) : kEmpty;
  return st;
}

cl_status_t host_req_param(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_param", CL_ESTATE);
  if (!out) return CL_EINVAL;
  std::string_view v;
  cl_status_t st = r->param(sv(name), &v);
  *out = st == CL_OK ? cs(v) : kEmpty;
  return st;
}

cl_status_t host_req_param_at(cl_request_t* r, size_t index, cl_str_t* name, cl_str_t* value) {
  REQ_LOOP_ONLY(r, "req_param_at", CL_ESTATE);
  if (!name || !value) return CL_EINVAL;
  std::string_view n, v;
  cl_status_t st = r->param_at(index, &n, &v);
  if (st == CL_OK) {
    *name = cs(n);
    *value = cs(v);
  }
  return st;
}

cl_str_t host_req_body(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_body", kEmpty);
  return cs(r->body);
}

cl_status_t host_req_body_read(cl_request_t* r, cl_body_cb cb, void* ud) {
  REQ_LOOP_ONLY(r, "req_body_read", CL_ESTATE);
  if (!cb) return CL_EINVAL;
  auto* h = static_cast<cl_host_s*>(r->owner);
  auto it = h ? h->requests.find(r) : decltype(h->requests)::iterator();
  if (!h || it == h->requests.end()) return CL_ESTATE;  // not a request this plugin holds
  if (!h->open()) return CL_ECANCELED;
  if (it->second.body_open) return CL_ESTATE;
  // The HTTP layer calls request_body (core code), which runs the plugin's callback through the guard.
  cl_status_t st = r->read_body(request_body, h);
  if (st != CL_OK) return st;
  it->second.body_cb = cb;
  it->second.body_ud = ud;
  it->second.body_open = true;
  h->owed++;
  return CL_OK;
}

cl_status_t host_req_body_pause(cl_request_t* r, int paused) {
  REQ_LOOP_ONLY(r, "req_body_pause", CL_ESTATE);
  return r->pause_body(paused != 0);
}

cl_status_t host_req_file_at(cl_request_t* r, size_t index, cl_file_info_t* out) {
  REQ_LOOP_ONLY(r, "req_file_at", CL_ESTATE);
  if (!out || out->struct_size < sizeof(uint32_t)) return CL_EINVAL;
  if (!r->form || index >= r->form->files().size()) return CL_ENOENT;
  const auto& f = r->form->files()[index];
  cl_file_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  info.field = cs(f.field);
  info.filename = cs(f.filename);
  info.content_type = cs(f.content_type);
  info.path = cs(f.path);
  info.size = f.size;
  // Copy no more than the caller's struct holds (an older plugin has a shorter struct).
  uint32_t n = out->struct_size < sizeof info ? out->struct_size : static_cast<uint32_t>(sizeof info);
  memcpy(out, &info, n);
  out->struct_size = n;
  return CL_OK;
}

bool safe_relative(std::string_view p) {
  if (p.empty() || p[0] == '/' || p.find('\0') != std::string_view::npos) return false;
  size_t pos = 0;
  while (pos <= p.size()) {
    size_t slash = p.find('/', pos);
    std::string_view seg = p.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (seg.empty() || seg == "." || seg == "..") return false;
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return true;
}

cl_status_t host_req_file_take(cl_request_t* r, size_t index, cl_str_t dest) {
  REQ_LOOP_ONLY(r, "req_file_take", CL_ESTATE);
  auto* h = static_cast<cl_host_s*>(r->owner);
  if (!h) return CL_EINVAL;
  if (!r->form || index >= r->form->files().size()) return CL_ENOENT;
  if (!safe_relative(sv(dest))) return CL_EINVAL;
  std::string dir;
  if (!plugin_data_dir(h, &dir)) return CL_EIO;
  std::string abs = dir + "/" + std::string(sv(dest));
  std::string error;
  cl_status_t st = r->form->take_file(index, abs, &error);
  if (st == CL_EIO) cloudlet::log::error(h->name(), "moving an upload to {}: {}", abs, error);
  return st;
}

cl_status_t host_req_local_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  REQ_LOOP_ONLY(r, "req_local_addr", CL_ESTATE);
  if (!ip) return CL_EINVAL;
  cl_status_t st = r->addresses();
  if (st != CL_OK) return st;
  *ip = cs(r->local_ip);
  if (port) *port = r->local_port;
  return CL_OK;
}

cl_status_t host_req_peer_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  REQ_LOOP_ONLY(r, "req_peer_addr", CL_ESTATE);
  if (!ip) return CL_EINVAL;
  cl_status_t st = r->addresses();
  if (st != CL_OK) return st;
  *ip = cs(r->peer_ip);
  if (port) *port = r->peer_port;
  return CL_OK;
}

cl_status_t host_req_on_close(cl_request_t* r, cl_req_close_cb cb, void* ud) {
  REQ_LOOP_ONLY(r, "req_on_close", CL_ESTATE);
  auto* h = static_cast<cl_host_s*>(r->owner);
  auto it = h ? h->requests.find(r) : decltype(h->requests)::iterator();
  if (!h || it == h->requests.end()) return CL_ESTATE;
  it->second.close_cb = cb;
  it->second.close_ud = ud;
  // The HTTP layer calls request_closed (core code), which checks the phase and runs cb through the guard.
  r->close_cb = cb ? request_closed : nullptr;
  r->close_ud = h;
  return CL_OK;
}

cl_status_t host_resp_header_add(cl_request_t* r, cl_str_t name, cl_str_t value) {
  REQ_LOOP_ONLY(r, "resp_header_add", CL_ESTATE);
  return r->add_header(sv(name), sv(value));
}

cl_status_t host_resp_send(cl_request_t* r, uint32_t status, cl_str_t ctype, cl_str_t body) {
  REQ_LOOP_ONLY(r, "resp_send", CL_ESTATE);
  return r->send(status, sv(ctype), sv(body));
}

cl_status_t host_resp_start(cl_request_t* r, uint32_t status, int64_t len) {
  REQ_LOOP_ONLY(r, "resp_start", CL_ESTATE);
  return r->start(status, len);
}

cl_status_t host_resp_write(cl_request_t* r, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  REQ_LOOP_ONLY(r, "resp_write", CL_ESTATE);
  if (!ptr && len) return CL_EINVAL;
  auto* h = static_cast<cl_host_s*>(r->owner);
  // Lent bytes come back through lent_write_done, counted as owed. From fini (or a request no plugin holds)
  // nothing can be owed any more: the bytes are copied and done is not called.
  if (!done || !h || !h->owed_delivery()) return r->write(ptr, len, nullptr, nullptr);
  auto* w = new cl_host_s::LentWrite{h, h->life, done, hint};
  h->owed++;
  return r->write(ptr, len, lent_write_done, w);  // lent_write_done runs exactly once, also on error
}

cl_status_t host_resp_end(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "resp_end", CL_ESTATE);
  return r->end();
}

cl_status_t host_resp_file(cl_request_t* r, cl_str_t path, cl_str_t ctype) {
  REQ_LOOP_ONLY(r, "resp_file", CL_ESTATE);
  std::string p(sv(path));
  auto* h = static_cast<cl_host_s*>(r->owner);
  // Confine to the data directory or the listener's webroot (after resolving symlinks).
  char real[PATH_MAX];
  if (!realpath(p.c_str(), real)) return CL_ENOENT;
  auto inside = [&](const std::string& root) {
    char rr[PATH_MAX];
    if (root.empty() || !realpath(root.c_str(), rr)) return false;
    size_t n = strlen(rr);
    return strncmp(real, rr, n) == 0 && real[n] == '/';
  };
  std::string data_dir = h ? h->svc->data_dir : std::string();
  if (!inside(data_dir) && !inside(r->listener->options.webroot)) return CL_EPERM;
  return r->send_file(real, sv(ctype));
}

cl_status_t host_sse_start(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "sse_start", CL_ESTATE);
  return r->sse_start();
}

cl_status_t host_sse_send(cl_request_t* r, cl_str_t event, cl_str_t data) {
  REQ_LOOP_ONLY(r, "sse_send", CL_ESTATE);
  return r->sse_send(sv(event), sv(data));
}

// ---- reading JSON (since 1.1) ----------------------------------------------------------------------------

namespace pj = cloudlet::plugin_json;

cl_status_t host_json_parse(cl_host_t* h, cl_str_t text, cl_json_t** out) {
  if (!h) return CL_EINVAL;
  cl_status_t st = pj::parse(sv(text), out);
  if (st == CL_OK) h->json_docs++;
  return st;
}

void host_json_free(cl_host_t* h, cl_json_t* doc) {
  if (!doc) return;
  pj::free(doc);
  if (h) h->json_docs--;
}

cl_status_t host_json_type(const cl_json_t* d, cl_str_t path, int32_t* out) { return pj::type(d, sv(path), out); }
cl_status_t host_json_get_str(const cl_json_t* d, cl_str_t path, cl_str_t* out) { return pj::get_str(d, sv(path), out); }
cl_status_t host_json_get_int(const cl_json_t* d, cl_str_t path, int64_t* out) { return pj::get_int(d, sv(path), out); }
cl_status_t host_json_get_num(const cl_json_t* d, cl_str_t path, double* out) { return pj::get_num(d, sv(path), out); }
cl_status_t host_json_get_bool(const cl_json_t* d, cl_str_t path, int* out) { return pj::get_bool(d, sv(path), out); }
cl_status_t host_json_get_len(const cl_json_t* d, cl_str_t path, size_t* out) { return pj::get_len(d, sv(path), out); }
cl_status_t host_json_key_at(const cl_json_t* d, cl_str_t path, size_t i, cl_str_t* out) {
  return pj::key_at(d, sv(path), i, out);
}


// ---- jobs (since 1.1) ------------------------------------------------------------------------------------

// A job handle the plugin may still use, with its host on the loop thread; null otherwise (logged off-loop).
cl_host_s* job_host(cl_job_t* job, const char* slot) {
  if (!job || !cloudlet::live_jobs().count(job)) return nullptr;
  return on_loop(job->host, slot) ? job->host : nullptr;
}

cl_status_t host_job_create(cl_host_t* h, cl_str_t kind, cl_str_t subject, cl_job_cancel_cb cancel, void* ud,
                            cl_job_t** out) {
  LOOP_ONLY(h, "job_create");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!cloudlet::Operations::valid_name(sv(kind)) || subject.len > kMaxJobText) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  if (!h->svc->jobs) return CL_EUNAVAIL;
  auto* job = new cl_job_s{h, std::string(), cancel, ud};
  std::function<void()> on_cancel;
  if (cancel) {
    // Jobs runs this from a clean stack; the job may have ended, or the plugin begun unloading, meanwhile.
    std::shared_ptr<Life> life = h->life;
    auto id = std::make_shared<std::string>();
    on_cancel = [h, life, id] {
      if (!before(life, cl_host_s::running)) return;
      auto it = h->jobs.find(*id);
      if (it == h->jobs.end() || it->second->finished) return;
      cl_job_s* j = it->second;
      guard(h, "job cancel callback", [&] { j->cancel(j->ud, j); });
    };
    job->id = h->svc->jobs->create(sv(kind), sv(subject), std::move(on_cancel));
    *id = job->id;
  } else {
    job->id = h->svc->jobs->create(sv(kind), sv(subject));
  }
  h->jobs.emplace(job->id, job);
  cloudlet::live_jobs().insert(job);
  *out = job;
  return CL_OK;
}

cl_str_t host_job_id(cl_job_t* job) {
  if (!job_host(job, "job_id")) return kEmpty;
  return cs(job->id);
}

cl_status_t host_job_progress(cl_job_t* job, double fraction, cl_str_t message) {
  if (!job || !cloudlet::live_jobs().count(job)) return CL_ESTATE;
  cl_host_s* h = job_host(job, "job_progress");
  if (!h) return CL_ESTATE;
  if (std::isnan(fraction) || message.len > kMaxJobText) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  if (job->finished) return CL_ESTATE;
  h->svc->jobs->progress(job->id, fraction, sv(message));  // clamps to [0, 1]
  return CL_OK;
}

cl_status_t host_job_finish(cl_job_t* job, cl_status_t status, cl_str_t result) {
  if (!job || !cloudlet::live_jobs().count(job)) return CL_ESTATE;  // finished already: compared, not followed
  cl_host_s* h = job_host(job, "job_finish");
  if (!h) return CL_ESTATE;
  if (job->finished) return CL_ESTATE;  // the core finished it (unloading); fini releases it
  std::string r(sv(result));
  if (status > 0 || (status == CL_OK && !r.empty() && !cloudlet::json::valid(r))) return CL_EINVAL;
  // The same shapes as op_reply: errors as {"error": ...}, an empty success as {}.
  if (status != CL_OK && !cloudlet::json::is_object(r)) {
    r = cloudlet::json::error_object(r.empty() ? std::string("job failed: ") + host_strerror(status) : r);
  } else if (r.empty()) {
    r = "{}";
  }
  h->jobs.erase(job->id);
  cloudlet::live_jobs().erase(job);
  h->svc->jobs->finish(job->id, status, std::move(r));
  delete job;
  return CL_OK;
}

// ---- callers and privileged operations (since 1.1) -----------------------------------------------------

cl_status_t host_op_register_ex(cl_host_t* h, cl_str_t name, uint32_t flags, cl_op_cb cb, void* ud) {
  return op_register_flags(h, "op_register_ex", name, flags, cb, ud);
}

cl_status_t host_op_caller(cl_op_call_t* call, cl_caller_t* out) {
  if (!call || !cloudlet::live_op_calls().count(call)) return CL_EINVAL;
  LOOP_ONLY(call->host, "op_caller");
  if (!out || out->struct_size < sizeof(uint32_t)) return CL_EINVAL;
  const cloudlet::Caller& c = call->reply.caller();
  cl_caller_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  info.kind = c.kind;
  info.plugin = cs(c.plugin);
  info.principal = cs(c.principal);
  // Copy no more than the caller's struct holds (an older plugin has a shorter struct).
  uint32_t n = out->struct_size < sizeof info ? out->struct_size : static_cast<uint32_t>(sizeof info);
  memcpy(out, &info, n);
  out->struct_size = n;
  return CL_OK;
}

cl_status_t host_op_call_as(cl_host_t* h, cl_str_t name, cl_str_t args, cl_str_t principal, cl_op_done_cb cb,
                            void* ud) {
  LOOP_ONLY(h, "op_call_as");
  std::string_view p = sv(principal);
  if (p.empty() || p.size() > kMaxPrincipal) return CL_EINVAL;
  cloudlet::Caller caller = h->caller;  // this plugin's name and grants: privileges stay the plugin's
  caller.kind = CL_CALLER_AGENT;
  caller.principal = std::string(p);
  return op_call_from(h, caller, name, args, cb, ud);
}

// ---- listener guards, principals, static files, peer certificates (since 1.1) ---------------------------

cl_status_t host_listener_guard_set(cl_host_t* h, cl_str_t listener, cl_guard_cb cb, void* ud) {
  LOOP_ONLY(h, "listener_guard_set");
  if (!cb) return CL_EINVAL;
  if (h->phase() != cl_host_s::loading) return CL_ESTATE;
  std::string name(sv(listener));
  if (!h->svc->server.listener(name)) return CL_ENOENT;
  bool granted = false;
  for (const auto& g : h->spec.guards) granted = granted || g == name;
  if (!granted) {
    cloudlet::log::error(h->name(), "the guard of listener '{}' is not granted to this plugin (plugins[].guards)",
                         name);
    return CL_EPERM;
  }
  std::shared_ptr<Life> life = h->life;
  // The HTTP layer calls this core lambda; the plugin's guard runs only while the plugin takes calls, through
  // the guard (exceptions). Unloading removes it (stop_notifications) and the listener then refuses (503).
  return h->svc->server.set_guard(name, h, [h, cb, ud, life](cloudlet::http::Request& r) -> cl_status_t {
    if (!before(life, cl_host_s::running)) return CL_EUNAVAIL;
    cl_status_t st = CL_EIO;
    if (!guard(h, "listener guard", [&] { st = cb(ud, &r); })) st = CL_EIO;
    return st;
  });
}

cl_status_t host_req_set_principal(cl_request_t* r, cl_str_t principal) {
  REQ_LOOP_ONLY(r, "req_set_principal", CL_ESTATE);
  if (!r->in_guard) return CL_ESTATE;
  std::string_view p = sv(principal);
  if (p.empty() || p.size() > kMaxPrincipal) return CL_EINVAL;
  r->principal.assign(p);
  return CL_OK;
}

cl_status_t host_req_principal(cl_request_t* r, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_principal", CL_ESTATE);
  if (!out) return CL_EINVAL;
  *out = r->principal.empty() ? kEmpty : cs(r->principal);
  return r->principal.empty() ? CL_ENOENT : CL_OK;
}

cl_status_t host_req_peer_cert(cl_request_t* r, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_peer_cert", CL_ESTATE);
  if (!out) return CL_EINVAL;
  *out = r->peer_cert.empty() ? kEmpty : cs(r->peer_cert);
  return r->peer_cert.empty() ? CL_ENOENT : CL_OK;
}

// A URL prefix static_add accepts: absolute, ending with '/', no dot segments, nothing the router reads as a
// parameter.
bool valid_url_prefix(std::string_view p) {
  if (p.empty() || p[0] != '/' || p.back() != '/') return false;
  if (p.find_first_of("{}\\") != std::string_view::npos || p.find('\0') != std::string_view::npos) return false;
  if (p.size() > 1 && p.substr(1, p.size() - 2).find("//") != std::string_view::npos) return false;
  return cloudlet::http::is_safe_relative_path(p);
}

cl_status_t host_static_add(cl_host_t* h, cl_str_t listener, cl_str_t url_prefix, cl_str_t dir) {
  LOOP_ONLY(h, "static_add");
  if (h->phase() != cl_host_s::loading) return CL_ESTATE;
  std::string prefix(sv(url_prefix));
  std::string rel(sv(dir));
  if (!valid_url_prefix(prefix) || !safe_relative(rel)) return CL_EINVAL;
  cloudlet::http::Router* router = h->svc->server.router(sv(listener));
  if (!router) return CL_ENOENT;
  if (!prefix_granted(h, prefix)) {
    cloudlet::log::error(h->name(), "static files at {} are outside the prefixes granted to this plugin", prefix);
    return CL_EPERM;
  }
  // Resolved once, now: the directory must be inside the plugin's files directory after symlinks (each
  // request is confined to this root again by the static file handler).
  char base[PATH_MAX], root[PATH_MAX];
  if (!realpath(h->spec.files_dir.c_str(), base)) return CL_ENOENT;
  if (!realpath((h->spec.files_dir + "/" + rel).c_str(), root)) return CL_ENOENT;
  size_t n = strlen(base);
  if (strncmp(root, base, n) != 0 || (root[n] != '/' && root[n] != '\0')) {
    cloudlet::log::error(h->name(), "static files directory {} leads out of {}", rel, base);
    return CL_EPERM;
  }
  struct stat st;
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) return CL_ENOENT;
  cloudlet::http::Route route;
  route.method = "GET";  // HEAD too
  route.pattern = prefix + "{*path}";
  route.owner = h;  // removed with the plugin's routes
  std::string root_dir(root);
  std::shared_ptr<Life> life = h->life;
  cloudlet::http::Server* server = &h->svc->server;
  // Core code only: the plugin is not called to serve its files.
  route.handler = [root_dir, life, server](cloudlet::http::Request& r) -> cl_status_t {
    if (!before(life, cl_host_s::running)) return CL_EUNAVAIL;
    std::string_view rest;
    r.param("path", &rest);
    std::string rel_path = rest.empty() && (r.path.empty() || r.path.back() != '/') ? "" : "/" + std::string(rest);
    server->files().serve(r, root_dir, rel_path, "index.html");
    return CL_OK;
  };
  return router->add(std::move(route));
}


// ---- child processes (since 1.1) -------------------------------------------------------------------------

// A process handle the plugin may still use, with its host on the loop thread; null otherwise (logged off-loop).
cl_host_s* proc_host(cl_proc_t* p, const char* slot) { return live_host(p, cloudlet::live_procs(), slot); }

cl_status_t host_proc_spawn(cl_host_t* h, const cl_proc_desc_t* desc, cl_proc_output_cb on_output,
                            cl_proc_exit_cb on_exit, void* ud, cl_proc_t** out) {
  LOOP_ONLY(h, "proc_spawn");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!on_exit) return CL_EINVAL;
  std::string default_cwd;
  if (desc && !desc->cwd && !plugin_data_dir(h, &default_cwd)) return CL_EIO;
  cloudlet::ChildOptions options;
  if (cl_status_t st = cloudlet::proc_options(desc, default_cwd, &options); st != CL_OK) return st;
  if ((options.stream[0] || options.stream[1]) && !on_output) return CL_EINVAL;
  if (!h->open()) return CL_ECANCELED;
  auto* p = new cl_proc_s{h, nullptr, on_output, on_exit, ud};
  std::shared_ptr<Life> life = h->life;
  auto output = [p, life](int fd, std::string_view chunk) {
    if (!before(life, cl_host_s::running)) return;  // a notification: none once unloading began
    guard(p->host, "process output callback", [&] { p->on_output(p->ud, p, fd, cs(chunk)); });
  };
  // The Child reports from a clean loop turn, exactly once; the host waits for it (owed) before fini.
  auto exited = [p](const cloudlet::ChildExit& e) {
    cl_host_s* host = p->host;
    cl_proc_exit_t x;
    cloudlet::proc_exit_fill(e, &x);
    guard(host, "process exit callback", [&] { p->on_exit(p->ud, p, &x); });
    host->procs.erase(p);
    cloudlet::live_procs().erase(p);
    delete p;
    host->settle();
  };
  h->owed++;
  h->procs.insert(p);
  cloudlet::live_procs().insert(p);
  p->child = cloudlet::Child::start(h->svc->loop.uv(), std::move(options), std::move(output), std::move(exited));
  *out = p;
  return CL_OK;
}

cl_status_t host_proc_write(cl_proc_t* p, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  cl_host_s* h = proc_host(p, "proc_write");
  if (!h) return CL_ESTATE;
  if (!ptr && len) return CL_EINVAL;
  std::string_view bytes(static_cast<const char*>(ptr), ptr ? len : 0);
  cloudlet::Child::WriteDone release;
  std::shared_ptr<std::string> copy;
  if (!done) {
    copy = std::make_shared<std::string>(bytes);
    bytes = *copy;
    release = [copy](int) {};
  } else {
    std::shared_ptr<Life> life = h->life;
    release = [h, life, done, ptr, hint](int) {
      if (!before(life, cl_host_s::unloading)) return;  // abandoned with its manager: not called any more
      guard(h, "write completion", [&] { done(const_cast<void*>(ptr), hint); });
      h->settle();
    };
  }
  int rc = p->child->write(bytes, release);
  if (rc == 0) {
    if (done) h->owed++;
    return CL_OK;
  }
  if (rc != UV_ECANCELED) return CL_ESTATE;
  // The process has exited: lent bytes come back from a clean stack, as the header promises.
  if (done) {
    h->owed++;
    h->svc->loop.defer([release] { release(UV_ECANCELED); });
  }
  return CL_ECLOSING;
}

cl_status_t host_proc_close_stdin(cl_proc_t* p) {
  if (!proc_host(p, "proc_close_stdin")) return CL_ESTATE;
  return p->child->close_stdin() == 0 ? CL_OK : CL_ESTATE;
}

cl_status_t host_proc_kill(cl_proc_t* p, int32_t signum) {
  if (!proc_host(p, "proc_kill")) return CL_ESTATE;
  if (!cloudlet::proc_signal_allowed(signum)) return CL_EINVAL;
  int rc = p->child->kill(signum);
  return rc == 0 ? CL_OK : rc == UV_ESRCH ? CL_ESTATE : CL_EIO;
}

// ---- WebSocket (since 1.1) -------------------------------------------------------------------------------

constexpr uint64_t kMaxWsMessage = uint64_t{64} << 20;
constexpr uint64_t kMinPingIntervalMs = 100;

// A socket handle the plugin may still use, with its host on the loop thread; null otherwise.
cl_host_s* ws_host(cl_ws_t* w, const char* slot) { return live_host(w, cloudlet::live_websockets(), slot); }

cl_status_t host_ws_accept(cl_request_t* r, const cl_ws_desc_t* desc, cl_ws_message_cb on_message,
                           cl_ws_close_cb on_close, void* ud, cl_ws_t** out) {
  REQ_LOOP_ONLY(r, "ws_accept", CL_ESTATE);
  auto* h = static_cast<cl_host_s*>(r->owner);
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!h || !on_message || !on_close || !desc ||
      desc->struct_size < offsetof(cl_ws_desc_t, ping_interval_ms) + sizeof desc->ping_interval_ms ||
      desc->flags != 0 || desc->max_message > kMaxWsMessage ||
      (desc->ping_interval_ms != 0 && desc->ping_interval_ms < kMinPingIntervalMs)) {
    return CL_EINVAL;
  }
  if (!h->open()) return CL_ECANCELED;
  cloudlet::http::WsOptions options;
  options.subprotocol = std::string(sv(desc->subprotocol));
  options.max_message = desc->max_message;
  options.ping_interval_ms = desc->ping_interval_ms;
  auto* w = new cl_ws_s{h, nullptr, on_message, on_close, ud};
  std::shared_ptr<Life> life = h->life;
  auto message = [w, life](cloudlet::http::ws::Opcode type, std::string_view data) {
    if (!before(life, cl_host_s::running)) return;  // a notification: none once unloading began
    int32_t t = type == cloudlet::http::ws::kText ? CL_WS_TEXT : CL_WS_BINARY;
    guard(w->host, "WebSocket message callback", [&] { w->on_message(w->ud, w, t, cs(data)); });
  };
  // The session reports from a clean loop turn, exactly once; the host waits for it (owed) before fini.
  auto closed = [w](cl_status_t status, uint16_t code, std::string_view reason) {
    cl_host_s* host = w->host;
    guard(host, "WebSocket close callback", [&] { w->on_close(w->ud, w, status, code, cs(reason)); });
    host->websockets.erase(w);
    cloudlet::live_websockets().erase(w);
    delete w;
    host->settle();
  };
  std::string error;
  cloudlet::http::WsSession* session = nullptr;
  cl_status_t st = cloudlet::http::WsSession::accept(r, std::move(options), std::move(message), std::move(closed),
                                                     &session, &error);
  if (st != CL_OK) {
    if (st == CL_EINVAL) cloudlet::log::debug(h->name(), "WebSocket refused: {}", error);
    delete w;
    return st;
  }
  w->session = session;
  h->owed++;
  h->websockets.insert(w);
  cloudlet::live_websockets().insert(w);
  *out = w;
  return CL_OK;
}

cl_status_t host_ws_send(cl_ws_t* w, int32_t type, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  cl_host_s* h = ws_host(w, "ws_send");
  if (!h) return CL_ESTATE;
  auto op = type == CL_WS_TEXT     ? cloudlet::http::ws::kText
            : type == CL_WS_BINARY ? cloudlet::http::ws::kBinary
                                   : cloudlet::http::ws::kContinuation;  // refused by send, done still runs
  if (!done || !h->owed_delivery()) return w->session->send(op, ptr, len, nullptr, nullptr);
  auto* lent = new cl_host_s::LentWrite{h, h->life, done, hint};
  h->owed++;
  return w->session->send(op, ptr, len, lent_write_done, lent);  // lent_write_done runs exactly once
}

cl_status_t host_ws_pause(cl_ws_t* w, int paused) {
  if (!ws_host(w, "ws_pause")) return CL_ESTATE;
  return w->session->pause(paused != 0);
}

cl_status_t host_ws_close(cl_ws_t* w, uint32_t code, cl_str_t reason) {
  if (!ws_host(w, "ws_close")) return CL_ESTATE;
  return w->session->close(code, sv(reason));
}

// ---- outbound HTTP(S) (since 1.1) ------------------------------------------------------------------------

// A request handle the plugin may still use, with its host on the loop thread; null otherwise.
cl_host_s* fetch_host(cl_fetch_t* f, const char* slot) { return live_host(f, cloudlet::live_fetches(), slot); }

cl_status_t host_fetch_start(cl_host_t* h, const cl_fetch_desc_t* desc, cl_fetch_response_cb on_response,
                             cl_fetch_body_cb on_body, void* ud, cl_fetch_t** out) {
  LOOP_ONLY(h, "fetch_start");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!on_body) return CL_EINVAL;
  cloudlet::http::FetchOptions options;
  if (cl_status_t st = cloudlet::fetch_options(desc, &options); st != CL_OK) return st;
  if (!h->open()) return CL_ECANCELED;
  auto* f = new cl_fetch_s{h, nullptr, on_response, on_body, ud};
  std::shared_ptr<Life> life = h->life;
  auto response = [f, life](unsigned status) {
    if (!f->on_response || !before(life, cl_host_s::running)) return;  // a notification
    guard(f->host, "fetch response callback", [&] { f->on_response(f->ud, f, status); });
  };
  // The exchange ends from a clean loop turn, exactly once; the host waits for it (owed) before fini.
  auto body = [f](cl_status_t status, std::string_view chunk) {
    cl_host_s* host = f->host;
    guard(host, "fetch body callback", [&] { f->on_body(f->ud, f, status, cs(chunk)); });
    if (status == CL_OK && !chunk.empty()) return;
    host->fetches.erase(f);
    cloudlet::live_fetches().erase(f);
    delete f;
    host->settle();
  };
  std::string error;
  cl_status_t st = cloudlet::http::Fetch::start(h->svc->loop.uv(), std::move(options), std::move(response),
                                                std::move(body), &f->fetch, &error);
  if (st != CL_OK) {
    cloudlet::log::debug(h->name(), "fetch refused: {}", error);
    delete f;
    return st;
  }
  h->owed++;
  h->fetches.insert(f);
  cloudlet::live_fetches().insert(f);
  *out = f;
  return CL_OK;
}

cl_status_t host_fetch_write(cl_fetch_t* f, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  cl_host_s* h = fetch_host(f, "fetch_write");
  if (!h) return CL_ESTATE;
  if (!ptr && len) return CL_EINVAL;
  std::string_view bytes(static_cast<const char*>(ptr), ptr ? len : 0);
  if (!done || !h->owed_delivery()) return f->fetch->write(bytes, nullptr);
  auto* lent = new cl_host_s::LentWrite{h, h->life, done, hint};
  h->owed++;
  cl_status_t st = f->fetch->write(bytes, [ptr, lent] { lent_write_done(const_cast<void*>(ptr), lent); });
  if (st != CL_OK && st != CL_ECLOSING) {  // refused: done is not called
    delete lent;
    h->owed--;
  }
  return st;
}

cl_status_t host_fetch_end(cl_fetch_t* f) {
  if (!fetch_host(f, "fetch_end")) return CL_ESTATE;
  return f->fetch->end();
}

cl_status_t host_fetch_header(cl_fetch_t* f, cl_str_t name, cl_str_t* out) {
  if (!fetch_host(f, "fetch_header")) return CL_ESTATE;
  return cloudlet::fetch_header_of(f->fetch, name, out);
}

cl_status_t host_fetch_peer_cert(cl_fetch_t* f, cl_str_t* out) {
  if (!fetch_host(f, "fetch_peer_cert")) return CL_ESTATE;
  return cloudlet::fetch_peer_cert_of(f->fetch, out);
}

cl_status_t host_fetch_pause(cl_fetch_t* f, int paused) {
  if (!fetch_host(f, "fetch_pause")) return CL_ESTATE;
  return f->fetch->pause(paused != 0);
}

cl_status_t host_fetch_cancel(cl_fetch_t* f) {
  if (!fetch_host(f, "fetch_cancel")) return CL_ESTATE;
  return f->fetch->cancel(CL_ECANCELED);
}

}  // namespace

namespace cloudlet {

const cl_host_api_t* host_api_table() {
  // Filled once, in slot order. Appending a slot: add it here and at the end of abi/cloudlet_plugin.h's table.
  static const cl_host_api_t table = [] {
    cl_host_api_t t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    t.abi_major = CL_ABI_MAJOR;
    t.abi_minor = CL_ABI_MINOR;
    t.log = host_log;
    t.log_enabled = host_log_enabled;
    t.strerror = host_strerror;
    t.buf_free = host_buf_free;
    t.host_get = host_host_get;
    t.now_ms = host_now_ms;
    t.timer_start = host_timer_start;
    t.timer_stop = host_timer_stop;
    t.post = host_post;
    t.work_queue = host_work_queue;
    t.work_cancel = host_work_cancel;
    t.io_start = host_io_start;
    t.io_update = host_io_update;
    t.io_stop = host_io_stop;
    t.event_subscribe = host_event_subscribe;
    t.event_unsubscribe = host_event_unsubscribe;
    t.event_publish = host_event_publish;
    t.op_register = host_op_register;
    t.op_call = host_op_call;
    t.op_reply = host_op_reply;
    t.store_get = host_store_get;
    t.store_scan = host_store_scan;
    t.txn_begin = host_txn_begin;
    t.txn_get = host_txn_get;
    t.txn_put = host_txn_put;
    t.txn_del = host_txn_del;
    t.txn_commit = host_txn_commit;
    t.txn_abort = host_txn_abort;
    t.route_add = host_route_add;
    t.req_method = host_req_method;
    t.req_path = host_req_path;
    t.req_query = host_req_query;
    t.req_header = host_req_header;
    t.req_param = host_req_param;
    t.req_param_at = host_req_param_at;
    t.req_body = host_req_body;
    t.req_body_read = host_req_body_read;
    t.req_body_pause = host_req_body_pause;
    t.req_file_at = host_req_file_at;
    t.req_file_take = host_req_file_take;
    t.req_local_addr = host_req_local_addr;
    t.req_peer_addr = host_req_peer_addr;
    t.req_on_close = host_req_on_close;
    t.resp_header_add = host_resp_header_add;
    t.resp_send = host_resp_send;
    t.resp_start = host_resp_start;
    t.resp_write = host_resp_write;
    t.resp_end = host_resp_end;
    t.resp_file = host_resp_file;
    t.sse_start = host_sse_start;
    t.sse_send = host_sse_send;
    t.json_parse = host_json_parse;
    t.json_free = host_json_free;
    t.json_type = host_json_type;
    t.json_get_str = host_json_get_str;
    t.json_get_int = host_json_get_int;
    t.json_get_num = host_json_get_num;
    t.json_get_bool = host_json_get_bool;
    t.json_get_len = host_json_get_len;
    t.json_key_at = host_json_key_at;
    t.job_create = host_job_create;
    t.job_id = host_job_id;
    t.job_progress = host_job_progress;
    t.job_finish = host_job_finish;
    t.op_register_ex = host_op_register_ex;
    t.op_caller = host_op_caller;
    t.op_call_as = host_op_call_as;
    t.listener_guard_set = host_listener_guard_set;
    t.req_set_principal = host_req_set_principal;
    t.req_principal = host_req_principal;
    t.req_peer_cert = host_req_peer_cert;
    t.static_add = host_static_add;
    t.proc_spawn = host_proc_spawn;
    t.proc_write = host_proc_write;
    t.proc_close_stdin = host_proc_close_stdin;
    t.proc_kill = host_proc_kill;
    t.ws_accept = host_ws_accept;
    t.ws_send = host_ws_send;
    t.ws_pause = host_ws_pause;
    t.ws_close = host_ws_close;
    t.fetch_start = host_fetch_start;
    t.fetch_write = host_fetch_write;
    t.fetch_end = host_fetch_end;
    t.fetch_header = host_fetch_header;
    t.fetch_peer_cert = host_fetch_peer_cert;
    t.fetch_pause = host_fetch_pause;
    t.fetch_cancel = host_fetch_cancel;
    return t;
  }();
  return &table;
}

void report_hook_exception(const cl_host_s* h, const char* what, const char* detail) {
  log::error(h->name(), "{} threw an exception, caught at the plugin boundary: {}", what, detail);
}

void report_slow_hook(const cl_host_s* h, const char* what, uint64_t ms) {
  log::warn(h->name(), "{} blocked the loop for {} ms (move slow work to work_queue)", what, ms);
}

std::unordered_set<cl_op_call_s*>& live_op_calls() {
  static std::unordered_set<cl_op_call_s*> calls;
  return calls;
}

std::unordered_set<cl_job_s*>& live_jobs() {
  static std::unordered_set<cl_job_s*> jobs;
  return jobs;
}

std::unordered_set<cl_proc_s*>& live_procs() {
  static std::unordered_set<cl_proc_s*> procs;
  return procs;
}

std::unordered_set<cl_fetch_s*>& live_fetches() {
  static std::unordered_set<cl_fetch_s*> fetches;
  return fetches;
}

std::unordered_set<cl_ws_s*>& live_websockets() {
  static std::unordered_set<cl_ws_s*> sockets;
  return sockets;
}

void close_io_watch(cl_host_s::IoWatch* w) {
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll),
           [](uv_handle_t* p) { delete static_cast<cl_host_s::IoWatch*>(p->data); });
}

}  // namespace cloudlet

std::string cl_host_s::collection(std::string_view coll) const {
  std::string out;
  cloudlet::Store::plugin_collection(spec.name, coll, &out);  // names were validated by the trampolines
  return out;
}
