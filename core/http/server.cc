#include "http/server.h"

#include <ctime>

#include "http/connection.h"
#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet::http {

namespace {
constexpr uint64_t kSweepMs = 250;
}

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
    l->tls = TlsContext::create(options.tls_cert, options.tls_key, error);
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
  s->all_.insert(c);
  c->start();
}

void Server::connection_closed(Connection* c) {
  all_.erase(c);
  connections_--;
  for (auto& l : listeners_) {
    if (c->listener_ptr() == l.get()) l->connections--;
  }
  maybe_finish_shutdown();
}

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
  }
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
