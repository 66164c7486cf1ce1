#include "fakehost.h"

#include <dlfcn.h>
#include <strings.h>
#include <sys/stat.h>

#include <rapidjson/document.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <set>
#include <thread>

#include "http/header_text.h"
#include "http/router.h"
#include "http/url.h"
#include "plugin/status_text.h"
#if CL_ABI_MINOR >= 1
#include "http/websocket.h"
#include "plugin/json_doc.h"
#include "plugin/fetch_slots.h"
#include "plugin/proc_slots.h"
#include "text/utf8.h"
#endif

using cloudlet::test::FakeHost;

// The fake's own request object (the real one lives in core/http/request.h, which is not linked here).
struct cl_request_s {
  FakeHost* fh = nullptr;
  std::string method, path, query, body;
  std::string stream_body;  // the body of a CL_ROUTE_F_STREAM_BODY route, delivered by req_body_read
  std::vector<std::pair<std::string, std::string>> headers;
  cloudlet::http::Params path_params, params;
  std::shared_ptr<FakeHost::Response> resp;
  uint32_t route_flags = 0;
  bool started = false, sse = false, held = false;
  bool body_open = false;  // req_body_read accepted, final call not delivered yet (owed)
  int64_t content_length = -1;
  uint64_t bytes_out = 0;
  std::string local_ip, peer_ip;
  std::string principal, peer_cert;
  bool in_guard = false;
};

struct cl_host_s {
  FakeHost* fh;
};

struct cl_txn_s {
  FakeHost* fh;
  std::map<std::string, std::map<std::string, std::optional<std::string>>> writes;
};

// Who made a call (op_caller). kind as CL_CALLER_*: 0 the core, 1 a plugin, 2 a plugin for a principal.
struct FakeCaller {
  uint32_t kind = 0;
  std::string plugin, principal;
};

struct cl_op_call_s {
  FakeHost* fh;
  std::function<void(cl_status_t, std::string)> reply;
  FakeCaller caller;
};

#if CL_ABI_MINOR >= 1
// A job the plugin created; its record (what job.get reports) lives in Impl::jobs under the same id.
struct cl_job_s {
  FakeHost* fh;
  std::string id;
  cl_job_cancel_cb cancel;
  void* ud;
  bool finished = false;  // finished by the host at unload: job_finish answers CL_ESTATE until fini
};

// An outbound request the plugin started; deleted after its final body callback returns.
struct cl_fetch_s {
  FakeHost* fh;
  cloudlet::http::Fetch* fetch;
  cl_fetch_response_cb on_response;
  cl_fetch_body_cb on_body;
  void* ud;
};

// A child process the plugin started; deleted after its exit callback returns.
struct cl_proc_s {
  FakeHost* fh;
  cloudlet::Child* child;
  cl_proc_output_cb on_output;
  cl_proc_exit_cb on_exit;
  void* ud;
};

// A WebSocket the plugin accepted; its client end is peer. Deleted after its close callback returns.
struct cl_ws_s {
  FakeHost* fh;
  std::shared_ptr<FakeHost::WebSocket> peer;
  cl_ws_message_cb on_message;
  cl_ws_close_cb on_close;
  void* ud;
  uint64_t max_message;
  bool paused = false;
  bool close_sent = false;      // the server's close frame went out: sends are refused (CL_ECLOSING)
  bool close_received = false;  // the client's close frame was read
  bool ended = false;           // the close callback is scheduled
  // What the client sent and the plugin has not seen yet (held while paused), in order. A close frame is
  // queued too (code set), so messages before it still arrive first.
  struct Incoming {
    int32_t type;
    std::string data;
    uint32_t close_code = 0;  // non-zero: the client's close frame (1005: it had no code)
  };
  std::deque<Incoming> queued;
};
#endif

struct FakeHost::Impl {
  enum Phase { loading, running, unloading, finishing, gone };

  FakeHost* self;
  cl_host_s host{nullptr};
  const cl_plugin_desc_t* desc = nullptr;
  void* dl = nullptr;
  void* state = nullptr;
  std::thread::id loop_thread = std::this_thread::get_id();
  int phase = gone;
  size_t owed = 0;  // completions the plugin is owed (work, lent writes, op results, commits, body streams)
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

  // post: a mutex-guarded queue plus uv_async (items never coalesce); closed just before fini.
  uv_async_t async;
  std::mutex post_mutex;
  bool posts_open = true;
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
    uint32_t flags = 0;
  };
  std::map<std::string, PluginOp> plugin_ops;
  std::map<std::string, OpHandler> provided_ops;
  std::map<std::string, uint32_t> provided_flags;
  std::set<cl_op_call_s*> calls;  // invocations of the plugin's operations not answered yet
  struct Awaited {
    cl_op_done_cb cb;
    void* ud;
    bool delivered = false;
  };
  std::set<std::shared_ptr<Awaited>> awaited;  // op_call results the plugin waits for
  std::deque<std::function<void()>> deferred;  // asynchronous completions, run from a clean stack

  std::map<std::string, cloudlet::http::Router> routers;  // one per listener name
#if CL_ABI_MINOR >= 1
  struct Guard {
    cl_guard_cb cb;  // nullptr once the plugin unloaded: the listener then refuses (503)
    void* ud;
  };
  std::map<std::string, Guard> guards;  // by listener
#endif
  std::set<cl_request_s*> requests;                       // alive (response not complete)

  cl_txn_s* txn = nullptr;
  std::atomic<int64_t> json_docs{0};

  // The job registry (what the core's core/jobs keeps), and the handles of the plugin's unfinished jobs.
  struct Job {
    std::string id, kind, subject, state = "running", message, result = "null";
    double progress = 0;
    cl_status_t status = CL_OK;
    bool cancellable = false, cancel_requested = false;
  };
  std::map<std::string, Job> jobs;
  uint64_t next_job = 1;
#if CL_ABI_MINOR >= 1
  std::map<std::string, cl_job_s*> job_handles;
  std::set<cl_proc_s*> procs;  // child processes whose exit callback has not run
  std::set<cl_ws_s*> websockets;  // accepted WebSockets whose close callback has not run
  std::set<cl_fetch_s*> fetches;  // outbound requests whose final body callback has not run
#endif

  bool on_loop(const char* slot) {
    if (std::this_thread::get_id() == loop_thread) return true;
    std::lock_guard<std::mutex> lock(self->log_mutex);
    self->logs.push_back({CL_LOG_ERROR, std::string(slot) + " called off the loop thread"});
    return false;
  }
  bool open() const { return phase <= running; }
  void settle() {
    if (owed > 0) owed--;
  }
  void finish_request(cl_request_s* r) {
    if (r->body_open) settle();  // completing the response ends the body stream (no more body callbacks)
    r->resp->complete = true;
    requests.erase(r);
    delete r;
  }
};

namespace {

using Impl = FakeHost::Impl;

std::string_view sv(cl_str_t s) { return std::string_view(s.ptr ? s.ptr : "", s.ptr ? s.len : 0); }
cl_str_t cs(std::string_view s) { return cl_str_t{s.data(), s.size()}; }
FakeHost* fh_of(cl_host_t* h) { return h->fh; }
Impl* impl_of(cl_host_t* h) { return h->fh->impl.get(); }
constexpr cl_str_t kEmpty{nullptr, 0};

#define LOOP_ONLY(impl, slot)                     \
  do {                                            \
    if (!(impl)->on_loop(slot)) return CL_ESTATE; \
  } while (0)

cl_status_t copy_out(const std::string& v, cl_buf_t* out) {
  out->ptr = static_cast<char*>(malloc(v.size() + 1));
  if (!out->ptr) return CL_ENOMEM;
  memcpy(out->ptr, v.data(), v.size());
  out->ptr[v.size()] = '\0';
  out->len = v.size();
  return CL_OK;
}

bool is_json(std::string_view text, bool object_only) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  return !d.HasParseError() && (!object_only || d.IsObject());
}

bool name_chars(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

bool topic_matches(const std::string& pattern, std::string_view topic) {
  if (pattern == "*") return true;
  if (pattern.size() >= 2 && pattern.compare(pattern.size() - 2, 2, ".*") == 0) {
    std::string_view prefix = std::string_view(pattern).substr(0, pattern.size() - 1);
    return topic.size() > prefix.size() && topic.substr(0, prefix.size()) == prefix;
  }
  return pattern == topic;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// ---- slots ----

void f_log(cl_host_t* h, int32_t level, cl_str_t msg) {
  auto* fh = fh_of(h);
  std::lock_guard<std::mutex> lock(fh->log_mutex);
  fh->logs.push_back({level, std::string(sv(msg))});
}
int f_log_enabled(cl_host_t*, int32_t) { return 1; }
const char* f_strerror(cl_status_t st) { return cloudlet::status_text(st); }
void f_buf_free(cl_host_t*, cl_buf_t* b) {
  if (!b) return;
  free(b->ptr);
  b->ptr = nullptr;
  b->len = 0;
}
cl_status_t f_host_get(cl_host_t* h, cl_str_t key, cl_buf_t* out) {
  LOOP_ONLY(impl_of(h), "host_get");
  if (!out) return CL_EINVAL;
  *out = cl_buf_t{nullptr, 0};
  auto* fh = fh_of(h);
  auto it = fh->facts.find(std::string(sv(key)));
  if (it == fh->facts.end()) return CL_ENOENT;
  return copy_out(it->second, out);
}
uint64_t f_now_ms(cl_host_t* h) { return impl_of(h)->on_loop("now_ms") ? uv_now(fh_of(h)->loop()) : 0; }

void close_timer(Impl::Timer* t) {
  uv_timer_stop(&t->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->handle), [](uv_handle_t* x) { delete static_cast<Impl::Timer*>(x->data); });
}

cl_status_t f_timer_start(cl_host_t* h, uint64_t timeout, uint64_t repeat, cl_timer_cb cb, void* ud,
                          cl_timer_id_t* out) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "timer_start");
  if (!cb) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  auto* t = new Impl::Timer{{}, impl, impl->next_id++, cb, ud, repeat > 0};
  uv_timer_init(fh_of(h)->loop(), &t->handle);
  t->handle.data = t;
  impl->timers[t->id] = t;
  uv_timer_start(
      &t->handle,
      [](uv_timer_t* handle) {
        auto* timer = static_cast<Impl::Timer*>(handle->data);
        uint64_t id = timer->id;
        cl_timer_cb fn = timer->cb;
        void* data = timer->ud;
        if (!timer->repeat) {
          timer->impl->timers.erase(id);  // forgotten before its callback
          close_timer(timer);
        }
        fn(data, id);
      },
      timeout, repeat);
  if (out) *out = t->id;
  return CL_OK;
}

cl_status_t f_timer_stop(cl_host_t* h, cl_timer_id_t id) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "timer_stop");
  auto it = impl->timers.find(id);
  if (it == impl->timers.end()) return CL_ENOENT;
  close_timer(it->second);
  impl->timers.erase(it);
  return CL_OK;
}

cl_status_t f_post(cl_host_t* h, cl_post_cb cb, void* ud) {
  if (!h || !cb) return CL_EINVAL;
  auto* impl = impl_of(h);
  {
    std::lock_guard<std::mutex> lock(impl->post_mutex);
    if (!impl->posts_open) return CL_ECANCELED;
    impl->posts.emplace_back(cb, ud);
  }
  uv_async_send(&impl->async);
  return CL_OK;
}

cl_status_t f_work_queue(cl_host_t* h, cl_work_cb work, cl_done_cb done, void* ud, cl_work_id_t* out) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "work_queue");
  if (!work) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  auto* w = new Impl::Work{{}, impl, impl->next_id++, work, done, ud};
  w->req.data = w;
  if (uv_queue_work(
          fh_of(h)->loop(), &w->req, [](uv_work_t* r) { auto* x = static_cast<Impl::Work*>(r->data); x->work(x->ud); },
          [](uv_work_t* r, int status) {
            auto* x = static_cast<Impl::Work*>(r->data);
            x->impl->work.erase(x->id);
            if (x->done) x->done(x->ud, status == UV_ECANCELED ? CL_ECANCELED : CL_OK);
            x->impl->settle();
            delete x;
          }) != 0) {
    delete w;
    return CL_EIO;
  }
  impl->work[w->id] = w;
  impl->owed++;
  if (out) *out = w->id;
  return CL_OK;
}

cl_status_t f_work_cancel(cl_host_t* h, cl_work_id_t id) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "work_cancel");
  auto it = impl->work.find(id);
  if (it == impl->work.end()) return CL_ENOENT;
  return uv_cancel(reinterpret_cast<uv_req_t*>(&it->second->req)) == 0 ? CL_OK : CL_EBUSY;
}

int uv_events(uint32_t e) {
  return ((e & CL_IO_READABLE) ? UV_READABLE : 0) | ((e & CL_IO_WRITABLE) ? UV_WRITABLE : 0) | UV_DISCONNECT;
}

void close_watch(Impl::Watch* w) {
  uv_poll_stop(&w->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* x) { delete static_cast<Impl::Watch*>(x->data); });
}

cl_status_t f_io_start(cl_host_t* h, int fd, uint32_t events, cl_io_cb cb, void* ud, cl_io_id_t* out) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "io_start");
  if (fd < 0 || !cb) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  for (auto& [id, w] : impl->watches) {
    if (w->fd == fd) return CL_EEXIST;
  }
  auto* w = new Impl::Watch{{}, impl, impl->next_id++, fd, cb, ud};
  if (uv_poll_init(fh_of(h)->loop(), &w->poll, fd) != 0) {
    delete w;
    return CL_EINVAL;
  }
  w->poll.data = w;
  uv_poll_start(&w->poll, uv_events(events), [](uv_poll_t* p, int status, int ev) {
    auto* x = static_cast<Impl::Watch*>(p->data);
    uint32_t e = ((ev & UV_READABLE) ? CL_IO_READABLE : 0) | ((ev & UV_WRITABLE) ? CL_IO_WRITABLE : 0) |
                 ((ev & UV_DISCONNECT) ? CL_IO_DISCONNECT : 0);
    x->cb(x->ud, x->id, status < 0 ? CL_EIO : CL_OK, e);
  });
  impl->watches[w->id] = w;
  if (out) *out = w->id;
  return CL_OK;
}

cl_status_t f_io_update(cl_host_t* h, cl_io_id_t id, uint32_t events) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "io_update");
  auto it = impl->watches.find(id);
  if (it == impl->watches.end()) return CL_ENOENT;
  uv_poll_start(&it->second->poll, uv_events(events), it->second->poll.poll_cb);
  return CL_OK;
}

cl_status_t f_io_stop(cl_host_t* h, cl_io_id_t id) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "io_stop");
  auto it = impl->watches.find(id);
  if (it == impl->watches.end()) return CL_ENOENT;
  close_watch(it->second);
  impl->watches.erase(it);
  return CL_OK;
}

cl_status_t f_event_subscribe(cl_host_t* h, cl_str_t topic, cl_event_cb cb, void* ud, cl_sub_id_t* out) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "event_subscribe");
  std::string_view t = sv(topic);
  std::string_view base = t.size() >= 2 && t.substr(t.size() - 2) == ".*" ? t.substr(0, t.size() - 2) : t;
  if (!cb || (t != "*" && !name_chars(base, 128))) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  uint64_t id = impl->next_id++;
  impl->subs[id] = {std::string(t), cb, ud};
  if (out) *out = id;
  return CL_OK;
}

cl_status_t f_event_unsubscribe(cl_host_t* h, cl_sub_id_t id) {
  LOOP_ONLY(impl_of(h), "event_unsubscribe");
  return impl_of(h)->subs.erase(id) ? CL_OK : CL_ENOENT;
}

cl_status_t f_event_publish(cl_host_t* h, cl_str_t topic, cl_str_t payload) {
  auto* fh = fh_of(h);
  LOOP_ONLY(fh->impl, "event_publish");
  if (!name_chars(sv(topic), 128) || !is_json(sv(payload), true)) return CL_EINVAL;
  fh->published.emplace_back(std::string(sv(topic)), std::string(sv(payload)));
  fh->impl->events.emplace_back(std::string(sv(topic)), std::string(sv(payload)));
  return CL_OK;
}

std::string error_object(cl_status_t st) {
  return std::string("{\"error\":\"operation failed: ") + cloudlet::status_text(st) + "\"}";
}

cl_status_t f_op_register(cl_host_t* h, cl_str_t name, cl_op_cb cb, void* ud) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "op_register");
  std::string n(sv(name));
  if (!name_chars(n, 64) || !cb) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  if (impl->plugin_ops.count(n) || impl->provided_ops.count(n)) return CL_EEXIST;
  impl->plugin_ops[n] = {cb, ud};
  return CL_OK;
}

// Every invocation not answered yet, across fake hosts: a second op_reply is refused without following the
// dead pointer.
std::set<cl_op_call_s*>& live_calls() {
  static std::set<cl_op_call_s*> calls;
  return calls;
}

// Invokes one of the plugin's operations; reply is called exactly once (by op_reply, or here on refusal).
void invoke_plugin_op(Impl* impl, const Impl::PluginOp& op, const std::string& args,
                      std::function<void(cl_status_t, std::string)> reply, FakeCaller caller = {}) {
  auto* call = new cl_op_call_s{impl->self, std::move(reply), std::move(caller)};
  impl->calls.insert(call);
  live_calls().insert(call);
  cl_status_t st = op.cb(op.ud, call, cs(args));
  if (st != CL_OK && impl->calls.erase(call)) {
    live_calls().erase(call);
    call->reply(st, error_object(st));
    delete call;
  }
}

bool granted(Impl* impl, const std::string& op) {
  for (const auto& g : impl->self->grants) {
    if (g == op) return true;
  }
  return false;
}

// op_call and op_call_as: the plugin calls as `caller`; privileged operations need a grant.
cl_status_t op_call_from(Impl* impl, FakeCaller caller, cl_str_t name, cl_str_t args, cl_op_done_cb cb, void* ud) {
  std::string n(sv(name)), a(sv(args));
  if (a.empty()) a = "{}";
  if (!cb) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  auto provided = impl->provided_ops.find(n);
  auto plugin = impl->plugin_ops.find(n);
  if (provided == impl->provided_ops.end() && plugin == impl->plugin_ops.end()) return CL_ENOENT;
  uint32_t flags = provided != impl->provided_ops.end() ? impl->provided_flags[n] : plugin->second.flags;
  if ((flags & 1u) && !granted(impl, n)) return CL_EPERM;  // CL_OP_F_PRIVILEGED (1u, also in the 1.0 build)
  if (!is_json(a, true)) return CL_EINVAL;
  auto awaited = std::make_shared<Impl::Awaited>(Impl::Awaited{cb, ud});
  impl->awaited.insert(awaited);
  impl->owed++;
  auto reply = [impl, awaited](cl_status_t st, std::string result) {
    if (st != CL_OK && !is_json(result, true)) result = error_object(st);
    if (result.empty()) result = "{}";
    impl->deferred.push_back([impl, awaited, st, result] {
      if (awaited->delivered) return;  // CL_ECANCELED was delivered at unload
      awaited->delivered = true;
      impl->awaited.erase(awaited);
      awaited->cb(awaited->ud, st, cs(result));
      impl->settle();
    });
  };
  if (provided != impl->provided_ops.end()) {
    provided->second(a, reply);
  } else {
    invoke_plugin_op(impl, plugin->second, a, reply, std::move(caller));
  }
  return CL_OK;
}

FakeCaller plugin_caller(Impl* impl) {
  return FakeCaller{1, impl->desc && impl->desc->name ? impl->desc->name : "", ""};
}

cl_status_t f_op_call(cl_host_t* h, cl_str_t name, cl_str_t args, cl_op_done_cb cb, void* ud) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "op_call");
  return op_call_from(impl, plugin_caller(impl), name, args, cb, ud);
}

cl_status_t f_op_reply(cl_op_call_t* call, cl_status_t st, cl_str_t result) {
  if (!call || !live_calls().count(call)) return CL_ESTATE;  // answered already: compared, never followed
  auto* impl = call->fh->impl.get();
  LOOP_ONLY(impl, "op_reply");
  impl->calls.erase(call);
  live_calls().erase(call);
  call->reply(st, std::string(sv(result)));
  delete call;
  return CL_OK;
}

bool valid_collection(cl_str_t c) { return name_chars(sv(c), 64); }

cl_status_t f_store_get(cl_host_t* h, cl_str_t coll, cl_str_t key, cl_buf_t* out) {
  LOOP_ONLY(impl_of(h), "store_get");
  if (!out) return CL_EINVAL;
  *out = cl_buf_t{nullptr, 0};
  if (!valid_collection(coll) || key.len == 0) return CL_EINVAL;
  auto& s = fh_of(h)->store;
  auto c = s.find(std::string(sv(coll)));
  if (c == s.end()) return CL_ENOENT;
  auto k = c->second.find(std::string(sv(key)));
  if (k == c->second.end()) return CL_ENOENT;
  return copy_out(k->second, out);
}

cl_status_t f_store_scan(cl_host_t* h, cl_str_t coll, cl_str_t prefix, cl_scan_cb cb, void* ud) {
  LOOP_ONLY(impl_of(h), "store_scan");
  if (!cb || !valid_collection(coll)) return CL_EINVAL;
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
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "txn_begin");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (impl->txn) return CL_EBUSY;
  auto* t = new cl_txn_s{fh_of(h), {}};
  impl->txn = t;
  // Like the real store: a transaction may not outlive the loop turn that opened it.
  impl->deferred.push_back([impl, t] {
    if (impl->txn != t) return;
    std::lock_guard<std::mutex> lock(impl->self->log_mutex);
    impl->self->logs.push_back({CL_LOG_ERROR, "store transaction left open past its loop turn: aborted"});
    delete t;
    impl->txn = nullptr;
  });
  *out = t;
  return CL_OK;
}

bool txn_valid(cl_txn_t* t) { return t && t->fh->impl->txn == t; }

cl_status_t f_txn_get(cl_txn_t* t, cl_str_t coll, cl_str_t key, cl_buf_t* out) {
  if (!txn_valid(t) || !out) return CL_EINVAL;
  LOOP_ONLY(t->fh->impl, "txn_get");
  if (!valid_collection(coll) || key.len == 0) return CL_EINVAL;
  auto c = t->writes.find(std::string(sv(coll)));
  if (c != t->writes.end()) {
    auto k = c->second.find(std::string(sv(key)));
    if (k != c->second.end()) return k->second ? copy_out(*k->second, out) : CL_ENOENT;
  }
  cl_host_s h{t->fh};
  return f_store_get(&h, coll, key, out);
}

cl_status_t f_txn_put(cl_txn_t* t, cl_str_t coll, cl_str_t key, cl_str_t value) {
  if (!txn_valid(t)) return CL_EINVAL;
  LOOP_ONLY(t->fh->impl, "txn_put");
  if (!valid_collection(coll) || key.len == 0 || key.len > 400 || !is_json(sv(value), false)) return CL_EINVAL;
  t->writes[std::string(sv(coll))][std::string(sv(key))] = std::string(sv(value));
  return CL_OK;
}

cl_status_t f_txn_del(cl_txn_t* t, cl_str_t coll, cl_str_t key) {
  if (!txn_valid(t)) return CL_EINVAL;
  LOOP_ONLY(t->fh->impl, "txn_del");
  if (!valid_collection(coll) || key.len == 0) return CL_EINVAL;
  t->writes[std::string(sv(coll))][std::string(sv(key))] = std::nullopt;
  return CL_OK;
}

cl_status_t f_txn_commit(cl_txn_t* t, cl_commit_cb cb, void* ud) {
  if (!txn_valid(t)) return CL_EINVAL;
  FakeHost* fh = t->fh;
  auto* impl = fh->impl.get();
  LOOP_ONLY(impl, "txn_commit");
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
  impl->txn = nullptr;
  delete t;
  if (cb && impl->phase <= Impl::unloading) {
    impl->owed++;
    impl->deferred.push_back([impl, cb, ud] {
      cb(ud, CL_OK);
      impl->settle();
    });
  }
  return CL_OK;
}

void f_txn_abort(cl_txn_t* t) {
  if (!txn_valid(t) || !t->fh->impl->on_loop("txn_abort")) return;
  t->fh->impl->txn = nullptr;
  delete t;
}

cl_status_t f_route_add(cl_host_t* h, const cl_route_desc_t* d) {
  auto* fh = fh_of(h);
  LOOP_ONLY(fh->impl, "route_add");
  if (!d || d->struct_size < offsetof(cl_route_desc_t, ud) + sizeof(void*) || !d->pattern || !d->listener ||
      !d->handler) {
    return CL_EINVAL;
  }
  if (fh->impl->phase != Impl::loading) return CL_ESTATE;
  cloudlet::http::Route r;
  r.method = d->method ? d->method : "";
  r.pattern = d->pattern;
  r.flags = d->flags;
  cl_route_cb cb = d->handler;
  void* ud = d->ud;
  Impl* impl = fh->impl.get();
  r.handler = [impl, cb, ud](cl_request_s& req) { return impl->open() ? cb(ud, &req) : CL_EUNAVAIL; };
  cl_status_t st = fh->impl->routers[d->listener].add(std::move(r));
  if (st == CL_OK) fh->routes.push_back({d->listener, d->method ? d->method : "", d->pattern, d->flags});
  return st;
}

#define REQ_LOOP_ONLY(r, slot, refused)                          \
  do {                                                           \
    if (!(r)) return refused;                                    \
    if (!(r)->fh->impl->on_loop(slot)) return refused;           \
  } while (0)

cl_str_t f_req_method(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_method", kEmpty);
  return cs(r->method);
}
cl_str_t f_req_path(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_path", kEmpty);
  return cs(r->path);
}
cl_str_t f_req_query(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_query", kEmpty);
  return cs(r->query);
}
cl_status_t f_req_header(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_header", CL_ESTATE);
  if (!out) return CL_EINVAL;
  for (auto& [k, v] : r->headers) {
    if (iequals(k, sv(name))) {
      *out = cs(v);
      return CL_OK;
    }
  }
  *out = kEmpty;
  return CL_ENOENT;
}
cl_status_t f_req_param(cl_request_t* r, cl_str_t name, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_param", CL_ESTATE);
  if (!out) return CL_EINVAL;
  for (auto* list : {&r->path_params, &r->params}) {
    for (auto& [k, v] : *list) {
      if (k == sv(name)) {
        *out = cs(v);
        return CL_OK;
      }
    }
  }
  *out = kEmpty;
  return CL_ENOENT;
}
cl_status_t f_req_param_at(cl_request_t* r, size_t i, cl_str_t* name, cl_str_t* value) {
  REQ_LOOP_ONLY(r, "req_param_at", CL_ESTATE);
  if (!name || !value) return CL_EINVAL;
  if (i >= r->params.size()) return CL_ENOENT;
  *name = cs(r->params[i].first);
  *value = cs(r->params[i].second);
  return CL_OK;
}
cl_str_t f_req_body(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "req_body", kEmpty);
  return cs(r->body);
}
cl_status_t f_req_body_read(cl_request_t* r, cl_body_cb cb, void* ud) {
  REQ_LOOP_ONLY(r, "req_body_read", CL_ESTATE);
  if (!cb) return CL_EINVAL;
  auto* impl = r->fh->impl.get();
  if (!(r->route_flags & CL_ROUTE_F_STREAM_BODY) || r->body_open || !r->held) return CL_ESTATE;
  if (!impl->open()) return CL_ECANCELED;
  r->body_open = true;
  impl->owed++;
  // The whole body arrived already: one chunk (if any), then the end; nothing once the response is complete.
  impl->deferred.push_back([impl, r, cb, ud] {
    if (!impl->requests.count(r) || !r->body_open) return;
    if (!r->stream_body.empty()) {
      std::string chunk = std::move(r->stream_body);
      cb(ud, r, CL_OK, cs(chunk));
      if (!impl->requests.count(r) || !r->body_open) return;
    }
    r->body_open = false;
    cb(ud, r, CL_OK, kEmpty);
    impl->settle();
  });
  return CL_OK;
}
cl_status_t f_req_body_pause(cl_request_t* r, int) {
  REQ_LOOP_ONLY(r, "req_body_pause", CL_ESTATE);
  return (r->route_flags & CL_ROUTE_F_STREAM_BODY) ? CL_OK : CL_ESTATE;
}
cl_status_t f_req_file_at(cl_request_t* r, size_t, cl_file_info_t*) {
  REQ_LOOP_ONLY(r, "req_file_at", CL_ESTATE);
  return CL_ENOENT;
}
cl_status_t f_req_file_take(cl_request_t* r, size_t, cl_str_t) {
  REQ_LOOP_ONLY(r, "req_file_take", CL_ESTATE);
  return CL_ENOENT;
}
cl_status_t f_req_local_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  REQ_LOOP_ONLY(r, "req_local_addr", CL_ESTATE);
  if (!ip) return CL_EINVAL;
  *ip = cs(r->local_ip);
  if (port) *port = r->fh->local_port;
  return CL_OK;
}
cl_status_t f_req_peer_addr(cl_request_t* r, cl_str_t* ip, uint16_t* port) {
  REQ_LOOP_ONLY(r, "req_peer_addr", CL_ESTATE);
  if (!ip) return CL_EINVAL;
  *ip = cs(r->peer_ip);
  if (port) *port = 40000;
  return CL_OK;
}
cl_status_t f_req_on_close(cl_request_t* r, cl_req_close_cb, void*) {
  REQ_LOOP_ONLY(r, "req_on_close", CL_ESTATE);
  return r->held ? CL_OK : CL_ESTATE;  // the fake's clients never leave early: the callback never runs
}

bool reserved_header(std::string_view n) {
  return iequals(n, "content-length") || iequals(n, "transfer-encoding") || iequals(n, "connection") ||
         iequals(n, "date") || iequals(n, "server");
}
bool valid_header_text(std::string_view s, bool name) {
  for (unsigned char c : s) {
    if (c == '\r' || c == '\n' || c == 0) return false;
    if (name && (c <= ' ' || c == ':' || c >= 127)) return false;
  }
  return !(name && s.empty());
}

cl_status_t f_resp_header_add(cl_request_t* r, cl_str_t name, cl_str_t value) {
  REQ_LOOP_ONLY(r, "resp_header_add", CL_ESTATE);
  if (r->started) return CL_ESTATE;
  if (!valid_header_text(sv(name), true) || !valid_header_text(sv(value), false) || reserved_header(sv(name))) {
    return CL_EINVAL;
  }
  r->resp->headers.emplace_back(std::string(sv(name)), std::string(sv(value)));
  return CL_OK;
}
cl_status_t f_resp_send(cl_request_t* r, uint32_t status, cl_str_t ctype, cl_str_t body) {
  REQ_LOOP_ONLY(r, "resp_send", CL_ESTATE);
  if (r->started) return CL_ESTATE;
  if (status < 100 || status > 999) return CL_EINVAL;
  r->resp->status = status;
  if (ctype.len) r->resp->headers.emplace_back("Content-Type", std::string(sv(ctype)));
  r->resp->headers.emplace_back("Content-Length", std::to_string(body.len));
  r->resp->body.assign(sv(body));
  r->fh->impl->finish_request(r);
  return CL_OK;
}
cl_status_t f_resp_start(cl_request_t* r, uint32_t status, int64_t len) {
  REQ_LOOP_ONLY(r, "resp_start", CL_ESTATE);
  if (r->started) return CL_ESTATE;
  if (status < 100 || status > 999 || len < -1) return CL_EINVAL;
  r->started = true;
  r->content_length = len;
  r->resp->status = status;
  if (len >= 0) r->resp->headers.emplace_back("Content-Length", std::to_string(len));
  return CL_OK;
}
cl_status_t f_resp_write(cl_request_t* r, const void* p, size_t len, cl_free_cb done, void* hint) {
  REQ_LOOP_ONLY(r, "resp_write", CL_ESTATE);
  if (!p && len) return CL_EINVAL;
  auto* impl = r->fh->impl.get();
  if (impl->phase > Impl::unloading) done = nullptr;  // from fini: copied, done not called (nothing owed)
  cl_status_t st = CL_OK;
  if (!r->started) {
    st = CL_ESTATE;
  } else if (r->content_length >= 0 && r->bytes_out + len > static_cast<uint64_t>(r->content_length)) {
    st = CL_EINVAL;
  } else {
    r->bytes_out += len;
    r->resp->body.append(static_cast<const char*>(p), len);
  }
  if (done) {
    // Lent bytes come back exactly once, from a clean stack, also on error.
    impl->owed++;
    impl->deferred.push_back([impl, done, p, hint] {
      done(const_cast<void*>(p), hint);
      impl->settle();
    });
  }
  return st;
}
cl_status_t f_resp_end(cl_request_t* r) {
  REQ_LOOP_ONLY(r, "resp_end", CL_ESTATE);
  if (!r->started) return CL_ESTATE;
  r->fh->impl->finish_request(r);
  return CL_OK;
}
cl_status_t f_resp_file(cl_request_t* r, cl_str_t path, cl_str_t ctype) {
  REQ_LOOP_ONLY(r, "resp_file", CL_ESTATE);
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
  REQ_LOOP_ONLY(r, "sse_start", CL_ESTATE);
  if (r->started) return CL_ESTATE;
  r->sse = true;
  r->resp->headers.emplace_back("Content-Type", "text/event-stream");
  return f_resp_start(r, 200, -1);
}
cl_status_t f_sse_send(cl_request_t* r, cl_str_t event, cl_str_t data) {
  REQ_LOOP_ONLY(r, "sse_send", CL_ESTATE);
  if (!r->sse || !r->started) return CL_ESTATE;
  std::string_view ev = sv(event), d = sv(data);
  if (ev.find_first_of("\r\n") != std::string_view::npos) return CL_EINVAL;
  std::string msg;
  if (!ev.empty()) msg.append("event: ").append(ev).append("\n");
  size_t pos = 0;
  for (;;) {
    size_t nl = d.find('\n', pos);
    std::string_view line = d.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    msg.append("data: ").append(line).append("\n");
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  msg.append("\n");
  r->resp->body += msg;
  return CL_OK;
}

#if CL_ABI_MINOR >= 1
namespace pj = cloudlet::plugin_json;
cl_status_t f_json_parse(cl_host_t* h, cl_str_t text, cl_json_t** out) {
  if (!h) return CL_EINVAL;
  cl_status_t st = pj::parse(sv(text), out);
  if (st == CL_OK) impl_of(h)->json_docs++;
  return st;
}
void f_json_free(cl_host_t* h, cl_json_t* doc) {
  if (!doc) return;
  pj::free(doc);
  if (h) impl_of(h)->json_docs--;
}
cl_status_t f_json_type(const cl_json_t* d, cl_str_t p, int32_t* out) { return pj::type(d, sv(p), out); }
cl_status_t f_json_get_str(const cl_json_t* d, cl_str_t p, cl_str_t* out) { return pj::get_str(d, sv(p), out); }
cl_status_t f_json_get_int(const cl_json_t* d, cl_str_t p, int64_t* out) { return pj::get_int(d, sv(p), out); }
cl_status_t f_json_get_num(const cl_json_t* d, cl_str_t p, double* out) { return pj::get_num(d, sv(p), out); }
cl_status_t f_json_get_bool(const cl_json_t* d, cl_str_t p, int* out) { return pj::get_bool(d, sv(p), out); }
cl_status_t f_json_get_len(const cl_json_t* d, cl_str_t p, size_t* out) { return pj::get_len(d, sv(p), out); }
cl_status_t f_json_key_at(const cl_json_t* d, cl_str_t p, size_t i, cl_str_t* out) { return pj::key_at(d, sv(p), i, out); }

// ---- jobs (the registry mirrors core/jobs: job.get, job.list, job.cancel, job.progress and job.done) ----

std::string quoted(std::string_view v) {
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string job_json(const Impl::Job& j) {
  return "{\"job_id\":" + quoted(j.id) + ",\"kind\":" + quoted(j.kind) + ",\"subject\":" + quoted(j.subject) +
         ",\"state\":" + quoted(j.state) + ",\"progress\":" + std::to_string(j.progress) +
         ",\"message\":" + quoted(j.message) + ",\"status\":" + std::to_string(j.status) + ",\"result\":" + j.result +
         "}";
}

void publish_job(Impl* impl, const char* topic, const Impl::Job& j) {
  std::string payload = job_json(j);
  impl->self->published.emplace_back(topic, payload);
  impl->events.emplace_back(topic, payload);
}

void finish_job(Impl* impl, Impl::Job& j, cl_status_t status, std::string result) {
  j.status = status;
  j.state = status == CL_OK ? "done" : status == CL_ECANCELED ? "canceled" : "failed";
  if (status == CL_OK) j.progress = 1;
  j.result = std::move(result);
  publish_job(impl, "job.done", j);
}

std::string job_id_arg(const std::string& args) {
  rapidjson::Document d;
  d.Parse(args.c_str(), args.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("job_id") || !d["job_id"].IsString()) return "";
  return d["job_id"].GetString();
}

void provide_job_ops(FakeHost* fh) {
  Impl* impl = fh->impl.get();
  fh->provide("job.get", [impl](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
    auto it = impl->jobs.find(job_id_arg(args));
    if (it == impl->jobs.end()) return reply(CL_ENOENT, "{\"error\":\"no such job\"}");
    reply(CL_OK, job_json(it->second));
  });
  fh->provide("job.list", [impl](const std::string&, std::function<void(cl_status_t, std::string)> reply) {
    std::string out;
    for (const auto& [id, j] : impl->jobs) out += (out.empty() ? "" : ",") + job_json(j);
    reply(CL_OK, "{\"jobs\":[" + out + "]}");
  });
  fh->provide("job.cancel", [impl](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
    std::string id = job_id_arg(args);
    auto it = impl->jobs.find(id);
    if (it == impl->jobs.end()) return reply(CL_ENOENT, "{\"error\":\"no such job\"}");
    Impl::Job& j = it->second;
    if (j.state != "running") return reply(CL_ESTATE, "{\"error\":\"the job cannot be cancelled now\"}");
    if (!j.cancellable) return reply(CL_ENOTSUP, "{\"error\":\"the job cannot be cancelled now\"}");
    if (!j.cancel_requested) {
      j.cancel_requested = true;
      // Asked once, from a clean stack, while the plugin runs and the job is still its own.
      impl->deferred.push_back([impl, id] {
        auto h = impl->job_handles.find(id);
        if (!impl->open() || h == impl->job_handles.end() || h->second->finished) return;
        h->second->cancel(h->second->ud, h->second);
      });
    }
    reply(CL_OK, "{}");
  });
}

std::set<cl_job_s*>& live_jobs() {
  static std::set<cl_job_s*> jobs;
  return jobs;
}
bool job_live(cl_job_t* job) { return job && live_jobs().count(job) > 0; }

cl_status_t f_job_create(cl_host_t* h, cl_str_t kind, cl_str_t subject, cl_job_cancel_cb cancel, void* ud,
                         cl_job_t** out) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "job_create");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!name_chars(sv(kind), 64) || subject.len > 1024) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  Impl::Job j;
  j.id = "job-" + std::to_string(impl->next_job++);
  j.kind = std::string(sv(kind));
  j.subject = std::string(sv(subject));
  j.cancellable = cancel != nullptr;
  auto* job = new cl_job_s{impl->self, j.id, cancel, ud};
  publish_job(impl, "job.progress", impl->jobs.emplace(j.id, j).first->second);
  impl->job_handles[j.id] = job;
  live_jobs().insert(job);
  *out = job;
  return CL_OK;
}

cl_str_t f_job_id(cl_job_t* job) {
  if (!job_live(job) || !job->fh->impl->on_loop("job_id")) return kEmpty;
  return cs(job->id);
}

cl_status_t f_job_progress(cl_job_t* job, double fraction, cl_str_t message) {
  if (!job_live(job)) return CL_ESTATE;
  auto* impl = job->fh->impl.get();
  LOOP_ONLY(impl, "job_progress");
  if (fraction != fraction || message.len > 1024) return CL_EINVAL;  // NaN
  if (!impl->open()) return CL_ECANCELED;
  if (job->finished) return CL_ESTATE;
  Impl::Job& j = impl->jobs[job->id];
  j.progress = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
  j.message = std::string(sv(message));
  publish_job(impl, "job.progress", j);
  return CL_OK;
}

cl_status_t f_job_finish(cl_job_t* job, cl_status_t status, cl_str_t result) {
  if (!job_live(job)) return CL_ESTATE;
  auto* impl = job->fh->impl.get();
  LOOP_ONLY(impl, "job_finish");
  if (job->finished) return CL_ESTATE;
  std::string r(sv(result));
  if (status > 0 || (status == CL_OK && !r.empty() && !is_json(r, false))) return CL_EINVAL;
  if (status != CL_OK && !is_json(r, true)) {
    r = r.empty() ? error_object(status) : "{\"error\":" + quoted(r) + "}";
  } else if (r.empty()) {
    r = "{}";
  }
  finish_job(impl, impl->jobs[job->id], status, std::move(r));
  impl->job_handles.erase(job->id);
  live_jobs().erase(job);
  delete job;
  return CL_OK;
}

// ---- callers and privileged operations -------------------------------------------------------------------

cl_status_t f_op_register_ex(cl_host_t* h, cl_str_t name, uint32_t flags, cl_op_cb cb, void* ud) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "op_register_ex");
  if (flags & ~uint32_t{CL_OP_F_PRIVILEGED}) return CL_EINVAL;
  cl_status_t st = f_op_register(h, name, cb, ud);
  if (st == CL_OK) impl->plugin_ops[std::string(sv(name))].flags = flags;
  return st;
}

cl_status_t f_op_caller(cl_op_call_t* call, cl_caller_t* out) {
  if (!call || !live_calls().count(call)) return CL_EINVAL;
  LOOP_ONLY(call->fh->impl, "op_caller");
  if (!out || out->struct_size < sizeof(uint32_t)) return CL_EINVAL;
  cl_caller_t c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.kind = call->caller.kind;
  c.plugin = cs(call->caller.plugin);
  c.principal = cs(call->caller.principal);
  uint32_t n = out->struct_size < sizeof c ? out->struct_size : static_cast<uint32_t>(sizeof c);
  memcpy(out, &c, n);
  out->struct_size = n;
  return CL_OK;
}

cl_status_t f_op_call_as(cl_host_t* h, cl_str_t name, cl_str_t args, cl_str_t principal, cl_op_done_cb cb,
                         void* ud) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "op_call_as");
  if (principal.len == 0 || principal.len > 256) return CL_EINVAL;
  FakeCaller caller = plugin_caller(impl);
  caller.kind = CL_CALLER_AGENT;
  caller.principal = std::string(sv(principal));
  return op_call_from(impl, std::move(caller), name, args, cb, ud);
}

bool fake_listener(FakeHost* fh, std::string_view name) {
  for (const auto& l : fh->listeners) {
    if (l == name) return true;
  }
  return false;
}

cl_status_t f_listener_guard_set(cl_host_t* h, cl_str_t listener, cl_guard_cb cb, void* ud) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "listener_guard_set");
  if (!cb) return CL_EINVAL;
  if (impl->phase != Impl::loading) return CL_ESTATE;
  FakeHost* fh = fh_of(h);
  std::string name(sv(listener));
  if (!fake_listener(fh, name)) return CL_ENOENT;
  bool granted = false;
  for (const auto& g : fh->guards) granted = granted || g == name;
  if (!granted) return CL_EPERM;
  if (impl->guards.count(name)) return CL_EEXIST;
  impl->guards[name] = Impl::Guard{cb, ud};
  return CL_OK;
}

cl_status_t f_req_set_principal(cl_request_t* r, cl_str_t principal) {
  REQ_LOOP_ONLY(r, "req_set_principal", CL_ESTATE);
  if (!r->in_guard) return CL_ESTATE;
  if (principal.len == 0 || principal.len > 256) return CL_EINVAL;
  r->principal.assign(sv(principal));
  return CL_OK;
}

cl_status_t f_req_principal(cl_request_t* r, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_principal", CL_ESTATE);
  if (!out) return CL_EINVAL;
  *out = r->principal.empty() ? kEmpty : cs(r->principal);
  return r->principal.empty() ? CL_ENOENT : CL_OK;
}

cl_status_t f_req_peer_cert(cl_request_t* r, cl_str_t* out) {
  REQ_LOOP_ONLY(r, "req_peer_cert", CL_ESTATE);
  if (!out) return CL_EINVAL;
  *out = r->peer_cert.empty() ? kEmpty : cs(r->peer_cert);
  return r->peer_cert.empty() ? CL_ENOENT : CL_OK;
}

// No dot or empty segments, not absolute: a path that stays below the directory it is joined to.
bool fake_safe_relative(std::string_view p) {
  if (p.empty() || p[0] == '/' || p.find('\0') != std::string_view::npos) return false;
  size_t pos = 0;
  for (;;) {
    size_t slash = p.find('/', pos);
    std::string_view seg = p.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (seg.empty() || seg == "." || seg == "..") return false;
    if (slash == std::string_view::npos) return true;
    pos = slash + 1;
  }
}

// realpath(p) lies inside realpath(base).
bool fake_inside(const std::string& base, const std::string& p, std::string* real_out) {
  char rb[PATH_MAX], rp[PATH_MAX];
  if (!realpath(base.c_str(), rb) || !realpath(p.c_str(), rp)) return false;
  size_t n = strlen(rb);
  if (strncmp(rp, rb, n) != 0 || (rp[n] != '/' && rp[n] != '\0')) return false;
  if (real_out) *real_out = rp;
  return true;
}

cl_status_t f_static_add(cl_host_t* h, cl_str_t listener, cl_str_t url_prefix, cl_str_t dir) {
  auto* impl = impl_of(h);
  LOOP_ONLY(impl, "static_add");
  if (impl->phase != Impl::loading) return CL_ESTATE;
  FakeHost* fh = fh_of(h);
  std::string prefix(sv(url_prefix)), rel(sv(dir));
  bool prefix_ok = !prefix.empty() && prefix[0] == '/' && prefix.back() == '/' &&
                   prefix.find_first_of("{}\\") == std::string::npos && prefix.find("/./") == std::string::npos &&
                   prefix.find("/../") == std::string::npos && prefix.find('\0') == std::string::npos &&
                   (prefix.size() == 1 || prefix.substr(1, prefix.size() - 2).find("//") == std::string::npos);
  if (!prefix_ok || !fake_safe_relative(rel)) return CL_EINVAL;
  std::string name(sv(listener));
  if (!fake_listener(fh, name)) return CL_ENOENT;
  std::vector<std::string> granted = fh->prefixes;
  if (granted.empty()) granted.push_back("/plugins/" + fh->plugin_name + "/");
  bool inside = false;
  for (const auto& g : granted) inside = inside || prefix.compare(0, g.size(), g) == 0;
  if (!inside) return CL_EPERM;
  auto fd = fh->facts.find("plugin_files_dir");
  if (fd == fh->facts.end()) return CL_ENOENT;
  std::string root;
  struct stat st;
  if (stat((fd->second + "/" + rel).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return CL_ENOENT;
  if (!fake_inside(fd->second, fd->second + "/" + rel, &root)) return CL_EPERM;
  cloudlet::http::Route r;
  r.method = "GET";
  r.pattern = prefix + "{*path}";
  // The fake serves whole files (no ETag, Range or MIME table: the real host's static file handler does).
  r.handler = [impl, root](cl_request_s& req) -> cl_status_t {
    if (!impl->open()) return CL_EUNAVAIL;
    std::string rest;
    for (const auto& [k, v] : req.path_params) {
      if (k == "path") rest = v;
    }
    if (rest.empty() || rest.back() == '/') rest += "index.html";
    std::string path = root + "/" + rest;
    std::string real;
    if (!fake_safe_relative(rest) || !fake_inside(root, path, &real)) return f_resp_send(&req, 404, kEmpty, kEmpty);
    return f_resp_file(&req, cs(real), kEmpty) == CL_OK ? CL_OK : f_resp_send(&req, 404, kEmpty, kEmpty);
  };
  cl_status_t added = impl->routers[name].add(std::move(r));
  if (added == CL_OK) fh->routes.push_back({name, "GET", prefix + "{*path}", 0});
  return added;
}

// ---- child processes: the core's Child runs them on the fake's loop ----

// Every process handle a plugin may still use (all fakes): a stale pointer is compared, never followed.
std::set<cl_proc_s*>& live_procs() {
  static std::set<cl_proc_s*> procs;
  return procs;
}

cl_proc_s* live_proc(cl_proc_t* p, const char* slot) {
  if (!p || !live_procs().count(p) || !p->fh->impl->on_loop(slot)) return nullptr;
  return p;
}

cl_status_t f_proc_spawn(cl_host_t* h, const cl_proc_desc_t* desc, cl_proc_output_cb on_output,
                         cl_proc_exit_cb on_exit, void* ud, cl_proc_t** out) {
  Impl* impl = impl_of(h);
  LOOP_ONLY(impl, "proc_spawn");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!on_exit) return CL_EINVAL;
  cloudlet::ChildOptions options;
  cl_status_t st = cloudlet::proc_options(desc, fh_of(h)->facts["plugin_data_dir"], &options);
  if (st != CL_OK) return st;
  if ((options.stream[0] || options.stream[1]) && !on_output) return CL_EINVAL;
  if (!impl->open()) return CL_ECANCELED;
  auto* p = new cl_proc_s{fh_of(h), nullptr, on_output, on_exit, ud};
  impl->owed++;
  impl->procs.insert(p);
  live_procs().insert(p);
  p->child = cloudlet::Child::start(
      fh_of(h)->loop(), std::move(options),
      [p, impl](int fd, std::string_view chunk) {
        if (impl->open()) p->on_output(p->ud, p, fd, cs(chunk));
      },
      [p, impl](const cloudlet::ChildExit& e) {
        cl_proc_exit_t x;
        cloudlet::proc_exit_fill(e, &x);
        p->on_exit(p->ud, p, &x);
        impl->procs.erase(p);
        live_procs().erase(p);
        delete p;
        impl->settle();
      });
  *out = p;
  return CL_OK;
}

cl_status_t f_proc_write(cl_proc_t* p, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  if (!live_proc(p, "proc_write")) return CL_ESTATE;
  if (!ptr && len) return CL_EINVAL;
  Impl* impl = p->fh->impl.get();
  std::string_view bytes(static_cast<const char*>(ptr), ptr ? len : 0);
  std::shared_ptr<std::string> copy;
  if (!done) {
    copy = std::make_shared<std::string>(bytes);
    bytes = *copy;
  }
  auto release = [impl, copy, done, ptr, hint](int) {
    if (!done) return;
    done(const_cast<void*>(ptr), hint);
    impl->settle();
  };
  int rc = p->child->write(bytes, release);
  if (rc != 0 && rc != UV_ECANCELED) return CL_ESTATE;
  if (done) impl->owed++;
  if (rc == 0) return CL_OK;
  impl->deferred.push_back([release] { release(UV_ECANCELED); });  // exited: lent bytes come back later
  return CL_ECLOSING;
}

cl_status_t f_proc_close_stdin(cl_proc_t* p) {
  if (!live_proc(p, "proc_close_stdin")) return CL_ESTATE;
  return p->child->close_stdin() == 0 ? CL_OK : CL_ESTATE;
}

cl_status_t f_proc_kill(cl_proc_t* p, int32_t signum) {
  if (!live_proc(p, "proc_kill")) return CL_ESTATE;
  if (!cloudlet::proc_signal_allowed(signum)) return CL_EINVAL;
  int rc = p->child->kill(signum);
  return rc == 0 ? CL_OK : rc == UV_ESRCH ? CL_ESTATE : CL_EIO;
}

// ---- WebSockets: the client end (FakeHost::WebSocket) stands in for the socket ----

constexpr uint64_t kMaxWsMessage = uint64_t{64} << 20;
constexpr uint64_t kMinPingIntervalMs = 100;

// Every WebSocket handle a plugin may still use (all fakes): a stale pointer is compared, never followed.
std::set<cl_ws_s*>& live_websockets() {
  static std::set<cl_ws_s*> sockets;
  return sockets;
}

cl_ws_s* live_ws(cl_ws_t* w, const char* slot) {
  if (!w || !live_websockets().count(w) || !w->fh->impl->on_loop(slot)) return nullptr;
  return w;
}

// The server's close frame, as the client sees it.
void ws_send_close(cl_ws_s* w, uint32_t code, std::string_view reason) {
  if (w->close_sent) return;
  w->close_sent = true;
  w->peer->close_code = code;
  w->peer->close_reason = std::string(reason);
}

// The socket is gone: the close callback runs once, from a clean stack; the handle is stale once it returned.
void ws_end(cl_ws_s* w, cl_status_t status, uint32_t code, std::string reason) {
  if (w->ended) return;
  w->ended = true;
  w->close_sent = true;  // nothing more can go out
  w->peer->open = false;
  w->peer->handle = nullptr;
  Impl* impl = w->fh->impl.get();
  impl->deferred.push_back([w, impl, status, code, reason] {
    w->on_close(w->ud, w, status, code, cs(reason));
    impl->websockets.erase(w);
    live_websockets().erase(w);
    delete w;
    impl->settle();
  });
}

// Hands what the client sent on, in order, until paused or ended: messages to the plugin (not once unloading
// began), and a close frame answered as the core does (the client's code echoed; the socket then ends).
void ws_deliver(cl_ws_s* w) {
  Impl* impl = w->fh->impl.get();
  while (!w->paused && !w->ended && !w->queued.empty()) {
    cl_ws_s::Incoming in = std::move(w->queued.front());
    w->queued.pop_front();
    if (in.close_code) {
      ws_send_close(w, in.close_code == cloudlet::http::ws::kNoStatus ? 0 : in.close_code, "");
      ws_end(w, CL_OK, in.close_code, in.data);
      return;
    }
    if (impl->phase <= Impl::running) w->on_message(w->ud, w, in.type, cs(in.data));
  }
}

// Delivers what is queued on a later turn (never from inside the caller), if the socket still exists then.
void ws_deliver_later(cl_ws_s* w) {
  w->fh->impl->deferred.push_back([w] {
    if (live_websockets().count(w)) ws_deliver(w);
  });
}

// The host ends the socket on its own account (a violation, unloading): its close frame, then the callback.
void ws_close_now(cl_ws_s* w, cl_status_t status, uint16_t code) {
  ws_send_close(w, code, "");
  ws_end(w, status, code, "");
}

cl_status_t f_ws_accept(cl_request_t* r, const cl_ws_desc_t* desc, cl_ws_message_cb on_message,
                        cl_ws_close_cb on_close, void* ud, cl_ws_t** out) {
  REQ_LOOP_ONLY(r, "ws_accept", CL_ESTATE);
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!on_message || !on_close || !desc ||
      desc->struct_size < offsetof(cl_ws_desc_t, ping_interval_ms) + sizeof desc->ping_interval_ms ||
      desc->flags != 0 || desc->max_message > kMaxWsMessage ||
      (desc->ping_interval_ms != 0 && desc->ping_interval_ms < kMinPingIntervalMs)) {
    return CL_EINVAL;
  }
  Impl* impl = r->fh->impl.get();
  if (!impl->open()) return CL_ECANCELED;
  if (r->started || r->in_guard) return CL_ESTATE;
  std::string_view key, offered;
  auto lookup = [r](std::string_view name, std::string_view* v) {
    for (const auto& [k, value] : r->headers) {
      if (iequals(k, name)) {
        *v = value;
        return true;
      }
    }
    return false;
  };
  std::string subprotocol(sv(desc->subprotocol));
  if (!cloudlet::http::ws::upgrade_error(r->method, lookup, &key).empty() || !r->body.empty() ||
      (!subprotocol.empty() &&
       (!lookup("sec-websocket-protocol", &offered) || !cloudlet::http::ws::protocol_offered(offered, subprotocol)))) {
    return CL_EINVAL;
  }
  auto peer = std::make_shared<FakeHost::WebSocket>();
  auto* w = new cl_ws_s{r->fh, peer, on_message, on_close, ud, desc->max_message ? desc->max_message : 1u << 20};
  peer->handle = w;
  r->resp->status = 101;
  r->resp->headers = {{"Upgrade", "websocket"},
                      {"Connection", "Upgrade"},
                      {"Sec-WebSocket-Accept", cloudlet::http::ws::accept_key(key)}};
  if (!subprotocol.empty()) r->resp->headers.emplace_back("Sec-WebSocket-Protocol", subprotocol);
  r->resp->websocket = peer;
  impl->finish_request(r);  // the request is complete; the socket lives on
  impl->owed++;
  impl->websockets.insert(w);
  live_websockets().insert(w);
  *out = w;
  return CL_OK;
}

cl_status_t f_ws_send(cl_ws_t* w, int32_t type, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  if (!live_ws(w, "ws_send")) return CL_ESTATE;
  Impl* impl = w->fh->impl.get();
  if (impl->phase > Impl::unloading) done = nullptr;  // from fini: nothing is owed any more
  std::string_view data(static_cast<const char*>(ptr), ptr ? len : 0);
  cl_status_t st = CL_OK;
  if ((type != CL_WS_TEXT && type != CL_WS_BINARY) || (!ptr && len)) {
    st = CL_EINVAL;
  } else if (w->close_sent || w->ended) {
    st = CL_ECLOSING;
  } else if (type == CL_WS_TEXT && !cloudlet::text::utf8_valid(data)) {
    st = CL_EINVAL;
  } else {
    w->peer->messages.emplace_back(type, std::string(data));
  }
  if (done) {
    // Lent bytes come back exactly once, from a clean stack, also on refusal.
    impl->owed++;
    impl->deferred.push_back([impl, done, ptr, hint] {
      done(const_cast<void*>(ptr), hint);
      impl->settle();
    });
  }
  return st;
}

cl_status_t f_ws_pause(cl_ws_t* w, int paused) {
  if (!live_ws(w, "ws_pause")) return CL_ESTATE;
  if (w->ended || w->close_received) return CL_ECLOSING;
  w->paused = paused != 0;
  if (!w->paused && !w->queued.empty()) ws_deliver_later(w);
  return CL_OK;
}

cl_status_t f_ws_close(cl_ws_t* w, uint32_t code, cl_str_t reason) {
  if (!live_ws(w, "ws_close")) return CL_ESTATE;
  if (!cloudlet::http::ws::close_code_valid(code) || reason.len > cloudlet::http::ws::kMaxCloseReason || !cloudlet::text::utf8_valid(sv(reason))) {
    return CL_EINVAL;
  }
  if (w->ended || w->close_sent) return CL_ECLOSING;
  ws_send_close(w, code, sv(reason));
  // The fake's client answers at once with the same code, as browsers do.
  ws_end(w, CL_OK, code, "");
  return CL_OK;
}

// ---- outbound HTTP(S): the core's client runs them on the fake's loop ----

// Every request handle a plugin may still use (all fakes): a stale pointer is compared, never followed.
std::set<cl_fetch_s*>& live_fetches() {
  static std::set<cl_fetch_s*> fetches;
  return fetches;
}

cl_fetch_s* live_fetch(cl_fetch_t* f, const char* slot) {
  if (!f || !live_fetches().count(f) || !f->fh->impl->on_loop(slot)) return nullptr;
  return f;
}

cl_status_t f_fetch_start(cl_host_t* h, const cl_fetch_desc_t* desc, cl_fetch_response_cb on_response,
                          cl_fetch_body_cb on_body, void* ud, cl_fetch_t** out) {
  Impl* impl = impl_of(h);
  LOOP_ONLY(impl, "fetch_start");
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (!on_body) return CL_EINVAL;
  cloudlet::http::FetchOptions options;
  if (cl_status_t st = cloudlet::fetch_options(desc, &options); st != CL_OK) return st;
  if (!impl->open()) return CL_ECANCELED;
  auto* f = new cl_fetch_s{fh_of(h), nullptr, on_response, on_body, ud};
  std::string error;
  cl_status_t st = cloudlet::http::Fetch::start(
      fh_of(h)->loop(), std::move(options),
      [f, impl](unsigned status) {
        if (f->on_response && impl->open()) f->on_response(f->ud, f, status);
      },
      [f, impl](cl_status_t status, std::string_view chunk) {
        f->on_body(f->ud, f, status, cs(chunk));
        if (status == CL_OK && !chunk.empty()) return;
        impl->fetches.erase(f);
        live_fetches().erase(f);
        delete f;
        impl->settle();
      },
      &f->fetch, &error);
  if (st != CL_OK) {
    delete f;
    return st;
  }
  impl->owed++;
  impl->fetches.insert(f);
  live_fetches().insert(f);
  *out = f;
  return CL_OK;
}

cl_status_t f_fetch_write(cl_fetch_t* f, const void* ptr, size_t len, cl_free_cb done, void* hint) {
  if (!live_fetch(f, "fetch_write")) return CL_ESTATE;
  if (!ptr && len) return CL_EINVAL;
  Impl* impl = f->fh->impl.get();
  std::string_view bytes(static_cast<const char*>(ptr), ptr ? len : 0);
  if (!done || impl->phase > Impl::unloading) return f->fetch->write(bytes, nullptr);
  cl_status_t st = f->fetch->write(bytes, [impl, done, ptr, hint] {
    if (impl->phase > Impl::unloading) return;  // abandoned: nothing is called back any more
    done(const_cast<void*>(ptr), hint);
    impl->settle();
  });
  if (st == CL_OK || st == CL_ECLOSING) impl->owed++;
  return st;
}

cl_status_t f_fetch_end(cl_fetch_t* f) {
  if (!live_fetch(f, "fetch_end")) return CL_ESTATE;
  return f->fetch->end();
}

cl_status_t f_fetch_header(cl_fetch_t* f, cl_str_t name, cl_str_t* out) {
  if (!live_fetch(f, "fetch_header")) return CL_ESTATE;
  return cloudlet::fetch_header_of(f->fetch, name, out);
}

cl_status_t f_fetch_peer_cert(cl_fetch_t* f, cl_str_t* out) {
  if (!live_fetch(f, "fetch_peer_cert")) return CL_ESTATE;
  return cloudlet::fetch_peer_cert_of(f->fetch, out);
}

cl_status_t f_fetch_pause(cl_fetch_t* f, int paused) {
  if (!live_fetch(f, "fetch_pause")) return CL_ESTATE;
  return f->fetch->pause(paused != 0);
}

cl_status_t f_fetch_cancel(cl_fetch_t* f) {
  if (!live_fetch(f, "fetch_cancel")) return CL_ESTATE;
  return f->fetch->cancel(CL_ECANCELED);
}
#endif

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
#if CL_ABI_MINOR >= 1
  t.json_parse = f_json_parse;
  t.json_free = f_json_free;
  t.json_type = f_json_type;
  t.json_get_str = f_json_get_str;
  t.json_get_int = f_json_get_int;
  t.json_get_num = f_json_get_num;
  t.json_get_bool = f_json_get_bool;
  t.json_get_len = f_json_get_len;
  t.json_key_at = f_json_key_at;
  t.job_create = f_job_create;
  t.job_id = f_job_id;
  t.job_progress = f_job_progress;
  t.job_finish = f_job_finish;
  t.op_register_ex = f_op_register_ex;
  t.op_caller = f_op_caller;
  t.op_call_as = f_op_call_as;
  t.listener_guard_set = f_listener_guard_set;
  t.req_set_principal = f_req_set_principal;
  t.req_principal = f_req_principal;
  t.req_peer_cert = f_req_peer_cert;
  t.static_add = f_static_add;
  t.proc_spawn = f_proc_spawn;
  t.proc_write = f_proc_write;
  t.proc_close_stdin = f_proc_close_stdin;
  t.proc_kill = f_proc_kill;
  t.ws_accept = f_ws_accept;
  t.ws_send = f_ws_send;
  t.ws_pause = f_ws_pause;
  t.ws_close = f_ws_close;
  t.fetch_start = f_fetch_start;
  t.fetch_write = f_fetch_write;
  t.fetch_end = f_fetch_end;
  t.fetch_header = f_fetch_header;
  t.fetch_peer_cert = f_fetch_peer_cert;
  t.fetch_pause = f_fetch_pause;
  t.fetch_cancel = f_fetch_cancel;
#endif
  return t;
}();

void drain_posts(Impl* i) {
  std::vector<std::pair<cl_post_cb, void*>> batch;
  {
    std::lock_guard<std::mutex> lock(i->post_mutex);
    batch.swap(i->posts);
  }
  for (auto& [cb, ud] : batch) {
    if (i->phase <= Impl::unloading) cb(ud);
  }
}

// Delivers queued events and deferred completions (both asynchronous by contract).
void pump(Impl* impl) {
  while (!impl->events.empty() || !impl->deferred.empty()) {
    while (!impl->deferred.empty()) {
      auto fn = std::move(impl->deferred.front());
      impl->deferred.pop_front();
      fn();
    }
    while (!impl->events.empty()) {
      auto [topic, payload] = impl->events.front();
      impl->events.pop_front();
      std::vector<Impl::Sub> subs;
      for (auto& [id, s] : impl->subs) {
        if (topic_matches(s.pattern, topic)) subs.push_back(s);
      }
      for (auto& s : subs) {
        if (impl->open()) s.cb(s.ud, cs(topic), cs(payload));
      }
    }
  }
}

}  // namespace

namespace cloudlet::test {

std::string FakeHost::Response::header(const std::string& name) const {
  for (auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return "";
}

FakeHost::FakeHost(std::string plugin_name) : impl(std::make_unique<Impl>()) {
  uv_loop_init(&loop_);
  impl->self = this;
  impl->host.fh = this;
  uv_async_init(&loop_, &impl->async, [](uv_async_t* a) { drain_posts(static_cast<Impl*>(a->data)); });
  impl->async.data = impl.get();
  uv_unref(reinterpret_cast<uv_handle_t*>(&impl->async));
  facts["version"] = "test";
  facts["cloudlet_name"] = "testlet";
  facts["api_mode"] = "open";
  facts["data_dir"] = "/tmp";
  facts["plugin_data_dir"] = "/tmp";
  this->plugin_name = std::move(plugin_name);
#if CL_ABI_MINOR >= 1
  provide_job_ops(this);
#endif
}

FakeHost::~FakeHost() {
  if (impl->desc) unload();
  for (cl_request_s* r : impl->requests) delete r;
  impl->requests.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&impl->async), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  if (impl->dl) dlclose(impl->dl);
}

const cl_host_api_t* FakeHost::api() const { return &kTable; }
cl_host_t* FakeHost::host() { return &impl->host; }

cl_status_t FakeHost::init(const cl_plugin_desc_t* desc, const std::string& config_json, std::string* error) {
  auto refuse = [&](cl_status_t st, const std::string& why) {
    if (error) *error = why;
    return st;
  };
  if (!desc || !desc->init) return refuse(CL_EINVAL, "no descriptor or no init function");
  if (desc->abi_major != CL_ABI_MAJOR) {
    return refuse(CL_ENOTSUP, "built for plugin ABI " + std::to_string(desc->abi_major) + "." +
                                  std::to_string(desc->abi_minor) + ", this host provides " +
                                  std::to_string(CL_ABI_MAJOR) + "." + std::to_string(CL_ABI_MINOR) +
                                  " (major must match)");
  }
  if (desc->abi_minor > CL_ABI_MINOR) {
    return refuse(CL_ENOTSUP, "needs plugin ABI " + std::to_string(desc->abi_major) + "." +
                                  std::to_string(desc->abi_minor) + ", this host provides " +
                                  std::to_string(CL_ABI_MAJOR) + "." + std::to_string(CL_ABI_MINOR));
  }
  impl->desc = desc;
  impl->phase = Impl::loading;
  {
    std::lock_guard<std::mutex> lock(impl->post_mutex);
    impl->posts_open = true;
  }
  cl_status_t st = desc->init(host(), api(), cs(config_json), &impl->state);
  if (st != CL_OK) {
    // Like the real host: unloaded without fini, completions of what init started still delivered.
    unload();
    return refuse(st, std::string("init failed: ") + cloudlet::status_text(st));
  }
  impl->phase = Impl::running;
  return CL_OK;
}

cl_status_t FakeHost::load(const std::string& so_path, const std::string& config_json, std::string* error) {
  impl->dl = dlopen(so_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!impl->dl) {
    if (error) *error = dlerror();
    return CL_EIO;
  }
  auto entry = reinterpret_cast<cl_plugin_entry_v1_fn>(dlsym(impl->dl, CL_PLUGIN_ENTRY_V1));
  if (!entry) {
    if (error) *error = "no '" CL_PLUGIN_ENTRY_V1 "' symbol";
    return CL_EINVAL;
  }
  return init(entry(), config_json, error);
}

size_t FakeHost::unload() {
  if (!impl->desc || impl->phase >= Impl::unloading) return 0;
  bool init_succeeded = impl->phase == Impl::running;
  impl->phase = Impl::unloading;
  // Stop every new call into the plugin.
  for (auto& [id, t] : impl->timers) close_timer(t);
  impl->timers.clear();
  for (auto& [id, w] : impl->watches) close_watch(w);
  impl->watches.clear();
  impl->subs.clear();
  impl->plugin_ops.clear();
  impl->routers.clear();
#if CL_ABI_MINOR >= 1
  for (auto& [name, g] : impl->guards) g.cb = nullptr;  // guarded listeners refuse from now on
  // Jobs it never finished end now, once each, with CL_ECANCELED; their handles stay valid until fini returns.
  for (auto& [id, job] : impl->job_handles) {
    if (job->finished) continue;
    job->finished = true;
    finish_job(impl.get(), impl->jobs[id], CL_ECANCELED, "{\"error\":\"the plugin is unloading\"}");
  }
  for (cl_proc_s* p : impl->procs) p->child->stop();  // exit callbacks (owed) get CL_ECANCELED
  for (cl_ws_s* w : impl->websockets) {  // closed with "going away"; close callbacks (owed) get CL_ECANCELED
    ws_close_now(w, CL_ECANCELED, cloudlet::http::ws::kGoingAway);
  }
  for (cl_fetch_s* f : impl->fetches) f->fetch->cancel(CL_ECANCELED);  // final body calls (owed) likewise
#endif
  // Cancel what can be: queued work, awaited operation results, open body streams.
  for (auto& [id, w] : impl->work) uv_cancel(reinterpret_cast<uv_req_t*>(&w->req));
  for (const auto& a : impl->awaited) {
    a->delivered = true;
    impl->deferred.push_back([i = impl.get(), a] {
      a->cb(a->ud, CL_ECANCELED, cs("{\"error\":\"the calling plugin is unloading\"}"));
      i->settle();
    });
  }
  impl->awaited.clear();
  for (cl_request_s* r : impl->requests) r->stream_body.clear();  // their final call becomes the end
  // Wait for everything owed, then close post() and deliver what it accepted.
  run_until([&] { return impl->owed == 0; }, 60000);
  {
    std::lock_guard<std::mutex> lock(impl->post_mutex);
    impl->posts_open = false;
  }
  drain_posts(impl.get());
  pump(impl.get());
  impl->phase = Impl::finishing;
  if (init_succeeded && impl->desc->fini) impl->desc->fini(host(), impl->state);
  // Answer what the plugin left.
  size_t left = impl->calls.size() + impl->requests.size() + (impl->txn ? 1 : 0) +
                static_cast<size_t>(std::max<int64_t>(0, impl->json_docs.load()));
  for (cl_op_call_s* c : impl->calls) {
    live_calls().erase(c);
    c->reply(CL_ECANCELED, "{\"error\":\"the plugin was unloaded before answering\"}");
    delete c;
  }
  impl->calls.clear();
  for (cl_request_s* r : std::set<cl_request_s*>(impl->requests)) {
    if (!r->started) r->resp->status = 503;
    r->body_open = false;
    impl->finish_request(r);
  }
  delete impl->txn;
  impl->txn = nullptr;
#if CL_ABI_MINOR >= 1
  for (auto& [id, job] : impl->job_handles) {
    live_jobs().erase(job);
    delete job;
  }
  impl->job_handles.clear();
  for (cl_proc_s* p : impl->procs) {  // only when waiting timed out: nothing is called back any more
    p->child->detach();
    live_procs().erase(p);
    delete p;
  }
  impl->procs.clear();
  for (cl_fetch_s* f : impl->fetches) {  // only when waiting timed out: nothing is called back any more
    f->fetch->detach();
    live_fetches().erase(f);
    delete f;
  }
  impl->fetches.clear();
#endif
  pump(impl.get());
  impl->desc = nullptr;
  impl->phase = Impl::gone;
  return left;
}

bool FakeHost::run_until(const std::function<bool()>& cond, uint64_t timeout_ms) {
  uint64_t deadline = uv_hrtime() + timeout_ms * 1000000;
  for (;;) {
    pump(impl.get());
    if (cond()) return true;
    if (uv_hrtime() >= deadline) return false;
    // One loop turn, without sleeping forever when nothing is pending. The tick repeats: a one-shot tick that
    // fell due before the turn began would fire in its timer phase, and the poll would then wait for the
    // plugin's next timer (seconds away) instead.
    uv_timer_t tick;
    uv_timer_init(&loop_, &tick);
    uv_timer_start(&tick, [](uv_timer_t*) {}, 1, 1);
    uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
}

void FakeHost::run_for(uint64_t ms) {
  uint64_t end = uv_hrtime() + ms * 1000000;
  run_until([&] { return uv_hrtime() >= end; }, ms + 1000);
}

namespace {
// The HTTP status the core answers for a handler's or guard's status (abi/cloudlet_plugin.h, status codes).
uint32_t http_status(cl_status_t st) {
  switch (st) {
    case CL_EINVAL: return 400;
    case CL_EUNAUTH: return 401;
    case CL_EPERM: return 403;
    case CL_ENOENT: case CL_EDECLINED: return 404;
    case CL_EBUSY: case CL_EEXIST: case CL_ESTATE: return 409;
    case CL_ETOOBIG: return 413;
    case CL_ENOTSUP: return 501;
    case CL_ENOMEM: case CL_EUNAVAIL: case CL_ECLOSING: return 503;
    case CL_ETIMEDOUT: return 504;
    default: return 500;
  }
}
}  // namespace

FakeHost::Response FakeHost::request(const std::string& listener, const std::string& method, const std::string& target,
                                     const std::string& body,
                                     const std::vector<std::pair<std::string, std::string>>& headers,
                                     uint64_t timeout_ms) {
  auto resp = std::make_shared<Response>();
  std::string path, query;
  size_t q = target.find('?');
  cloudlet::http::percent_decode(target.substr(0, q), &path, false);
  if (q != std::string::npos) query = target.substr(q + 1);
  auto make = [&] {
    auto* r = new cl_request_s;
    r->fh = this;
    r->method = method;
    r->path = path;
    r->query = query;
    if (!query.empty()) cloudlet::http::parse_query(query, &r->params);
    r->headers = headers;
    for (const auto& [name, value] : default_headers) {
      bool own = false;
      for (const auto& h : headers) own = own || strcasecmp(h.first.c_str(), name.c_str()) == 0;
      if (!own) r->headers.emplace_back(name, value);
    }
    r->resp = resp;
    r->local_ip = local_ip;
    r->peer_ip = peer_ip;
    r->peer_cert = peer_cert;
    return r;
  };
  std::string principal;
#if CL_ABI_MINOR >= 1
  if (auto g = impl->guards.find(listener); g != impl->guards.end()) {
    // The listener's guard sees the request first, with its headers and without its body.
    if (!g->second.cb || !impl->open()) {
      resp->status = 503;
      resp->complete = true;
      return *resp;
    }
    cl_request_s* r = make();
    r->in_guard = true;
    impl->requests.insert(r);
    cl_status_t st = g->second.cb(g->second.ud, r);
    if (!impl->requests.count(r)) return *resp;  // the guard answered
    if (r->started) {
      impl->finish_request(r);
      return *resp;
    }
    principal = r->principal;
    impl->requests.erase(r);
    delete r;
    if (st != CL_OK) {
      resp->status = http_status(st);
      resp->complete = true;
      return *resp;
    }
  }
#endif
  std::vector<cloudlet::http::Router::Match> matches;
  std::string allowed;
  if (impl->phase <= Impl::running) impl->routers[listener].match(method, path, &matches, &allowed);
#if CL_ABI_MINOR >= 1
  if (!matches.empty() && (matches.front().route->flags & CL_ROUTE_F_JSON) && !body.empty()) {
    std::string ctype;
    for (const auto& [k, v] : headers) {
      if (iequals(k, "content-type")) ctype = v;
    }
    std::string_view t = cloudlet::http::media_type(ctype);  // "+json" types are JSON too, as in the core
    bool json = iequals(t, "application/json") ||
                (t.size() > 5 && t.find('/') != std::string_view::npos && iequals(t.substr(t.size() - 5), "+json"));
    if (!json) {
      resp->status = 415;
      resp->complete = true;
      return *resp;
    }
  }
#endif
  for (auto& m : matches) {
    cl_request_s* r = make();
    r->principal = principal;
    r->route_flags = m.route->flags;
    (r->route_flags & CL_ROUTE_F_STREAM_BODY ? r->stream_body : r->body) = body;
    r->path_params = m.params;
    r->held = true;
    impl->requests.insert(r);
    cl_status_t st = m.route->handler(*r);
    if (st != CL_OK && impl->requests.count(r)) {
      // Declined or failed: the plugin does not own the request.
      if (r->body_open) impl->settle();
      impl->requests.erase(r);
      delete r;
      if (st == CL_EDECLINED) continue;
      resp->status = http_status(st);
      resp->complete = true;
    }
    run_until([&] { return resp->complete; }, timeout_ms);
    return *resp;
  }
  resp->status = allowed.empty() ? 404 : 405;
  resp->complete = true;
  return *resp;
}

std::pair<cl_status_t, std::string> FakeHost::call(const std::string& name, const std::string& args, uint64_t timeout_ms) {
  auto it = impl->plugin_ops.find(name);
  auto provided = impl->provided_ops.find(name);
  if (it == impl->plugin_ops.end() && provided == impl->provided_ops.end()) return {CL_ENOENT, ""};
  auto result = std::make_shared<std::pair<cl_status_t, std::string>>(CL_EIO, "");
  auto done = std::make_shared<bool>(false);
  Impl* i = impl.get();
  auto reply = [i, result, done](cl_status_t st, std::string json) {
    // Answered from a clean stack, like the real Operations.
    i->deferred.push_back([result, done, st, json] {
      *result = {st, json};
      *done = true;
    });
  };
  if (it != impl->plugin_ops.end()) {
    invoke_plugin_op(i, it->second, args, reply);  // the caller is the core
  } else {
    provided->second(args, reply);
  }
  if (!run_until([&] { return *done; }, timeout_ms)) return {CL_ETIMEDOUT, ""};
  return *result;
}

void FakeHost::provide(const std::string& name, OpHandler handler, uint32_t flags) {
  impl->provided_ops[name] = std::move(handler);
  impl->provided_flags[name] = flags;
}

bool FakeHost::has_operation(const std::string& name) const { return impl->plugin_ops.count(name) > 0; }

void FakeHost::publish(const std::string& topic, const std::string& json) { impl->events.emplace_back(topic, json); }

#if CL_ABI_MINOR >= 1
void FakeHost::ws_send(const std::shared_ptr<WebSocket>& ws, int32_t type, const std::string& data) {
  auto* w = ws ? static_cast<cl_ws_s*>(ws->handle) : nullptr;
  if (!w || w->ended || w->close_received) return;
  if (type == CL_WS_TEXT && !cloudlet::text::utf8_valid(data)) {
    ws_close_now(w, CL_EINVAL, cloudlet::http::ws::kInvalidData);
  } else if (data.size() > w->max_message) {
    ws_close_now(w, CL_ETOOBIG, cloudlet::http::ws::kTooBig);
  } else {
    w->queued.push_back({type, data});
    ws_deliver_later(w);
  }
  pump(impl.get());
}

void FakeHost::ws_close(const std::shared_ptr<WebSocket>& ws, uint32_t code, const std::string& reason) {
  auto* w = ws ? static_cast<cl_ws_s*>(ws->handle) : nullptr;
  if (!w || w->ended || w->close_received) return;
  w->close_received = true;
  w->queued.push_back({0, reason, code ? code : uint32_t{cloudlet::http::ws::kNoStatus}});
  ws_deliver_later(w);
  pump(impl.get());
}

void FakeHost::ws_drop(const std::shared_ptr<WebSocket>& ws) {
  auto* w = ws ? static_cast<cl_ws_s*>(ws->handle) : nullptr;
  if (!w || w->ended) return;
  ws_end(w, CL_ECLOSING, cloudlet::http::ws::kAbnormal, "");
  pump(impl.get());
}
#else
// A 1.0 host has no WebSockets: no response carries one.
void FakeHost::ws_send(const std::shared_ptr<WebSocket>&, int32_t, const std::string&) {}
void FakeHost::ws_close(const std::shared_ptr<WebSocket>&, uint32_t, const std::string&) {}
void FakeHost::ws_drop(const std::shared_ptr<WebSocket>&) {}
#endif

}  // namespace cloudlet::test
