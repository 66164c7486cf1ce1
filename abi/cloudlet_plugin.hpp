/*
 * cloudlet_plugin.hpp -- optional C++17 helpers over the C ABI (abi/cloudlet_plugin.h). Header-only.
 *
 * This file is NOT part of the ABI: it compiles into the plugin and calls only the table a plugin gets in
 * init(). It adds no core types, no exceptions across the boundary and no std types in any call to the core.
 * What it gives a C++ author:
 *   - cl::str / cl::view:  std::string_view <-> cl_str_t (no copies);
 *   - cl::Host:            the (h, api) pair with string_view methods; cl::host_get for host facts;
 *   - cl::Buf, cl::Json, cl::Txn: RAII owners of a cl_buf_t, a parsed JSON document, a store transaction;
 *   - cl::Request:         a request's accessors and responses with string_view;
 *   - cl::Job:             a job (ABI 1.1) that owns its cancel callable and is finished exactly once;
 *   - cl::Caller:          who called an operation (Host::caller, ABI 1.1);
 *   - cl::post, cl::queue_work, cl::op_call, cl::op_call_as, cl::commit: completions as C++ callables. The ABI
 *     calls every completion exactly once (rule E2), so each callable is heap-allocated when the slot accepts it
 *     and freed right after it ran; when the slot refuses, it is freed at once and never called;
 *   - cl::spawn:           a child process (ABI 1.1) with its exit and output callables (cl::ProcSpec, cl::ProcExit);
 *   - cl::fetch:           an outbound HTTP(S) request (ABI 1.1) with its body and response callables (cl::FetchSpec);
 *   - cl::guarded:         runs a hook body and turns any exception into a status (rule E3).
 * Every hook a plugin hands to the core must be noexcept: wrap its body in cl::guarded (or catch yourself).
 */
#ifndef CLOUDLET_PLUGIN_HPP
#define CLOUDLET_PLUGIN_HPP

#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"

namespace cl {

// ---- strings ---------------------------------------------------------------------------------------------

/* A view of s as a cl_str_t: borrowed, valid as long as s is. */
inline cl_str_t str(std::string_view s) noexcept { return cl_str_t{s.data(), s.size()}; }
/* A view of a borrowed cl_str_t (ptr may be NULL when len is 0). */
inline std::string_view view(cl_str_t s) noexcept { return s.ptr ? std::string_view(s.ptr, s.len) : std::string_view(); }

/* The HTTP status the core answers for a status (the mapping stated beside each CL_E* code): a route that
 * answers with an operation's result uses it for the operation's error. */
constexpr uint32_t http_status(cl_status_t st) noexcept {
  switch (st) {
    case CL_OK: return 200;
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

// ---- exceptions stop here (rule E3) -----------------------------------------------------------------------

/* Runs f() (returning cl_status_t) and returns its status; an exception becomes CL_ENOMEM (std::bad_alloc) or
 * CL_EIO. Use it as the whole body of every hook that returns a status. */
template <typename F>
cl_status_t guarded(F&& f) noexcept {
  try {
    return std::forward<F>(f)();
  } catch (const std::bad_alloc&) {
    return CL_ENOMEM;
  } catch (...) {
    return CL_EIO;
  }
}

/* Runs f() (returning nothing); an exception is swallowed. For callbacks that return void. */
template <typename F>
void guarded_void(F&& f) noexcept {
  try {
    std::forward<F>(f)();
  } catch (...) {
  }
}

// ---- the host ------------------------------------------------------------------------------------------

/* Who made an operation call (ABI 1.1, op_caller): kind is CL_CALLER_*; the views are borrowed until the call
 * is answered (op_reply). */
struct Caller {
  uint32_t kind = CL_CALLER_CORE;
  std::string_view plugin;     /* the calling plugin; empty for the core */
  std::string_view principal;  /* whom a front end authenticated; empty when none */
};

/* The plugin's handle and table, as init() received them. Cheap to copy; valid until fini returns. */
class Host {
 public:
  Host() noexcept = default;
  Host(cl_host_t* h, const cl_host_api_t* api) noexcept : h_(h), api_(api) {}

  cl_host_t* handle() const noexcept { return h_; }
  const cl_host_api_t* api() const noexcept { return api_; }
  /* True when the core's table has this slot (see CL_HAS): pass a pointer to member, &cl_host_api_t::json_parse. */
  template <typename Slot>
  bool has(Slot cl_host_api_t::*slot) const noexcept {
    size_t end = static_cast<size_t>(reinterpret_cast<const char*>(&(api_->*slot)) -
                                     reinterpret_cast<const char*>(api_)) + sizeof(Slot);
    return api_->struct_size >= end && api_->*slot != nullptr;
  }

  void log(int32_t level, std::string_view msg) const noexcept { api_->log(h_, level, str(msg)); }
  void error(std::string_view msg) const noexcept { log(CL_LOG_ERROR, msg); }
  void warn(std::string_view msg) const noexcept { log(CL_LOG_WARN, msg); }
  void info(std::string_view msg) const noexcept { log(CL_LOG_INFO, msg); }
  void debug(std::string_view msg) const noexcept { log(CL_LOG_DEBUG, msg); }
  const char* strerror(cl_status_t st) const noexcept { return api_->strerror(st); }

  cl_status_t publish(std::string_view topic, std::string_view payload_json) const noexcept {
    return api_->event_publish(h_, str(topic), str(payload_json));
  }
  cl_status_t reply(cl_op_call_t* call, cl_status_t st, std::string_view result_json) const noexcept {
    return api_->op_reply(call, st, str(result_json));
  }
  /* Registers an operation whose handler is a plain function (ud is passed back untouched). */
  cl_status_t op_register(std::string_view name, cl_op_cb cb, void* ud) const noexcept {
    return api_->op_register(h_, str(name), cb, ud);
  }
  /* Registers an operation with flags (ABI 1.1: CL_OP_F_PRIVILEGED); CL_ENOTSUP on an older core. */
  cl_status_t op_register_ex(std::string_view name, uint32_t flags, cl_op_cb cb, void* ud) const noexcept {
    if (!has(&cl_host_api_t::op_register_ex)) return CL_ENOTSUP;
    return api_->op_register_ex(h_, str(name), flags, cb, ud);
  }
  /* Who made this call (ABI 1.1); CL_ENOTSUP on an older core. */
  cl_status_t caller(cl_op_call_t* call, Caller* out) const noexcept {
    if (!has(&cl_host_api_t::op_caller)) return CL_ENOTSUP;
    cl_caller_t c{};
    c.struct_size = sizeof c;
    cl_status_t st = api_->op_caller(call, &c);
    if (st == CL_OK) *out = Caller{c.kind, view(c.plugin), view(c.principal)};
    return st;
  }
  cl_status_t timer_start(uint64_t timeout_ms, uint64_t repeat_ms, cl_timer_cb cb, void* ud,
                          cl_timer_id_t* out = nullptr) const noexcept {
    return api_->timer_start(h_, timeout_ms, repeat_ms, cb, ud, out);
  }
  cl_status_t timer_stop(cl_timer_id_t id) const noexcept { return api_->timer_stop(h_, id); }
  /* The loop's clock (milliseconds, monotonic). */
  uint64_t now_ms() const noexcept { return api_->now_ms(h_); }
  /* Listens to a topic with a plain function (ud passed back untouched) until event_unsubscribe or fini. */
  cl_status_t event_subscribe(std::string_view topic, cl_event_cb cb, void* ud, cl_sub_id_t* out) const noexcept {
    return api_->event_subscribe(h_, str(topic), cb, ud, out);
  }
  cl_status_t event_unsubscribe(cl_sub_id_t id) const noexcept { return api_->event_unsubscribe(h_, id); }
  /* Adds a route (the core copies the descriptor). */
  cl_status_t route_add(const cl_route_desc_t& desc) const noexcept { return api_->route_add(h_, &desc); }
  /* Since 1.1 (check with has(&cl_host_api_t::listener_guard_set)): the guard of a listener, during init. */
  cl_status_t listener_guard_set(std::string_view listener, cl_guard_cb cb, void* ud) const noexcept {
    return api_->listener_guard_set(h_, str(listener), cb, ud);
  }
  /* Since 1.1: serves dir (relative to the plugin's files directory) under url_prefix, during init. */
  cl_status_t static_add(std::string_view listener, std::string_view url_prefix, std::string_view dir) const noexcept {
    return api_->static_add(h_, str(listener), str(url_prefix), str(dir));
  }

 private:
  cl_host_t* h_ = nullptr;
  const cl_host_api_t* api_ = nullptr;
};

// ---- owners of what the core hands out ------------------------------------------------------------------

/* Owns a cl_buf_t the core allocated (store_get, txn_get, host_get); releases it with buf_free. */
class Buf {
 public:
  explicit Buf(const Host& host) noexcept : host_(host) {}
  Buf(Buf&& o) noexcept : host_(o.host_), b_(o.b_) { o.b_ = cl_buf_t{nullptr, 0}; }
  Buf& operator=(Buf&& o) noexcept {
    if (this != &o) {
      reset();
      host_ = o.host_;
      b_ = o.b_;
      o.b_ = cl_buf_t{nullptr, 0};
    }
    return *this;
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { reset(); }

  /* For the slot's out-parameter (releases what it held first). */
  cl_buf_t* out() noexcept {
    reset();
    return &b_;
  }
  std::string_view view() const noexcept { return std::string_view(b_.ptr ? b_.ptr : "", b_.len); }
  /* NUL-terminated (the core always terminates what it allocates). */
  const char* c_str() const noexcept { return b_.ptr ? b_.ptr : ""; }
  void reset() noexcept {
    if (b_.ptr) host_.api()->buf_free(host_.handle(), &b_);
  }

 private:
  Host host_;
  cl_buf_t b_{nullptr, 0};
};

/* A parsed JSON document (ABI 1.1), read by JSON Pointer ("" the root, "/a/0/b"). Getters return
 * std::nullopt when nothing is at the path or the value has another type; the status-returning forms tell
 * the two apart (CL_ENOENT vs CL_EINVAL). Strings are views into the document: valid while it lives. */
class Json {
 public:
  Json() noexcept = default;
  Json(Json&& o) noexcept : host_(o.host_), doc_(o.doc_) { o.doc_ = nullptr; }
  Json& operator=(Json&& o) noexcept {
    if (this != &o) {
      reset();
      host_ = o.host_;
      doc_ = o.doc_;
      o.doc_ = nullptr;
    }
    return *this;
  }
  Json(const Json&) = delete;
  Json& operator=(const Json&) = delete;
  ~Json() { reset(); }

  /* Parses text into *out: CL_OK, CL_EINVAL (not JSON), CL_ETOOBIG, CL_ENOMEM, or CL_ENOTSUP when the core
   * predates ABI 1.1. */
  static cl_status_t parse(const Host& host, std::string_view text, Json* out) noexcept {
    if (!host.has(&cl_host_api_t::json_parse)) return CL_ENOTSUP;
    cl_json_t* doc = nullptr;
    cl_status_t st = host.api()->json_parse(host.handle(), str(text), &doc);
    if (st != CL_OK) return st;
    out->reset();
    out->host_ = host;
    out->doc_ = doc;
    return CL_OK;
  }

  cl_status_t type(std::string_view path, int32_t* out) const noexcept { return api()->json_type(doc_, str(path), out); }
  cl_status_t get(std::string_view path, std::string_view* out) const noexcept {
    cl_str_t s{nullptr, 0};
    cl_status_t st = api()->json_get_str(doc_, str(path), &s);
    if (st == CL_OK) *out = view(s);
    return st;
  }
  cl_status_t get(std::string_view path, int64_t* out) const noexcept {
    return api()->json_get_int(doc_, str(path), out);
  }
  cl_status_t get(std::string_view path, double* out) const noexcept {
    return api()->json_get_num(doc_, str(path), out);
  }
  cl_status_t get(std::string_view path, bool* out) const noexcept {
    int b = 0;
    cl_status_t st = api()->json_get_bool(doc_, str(path), &b);
    if (st == CL_OK) *out = b != 0;
    return st;
  }
  cl_status_t size(std::string_view path, size_t* out) const noexcept {
    return api()->json_get_len(doc_, str(path), out);
  }
  cl_status_t key_at(std::string_view path, size_t index, std::string_view* out) const noexcept {
    cl_str_t s{nullptr, 0};
    cl_status_t st = api()->json_key_at(doc_, str(path), index, &s);
    if (st == CL_OK) *out = view(s);
    return st;
  }

  std::optional<std::string_view> string(std::string_view path) const noexcept { return opt<std::string_view>(path); }
  std::optional<int64_t> integer(std::string_view path) const noexcept { return opt<int64_t>(path); }
  std::optional<double> number(std::string_view path) const noexcept { return opt<double>(path); }
  std::optional<bool> boolean(std::string_view path) const noexcept { return opt<bool>(path); }

  explicit operator bool() const noexcept { return doc_ != nullptr; }
  void reset() noexcept {
    if (doc_) host_.api()->json_free(host_.handle(), doc_);
    doc_ = nullptr;
  }

 private:
  const cl_host_api_t* api() const noexcept { return host_.api(); }
  template <typename T>
  std::optional<T> opt(std::string_view path) const noexcept {
    T v{};
    if (!doc_ || get(path, &v) != CL_OK) return std::nullopt;
    return v;
  }

  Host host_;
  cl_json_t* doc_ = nullptr;
};

/* A store write transaction: aborted when destroyed unless committed. Open it, use it and commit it within
 * one hook (the core aborts a transaction left open past its loop turn). */
class Txn {
 public:
  Txn() noexcept = default;
  Txn(Txn&& o) noexcept : host_(o.host_), t_(o.t_) { o.t_ = nullptr; }
  Txn& operator=(Txn&&) = delete;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (t_) host_.api()->txn_abort(t_);
  }

  static cl_status_t begin(const Host& host, Txn* out) noexcept {
    if (out->t_) return CL_EBUSY;
    out->host_ = host;
    return host.api()->txn_begin(host.handle(), &out->t_);
  }
  /* CL_OK with the document in *out, or CL_ENOENT. */
  cl_status_t get(std::string_view coll, std::string_view key, Buf* out) const noexcept {
    return host_.api()->txn_get(t_, str(coll), str(key), out->out());
  }
  cl_status_t put(std::string_view coll, std::string_view key, std::string_view json) const noexcept {
    return host_.api()->txn_put(t_, str(coll), str(key), str(json));
  }
  cl_status_t del(std::string_view coll, std::string_view key) const noexcept {
    return host_.api()->txn_del(t_, str(coll), str(key));
  }
  /* Commits; done(status) runs once the writes are durable (see cl::commit for a callable). */
  cl_status_t commit(cl_commit_cb done = nullptr, void* ud = nullptr) noexcept {
    cl_txn_t* t = t_;
    t_ = nullptr;  // dead after txn_commit, whatever it returns
    return host_.api()->txn_commit(t, done, ud);
  }
  cl_txn_t* handle() const noexcept { return t_; }

 private:
  Host host_;
  cl_txn_t* t_ = nullptr;
};

/* A fact of the host ("api_mode", "data_dir", ...) as text, or nullopt when it has none. */
inline std::optional<std::string> host_get(const Host& host, std::string_view name) {
  Buf b(host);
  if (host.api()->host_get(host.handle(), str(name), b.out()) != CL_OK) return std::nullopt;
  return std::string(b.view());
}

// ---- requests ------------------------------------------------------------------------------------------

/* A view of a cl_request_t with string_view accessors. It does not own the request: after a call that
 * completes the response (send, end, file) the request is dead. */
class Request {
 public:
  Request(const Host& host, cl_request_t* r) noexcept : api_(host.api()), r_(r) {}

  cl_request_t* handle() const noexcept { return r_; }
  std::string_view method() const noexcept { return view(api_->req_method(r_)); }
  std::string_view path() const noexcept { return view(api_->req_path(r_)); }
  std::string_view query() const noexcept { return view(api_->req_query(r_)); }
  std::string_view body() const noexcept { return view(api_->req_body(r_)); }
  std::optional<std::string_view> header(std::string_view name) const noexcept {
    cl_str_t v{nullptr, 0};
    if (api_->req_header(r_, str(name), &v) != CL_OK) return std::nullopt;
    return view(v);
  }
  std::optional<std::string_view> param(std::string_view name) const noexcept {
    cl_str_t v{nullptr, 0};
    if (api_->req_param(r_, str(name), &v) != CL_OK) return std::nullopt;
    return view(v);
  }

  /* Since 1.1: whom the listener's guard authenticated; nullopt for nobody. */
  std::optional<std::string_view> principal() const noexcept {
    cl_str_t v{nullptr, 0};
    if (api_->req_principal(r_, &v) != CL_OK) return std::nullopt;
    return view(v);
  }
  /* Since 1.1: from inside a guard only. */
  cl_status_t set_principal(std::string_view principal) const noexcept {
    return api_->req_set_principal(r_, str(principal));
  }
  /* Since 1.1: hex SHA-256 of the TLS client certificate; nullopt when there is none. */
  std::optional<std::string_view> peer_cert() const noexcept {
    cl_str_t v{nullptr, 0};
    if (api_->req_peer_cert(r_, &v) != CL_OK) return std::nullopt;
    return view(v);
  }
  /* The index-th query or form parameter (name, value), or nullopt past the last one. */
  std::optional<std::pair<std::string_view, std::string_view>> param_at(size_t index) const noexcept {
    cl_str_t n{nullptr, 0}, v{nullptr, 0};
    if (api_->req_param_at(r_, index, &n, &v) != CL_OK) return std::nullopt;
    return std::make_pair(view(n), view(v));
  }
  /* The client's address (text form of the IP), or nullopt once it has gone. */
  std::optional<std::string_view> peer_ip() const noexcept {
    cl_str_t ip{nullptr, 0};
    uint16_t port = 0;
    if (api_->req_peer_addr(r_, &ip, &port) != CL_OK) return std::nullopt;
    return view(ip);
  }
  /* The address the client connected to (text form of the IP), or nullopt. */
  std::optional<std::string_view> local_ip() const noexcept {
    cl_str_t ip{nullptr, 0};
    uint16_t port = 0;
    if (api_->req_local_addr(r_, &ip, &port) != CL_OK) return std::nullopt;
    return view(ip);
  }

  cl_status_t add_header(std::string_view name, std::string_view value) const noexcept {
    return api_->resp_header_add(r_, str(name), str(value));
  }
  cl_status_t send(uint32_t status, std::string_view content_type, std::string_view body) const noexcept {
    return api_->resp_send(r_, status, str(content_type), str(body));
  }
  cl_status_t send_json(uint32_t status, std::string_view json) const noexcept {
    return send(status, "application/json", json);
  }
  cl_status_t start(uint32_t status, int64_t content_length = -1) const noexcept {
    return api_->resp_start(r_, status, content_length);
  }
  /* Writes a copy of bytes (for lent writes call api->resp_write with a cl_free_cb). */
  cl_status_t write(std::string_view bytes) const noexcept {
    return api_->resp_write(r_, bytes.data(), bytes.size(), nullptr, nullptr);
  }
  cl_status_t end() const noexcept { return api_->resp_end(r_); }
  /* Sends a file with the core's static file handler (Range, ETag, HEAD). */
  cl_status_t file(std::string_view path, std::string_view content_type) const noexcept {
    return api_->resp_file(r_, str(path), str(content_type));
  }
  cl_status_t sse_start() const noexcept { return api_->sse_start(r_); }
  cl_status_t sse_send(std::string_view event, std::string_view data) const noexcept {
    return api_->sse_send(r_, str(event), str(data));
  }

 private:
  const cl_host_api_t* api_;
  cl_request_t* r_;
};

// ---- jobs (ABI 1.1) --------------------------------------------------------------------------------------

/* A job this plugin runs: created with Job::create, reports progress, and is finished exactly once (finish).
 * It owns the cancel callable (run on the loop when job.cancel asks; the plugin still calls finish). A Job
 * destroyed unfinished finishes the job with CL_ECANCELED. Destroy every Job before fini returns: the core's
 * handle dies with fini (a job the core already finished at unload is then just released). Loop thread only. */
class Job {
 public:
  Job() noexcept = default;
  Job(Job&& o) noexcept : api_(o.api_), job_(o.job_), cancel_(o.cancel_) {
    o.job_ = nullptr;
    o.cancel_ = nullptr;
  }
  Job& operator=(Job&& o) noexcept {
    if (this != &o) {
      finish(CL_ECANCELED, {});
      api_ = o.api_;
      job_ = o.job_;
      cancel_ = o.cancel_;
      o.job_ = nullptr;
      o.cancel_ = nullptr;
    }
    return *this;
  }
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  ~Job() { finish(CL_ECANCELED, {}); }

  /* A job that job.cancel cannot stop (it answers CL_ENOTSUP). CL_ENOTSUP too on a core older than 1.1. */
  static cl_status_t create(const Host& host, std::string_view kind, std::string_view subject, Job* out) noexcept {
    return start(host, kind, subject, nullptr, out);
  }
  /* A job whose on_cancel() runs (at most once) when job.cancel asks it to stop. */
  template <typename F>
  static cl_status_t create(const Host& host, std::string_view kind, std::string_view subject, F on_cancel,
                            Job* out) noexcept {
    auto* box = new (std::nothrow) Cancel<F>(std::move(on_cancel));
    if (!box) return CL_ENOMEM;
    return start(host, kind, subject, box, out);
  }

  /* "job-42"; empty once finished. */
  std::string_view id() const noexcept { return job_ ? view(api_->job_id(job_)) : std::string_view(); }
  cl_status_t progress(double fraction, std::string_view message) const noexcept {
    return job_ ? api_->job_progress(job_, fraction, str(message)) : CL_ESTATE;
  }
  /* Ends the job (result: JSON; for errors a message or {"error": ...}). After CL_OK or CL_ESTATE (the core
   * finished it: unloading) the Job is empty; after CL_EINVAL it still runs. */
  cl_status_t finish(cl_status_t status, std::string_view result_json) noexcept {
    if (!job_) return CL_ESTATE;
    cl_status_t st = api_->job_finish(job_, status, str(result_json));
    if (st == CL_EINVAL) return st;
    job_ = nullptr;
    release_cancel();
    return st;
  }
  cl_job_t* handle() const noexcept { return job_; }
  explicit operator bool() const noexcept { return job_ != nullptr; }

 private:
  // The cancel callable; it may finish (and so release) its own Job while it runs: freed after it returns.
  struct CancelBase {
    virtual ~CancelBase() = default;
    virtual void run() noexcept = 0;
    bool running = false, released = false;
  };
  template <typename F>
  struct Cancel final : CancelBase {
    explicit Cancel(F f) : fn(std::move(f)) {}
    void run() noexcept override { guarded_void([&] { fn(); }); }
    F fn;
  };

  static cl_status_t start(const Host& host, std::string_view kind, std::string_view subject, CancelBase* box,
                           Job* out) noexcept {
    if (!host.has(&cl_host_api_t::job_create)) {
      delete box;
      return CL_ENOTSUP;
    }
    cl_job_cancel_cb cb = nullptr;
    if (box) {
      cb = [](void* ud, cl_job_t*) {
        auto* c = static_cast<CancelBase*>(ud);
        c->running = true;
        c->run();
        c->running = false;
        if (c->released) delete c;
      };
    }
    cl_job_t* job = nullptr;
    cl_status_t st = host.api()->job_create(host.handle(), str(kind), str(subject), cb, box, &job);
    if (st != CL_OK) {
      delete box;
      return st;
    }
    out->finish(CL_ECANCELED, {});
    out->api_ = host.api();
    out->job_ = job;
    out->cancel_ = box;
    return CL_OK;
  }
  void release_cancel() noexcept {
    if (!cancel_) return;
    if (cancel_->running) {
      cancel_->released = true;  // deleted by the trampoline once run() returns
    } else {
      delete cancel_;
    }
    cancel_ = nullptr;
  }

  const cl_host_api_t* api_ = nullptr;
  cl_job_t* job_ = nullptr;
  CancelBase* cancel_ = nullptr;
};

// ---- completions as callables ----------------------------------------------------------------------------

namespace detail {
template <typename F>
struct Boxed {
  F fn;
};
}  // namespace detail

/* Runs fn() on the loop thread (any thread may call this). CL_OK: fn runs exactly once, before fini. */
template <typename F>
cl_status_t post(const Host& host, F fn) noexcept {
  auto* box = new (std::nothrow) detail::Boxed<F>{std::move(fn)};
  if (!box) return CL_ENOMEM;
  cl_status_t st = host.api()->post(
      host.handle(),
      [](void* ud) {
        auto* b = static_cast<detail::Boxed<F>*>(ud);
        guarded_void([&] { b->fn(); });
        delete b;
      },
      box);
  if (st != CL_OK) delete box;
  return st;
}

/* Runs work() on a worker thread, then done(status) on the loop (CL_OK, or CL_ECANCELED if it never ran).
 * CL_OK: done runs exactly once, before fini. */
template <typename W, typename D>
cl_status_t queue_work(const Host& host, W work, D done, cl_work_id_t* id = nullptr) noexcept {
  struct Job {
    W work;
    D done;
  };
  auto* job = new (std::nothrow) Job{std::move(work), std::move(done)};
  if (!job) return CL_ENOMEM;
  cl_status_t st = host.api()->work_queue(
      host.handle(), [](void* ud) { guarded_void([&] { static_cast<Job*>(ud)->work(); }); },
      [](void* ud, cl_status_t s) {
        auto* j = static_cast<Job*>(ud);
        guarded_void([&] { j->done(s); });
        delete j;
      },
      job, id);
  if (st != CL_OK) delete job;
  return st;
}

namespace detail {
/* The completion of op_call and op_call_as: runs the boxed callable once, then frees it. */
template <typename D>
void op_done(void* ud, cl_status_t s, cl_str_t result) noexcept {
  auto* b = static_cast<Boxed<D>*>(ud);
  guarded_void([&] { b->fn(s, view(result)); });
  delete b;
}
}  // namespace detail

/* Calls an operation; done(status, result_json) runs exactly once (CL_ECANCELED if unloading first). */
template <typename D>
cl_status_t op_call(const Host& host, std::string_view name, std::string_view args_json, D done) noexcept {
  auto* box = new (std::nothrow) detail::Boxed<D>{std::move(done)};
  if (!box) return CL_ENOMEM;
  cl_status_t st = host.api()->op_call(
      host.handle(), str(name), str(args_json),
      detail::op_done<D>, box);
  if (st != CL_OK) delete box;
  return st;
}

/* Calls an operation on behalf of principal (ABI 1.1, op_call_as; CL_ENOTSUP on an older core); done as op_call. */
template <typename D>
cl_status_t op_call_as(const Host& host, std::string_view name, std::string_view args_json, std::string_view principal,
                       D done) noexcept {
  if (!host.has(&cl_host_api_t::op_call_as)) return CL_ENOTSUP;
  auto* box = new (std::nothrow) detail::Boxed<D>{std::move(done)};
  if (!box) return CL_ENOMEM;
  cl_status_t st = host.api()->op_call_as(
      host.handle(), str(name), str(args_json), str(principal),
      detail::op_done<D>, box);
  if (st != CL_OK) delete box;
  return st;
}

/* Commits txn; done(status) runs exactly once when the writes are durable (or failed). */
template <typename D>
cl_status_t commit(Txn& txn, D done) noexcept {
  auto* box = new (std::nothrow) detail::Boxed<D>{std::move(done)};
  if (!box) return CL_ENOMEM;
  cl_status_t st = txn.commit(
      [](void* ud, cl_status_t s) {
        auto* b = static_cast<detail::Boxed<D>*>(ud);
        guarded_void([&] { b->fn(s); });
        delete b;
      },
      box);
  if (st != CL_OK) delete box;
  return st;
}

// ---- child processes (ABI 1.1) -------------------------------------------------------------------------------

/* How a child process ended (a view of cl_proc_exit_t: out and err are borrowed for the exit callable). */
struct ProcExit {
  cl_status_t status;  /* CL_OK when it ran (any exit code), CL_ETIMEDOUT, CL_ECANCELED, CL_ENOENT, CL_EPERM, CL_EIO */
  int64_t exit_code;   /* -1 unless it exited normally */
  int32_t term_signal; /* 0 unless a signal ended it */
  uint32_t truncated;  /* 1: stdout capture truncated, 2: stderr */
  std::string_view out, err;
  /* It ran and exited with 0. */
  bool ok() const noexcept { return status == CL_OK && exit_code == 0; }
};

/* What to run. argv and env are copied by the core at spawn; env empty = PATH and LANG only. */
struct ProcSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd;  /* "" = the plugin's data directory */
  uint32_t flags = CL_PROC_F_CAPTURE_STDOUT | CL_PROC_F_CAPTURE_STDERR;
  uint64_t timeout_ms = 0;
  uint64_t max_capture = 0;
};

namespace detail {
struct NoOutput {
  void operator()(int32_t, std::string_view) const noexcept {}
};
}  // namespace detail

/* Starts a program (never through a shell). on_output(fd, chunk) runs for streamed streams (CL_PROC_F_STREAM_*),
 * on_exit(const ProcExit&) exactly once when this returns CL_OK (also when the program could not be started,
 * and with CL_ECANCELED when the plugin unloads first). *out (optional) is the handle for proc_write,
 * proc_close_stdin and proc_kill, valid until on_exit returns. CL_ENOTSUP on a core older than 1.1. */
template <typename E, typename O = detail::NoOutput>
cl_status_t spawn(const Host& host, const ProcSpec& spec, E on_exit, O on_output = O(),
                  cl_proc_t** out = nullptr) noexcept {
  if (!host.has(&cl_host_api_t::proc_spawn)) return CL_ENOTSUP;
  struct Box {
    E exit;
    O output;
  };
  std::vector<const char*> argv, env;
  try {
    for (const auto& a : spec.argv) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    for (const auto& e : spec.env) env.push_back(e.c_str());
    env.push_back(nullptr);
  } catch (...) {
    return CL_ENOMEM;
  }
  cl_proc_desc_t d{};
  d.struct_size = sizeof d;
  d.flags = spec.flags;
  d.argv = argv.data();
  d.env = spec.env.empty() ? nullptr : env.data();
  d.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  d.timeout_ms = spec.timeout_ms;
  d.max_capture = spec.max_capture;
  auto* box = new (std::nothrow) Box{std::move(on_exit), std::move(on_output)};
  if (!box) return CL_ENOMEM;
  cl_proc_t* p = nullptr;
  cl_status_t st = host.api()->proc_spawn(
      host.handle(), &d,
      [](void* ud, cl_proc_t*, int32_t fd, cl_str_t chunk) {
        guarded_void([&] { static_cast<Box*>(ud)->output(fd, view(chunk)); });
      },
      [](void* ud, cl_proc_t*, const cl_proc_exit_t* x) {
        auto* b = static_cast<Box*>(ud);
        ProcExit e{x->status, x->exit_code, x->term_signal, x->truncated, view(x->out), view(x->err)};
        guarded_void([&] { b->exit(e); });
        delete b;
      },
      box, &p);
  if (st != CL_OK) {
    delete box;
    return st;
  }
  if (out) *out = p;
  return CL_OK;
}

// ---- outbound HTTP(S) (ABI 1.1) ------------------------------------------------------------------------------

/* What to request. Every string is copied by the core at fetch_start. */
struct FetchSpec {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  int64_t body_length = 0;  /* 0 none, > 0 that many bytes through fetch_write, -1 chunked until fetch_end */
  std::string ca_file, cert_file, key_file, pin_sha256;  /* "" = none (ca_file: the system's) */
  uint32_t flags = 0;                                    /* CL_FETCH_F_* */
  uint64_t connect_timeout_ms = 0, idle_timeout_ms = 0, max_header_bytes = 0;  /* 0 = the core's defaults */
};

namespace detail {
struct NoResponse {
  void operator()(cl_fetch_t*, uint32_t) const noexcept {}
};
}  // namespace detail

/* Starts a request. on_body(status, chunk) runs for every body chunk (CL_OK, chunk not empty), then exactly
 * once more as the final call (CL_OK with an empty chunk at the end of the body, or the error) when this
 * returns CL_OK; on_response(handle, http_status) runs once the head arrived (read headers with fetch_header
 * then). *out (optional) is the handle for fetch_write, fetch_end, fetch_pause and fetch_cancel, valid until
 * the final call returns. CL_ENOTSUP on a core older than 1.1. */
template <typename B, typename R = detail::NoResponse>
cl_status_t fetch(const Host& host, const FetchSpec& spec, B on_body, R on_response = R(),
                  cl_fetch_t** out = nullptr) noexcept {
  if (!host.has(&cl_host_api_t::fetch_start)) return CL_ENOTSUP;
  struct Box {
    B body;
    R response;
  };
  auto c_str = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
  std::vector<cl_header_t> headers;
  try {
    for (const auto& [name, value] : spec.headers) headers.push_back(cl_header_t{str(name), str(value)});
  } catch (...) {
    return CL_ENOMEM;
  }
  cl_fetch_desc_t d{};
  d.struct_size = sizeof d;
  d.flags = spec.flags;
  d.method = spec.method.c_str();
  d.url = spec.url.c_str();
  d.headers = headers.data();
  d.header_count = headers.size();
  d.body_length = spec.body_length;
  d.ca_file = c_str(spec.ca_file);
  d.cert_file = c_str(spec.cert_file);
  d.key_file = c_str(spec.key_file);
  d.pin_sha256 = c_str(spec.pin_sha256);
  d.connect_timeout_ms = spec.connect_timeout_ms;
  d.idle_timeout_ms = spec.idle_timeout_ms;
  d.max_header_bytes = spec.max_header_bytes;
  auto* box = new (std::nothrow) Box{std::move(on_body), std::move(on_response)};
  if (!box) return CL_ENOMEM;
  cl_fetch_t* f = nullptr;
  cl_status_t st = host.api()->fetch_start(
      host.handle(), &d,
      [](void* ud, cl_fetch_t* h, uint32_t status) {
        guarded_void([&] { static_cast<Box*>(ud)->response(h, status); });
      },
      [](void* ud, cl_fetch_t*, cl_status_t status, cl_str_t chunk) {
        auto* b = static_cast<Box*>(ud);
        guarded_void([&] { b->body(status, view(chunk)); });
        if (status != CL_OK || chunk.len == 0) delete b;
      },
      box, &f);
  if (st != CL_OK) {
    delete box;
    return st;
  }
  if (out) *out = f;
  return CL_OK;
}

}  // namespace cl

#endif /* CLOUDLET_PLUGIN_HPP */
