#include "virt/port_probe.h"

#include <arpa/inet.h>

#include <fmt/format.h>

#include <cstring>

namespace cloudlet::virt {

struct PortProbe::Impl : std::enable_shared_from_this<PortProbe::Impl> {
  Loop* loop = nullptr;
  PortProbeOptions o;
  Done done;
  bool finished = false;
  Loop::TimerId deadline = 0, attempt_timer = 0, retry_timer = 0;
  struct Attempt* current = nullptr;
  std::string last = "no attempt yet";
  unsigned attempts = 0;

  void begin_attempt();
  void end_attempt(bool ready, std::string what);
  void finish(bool ready, std::string detail);
  void stop_timers();
};

namespace {

constexpr char kProbeBytes[] = "\r\n";

}  // namespace

// One connection. Freed when its handle has closed; `owner` is cleared when the probe no longer cares.
struct Attempt {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_shutdown_t shutdown;
  uv_buf_t buf;
  char read_buf[256];
  PortProbe::Impl* owner = nullptr;
  std::shared_ptr<PortProbe::Impl> keep;  // the probe outlives the attempt's callbacks
  bool closing = false;

  void close() {
    if (closing) return;
    closing = true;
    owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), [](uv_handle_t* h) { delete static_cast<Attempt*>(h->data); });
  }
  void report(bool ready, std::string what) {
    PortProbe::Impl* o = owner;
    close();
    if (o) o->end_attempt(ready, std::move(what));
  }
};

void PortProbe::Impl::stop_timers() {
  for (auto* t : {&deadline, &attempt_timer, &retry_timer}) {
    if (*t) loop->timer_stop(*t);
    *t = 0;
  }
}

void PortProbe::Impl::finish(bool ready, std::string detail) {
  if (finished) return;
  finished = true;
  stop_timers();
  if (current) {
    current->close();
    current = nullptr;
  }
  auto fn = std::move(done);
  done = nullptr;
  if (fn) loop->defer([fn = std::move(fn), ready, detail = std::move(detail)] { fn(ready, detail); });
}

void PortProbe::Impl::end_attempt(bool ready, std::string what) {
  current = nullptr;
  if (attempt_timer) {
    loop->timer_stop(attempt_timer);
    attempt_timer = 0;
  }
  if (finished) return;
  last = std::move(what);
  if (ready) return finish(true, fmt::format("{} after {} attempt(s)", last, attempts));
  auto weak = weak_from_this();
  retry_timer = loop->timer_start(o.retry_ms, 0, [weak] {
    if (auto self = weak.lock()) {
      self->retry_timer = 0;
      if (!self->finished) self->begin_attempt();
    }
  });
}

void PortProbe::Impl::begin_attempt() {
  attempts++;
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (uv_ip4_addr(o.address.c_str(), o.port, v4) != 0 && uv_ip6_addr(o.address.c_str(), o.port, v6) != 0) {
    return finish(false, fmt::format("'{}' is not a numeric address", o.address));
  }
  auto* a = new Attempt;
  a->owner = this;
  a->keep = shared_from_this();
  a->tcp.data = a;
  if (uv_tcp_init(loop->uv(), &a->tcp) != 0) {
    delete a;
    return finish(false, "cannot create a socket");
  }
  current = a;
  a->connect.data = a;
  int rc = uv_tcp_connect(&a->connect, &a->tcp, reinterpret_cast<sockaddr*>(&ss), [](uv_connect_t* req, int status) {
    auto* at = static_cast<Attempt*>(req->data);
    if (!at->owner) return;
    if (status != 0) return at->report(false, fmt::format("connect: {}", uv_strerror(status)));
    at->buf = uv_buf_init(const_cast<char*>(kProbeBytes), sizeof kProbeBytes - 1);
    at->write.data = at;
    uv_write(&at->write, reinterpret_cast<uv_stream_t*>(&at->tcp), &at->buf, 1, [](uv_write_t* w, int st) {
      auto* at2 = static_cast<Attempt*>(w->data);
      if (st != 0 && at2->owner) at2->report(false, fmt::format("write: {}", uv_strerror(st)));
    });
    at->shutdown.data = at;
    uv_shutdown(&at->shutdown, reinterpret_cast<uv_stream_t*>(&at->tcp), [](uv_shutdown_t*, int) {});
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&at->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* at2 = static_cast<Attempt*>(h->data);
          *b = uv_buf_init(at2->read_buf, sizeof at2->read_buf);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          auto* at2 = static_cast<Attempt*>(s->data);
          if (!at2->owner || n == 0) return;
          if (n > 0) return at2->report(true, "the service answered");
          if (n == UV_EOF) return at2->report(true, "the service accepted and closed");
          at2->report(false, fmt::format("read: {}", uv_strerror(static_cast<int>(n))));
        });
  });
  if (rc != 0) return a->report(false, fmt::format("connect: {}", uv_strerror(rc)));
  auto weak = weak_from_this();
  attempt_timer = loop->timer_start(o.attempt_ms, 0, [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->attempt_timer = 0;
    if (self->current) {
      Attempt* at = self->current;
      at->report(false, "no answer from the guest yet");
    }
  });
}

std::shared_ptr<PortProbe> PortProbe::start(Loop& loop, PortProbeOptions options, Done done) {
  auto impl = std::make_shared<Impl>();
  impl->loop = &loop;
  impl->o = std::move(options);
  impl->done = std::move(done);
  std::weak_ptr<Impl> weak = impl;
  impl->deadline = loop.timer_start(impl->o.timeout_ms, 0, [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->deadline = 0;
    self->finish(false, fmt::format("port {} did not answer within {} ms ({} attempts; last: {})", self->o.port,
                                    self->o.timeout_ms, self->attempts, self->last));
  });
  impl->begin_attempt();
  return std::shared_ptr<PortProbe>(new PortProbe(impl));
}

void PortProbe::cancel() {
  if (impl_->finished) return;
  impl_->done = nullptr;
  impl_->finish(false, "cancelled");
}

PortProbe::~PortProbe() { cancel(); }

std::string probe_address_for(const std::string& forward_address) {
  if (forward_address.empty() || forward_address == "0.0.0.0") return "127.0.0.1";
  if (forward_address == "::") return "::1";
  return forward_address;
}

}  // namespace cloudlet::virt
