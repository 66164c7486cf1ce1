#include "http/server.h"

#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "http/connection.h"
#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet::http {

namespace {
constexpr uint64_t kSweepMs = 250;
// Trim the heap once memory held for clients has fallen by at least this much from its peak.
constexpr uint64_t kTrimAfterBytes = 4 << 20;

// A connection's client address as a map key: IPv4 (also v4-mapped) by address, IPv6 by /64 (one host
// commonly owns a whole /64, so counting single IPv6 addresses would not limit anything).
std::string address_key(uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::string();
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    return std::string(reinterpret_cast<const char*>(&in->sin_addr), 4);
  }
  if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    const auto* b = reinterpret_cast<const char*>(&in6->sin6_addr);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return std::string(b + 12, 4);
    return std::string(b, 8);
  }
  return std::string();
}
}  // namespace

std::list<Connection*>* Listener::list_for(Phase p) {
  switch (p) {
    case Phase::header: return &header_list;
    case Phase::body: return &body_list;
    case Phase::idle: return &idle_list;
    case Phase::write: return &write_list;
    default: return nullptr;
  }
}

uint32_t Listener::timeout_for(Phase p) const {
  switch (p) {
    case Phase::header: return options.limits.header_timeout_ms;
    case Phase::body: return options.limits.body_timeout_ms;
    case Phase::idle: return options.limits.idle_timeout_ms;
    case Phase::write: return options.limits.write_timeout_ms;
    default: return 0;
  }
}

Server::Server(Loop& loop, std::string spool_dir)
    : loop_(loop), spool_dir_(std::move(spool_dir)), read_buf_(new char[kReadBufferSize]), files_(loop) {}

Server::~Server() = default;

cl_status_t Server::listen(const ListenerOptions& options, std::string* error) {
  if (options.name.empty() || listener(options.name) != nullptr) {
    *error = "listener name empty or already used: '" + options.name + "'";
    return CL_EEXIST;
  }
  auto l = std::make_unique<Listener>();
  l->options = options;
  l->server = this;
  if (!options.tls_cert.empty() || !options.tls_key.empty()) {
    if (options.tls_cert.empty() || options.tls_key.empty()) {
      *error = "listener '" + options.name + "': TLS needs both a certificate and a key";
      return CL_EINVAL;
    }
    l->tls = TlsContext::create(options.tls_cert, options.tls_key, options.tls_client_certs, error);
    if (!l->tls) return CL_EINVAL;
  }
  sockaddr_storage addr{};
  std::string host = options.host == "localhost" ? "127.0.0.1" : options.host;
  if (uv_ip4_addr(host.c_str(), options.port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), options.port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    *error = "listener '" + options.name + "': not an IP address: " + options.host;
    return CL_EINVAL;
  }
  uv_tcp_init(loop_.uv(), &l->tcp);
  l->tcp.data = l.get();
  int rc = uv_tcp_bind(&l->tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp), 511, on_connection);
  if (rc != 0) {
    *error = fmt::format("listener '{}': cannot listen on {}:{}: {}", options.name, options.host, options.port,
                         uv_strerror(rc));
    // The handle must outlive its close callback: hand ownership to it.
    Listener* dead = l.release();
    uv_close(reinterpret_cast<uv_handle_t*>(&dead->tcp), [](uv_handle_t* h) { delete static_cast<Listener*>(h->data); });
    return CL_EIO;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&l->tcp, reinterpret_cast<sockaddr*>(&bound), &len);
  l->bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                    : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  l->open = true;
  open_listeners_++;
  log::info("http", "listener '{}' on {}:{}{}", options.name, options.host, l->bound_port, l->tls ? " (TLS)" : "");
  listeners_.push_back(std::move(l));
  if (!sweep_timer_) sweep_timer_ = loop_.timer_start(kSweepMs, kSweepMs, [this] { sweep(); });
  return CL_OK;
}

Listener* Server::listener(std::string_view name) {
  for (auto& l : listeners_) {
    if (l->options.name == name) return l.get();
  }
  return nullptr;
}

Router* Server::router(std::string_view name) {
  Listener* l = listener(name);
  return l ? &l->router : nullptr;
}

std::vector<std::string> Server::listener_names() const {
  std::vector<std::string> names;
  for (const auto& l : listeners_) names.push_back(l->options.name);
  return names;
}

void Server::remove_routes(void* owner) {
  for (auto& l : listeners_) l->router.remove_owner(owner);
}

cl_status_t Server::set_guard(std::string_view name, void* owner, std::function<cl_status_t(Request&)> guard) {
  Listener* l = listener(name);
  if (!l) return CL_ENOENT;
  if (l->guarded && (l->guard || l->guard_owner)) return CL_EEXIST;  // expected only (expect_guard): free
  if (!guard) return CL_EINVAL;
  l->guard = std::move(guard);
  l->guard_owner = owner;
  l->guarded = true;
  return CL_OK;
}

cl_status_t Server::expect_guard(std::string_view name) {
  Listener* l = listener(name);
  if (!l) return CL_ENOENT;
  l->guarded = true;
  return CL_OK;
}

void Server::remove_guards(void* owner) {
  for (auto& l : listeners_) {
    if (!l->guarded || l->guard_owner != owner) continue;
    l->guard = nullptr;
    l->guard_owner = nullptr;
    // Only news while serving: at shutdown every listener is closing anyway.
    if (!shutting_down_) {
      log::warn("http", "listener '{}' lost its guard: it refuses every request (503) from now on", l->options.name);
    }
  }
}

void Server::on_connection(uv_stream_t* stream, int status) {
  auto* l = static_cast<Listener*>(stream->data);
  Server* s = l->server;
  if (status < 0) {
    log::warn("http", "accept on '{}': {}", l->options.name, uv_strerror(status));
    return;
  }
  auto* c = new Connection(*s, *l);
  s->connections_++;
  l->connections++;
  if (uv_accept(stream, reinterpret_cast<uv_stream_t*>(c->tcp())) != 0) {
    c->close("accept failed");
    return;
  }
  s->stats_.accepted++;
  if (l->connections > l->options.limits.max_connections || s->shutting_down_) {
    s->stats_.rejected_over_cap++;
    c->close("connection cap reached");
    return;
  }
  if (!s->admit_address(*l, c)) {
    s->stats_.rejected_over_cap++;
    s->stats_.rejected_per_address++;
    c->close("connection cap of the client's address reached");
    return;
  }
  s->all_.insert(c);
  c->start();
}

bool Server::admit_address(Listener& l, Connection* c) {
  const Limits& lim = l.options.limits;
  std::string key = address_key(c->tcp());
  uint32_t limit = lim.max_connections_per_address;
  // Into the reserved share: only addresses that hold few connections get one (an operator's browser).
  uint32_t general = lim.max_connections - std::min(lim.reserved_connections, lim.max_connections / 2);
  if (l.connections > general) limit = std::min(limit, kReservedPerAddress);
  auto it = l.per_address.find(key);
  uint32_t held = it == l.per_address.end() ? 0 : it->second;
  if (held >= limit) return false;
  if (it == l.per_address.end()) {
    l.per_address.emplace(key, 1);
  } else {
    it->second++;
  }
  c->address_key = std::move(key);
  c->address_counted = true;
  return true;
}

void Server::connection_closed(Connection* c) {
  all_.erase(c);
  connections_--;
  Listener& l = c->listener();
  l.connections--;
  if (c->address_counted) {
    auto it = l.per_address.find(c->address_key);
    if (it != l.per_address.end() && --it->second == 0) l.per_address.erase(it);
  }
  maybe_finish_shutdown();
}

void Server::request_clock_start(Connection* c) {
  Listener& l = c->listener();
  if (c->in_request_list) {
    l.request_list.splice(l.request_list.end(), l.request_list, c->request_it);
  } else {
    l.request_list.push_back(c);
    c->request_it = std::prev(l.request_list.end());
    c->in_request_list = true;
  }
  c->request_deadline_ms = loop_.now_ms() + l.options.limits.request_timeout_ms;
}

void Server::request_clock_stop(Connection* c) {
  if (!c->in_request_list) return;
  c->listener().request_list.erase(c->request_it);
  c->in_request_list = false;
}

bool Server::body_reserve(uint64_t n) {
  if (n > totals_.max_body_bytes || body_total_ > totals_.max_body_bytes - n) return false;
  body_total_ += n;
  held_peak_ = std::max(held_peak_, unsent_total_ + body_total_);
  return true;
}

void Server::body_release(uint64_t n) { body_total_ -= std::min(n, body_total_); }

void Server::set_phase(Connection* c, Phase p) {
  if (c->phase == p) {
    touch(c);
    return;
  }
  Listener& l = c->listener();
  std::list<Connection*>* from = l.list_for(c->phase);
  std::list<Connection*>* to = l.list_for(p);
  if (from && to) {
    to->splice(to->end(), *from, c->phase_it);  // moves the node: no allocation
  } else if (from) {
    from->erase(c->phase_it);
  } else if (to) {
    to->push_back(c);
    c->phase_it = std::prev(to->end());
  }
  c->phase = p;
  c->deadline_ms = loop_.now_ms() + l.timeout_for(p);
}

void Server::touch(Connection* c) {
  std::list<Connection*>* list = c->listener().list_for(c->phase);
  if (!list) return;
  list->splice(list->end(), *list, c->phase_it);
  c->deadline_ms = loop_.now_ms() + c->listener().timeout_for(c->phase);
}

void Server::sweep() {
  uint64_t now = loop_.now_ms();
  for (auto& l : listeners_) {
    for (auto* list : {&l->header_list, &l->body_list, &l->idle_list, &l->write_list}) {
      while (!list->empty() && list->front()->deadline_ms <= now) {
        Connection* c = list->front();
        stats_.timed_out++;
        c->close(list == &l->idle_list ? "idle timeout" : "timeout");  // removes it from the list
      }
    }
    while (!l->request_list.empty() && l->request_list.front()->request_deadline_ms <= now) {
      stats_.timed_out++;
      l->request_list.front()->close("request timeout");  // removes it from the list
    }
  }
  maybe_trim();
}

void Server::maybe_trim() {
  uint64_t held = unsent_total_ + body_total_;
  held_peak_ = std::max(held_peak_, held);
  if (held_peak_ - held < kTrimAfterBytes) return;
  // glibc keeps freed heap memory for reuse (and raises its mmap threshold after large frees), so memory
  // once held for clients would stay resident after they left. malloc_trim returns free pages of every
  // arena; it runs at most once per sweep and only after a large drop.
  malloc_trim(0);
  held_peak_ = held;
}

void Server::shutdown(uint64_t deadline_ms, std::function<void()> done) {
  if (shutting_down_) return;
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  for (auto& l : listeners_) {
    if (!l->open) continue;
    l->open = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), [](uv_handle_t* h) {
      auto* listener = static_cast<Listener*>(h->data);
      listener->server->open_listeners_--;
      listener->server->maybe_finish_shutdown();
    });
  }
  std::vector<Connection*> conns(all_.begin(), all_.end());
  for (Connection* c : conns) c->drain();
  force_timer_ = loop_.timer_start(deadline_ms, 0, [this] {
    force_timer_ = 0;
    std::vector<Connection*> left(all_.begin(), all_.end());
    if (!left.empty()) log::warn("http", "shutdown deadline passed: closing {} connection(s)", left.size());
    for (Connection* c : left) c->close("shutdown deadline");
  });
  maybe_finish_shutdown();
}

void Server::maybe_finish_shutdown() {
  if (!shutting_down_ || open_listeners_ > 0 || connections_ > 0 || !shutdown_done_) return;
  if (sweep_timer_) loop_.timer_stop(sweep_timer_);
  if (force_timer_) loop_.timer_stop(force_timer_);
  sweep_timer_ = force_timer_ = 0;
  auto done = std::move(shutdown_done_);
  shutdown_done_ = nullptr;
  done();
}

std::string_view Server::date() {
  time_t now = time(nullptr);
  if (static_cast<uint64_t>(now) != date_second_) {
    date_second_ = static_cast<uint64_t>(now);
    tm t;
    gmtime_r(&now, &t);
    char buf[64];
    size_t n = strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &t);
    date_.assign(buf, n);
  }
  return date_;
}

}  // namespace cloudlet::http
