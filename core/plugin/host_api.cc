// The host function table: one extern "C" trampoline per slot, in slot order, named host_<slot>.
//
// Each trampoline checks the loop thread (all slots but post, log, log_enabled, strerror and buf_free are
// loop-only), its pointers and struct sizes, converts between cl_str_t and the core's types, and never lets an
// exception out. Plugin callbacks are wrapped so that exceptions stop at the boundary and nothing calls into a
// plugin after it was unloaded.
#include <sys/stat.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_set>

#include "events/bus.h"
#include "http/request.h"
#include "http/server.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "plugin/host.h"

using cloudlet::guard;
using cloudlet::Loop;

struct cl_host_s::IoWatch {
  uv_poll_t poll;
  cl_host_s* host;
  uint64_t id;
  int fd;
  cl_io_cb cb;
  void* ud;
};

namespace {

std::string_view sv(cl_str_t s) { return std::string_view(s.ptr ? s.ptr : "", s.ptr ? s.len : 0); }
cl_str_t cs(std::string_view s) { return cl_str_t{s.data(), s.size()}; }

bool on_loop(cl_host_s* h, const char* slot) {
  if (h->svc->loop.on_loop_thread()) return true;
  cloudlet::log::error(h->name(), "{} called off the loop thread (only post and log may be)", slot);
  return false;
}

#define LOOP_ONLY(h, slot)                  \
  do {                                      \
    if (!(h)) return CL_EINVAL;             \
    if (!on_loop((h), slot)) return CL_ESTATE; \
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

const char* host_strerror(cl_status_t st) {
  switch (st) {
    case CL_OK: return "ok";
    case CL_EINVAL: return "invalid argument";
    case CL_ENOMEM: return "out of memory";
    case CL_ENOTSUP: return "not supported";
    case CL_EBUSY: return "busy";
    case CL_ENOENT: return "not found";
    case CL_ECANCELED: return "cancelled";
    case CL_ECLOSING: return "closing";
    case CL_EEXIST: return "already exists";
    case CL_EIO: return "input/output or internal error";
    case CL_EDECLINED: return "declined";
    case CL_ETIMEDOUT: return "timed out";
    case CL_EPERM: return "not permitted";
    case CL_ETOOBIG: return "too big";
    case CL_ESTATE: return "invalid state";
    case CL_EUNAUTH: return "unauthenticated";
    case CL_EUNAVAIL: return "unavailable";
    default: return "unknown status";
  }
}

void host_buf_free(cl_host_t*, cl_buf_t* buf) {
  if (!buf) return;
  free(buf->ptr);
  buf->ptr = nullptr;
  buf->len = 0;
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
  if (k == "plugin_data_dir") {
    std::string dir = s.data_dir + "/plugins";
    mkdir(dir.c_str(), 0700);
    dir += "/" + h->name();
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return CL_EIO;
    return copy_out(dir, out);
  }
  return CL_ENOENT;
}

uint64_t host_now_ms(cl_host_t* h) { return h ? h->svc->loop.now_ms() : 0; }

// ---- loop services ------------------------------------------------------------------------------------

cl_status_t host_timer_start(cl_host_t* h, uint64_t timeout_ms, uint64_t repeat_ms, cl_timer_cb cb, void* ud,
                             cl_timer_id_t* out) {
  LOOP_ONLY(h, "timer_start");
  if (!cb) return CL_EINVAL;
  auto id = std::make_shared<uint64_t>(0);
  *id = h->svc->loop.timer_start(timeout_ms, repeat_ms, [h, cb, ud, id, repeat_ms] {
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
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  bool ok = h->svc->loop.post([h, cb, ud, alive] {
    if (alive->load()) guard(h, "post callback", [&] { cb(ud); });
  });
  return ok ? CL_OK : CL_ECLOSING;
}

cl_status_t host_work_queue(cl_host_t* h, cl_work_cb work, cl_done_cb done, void* ud, cl_work_id_t* out) {
  LOOP_ONLY(h, "work_queue");
  if (!work) return CL_EINVAL;
  auto id = std::make_shared<uint64_t>(0);
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  *id = h->svc->loop.queue_work(
      [h, work, ud] { guard(h, "work function", [&] { work(ud); }); },
      [h, done, ud, id, alive](bool cancelled) {
        if (!alive->load()) return;  // the host is gone too; its work set no longer exists
        h->work.erase(*id);
        if (done) guard(h, "work completion", [&] { done(ud, cancelled ? CL_ECANCELED : CL_OK); });
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

void close_watch(cl_host_s::IoWatch* w) {
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll),
           [](uv_handle_t* p) { delete static_cast<cl_host_s::IoWatch*>(p->data); });
}

cl_status_t host_io_stop(cl_host_t* h, cl_io_id_t id) {
  LOOP_ONLY(h, "io_stop");
  auto it = h->io.find(id);
  if (it == h->io.end()) return CL_ENOENT;
  close_watch(it->second);
  h->io.erase(it);
  return CL_OK;
}

// ---- events ---------------------------------------------------------------------------------------------

cl_status_t host_event_subscribe(cl_host_t* h, cl_str_t topic, cl_event_cb cb, void* ud, cl_sub_id_t* out) {
  LOOP_ONLY(h, "event_subscribe");
  if (!cb) return CL_EINVAL;
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  uint64_t id = h->svc->events.subscribe(
      sv(topic),
      [h, cb, ud, alive](std::string_view t, std::string_view payload) {
        if (alive->load()) guard(h, "event callback", [&] { cb(ud, cs(t), cs(payload)); });
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

// Every pending call, so a stale pointer (a second op_reply) is refused instead of dereferenced.
std::unordered_set<cl_op_call_s*>& live_calls() {
  static std::unordered_set<cl_op_call_s*> calls;
  return calls;
}

cl_status_t host_op_register(cl_host_t* h, cl_str_t name, cl_op_cb cb, void* ud) {
  LOOP_ONLY(h, "op_register");
  if (!cb) return CL_EINVAL;
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  return h->svc->ops.add(
      sv(name),
      [h, cb, ud, alive](std::string_view args, cloudlet::Operations::Reply reply) {
        if (!alive->load()) {
          reply.error(CL_EUNAVAIL, "the plugin providing this operation is unloading");
          return;
        }
        auto* call = new cl_op_call_s{h, reply};
        h->calls.insert(call);
        live_calls().insert(call);
        cl_status_t st = CL_EIO;
        if (!guard(h, "operation handler", [&] { st = cb(ud, call, cs(args)); })) st = CL_EIO;
        if (st != CL_OK && h->calls.count(call)) {
          // Refused (or threw): the handler's status is the answer; it must not reply itself.
          h->calls.erase(call);
          live_calls().erase(call);
          call->reply.error(st, std::string("operation failed: ") + host_strerror(st));
          delete call;
        }
      },
      h);
}

cl_status_t host_op_call(cl_host_t* h, cl_str_t name, cl_str_t args, cl_op_done_cb cb, void* ud) {
  LOOP_ONLY(h, "op_call");
  if (!cb) return CL_EINVAL;
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  std::string_view a = sv(args);
  return h->svc->ops.call(sv(name), a.empty() ? std::string_view("{}") : a,
                          [h, cb, ud, alive](cl_status_t st, std::string_view result) {
                            if (alive->load()) guard(h, "operation result", [&] { cb(ud, st, cs(result)); });
                          });
}

cl_status_t host_op_reply(cl_op_call_t* call, cl_status_t status, cl_str_t result) {
  if (!call || !live_calls().count(call)) return CL_ESTATE;
  cl_host_s* h = call->host;
  LOOP_ONLY(h, "op_reply");
  if (h->calls.erase(call) == 0) return CL_ESTATE;
  live_calls().erase(call);
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
  h->svc->loop.defer([h, t = h->txn] {
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
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  return h->svc->store->commit(std::move(txn), [h, cb, ud, alive](cl_status_t st) {
    if (cb && alive->load()) guard(h, "commit callback", [&] { cb(ud, st); });
  });
}

void host_txn_abort(cl_txn_t* t) {
  if (!txn_valid(t)) return;
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

void request_finished(void* ud, cl_request_s* r) { static_cast<cl_host_s*>(ud)->requests.erase(r); }

cl_status_t host_route_add(cl_host_t* h, const cl_route_desc_t* d) {
  LOOP_ONLY(h, "route_add");
  if (!d || d->struct_size < offsetof(cl_route_desc_t, ud) + sizeof(void*) || !d->handler || !d->pattern ||
      !d->listener) {
    return CL_EINVAL;
  }
  if (!h->initializing) return CL_ESTATE;
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
  route.owner = h;
  cl_route_cb cb = d->handler;
  void* ud = d->ud;
  std::shared_ptr<std::atomic<bool>> alive = h->alive;
  route.handler = [h, cb, ud, alive](cloudlet::http::Request& r) -> cl_status_t {
    if (!alive->load()) return CL_EUNAVAIL;
    h->requests.insert(&r);
    r.done_hook = request_finished;
    r.done_hook_ud = h;
    cl_status_t st = CL_EIO;
    if (!guard(h, "route handler", [&] { st = cb(ud, &r); })) st = CL_EIO;
    if (st != CL_OK && h->requests.count(&r)) {
      // Declined or failed: the plugin does not own the request (the core answers or passes it on).
      h->requests.erase(&r);
      r.done_hook = nullptr;
    }
    return st;
  };
  return router->add(std::move(route));
}

cl_str_t host_req_method(cl_request_t* r) { return r ? cs(r->method) : cl_str_t{nullptr, 0}; }
cl_str_t host_req_path(cl_request_t* r) { return r ? cs(r->path) : cl_str_t{nullptr, 0}; }
cl_str_t host_req_query(cl_request_t* r) { return r ? cs(r->query) : cl_str_t{nullptr, 0}; }

cl_status_t host_req_header(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  if (!r || !out) return CL_EINVAL;
  std::string_view v;
  cl_status_t st = r->header(sv(name), &v);
  *out = st == CL_OK ? cs(v) : cl_str_t{nullptr, 0};
  return st;
}

cl_status_t host_req_param(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  if (!r || !out) return CL_EINVAL;
  std::string_view v;
  cl_status_t st = r->param(sv(name), &v);
  *out = st == CL_OK ? cs(v) : cl_str_t{nullptr, 0};
  return st;
}

cl_status_t host_req_param_at(cl_request_t* r, size_t index, cl_str_t* name, cl_str_t* value) {
  if (!r || !name || !value) return CL_EINVAL;
  std::string_view n, v;
  cl_status_t st = r->param_at(index, &n, &v);
  if (st == CL_OK) {
    *name = cs(n);
    *value = cs(v);
  }
  return st;
}

cl_str_t host_req_body(cl_request_t* r) { return r ? cs(r->body) : cl_str_t{nullptr, 0}; }

cl_status_t host_req_body_read(cl_request_t* r, cl_body_cb cb, void* ud) {
  if (!r || !cb) return CL_EINVAL;
  auto* h = static_cast<cl_host_s*>(r->owner);
  if (!h) return r->read_body(cb, ud);
  // Route body chunks through the guard as well: they are plugin code.
  struct Ctx {
    cl_host_s* h;
    cl_body_cb cb;
    void* ud;
  };
  auto* ctx = new Ctx{h, cb, ud};
  cl_status_t st = r->read_body(
      [](void* p, cl_request_t* req, cl_status_t s, cl_str_t chunk) {
        auto* c = static_cast<Ctx*>(p);
        bool last = s != CL_OK || chunk.len == 0;
        Ctx copy = *c;
        if (last) delete c;
        guard(copy.h, "body callback", [&] { copy.cb(copy.ud, req, s, chunk); });
      },
      ctx);
  if (st != CL_OK) delete ctx;
  return st;
}

cl_status_t host_req_body_pause(cl_request_t* r, int paused) { return r ? r->pause_body(paused != 0) : CL_EINVAL; }

cl_status_t host_req_file_at(cl_request_t* r, size_t index, cl_file_info_t* out);
cl_status_t host_req_file_take(cl_request_t* r, size_t index, cl_str_t dest);

cl_status_t host_req_local_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  if (!r || !ip) return CL_EINVAL;
  cl_status_t st = r->addresses();
  if (st != CL_OK) return st;
  *ip = cs(r->local_ip);
  if (port) *port = r->local_port;
  return CL_OK;
}

cl_status_t host_req_peer_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  if (!r || !ip) return CL_EINVAL;
  cl_status_t st = r->addresses();
  if (st != CL_OK) return st;
  *ip = cs(r->peer_ip);
  if (port) *port = r->peer_port;
  return CL_OK;
}

cl_status_t host_req_on_close(cl_request_t* r, cl_req_close_cb cb, void* ud) {
  if (!r) return CL_EINVAL;
  r->close_cb = cb;
  r->close_ud = ud;
  return CL_OK;
}

cl_status_t host_resp_header_add(cl_request_t* r, cl_str_t name, cl_str_t value) {
  return r ? r->add_header(sv(name), sv(value)) : CL_EINVAL;
}
cl_status_t host_resp_send(cl_request_t* r, uint32_t status, cl_str_t ctype, cl_str_t body) {
  return r ? r->send(status, sv(ctype), sv(body)) : CL_EINVAL;
}
cl_status_t host_resp_start(cl_request_t* r, uint32_t status, int64_t len) { return r ? r->start(status, len) : CL_EINVAL; }
cl_status_t host_resp_write(cl_request_t* r, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  if (!r || (!ptr && len)) return CL_EINVAL;
  return r->write(ptr, len, done, hint);
}
cl_status_t host_resp_end(cl_request_t* r) { return r ? r->end() : CL_EINVAL; }

cl_status_t host_resp_file(cl_request_t* r, cl_str_t path, cl_str_t ctype);

cl_status_t host_sse_start(cl_request_t* r) { return r ? r->sse_start() : CL_EINVAL; }
cl_status_t host_sse_send(cl_request_t* r, cl_str_t event, cl_str_t data) {
  return r ? r->sse_send(sv(event), sv(data)) : CL_EINVAL;
}

}  // namespace

// ---- files of form requests (need the form reader) ---------------------------------------------------------
#include "http/form_reader.h"

namespace {

cl_status_t host_req_file_at(cl_request_t* r, size_t index, cl_file_info_t* out) {
  if (!r || !out || out->struct_size < sizeof(uint32_t)) return CL_EINVAL;
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
  if (!r) return CL_EINVAL;
  auto* h = static_cast<cl_host_s*>(r->owner);
  if (!h) return CL_EINVAL;
  if (!r->form || index >= r->form->files().size()) return CL_ENOENT;
  if (!safe_relative(sv(dest))) return CL_EINVAL;
  cl_buf_t dir{nullptr, 0};
  if (host_host_get(h, cl_str_t{"plugin_data_dir", 15}, &dir) != CL_OK) return CL_EIO;
  std::string abs = std::string(dir.ptr, dir.len) + "/" + std::string(sv(dest));
  host_buf_free(h, &dir);
  std::string error;
  cl_status_t st = r->form->take_file(index, abs, &error);
  if (st == CL_EIO) cloudlet::log::error(h->name(), "moving an upload to {}: {}", abs, error);
  return st;
}

cl_status_t host_resp_file(cl_request_t* r, cl_str_t path, cl_str_t ctype) {
  if (!r) return CL_EINVAL;
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

}  // namespace

namespace cloudlet {

const cl_host_api_t* host_api_table() {
  // Filled once, in slot order. Appending a slot: add it here and to abi/cloudlet_plugin.h's end.
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

}  // namespace cloudlet

std::string cl_host_s::collection(std::string_view coll) const {
  std::string out;
  cloudlet::Store::plugin_collection(spec.name, coll, &out);  // names were validated by the trampolines
  return out;
}

void cl_host_s::release_all() {
  Loop& loop = svc->loop;
  if (!timers.empty() || !io.empty() || !subs.empty() || !calls.empty() || !requests.empty()) {
    cloudlet::log::info(name(), "released {} timer(s), {} watch(es), {} subscription(s), {} pending call(s), "
                        "{} request(s)", timers.size(), io.size(), subs.size(), calls.size(), requests.size());
  }
  for (uint64_t id : timers) loop.timer_stop(id);
  timers.clear();
  for (auto& [id, w] : io) close_watch(w);
  io.clear();
  for (uint64_t id : subs) svc->events.unsubscribe(id);
  subs.clear();
  svc->events.remove_owner(this);
  svc->ops.remove_owner(this);
  svc->server.remove_routes(this);
  for (cl_op_call_s* c : calls) {
    live_calls().erase(c);
    c->reply.error(CL_ECANCELED, "the plugin was unloaded before answering");
    delete c;
  }
  calls.clear();
  for (uint64_t id : work) loop.cancel_work(id);
  if (txn) {
    delete txn;
    txn = nullptr;
  }
  // Requests still owned by the plugin: answer them (503) if their client waits, else free them.
  std::set<cl_request_s*> left;
  left.swap(requests);
  for (cl_request_s* r : left) {
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
