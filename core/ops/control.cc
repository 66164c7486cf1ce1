#include "ops/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <list>

#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "ops/operations.h"

namespace cloudlet {
namespace {

// What comes back to the command line: {"status": N, "result": <json>}.
std::string answer_line(cl_status_t status, std::string_view result) {
  std::string out = "{\"status\":" + std::to_string(status) + ",\"result\":";
  out += json::valid(result) && !result.empty() ? std::string(result) : json::error_object(result);
  return out + "}\n";
}

}  // namespace

struct ControlSocket::Impl {
  struct Client {
    Impl* owner = nullptr;
    uv_pipe_t pipe;
    uv_timer_t timer;
    std::string in;
    int open_handles = 2;
    bool answered = false;
    bool closing = false;
    uint64_t serial = 0;  // names the client in an operation's late answer (addresses get reused)
    std::list<Client*>::iterator self;
  };

  Loop& loop;
  Operations& ops;
  std::set<std::string> allowed;
  std::string path;
  uv_pipe_t server;
  bool listening = false;
  bool stopping = false;
  int open_handles = 0;
  std::list<Client*> clients;
  uint64_t next_serial = 1;
  std::function<void()> stopped;
  // Outstanding operation answers hold this to know whether the socket is still there.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  Impl(Loop& l, Operations& o, std::set<std::string> a) : loop(l), ops(o), allowed(std::move(a)) {}

  void maybe_stopped() {
    if (stopping && open_handles == 0 && clients.empty() && stopped) {
      auto done = std::move(stopped);
      stopped = nullptr;
      done();
    }
  }

  static void client_handle_closed(uv_handle_t* h) {
    auto* c = static_cast<Client*>(h->data);
    if (--c->open_handles > 0) return;
    Impl* self = c->owner;
    self->clients.erase(c->self);
    delete c;
    self->maybe_stopped();
  }

  void close_client(Client* c) {
    if (c->closing) return;
    c->closing = true;
    uv_timer_stop(&c->timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), client_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), client_handle_closed);
  }

  void reply(Client* c, cl_status_t status, std::string_view result) {
    if (c->closing || c->answered) return;
    c->answered = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));
    auto* req = new uv_write_t;
    auto* text = new std::string(answer_line(status, result));
    req->data = text;
    uv_buf_t buf = uv_buf_init(text->data(), static_cast<unsigned>(text->size()));
    int rc = uv_write(req, reinterpret_cast<uv_stream_t*>(&c->pipe), &buf, 1, [](uv_write_t* w, int) {
      auto* client = static_cast<Client*>(w->handle->data);
      delete static_cast<std::string*>(w->data);
      delete w;
      client->owner->close_client(client);
    });
    if (rc != 0) {
      delete text;
      delete req;
      close_client(c);
    }
  }

  void handle_line(Client* c, std::string_view line) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));  // one request per connection
    json::Document d;
    std::string error;
    if (!json::parse_object(line, &d, &error)) return reply(c, CL_EINVAL, json::error_object(error));
    auto op = json::get_string(d, "op");
    const json::Value* args = json::member(d, "args");
    if (!op || !args || !args->IsObject()) {
      return reply(c, CL_EINVAL, json::error_object("send {\"op\": ..., \"args\": {...}}"));
    }
    if (!allowed.count(std::string(*op))) {
      return reply(c, CL_EPERM, json::error_object("the control socket does not offer " + std::string(*op)));
    }
    log::info("core", "control socket: {}", *op);
    std::weak_ptr<bool> still(alive);
    uint64_t serial = c->serial;
    cl_status_t st = ops.call(*op, json::stringify(*args), [this, serial, still](cl_status_t s, std::string_view result) {
      if (still.expired()) return;
      // The client may have gone (closed, timed out): then it is no longer listed.
      for (Client* x : clients) {
        if (x->serial == serial) return reply(x, s, result);
      }
    });
    if (st != CL_OK) {
      reply(c, st, json::error_object(st == CL_ENOENT ? "no such operation here (is its plugin loaded?)"
                                                      : "the operation refused the arguments"));
    }
  }

  static void on_alloc(uv_handle_t*, size_t suggested, uv_buf_t* buf) {
    buf->base = new char[suggested];
    buf->len = suggested;
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Client*>(s->data);
    Impl* self = c->owner;
    if (n > 0) c->in.append(buf->base, static_cast<size_t>(n));
    delete[] buf->base;
    if (n < 0) return self->close_client(c);
    size_t nl = c->in.find('\n');
    if (nl != std::string::npos) return self->handle_line(c, std::string_view(c->in).substr(0, nl));
    if (c->in.size() > kMaxControlLine) {
      self->reply(c, CL_ETOOBIG, json::error_object("request over " + std::to_string(kMaxControlLine) + " bytes"));
    }
  }

  static void on_connection(uv_stream_t* s, int status) {
    auto* self = static_cast<Impl*>(s->data);
    if (status < 0 || self->stopping) return;
    auto* c = new Client;
    c->owner = self;
    c->serial = self->next_serial++;
    uv_pipe_init(self->loop.uv(), &c->pipe, 0);
    uv_timer_init(self->loop.uv(), &c->timer);
    c->pipe.data = c;
    c->timer.data = c;
    self->clients.push_front(c);
    c->self = self->clients.begin();
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) return self->close_client(c);
    uv_timer_start(&c->timer, [](uv_timer_t* t) {
      auto* client = static_cast<Client*>(t->data);
      client->owner->close_client(client);
    }, kControlTimeoutMs, 0);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe), on_alloc, on_read);
  }
};

ControlSocket::ControlSocket(Loop& loop, Operations& ops, std::set<std::string> allowed_ops)
    : impl_(std::make_unique<Impl>(loop, ops, std::move(allowed_ops))) {}

ControlSocket::~ControlSocket() = default;

Status ControlSocket::start(const std::string& path) {
  Impl& s = *impl_;
  sockaddr_un addr;
  if (path.size() >= sizeof addr.sun_path) return Status::invalid("control socket path too long: " + path);
  struct stat sb;
  if (lstat(path.c_str(), &sb) == 0) {
    if (!S_ISSOCK(sb.st_mode)) return Status::error(CL_EEXIST, path + " exists and is not a socket");
    ::unlink(path.c_str());  // a dead server's: the store lock says no other server runs here
  }
  uv_pipe_init(s.loop.uv(), &s.server, 0);
  s.server.data = &s;
  s.open_handles = 1;
  mode_t old = umask(0177);  // the socket file is born 0600
  int rc = uv_pipe_bind(&s.server, path.c_str());
  umask(old);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&s.server), 8, Impl::on_connection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&s.server), [](uv_handle_t* h) {
      static_cast<Impl*>(h->data)->open_handles--;
    });
    return Status::io("control socket " + path + ": " + uv_strerror(rc));
  }
  s.path = path;
  s.listening = true;
  return {};
}

void ControlSocket::stop(std::function<void()> done) {
  Impl& s = *impl_;
  s.stopping = true;
  s.stopped = std::move(done);
  *s.alive = false;
  s.alive = std::make_shared<bool>(false);
  if (s.listening) {
    s.listening = false;
    ::unlink(s.path.c_str());
    uv_close(reinterpret_cast<uv_handle_t*>(&s.server), [](uv_handle_t* h) {
      auto* impl = static_cast<Impl*>(h->data);
      impl->open_handles--;
      impl->maybe_stopped();
    });
  }
  for (auto* c : std::list<Impl::Client*>(s.clients)) s.close_client(c);
  s.maybe_stopped();
}

cl_status_t control_call(const std::string& path, std::string_view op, std::string_view args_json,
                         uint64_t timeout_ms, std::string* result_json) {
  result_json->clear();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return CL_EINVAL;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return CL_EIO;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    // No file, or a file nobody listens on (a server that died): no server runs here.
    return e == ENOENT || e == ECONNREFUSED ? CL_ENOENT : CL_EIO;
  }
  std::string line = "{\"op\":";
  json::append_quoted(&line, op);
  line += ",\"args\":" + std::string(args_json) + "}\n";
  int64_t deadline = monotonic_ms() + static_cast<int64_t>(timeout_ms);
  auto wait = [&](short events) {
    int64_t left = deadline - monotonic_ms();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(left)) > 0;
  };
  size_t sent = 0;
  while (sent < line.size()) {
    if (!wait(POLLOUT)) break;
    ssize_t n = ::send(fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n <= 0 && errno != EINTR && errno != EAGAIN) break;
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string in;
  while (sent == line.size() && in.find('\n') == std::string::npos && in.size() <= kMaxControlLine && wait(POLLIN)) {
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      break;
    }
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t nl = in.find('\n');
  json::Document d;
  std::string error;
  if (nl == std::string::npos || !json::parse_object(std::string_view(in).substr(0, nl), &d, &error)) {
    *result_json = json::error_object(sent == line.size() ? "the server did not answer in time"
                                                         : "could not send the request to the server");
    return CL_ETIMEDOUT;
  }
  auto status = json::get_int(d, "status");
  const json::Value* result = json::member(d, "result");
  if (!status || !result) {
    *result_json = json::error_object("the server's answer is malformed");
    return CL_EIO;
  }
  *result_json = json::stringify(*result);
  return static_cast<cl_status_t>(*status);
}

}  // namespace cloudlet
