#include "virt/connection.h"

#include <fmt/format.h>

#include <algorithm>

#include "log/log.h"
#include "virt/embed.h"

namespace cloudlet::virt {

std::string libvirt_last_error() {
  virErrorPtr e = virGetLastError();
  return e && e->message ? std::string(e->message) : std::string("unknown libvirt error");
}

// ---- DomainEvent ---------------------------------------------------------------------------------------------

const char* DomainEvent::kind_name(Kind kind) {
  switch (kind) {
    case Kind::defined: return "defined";
    case Kind::undefined: return "undefined";
    case Kind::started: return "started";
    case Kind::suspended: return "suspended";
    case Kind::resumed: return "resumed";
    case Kind::stopped: return "stopped";
    case Kind::shutdown: return "shutdown";
    case Kind::pmsuspended: return "pmsuspended";
    case Kind::crashed: return "crashed";
    case Kind::unknown: break;
  }
  return "unknown";
}

DomainEvent::Kind DomainEvent::kind_from_libvirt(int event) {
  switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED: return Kind::defined;
    case VIR_DOMAIN_EVENT_UNDEFINED: return Kind::undefined;
    case VIR_DOMAIN_EVENT_STARTED: return Kind::started;
    case VIR_DOMAIN_EVENT_SUSPENDED: return Kind::suspended;
    case VIR_DOMAIN_EVENT_RESUMED: return Kind::resumed;
    case VIR_DOMAIN_EVENT_STOPPED: return Kind::stopped;
    case VIR_DOMAIN_EVENT_SHUTDOWN: return Kind::shutdown;
    case VIR_DOMAIN_EVENT_PMSUSPENDED: return Kind::pmsuspended;
    case VIR_DOMAIN_EVENT_CRASHED: return Kind::crashed;
    default: return Kind::unknown;
  }
}

std::string DomainEvent::detail_name() const {
  auto pick = [&](std::initializer_list<const char*> names) -> std::string {
    if (detail >= 0 && static_cast<size_t>(detail) < names.size()) return *(names.begin() + detail);
    return std::to_string(detail);
  };
  // Index = libvirt's detail value (VIR_DOMAIN_EVENT_<KIND>_<DETAIL>, in libvirt's order).
  switch (kind) {
    case Kind::defined: return pick({"added", "updated", "renamed", "from_snapshot"});
    case Kind::undefined: return pick({"removed", "renamed"});
    case Kind::started: return pick({"booted", "migrated", "restored", "from_snapshot", "wakeup"});
    case Kind::suspended:
      return pick({"paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error", "postcopy",
                   "postcopy_failed"});
    case Kind::resumed: return pick({"unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"});
    case Kind::stopped:
      return pick({"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"});
    case Kind::shutdown: return pick({"finished", "guest", "host"});
    case Kind::pmsuspended: return pick({"memory", "disk"});
    case Kind::crashed: return pick({"panicked", "crashloaded"});
    case Kind::unknown: break;
  }
  return std::to_string(detail);
}

// ---- Connection core -------------------------------------------------------------------------------------------

// Loop-thread state, shared with libvirt callbacks through weak references (a callback may outlive Connection).
struct Connection::Core : std::enable_shared_from_this<Connection::Core> {
  Loop* loop;
  ConnectionOptions options;
  EventFn on_event;
  StateFn on_state;
  virConnectPtr conn = nullptr;
  int lifecycle_id = -1;
  bool closing = false;
  bool opening = false;
  bool was_open = false;  // a drop re-opens only what had been opened
  uint64_t backoff_ms = 0;
  Loop::TimerId reconnect_timer = 0;
  unsigned reconnects = 0;
  unsigned generation = 0;  // bumped at each open: callbacks of an old virConnectPtr are ignored

  void set_state(bool connected, const std::string& detail) {
    if (on_state) on_state(connected, detail);
  }
  void handle_drop(virConnectPtr dropped, const std::string& reason);
  void schedule_reconnect();
  void start_open(std::function<void(Status)> done);
};

namespace {

struct CallbackCtx {
  std::weak_ptr<Connection::Core> core;
  Loop* loop;
  virConnectPtr conn;  // identifies which connection the callback belongs to (not a reference)
};

void free_ctx(void* opaque) { delete static_cast<CallbackCtx*>(opaque); }

// Runs on whatever thread libvirt dispatches from (the loop, with our event implementation).
int on_lifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  auto* ctx = static_cast<CallbackCtx*>(opaque);
  DomainEvent ev;
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(dom, uuid) == 0) ev.uuid = uuid;
  if (const char* name = virDomainGetName(dom)) ev.name = name;
  ev.kind = DomainEvent::kind_from_libvirt(event);
  ev.detail = detail;
  auto deliver = [weak = ctx->core, conn = ctx->conn, ev] {
    auto core = weak.lock();
    if (!core || core->conn != conn || !core->on_event) return;
    core->on_event(ev);
  };
  if (ctx->loop->on_loop_thread()) deliver();
  else ctx->loop->post(deliver);
  return 0;
}

void on_close(virConnectPtr conn, int reason, void* opaque) {
  auto* ctx = static_cast<CallbackCtx*>(opaque);
  const char* why = reason == VIR_CONNECT_CLOSE_REASON_ERROR       ? "I/O error"
                    : reason == VIR_CONNECT_CLOSE_REASON_EOF       ? "end of file (daemon gone)"
                    : reason == VIR_CONNECT_CLOSE_REASON_KEEPALIVE ? "keepalive timeout"
                    : reason == VIR_CONNECT_CLOSE_REASON_CLIENT    ? "closed by client"
                                                                   : "unknown reason";
  // Always through post: libvirt holds connection locks while calling this.
  ctx->loop->post([weak = ctx->core, conn, reason = std::string(why)] {
    if (auto core = weak.lock()) core->handle_drop(conn, reason);
  });
}

struct OpenResult {
  virConnectPtr conn = nullptr;
  int lifecycle_id = -1;
  Status status;
};

// Worker thread.
OpenResult open_blocking(const ConnectionOptions& o, const std::shared_ptr<Connection::Core>& core, Loop* loop) {
  OpenResult r;
  std::string root;
  if (embed_root_from_uri(o.uri, &root)) {
    r.status = embed_prepare(root);
    if (!r.status.ok()) return r;
  } else if (o.uri.rfind("qemu:///embed", 0) == 0) {
    r.status = Status::invalid(fmt::format("embedded URI '{}' needs root=/absolute/path", o.uri));
    return r;
  }
  virResetLastError();
  virConnectPtr c = virConnectOpen(o.uri.c_str());
  if (!c) {
    r.status = Status::error(CL_EUNAVAIL, fmt::format("cannot open {}: {}", o.uri, libvirt_last_error()));
    return r;
  }
  // In-process drivers (embedded QEMU, test) never drop: no keepalive (they do not support it), and no close
  // callback (libvirt accepts theirs without keeping it, so its context would never be freed).
  bool in_process = o.uri.rfind("test:", 0) == 0 || o.uri.rfind("qemu:///embed", 0) == 0;
  if (o.keepalive_interval_s > 0 && !in_process) {
    if (virConnectSetKeepAlive(c, o.keepalive_interval_s, o.keepalive_count) < 0)
      log::debug("virt", "no keepalive on {}: {}", o.uri, libvirt_last_error());
  }
  if (!in_process) {
    auto* close_ctx = new CallbackCtx{core, loop, c};
    if (virConnectRegisterCloseCallback(c, on_close, close_ctx, free_ctx) < 0) {
      log::debug("virt", "no close callback on {}: {}", o.uri, libvirt_last_error());
      delete close_ctx;
    }
  }
  auto* ev_ctx = new CallbackCtx{core, loop, c};
  r.lifecycle_id = virConnectDomainEventRegisterAny(c, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                    VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), ev_ctx, free_ctx);
  if (r.lifecycle_id < 0) {
    r.status = Status::error(CL_EUNAVAIL,
                             fmt::format("cannot subscribe to domain events on {}: {}", o.uri, libvirt_last_error()));
    delete ev_ctx;
    virConnectUnregisterCloseCallback(c, on_close);
    virConnectClose(c);
    return r;
  }
  r.conn = c;
  return r;
}

// Worker thread: drops callbacks and our reference.
void close_blocking(virConnectPtr c, int lifecycle_id) {
  if (lifecycle_id >= 0) virConnectDomainEventDeregisterAny(c, lifecycle_id);
  virConnectUnregisterCloseCallback(c, on_close);
  virConnectClose(c);
}

}  // namespace

void Connection::Core::start_open(std::function<void(Status)> done) {
  opening = true;
  auto self = shared_from_this();
  auto res = std::make_shared<OpenResult>();
  ConnectionOptions o = options;
  Loop* lp = loop;
  loop->queue_work([res, o, self, lp] { *res = open_blocking(o, self, lp); },
                   [self, res, done = std::move(done)](bool cancelled) {
                     self->opening = false;
                     if (cancelled && res->status.ok() && !res->conn)
                       res->status = Status::error(CL_ECANCELED, "cancelled");
                     if (res->conn && self->closing) {
                       // close() came while opening: do not keep it.
                       virConnectPtr c = res->conn;
                       int id = res->lifecycle_id;
                       self->loop->queue_work([c, id] { close_blocking(c, id); }, [](bool) {});
                       done(Status::error(CL_ECLOSING, "connection closed while opening"));
                       return;
                     }
                     if (!res->status.ok()) {
                       done(res->status);
                       return;
                     }
                     self->conn = res->conn;
                     self->lifecycle_id = res->lifecycle_id;
                     self->generation++;
                     self->was_open = true;
                     done(Status());
                   });
}

void Connection::Core::handle_drop(virConnectPtr dropped, const std::string& reason) {
  if (!conn || conn != dropped || closing) return;
  log::warn("virt", "libvirt connection {} dropped: {}", options.uri, reason);
  virConnectPtr c = conn;
  int id = lifecycle_id;
  conn = nullptr;
  lifecycle_id = -1;
  set_state(false, reason);
  loop->queue_work([c, id] { close_blocking(c, id); }, [](bool) {});
  backoff_ms = 0;
  schedule_reconnect();
}

void Connection::Core::schedule_reconnect() {
  if (closing || reconnect_timer) return;
  backoff_ms = backoff_ms == 0 ? options.reconnect_min_ms : std::min(backoff_ms * 2, options.reconnect_max_ms);
  auto weak = weak_from_this();
  reconnect_timer = loop->timer_start(backoff_ms, 0, [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->reconnect_timer = 0;
    if (self->closing || self->conn || self->opening) return;
    self->start_open([weak](Status status) {
      auto core = weak.lock();
      if (!core || core->closing) return;
      if (!status.ok()) {
        log::warn("virt", "re-opening {} failed (next try in {} ms): {}", core->options.uri,
                  std::min(core->backoff_ms * 2, core->options.reconnect_max_ms), status.message());
        core->schedule_reconnect();
        return;
      }
      core->reconnects++;
      core->backoff_ms = 0;
      log::info("virt", "libvirt connection {} re-opened", core->options.uri);
      core->set_state(true, "reconnected");
    });
  });
}

// ---- Connection ------------------------------------------------------------------------------------------------

Connection::Connection(Loop& loop, ConnectionOptions options) : core_(std::make_shared<Core>()) {
  core_->loop = &loop;
  core_->options = std::move(options);
}

Connection::~Connection() {
  core_->closing = true;
  if (core_->reconnect_timer) core_->loop->timer_stop(core_->reconnect_timer);
  if (core_->conn) {
    log::warn("virt", "libvirt connection {} destroyed while open: closing it synchronously", core_->options.uri);
    close_blocking(core_->conn, core_->lifecycle_id);
    core_->conn = nullptr;
  }
}

void Connection::on_domain_event(EventFn fn) { core_->on_event = std::move(fn); }
void Connection::on_state(StateFn fn) { core_->on_state = std::move(fn); }
bool Connection::connected() const { return core_->conn != nullptr; }
const std::string& Connection::uri() const { return core_->options.uri; }
unsigned Connection::reconnects() const { return core_->reconnects; }

void Connection::open(std::function<void(Status status)> done) {
  if (core_->conn || core_->opening) {
    core_->loop->defer([done = std::move(done)] { done(Status::error(CL_ESTATE, "already open or opening")); });
    return;
  }
  core_->closing = false;
  std::weak_ptr<Core> weak = core_;
  core_->start_open([weak, done = std::move(done)](Status status) {
    auto core = weak.lock();
    if (core && status.ok()) {
      log::info("virt", "libvirt connection {} open", core->options.uri);
      core->set_state(true, "opened");
    }
    done(std::move(status));
  });
}

void Connection::close(std::function<void()> done) {
  core_->closing = true;
  if (core_->reconnect_timer) {
    core_->loop->timer_stop(core_->reconnect_timer);
    core_->reconnect_timer = 0;
  }
  virConnectPtr c = core_->conn;
  int id = core_->lifecycle_id;
  core_->conn = nullptr;
  core_->lifecycle_id = -1;
  if (!c) {
    core_->loop->defer(std::move(done));
    return;
  }
  auto core = core_;
  core_->loop->queue_work([c, id] { close_blocking(c, id); },
                          [core, done = std::move(done)](bool) {
                            core->set_state(false, "closed");
                            done();
                          });
}

void Connection::simulate_drop(const std::string& reason) { core_->handle_drop(core_->conn, reason); }

void Connection::run_call(std::function<void(virConnectPtr)> work, std::function<void(Status status)> done) {
  virConnectPtr c = core_->conn;
  if (!c) {
    core_->loop->defer(
        [done = std::move(done)] { done(Status::error(CL_EUNAVAIL, "libvirt connection is not open")); });
    return;
  }
  // The worker holds its own reference: a drop or close meanwhile cannot free the connection under it.
  virConnectRef(c);
  auto status = std::make_shared<Status>();
  core_->loop->queue_work(
      [c, status, work = std::move(work)] {
        virResetLastError();
        work(c);
        virErrorPtr e = virGetLastError();
        if (e && e->code != VIR_ERR_OK) *status = Status::io(e->message ? e->message : "unknown libvirt error");
        virConnectClose(c);
      },
      [c, status, done = std::move(done)](bool cancelled) {
        if (cancelled) {
          virConnectClose(c);  // the work never ran: drop the reference it would have dropped
          *status = Status::error(CL_ECANCELED, "cancelled");
        }
        done(std::move(*status));
      });
}

}  // namespace cloudlet::virt
