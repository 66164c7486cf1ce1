#include "fakehost.h"

#include <dlfcn.h>
#include <strings.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <set>

#include "http/router.h"
#include "http/url.h"

using cloudlet::test::FakeHost;

// The fake's own request object (the real one lives in core/http/request.h, which is not linked here).
struct cl_request_s {
  FakeHost* fh = nullptr;
  std::string method, path, query, body;
  std::vector<std::pair<std::string, std::string>> headers;
  cloudlet::http::Params path_params, params;
  FakeHost::Response* resp = nullptr;
  bool started = false, ended = false, sse = false;
  cl_req_close_cb close_cb = nullptr;
  void* close_ud = nullptr;
  std::string local_ip, peer_ip;
};

struct cl_host_s {
  FakeHost* fh;
};

struct cl_txn_s {
  FakeHost* fh;
  std::map<std::string, std::map<std::string, std::optional<std::string>>> writes;
};

struct cl_op_call_s {
  FakeHost* fh;
  std::function<void(cl_status_t, std::string)> reply;
};

struct FakeHost::Impl {
  FakeHost* self;
  cl_host_s host{nullptr};
  const cl_plugin_desc_t* desc = nullptr;
  void* dl = nullptr;
  void* state = nullptr;
  bool initializing = false;
  uint64_t next_id = 1;

  struct Timer {
    uv_timer_t handle;
    Impl* impl;
    uint64_t id;
    cl_timer_cb cb;
    void* ud;
    bool repeat;
  };
  std::map<uint64_t, Timer*> timers;

  struct Watch {
    uv_poll_t poll;
    Impl* impl;
    uint64_t id;
    int fd;
    cl_io_cb cb;
    void* ud;
  };
  std::map<uint64_t, Watch*> watches;

  struct Work {
    uv_work_t req;
    Impl* impl;
    uint64_t id;
    cl_work_cb work;
    cl_done_cb done;
    void* ud;
  };
  std::map<uint64_t, Work*> work;

  // post: a mutex-guarded queue plus uv_async (items never coalesce).
  uv_async_t async;
  std::mutex post_mutex;
  std::vector<std::pair<cl_post_cb, void*>> posts;

  struct Sub {
    std::string pattern;
    cl_event_cb cb;
    void* ud;
  };
  std::map<uint64_t, Sub> subs;
  std::deque<std::pair<std::string, std::string>> events;  // waiting for delivery

  struct PluginOp {
    cl_op_cb cb;
    void* ud;
  };
  std::map<std::string, PluginOp> plugin_ops;
  std::map<std::string, OpHandler> provided_ops;
  std::deque<std::function<void()>> deferred;  // async completions (op results)

  cloudlet::http::Router router;  // one router per listener name, keyed below
  std::map<std::string, cloudlet::http::Router> routers;

  cl_txn_s* txn = nullptr;
};

namespace {

std::string_view sv(cl_str_t s) { return std::string_view(s.ptr ? s.ptr : "", s.ptr ? s.len : 0); }
cl_str_t cs(std::string_view s) { return cl_str_t{s.data(), s.size()}; }
FakeHost* fh_of(cl_host_t* h) { return h->fh; }

cl_status_t copy_out(const std::string& v, cl_buf_t* out) {
  out->ptr = static_cast<char*>(malloc(v.size() + 1));
  memcpy(out->ptr, v.data(), v.size());
  out->ptr[v.size()] = '\0';
  out->len = v.size();
  return CL_OK;
}

bool topic_matches(const std::string& pattern, std::string_view topic) {
  if (pattern == "*") return true;
  if (pattern.size() >= 2 && pattern.compare(pattern.size() - 2, 2, ".*") == 0) {
    return topic.substr(0, pattern.size() - 1) == std::string_view(pattern).substr(0, pattern.size() - 1);
  }
  return pattern == topic;
}

// ---- slots ----

void f_log(cl_host_t* h, int32_t level, cl_str_t msg) {
  auto* fh = fh_of(h);
  std::lock_guard<std::mutex> lock(fh->impl->post_mutex);
  fh->logs.push_back({level, std::string(sv(msg))});
}
int f_log_enabled(cl_host_t*, int32_t) { return 1; }
const char* f_strerror(cl_status_t st) { return st == CL_OK ? "ok" : "error"; }
void f_buf_free(cl_host_t*, cl_buf_t* b) {
  free(b->ptr);
  b->ptr = nullptr;
  b->len = 0;
}
cl_status_t f_host_get(cl_host_t* h, cl_str_t key, cl_buf_t* out) {
  auto* fh = fh_of(h);
  auto it = fh->facts.find(std::string(sv(key)));
  if (it == fh->facts.end()) return CL_ENOENT;
  return copy_out(it->second, out);
}
uint64_t f_now_ms(cl_host_t* h) { return uv_now(fh_of(h)->loop()); }

cl_status_t f_timer_start(cl_host_t* h, uint64_t timeout, uint64_t repeat, cl_timer_cb cb, void* ud,
                          cl_timer_id_t* out) {
  auto* impl = fh_of(h)->impl.get();
  if (!cb) return CL_EINVAL;
  auto* t = new FakeHost::Impl::Timer{{}, impl, impl->next_id++, cb, ud, repeat > 0};
  uv_timer_init(fh_of(h)->loop(), &t->handle);
  t->handle.data = t;
  impl->timers[t->id] = t;
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* handle) {
        auto* timer = static_cast<FakeHost::Impl::Timer*>(handle->data);
        uint64_t id = timer->id;
        cl_timer_cb fn = timer->cb;
        void* data = timer->ud;
        if (!timer->repeat) {
          timer->impl->timers.erase(id);
          uv_close(reinterpret_cast<uv_handle_t*>(handle),
                   [](uv_handle_t* x) { delete static_cast<FakeHost::Impl::Timer*>(x->data); });
        }
        fn(data, id);
      },
      timeout, repeat);
  if (out) *out = t->id;
  return CL_OK;
}

cl_status_t f_timer_stop(cl_host_t* h, cl_timer_id_t id) {
  auto* impl = fh_of(h)->impl.get();
  auto it = impl->timers.find(id);
  if (it == impl->timers.end()) return CL_ENOENT;
  uv_timer_stop(&it->second->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&it->second->handle),
           [](uv_handle_t* x) { delete static_cast<FakeHost::Impl::Timer*>(x->data); });
  impl->timers.erase(it);
  return CL_OK;
}

cl_status_t f_post(cl_host_t* h, cl_post_cb cb, void* ud) {
  auto* impl = fh_of(h)->impl.get();
  {
    std::lock_guard<std::mutex> lock(impl->post_mutex);
    impl->posts.emplace_back(cb, ud);
  }
  uv_async_send(&impl->async);
  return CL_OK;
}

cl_status_t f_work_queue(cl_host_t* h, cl_work_cb work, cl_done_cb done, void* ud, cl_work_id_t* out) {
  auto* impl = fh_of(h)->impl.get();
  if (!work) return CL_EINVAL;
  auto* w = new FakeHost::Impl::Work{{}, impl, impl->next_id++, work, done, ud};
  w->req.data = w;
  impl->work[w->id] = w;
  uv_queue_work(
      fh_of(h)->loop(), &w->req, [](uv_work_t* r) { auto* x = static_cast<FakeHost::Impl::Work*>(r->data); x->work(x->ud); },
      [](uv_work_t* r, int status) {
        auto* x = static_cast<FakeHost::Impl::Work*>(r->data);
        x->impl->work.erase(x->id);
        if (x->done) x->done(x->ud, status == UV_ECANCELED ? CL_ECANCELED : CL_OK);
        delete x;
      });
  if (out) *out = w->id;
  return CL_OK;
}

cl_status_t f_work_cancel(cl_host_t* h, cl_work_id_t id) {
  auto* impl = fh_of(h)->impl.get();
  auto it = impl->work.find(id);
  if (it == impl->work.end()) return CL_ENOENT;
  return uv_cancel(reinterpret_cast<uv_req_t*>(&it->second->req)) == 0 ? CL_OK : CL_EBUSY;
}

int uv_events(uint32_t e) {
  return ((e & CL_IO_READABLE) ? UV_READABLE : 0) | ((e & CL_IO_WRITABLE) ? UV_WRITABLE : 0) | UV_DISCONNECT;
}

cl_status_t f_io_start(cl_host_t* h, int fd, uint32_t events, cl_io_cb cb, void* ud, cl_io_id_t* out) {
  auto* impl = fh_of(h)->impl.get();
  if (fd < 0 || !cb) return CL_EINVAL;
  for (auto& [id, w] : impl->watches) {
    if (w->fd == fd) return CL_EEXIST;
  }
  auto* w = new FakeHost::Impl::Watch{{}, impl, impl->next_id++, fd, cb, ud};
  if (uv_poll_init(fh_of(h)->loop(), &w->poll, fd) != 0) {
    delete w;
    return CL_EINVAL;
  }
  w->poll.data = w;
  uv_poll_start(&w->poll, uv_events(events), [](uv_poll_t* p, int status, int ev) {
    auto* x = static_cast<FakeHost::Impl::Watch*>(p->data);
    uint32_t e = ((ev & UV_READABLE) ? CL_IO_READABLE : 0) | ((ev & UV_WRITABLE) ? CL_IO_WRITABLE : 0) |
                 ((ev & UV_DISCONNECT) ? CL_IO_DISCONNECT : 0);
    x->cb(x->ud, x->id, status < 0 ? CL_EIO : CL_OK, e);
  });
  impl->watches[w->id] = w;
  if (out) *out = w->id;
  return CL_OK;
}

cl_status_t f_io_update(cl_host_t* h, cl_io_id_t id, uint32_t events) {
  auto* impl = fh_of(h)->impl.get();
  auto it = impl->watches.find(id);
  if (it == impl->watches.end()) return CL_ENOENT;
  uv_poll_start(&it->second->poll, uv_events(events), it->second->poll.poll_cb);
  return CL_OK;
}

cl_status_t f_io_stop(cl_host_t* h, cl_io_id_t id) {
  auto* impl = fh_of(h)->impl.get();
  auto it = impl->watches.find(id);
  if (it == impl->watches.end()) return CL_ENOENT;
  uv_poll_stop(&it->second->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&it->second->poll),
           [](uv_handle_t* x) { delete static_cast<FakeHost::Impl::Watch*>(x->data); });
  impl->watches.erase(it);
  return CL_OK;
}

cl_status_t f_event_subscribe(cl_host_t* h, cl_str_t topic, cl_event_cb cb, void* ud, cl_sub_id_t* out) {
  auto* impl = fh_of(h)->impl.get();
  if (!cb || topic.len == 0) return CL_EINVAL;
  uint64_t id = impl->next_id++;
  impl->subs[id] = {std::string(sv(topic)), cb, ud};
  if (out) *out = id;
  return CL_OK;
}

cl_status_t f_event_unsubscribe(cl_host_t* h, cl_sub_id_t id) {
  return fh_of(h)->impl->subs.erase(id) ? CL_OK : CL_ENOENT;
}

cl_status_t f_event_publish(cl_host_t* h, cl_str_t topic, cl_str_t payload) {
  auto* fh = fh_of(h);
  fh->published.emplace_back(std::string(sv(topic)), std::string(sv(payload)));
  fh->impl->events.emplace_back(std::string(sv(topic)), std::string(sv(payload)));
  return CL_OK;
}

cl_status_t f_op_register(cl_host_t* h, cl_str_t name, cl_op_cb cb, void* ud) {
  auto* impl = fh_of(h)->impl.get();
  std::string n(sv(name));
  if (n.empty() || !cb) return CL_EINVAL;
  if (impl->plugin_ops.count(n) || impl->provided_ops.count(n)) return CL_EEXIST;
  impl->plugin_ops[n] = {cb, ud};
  return CL_OK;
}

cl_status_t f_op_call(cl_host_t* h, cl_str_t name, cl_str_t args, cl_op_done_cb cb, void* ud) {
  auto* fh = fh_of(h);
  auto* impl = fh->impl.get();
  std::string n(sv(name)), a(sv(args));
  if (!cb) return CL_EINVAL;
  auto reply = [impl, cb, ud](cl_status_t st, std::string result) {
    impl->deferred.push_back([cb, ud, st, result] { cb(ud, st, cs(result)); });
  };
  if (auto it = impl->provided_ops.find(n); it != impl->provided_ops.end()) {
    it->second(a, reply);
    return CL_OK;
  }
  if (auto it = impl->plugin_ops.find(n); it != impl->plugin_ops.end()) {
    auto* call = new cl_op_call_s{fh, reply};
    cl_status_t st = it->second.cb(it->second.ud, call, cs(a));
    if (st != CL_OK) {
      reply(st, "{\"error\":\"refused\"}");
      delete call;
    }
    return CL_OK;
  }
  return CL_ENOENT;
}

cl_status_t f_op_reply(cl_op_call_t* call, cl_status_t st, cl_str_t result) {
  if (!call) return CL_EINVAL;
  call->reply(st, std::string(sv(result)));
  delete call;
  return CL_OK;
}

cl_status_t f_store_get(cl_host_t* h, cl_str_t coll, cl_str_t key, cl_buf_t* out) {
  auto& s = fh_of(h)->store;
  auto c = s.find(std::string(sv(coll)));
  if (c == s.end()) return CL_ENOENT;
  auto k = c->second.find(std::string(sv(key)));
  if (k == c->second.end()) return CL_ENOENT;
  return copy_out(k->second, out);
}

cl_status_t f_store_scan(cl_host_t* h, cl_str_t coll, cl_str_t prefix, cl_scan_cb cb, void* ud) {
  auto& s = fh_of(h)->store;
  auto c = s.find(std::string(sv(coll)));
  if (c == s.end()) return CL_OK;
  std::string p(sv(prefix));
  for (auto it = c->second.lower_bound(p); it != c->second.end() && it->first.compare(0, p.size(), p) == 0; ++it) {
    if (cb(ud, cs(it->first), cs(it->second)) != 0) break;
  }
  return CL_OK;
}

cl_status_t f_txn_begin(cl_host_t* h, cl_txn_t** out) {
  auto* impl = fh_of(h)->impl.get();
  if (impl->txn) return CL_EBUSY;
  impl->txn = new cl_txn_s{fh_of(h), {}};
  *out = impl->txn;
  return CL_OK;
}

cl_status_t f_txn_get(cl_txn_t* t, cl_str_t coll, cl_str_t key, cl_buf_t* out) {
  auto c = t->writes.find(std::string(sv(coll)));
  if (c != t->writes.end()) {
    auto k = c->second.find(std::string(sv(key)));
    if (k != c->second.end()) return k->second ? copy_out(*k->second, out) : CL_ENOENT;
  }
  cl_host_s h{t->fh};
  return f_store_get(&h, coll, key, out);
}

cl_status_t f_txn_put(cl_txn_t* t, cl_str_t coll, cl_str_t key, cl_str_t value) {
  if (key.len == 0) return CL_EINVAL;
  t->writes[std::string(sv(coll))][std::string(sv(key))] = std::string(sv(value));
  return CL_OK;
}

cl_status_t f_txn_del(cl_txn_t* t, cl_str_t coll, cl_str_t key) {
  t->writes[std::string(sv(coll))][std::string(sv(key))] = std::nullopt;
  return CL_OK;
}

cl_status_t f_txn_commit(cl_txn_t* t, cl_commit_cb cb, void* ud) {
  FakeHost* fh = t->fh;
  for (auto& [coll, kv] : t->writes) {
    for (auto& [k, v] : kv) {
      if (v) {
        fh->store[coll][k] = *v;
      } else {
        fh->store[coll].erase(k);
      }
    }
  }
  fh->commits++;
  fh->impl->txn = nullptr;
  delete t;
  if (cb) fh->impl->deferred.push_back([cb, ud] { cb(ud, CL_OK); });
  return CL_OK;
}

void f_txn_abort(cl_txn_t* t) {
  t->fh->impl->txn = nullptr;
  delete t;
}

cl_status_t f_route_add(cl_host_t* h, const cl_route_desc_t* d) {
  auto* fh = fh_of(h);
  if (!d || !d->pattern || !d->listener || !d->handler) return CL_EINVAL;
  if (!fh->impl->initializing) return CL_ESTATE;
  cloudlet::http::Route r;
  r.method = d->method ? d->method : "";
  r.pattern = d->pattern;
  r.flags = d->flags;
  cl_route_cb cb = d->handler;
  void* ud = d->ud;
  r.handler = [cb, ud](cl_request_s& req) { return cb(ud, &req); };
  cl_status_t st = fh->impl->routers[d->listener].add(std::move(r));
  if (st == CL_OK) fh->routes.push_back({d->listener, d->method ? d->method : "", d->pattern, d->flags});
  return st;
}

cl_str_t f_req_method(cl_request_t* r) { return cs(r->method); }
cl_str_t f_req_path(cl_request_t* r) { return cs(r->path); }
cl_str_t f_req_query(cl_request_t* r) { return cs(r->query); }
cl_status_t f_req_header(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  for (auto& [k, v] : r->headers) {
    if (k.size() == name.len && strncasecmp(k.data(), name.ptr, k.size()) == 0) {
      *out = cs(v);
      return CL_OK;
    }
  }
  return CL_ENOENT;
}
cl_status_t f_req_param(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  for (auto* list : {&r->path_params, &r->params}) {
    for (auto& [k, v] : *list) {
      if (k == sv(name)) {
        *out = cs(v);
        return CL_OK;
      }
    }
  }
  return CL_ENOENT;
}
cl_status_t f_req_param_at(cl_request_t* r, size_t i, cl_str_t* name, cl_str_t* value) {
  if (i >= r->params.size()) return CL_ENOENT;
  *name = cs(r->params[i].first);
  *value = cs(r->params[i].second);
  return CL_OK;
}
cl_str_t f_req_body(cl_request_t* r) { return cs(r->body); }
cl_status_t f_req_body_read(cl_request_t*, cl_body_cb, void*) { return CL_ESTATE; }
cl_status_t f_req_body_pause(cl_request_t*, int) { return CL_ESTATE; }
cl_status_t f_req_file_at(cl_request_t*, size_t, cl_file_info_t*) { return CL_ENOENT; }
cl_status_t f_req_file_take(cl_request_t*, size_t, cl_str_t) { return CL_ENOENT; }
cl_status_t f_req_local_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  *ip = cs(r->local_ip);
  if (port) *port = r->fh->local_port;
  return CL_OK;
}
cl_status_t f_req_peer_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  *ip = cs(r->peer_ip);
  if (port) *port = 40000;
  return CL_OK;
}
cl_status_t f_req_on_close(cl_request_t* r, cl_req_close_cb cb, void* ud) {
  r->close_cb = cb;
  r->close_ud = ud;
  return CL_OK;
}
cl_status_t f_resp_header_add(cl_request_t* r, cl_str_t name, cl_str_t value) {
  if (r->started || r->ended) return CL_ESTATE;
  r->resp->headers.emplace_back(std::string(sv(name)), std::string(sv(value)));
  return CL_OK;
}
cl_status_t f_resp_send(cl_request_t* r, uint32_t status, cl_str_t ctype, cl_str_t body) {
  if (r->started || r->ended) return CL_ESTATE;
  r->resp->status = status;
  if (ctype.len) r->resp->headers.emplace_back("Content-Type", std::string(sv(ctype)));
  r->resp->headers.emplace_back("Content-Length", std::to_string(body.len));
  r->resp->body.assign(sv(body));
  r->resp->complete = true;
  delete r;
  return CL_OK;
}
cl_status_t f_resp_start(cl_request_t* r, uint32_t status, int64_t len) {
  if (r->started || r->ended) return CL_ESTATE;
  r->started = true;
  r->resp->status = status;
  if (len >= 0) r->resp->headers.emplace_back("Content-Length", std::to_string(len));
  return CL_OK;
}
cl_status_t f_resp_write(cl_request_t* r, const void* p, size_t len, cl_free_cb done, void* hint) {
  if (!r->started) return CL_ESTATE;
  r->resp->body.append(static_cast<const char*>(p), len);
  if (done) r->fh->impl->deferred.push_back([done, p, hint] { done(const_cast<void*>(p), hint); });
  return CL_OK;
}
cl_status_t f_resp_end(cl_request_t* r) {
  if (!r->started) return CL_ESTATE;
  r->resp->complete = true;
  delete r;
  return CL_OK;
}
cl_status_t f_resp_file(cl_request_t* r, cl_str_t path, cl_str_t ctype) {
  FILE* f = fopen(std::string(sv(path)).c_str(), "rb");
  if (!f) return CL_ENOENT;
  std::string data;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
  fclose(f);
  return f_resp_send(r, 200, ctype, cs(data));
}
cl_status_t f_sse_start(cl_request_t* r) {
  r->sse = true;
  r->resp->headers.emplace_back("Content-Type", "text/event-stream");
  return f_resp_start(r, 200, -1);
}
cl_status_t f_sse_send(cl_request_t* r, cl_str_t event, cl_str_t data) {
  if (!r->sse) return CL_ESTATE;
  std::string msg;
  if (event.len) msg += "event: " + std::string(sv(event)) + "\n";
  msg += "data: " + std::string(sv(data)) + "\n\n";
  r->resp->body += msg;
  return CL_OK;
}

const cl_host_api_t kTable = [] {
  cl_host_api_t t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  t.abi_major = CL_ABI_MAJOR;
  t.abi_minor = CL_ABI_MINOR;
  t.log = f_log;
  t.log_enabled = f_log_enabled;
  t.strerror = f_strerror;
  t.buf_free = f_buf_free;
  t.host_get = f_host_get;
  t.now_ms = f_now_ms;
  t.timer_start = f_timer_start;
  t.timer_stop = f_timer_stop;
  t.post = f_post;
  t.work_queue = f_work_queue;
  t.work_cancel = f_work_cancel;
  t.io_start = f_io_start;
  t.io_update = f_io_update;
  t.io_stop = f_io_stop;
  t.event_subscribe = f_event_subscribe;
  t.event_unsubscribe = f_event_unsubscribe;
  t.event_publish = f_event_publish;
  t.op_register = f_op_register;
  t.op_call = f_op_call;
  t.op_reply = f_op_reply;
  t.store_get = f_store_get;
  t.store_scan = f_store_scan;
  t.txn_begin = f_txn_begin;
  t.txn_get = f_txn_get;
  t.txn_put = f_txn_put;
  t.txn_del = f_txn_del;
  t.txn_commit = f_txn_commit;
  t.txn_abort = f_txn_abort;
  t.route_add = f_route_add;
  t.req_method = f_req_method;
  t.req_path = f_req_path;
  t.req_query = f_req_query;
  t.req_header = f_req_header;
  t.req_param = f_req_param;
  t.req_param_at = f_req_param_at;
  t.req_body = f_req_body;
  t.req_body_read = f_req_body_read;
  t.req_body_pause = f_req_body_pause;
  t.req_file_at = f_req_file_at;
  t.req_file_take = f_req_file_take;
  t.req_local_addr = f_req_local_addr;
  t.req_peer_addr = f_req_peer_addr;
  t.req_on_close = f_req_on_close;
  t.resp_header_add = f_resp_header_add;
  t.resp_send = f_resp_send;
  t.resp_start = f_resp_start;
  t.resp_write = f_resp_write;
  t.resp_end = f_resp_end;
  t.resp_file = f_resp_file;
  t.sse_start = f_sse_start;
  t.sse_send = f_sse_send;
  return t;
}();

}  // namespace

namespace cloudlet::test {

std::string FakeHost::Response::header(const std::string& name) const {
  for (auto& [k, v] : headers) {
    if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
  }
  return "";
}

FakeHost::FakeHost(std::string plugin_name) : impl(std::make_unique<Impl>()) {
  uv_loop_init(&loop_);
  impl->self = this;
  impl->host.fh = this;
  uv_async_init(&loop_, &impl->async, [](uv_async_t* a) {
    auto* i = static_cast<Impl*>(a->data);
    std::vector<std::pair<cl_post_cb, void*>> batch;
    {
      std::lock_guard<std::mutex> lock(i->post_mutex);
      batch.swap(i->posts);
    }
    for (auto& [cb, ud] : batch) cb(ud);
  });
  impl->async.data = impl.get();
  uv_unref(reinterpret_cast<uv_handle_t*>(&impl->async));
  facts["version"] = "test";
  facts["cloudlet_name"] = "testlet";
  facts["api_mode"] = "open";
  facts["data_dir"] = "/tmp";
  facts["plugin_data_dir"] = "/tmp";
  (void)plugin_name;
}

FakeHost::~FakeHost() {
  if (impl->desc) unload();
  uv_close(reinterpret_cast<uv_handle_t*>(&impl->async), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  if (impl->dl) dlclose(impl->dl);
}

const cl_host_api_t* FakeHost::api() const { return &kTable; }
cl_host_t* FakeHost::host() { return &impl->host; }

cl_status_t FakeHost::init(const cl_plugin_desc_t* desc, const std::string& config_json) {
  if (!desc || desc->abi_major != CL_ABI_MAJOR || desc->abi_minor > CL_ABI_MINOR || !desc->init) return CL_ENOTSUP;
  impl->desc = desc;
  impl->initializing = true;
  cl_status_t st = desc->init(host(), api(), cs(config_json), &impl->state);
  impl->initializing = false;
  if (st != CL_OK) impl->desc = nullptr;
  return st;
}

cl_status_t FakeHost::load(const std::string& so_path, const std::string& config_json, std::string* error) {
  impl->dl = dlopen(so_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!impl->dl) {
    if (error) *error = dlerror();
    return CL_EIO;
  }
  auto entry = reinterpret_cast<cl_plugin_entry_v1_fn>(dlsym(impl->dl, CL_PLUGIN_ENTRY_V1));
  if (!entry) {
    if (error) *error = "no entry symbol";
    return CL_EINVAL;
  }
  return init(entry(), config_json);
}

size_t FakeHost::unload() {
  if (!impl->desc) return 0;
  if (impl->desc->fini) impl->desc->fini(host(), impl->state);
  impl->desc = nullptr;
  run_for(10);
  size_t left = impl->timers.size() + impl->watches.size() + impl->work.size();
  for (auto& [id, t] : impl->timers) {
    uv_close(reinterpret_cast<uv_handle_t*>(&t->handle), [](uv_handle_t* x) { delete static_cast<Impl::Timer*>(x->data); });
  }
  impl->timers.clear();
  for (auto& [id, w] : impl->watches) {
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* x) { delete static_cast<Impl::Watch*>(x->data); });
  }
  impl->watches.clear();
  while (!impl->work.empty()) uv_run(&loop_, UV_RUN_ONCE);
  return left;
}

static void pump(FakeHost::Impl* impl) {
  // Deliver queued events and deferred completions (both asynchronous by contract).
  while (!impl->events.empty() || !impl->deferred.empty()) {
    while (!impl->deferred.empty()) {
      auto fn = std::move(impl->deferred.front());
      impl->deferred.pop_front();
      fn();
    }
    while (!impl->events.empty()) {
      auto [topic, payload] = impl->events.front();
      impl->events.pop_front();
      std::vector<FakeHost::Impl::Sub> subs;
      for (auto& [id, s] : impl->subs) {
        if (topic_matches(s.pattern, topic)) subs.push_back(s);
      }
      for (auto& s : subs) s.cb(s.ud, cs(topic), cs(payload));
    }
  }
}

bool FakeHost::run_until(const std::function<bool()>& cond, uint64_t timeout_ms) {
  uint64_t deadline = uv_hrtime() + timeout_ms * 1000000;
  for (;;) {
    pump(impl.get());
    if (cond()) return true;
    if (uv_hrtime() >= deadline) return false;
    // One loop turn, without sleeping forever when nothing is pending.
    uv_timer_t tick;
    uv_timer_init(&loop_, &tick);
    uv_timer_start(&tick, [](uv_timer_t*) {}, 1, 0);
    uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
}

void FakeHost::run_for(uint64_t ms) {
  uint64_t end = uv_hrtime() + ms * 1000000;
  run_until([&] { return uv_hrtime() >= end; }, ms + 1000);
}

FakeHost::Response FakeHost::request(const std::string& listener, const std::string& method, const std::string& target,
                                     const std::string& body,
                                     const std::vector<std::pair<std::string, std::string>>& headers,
                                     uint64_t timeout_ms) {
  auto resp = std::make_shared<Response>();
  auto* r = new cl_request_s;
  r->fh = this;
  r->method = method;
  r->body = body;
  r->headers = headers;
  r->resp = resp.get();
  r->local_ip = local_ip;
  r->peer_ip = peer_ip;
  size_t q = target.find('?');
  cloudlet::http::percent_decode(target.substr(0, q), &r->path, false);
  if (q != std::string::npos) {
    r->query = target.substr(q + 1);
    cloudlet::http::parse_query(r->query, &r->params);
  }
  std::vector<cloudlet::http::Router::Match> matches;
  std::string allowed;
  impl->routers[listener].match(method, r->path, &matches, &allowed);
  for (auto& m : matches) {
    r->path_params = m.params;
    cl_status_t st = m.route->handler(*r);
    if (st == CL_EDECLINED) continue;
    if (st != CL_OK && !resp->complete) {
      resp->status = st == CL_EINVAL ? 400 : st == CL_ENOENT ? 404 : 500;
      resp->complete = true;
      delete r;
    }
    run_until([&] { return resp->complete; }, timeout_ms);
    return *resp;
  }
  resp->status = allowed.empty() ? 404 : 405;
  resp->complete = true;
  delete r;
  return *resp;
}

std::pair<cl_status_t, std::string> FakeHost::call(const std::string& name, const std::string& args, uint64_t timeout_ms) {
  auto it = impl->plugin_ops.find(name);
  if (it == impl->plugin_ops.end()) return {CL_ENOENT, ""};
  auto result = std::make_shared<std::pair<cl_status_t, std::string>>(CL_EIO, "");
  auto done = std::make_shared<bool>(false);
  auto* call = new cl_op_call_s{this, [result, done](cl_status_t st, std::string json) {
                                  *result = {st, json};
                                  *done = true;
                                }};
  cl_status_t st = it->second.cb(it->second.ud, call, cs(args));
  if (st != CL_OK) {
    delete call;
    return {st, ""};
  }
  if (!run_until([&] { return *done; }, timeout_ms)) return {CL_ETIMEDOUT, ""};
  return *result;
}

void FakeHost::provide(const std::string& name, OpHandler handler) { impl->provided_ops[name] = std::move(handler); }

bool FakeHost::has_operation(const std::string& name) const { return impl->plugin_ops.count(name) > 0; }

void FakeHost::publish(const std::string& topic, const std::string& json) { impl->events.emplace_back(topic, json); }

}  // namespace cloudlet::test
