// A stand-in for cloudletd in the discovery tests: one Loop, one Discovery, and a tiny HTTP answer on the
// published port so "still serves" can be checked. Peer changes go to stdout, one line each:
//   peer+ name=<n> host=<h> addresses=<a,b> port=<p> encryption=<enabled|disabled> interface=<if>
//   peer- name=<n> interface=<if>
// SIGUSR1 toggles the encryption TXT (an API mode change); SIGTERM/SIGINT withdraw and exit with
// Loop::close()'s result (0 = every handle closed). --stop-on-peer shuts down from inside the first peer
// callback (Discovery::stop() must be safe there).
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "discovery/discovery.h"
#include "log/log.h"
#include "loop/loop.h"

namespace {

using cloudlet::Discovery;
using cloudlet::DiscoveryOptions;
using cloudlet::Loop;
using cloudlet::Peer;

constexpr size_t kMaxRequest = 8192;
constexpr std::string_view kAnswer =
    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 26\r\nConnection: close\r\n\r\n"
    "cloudlet discovery driver\n";

struct Client {
  uv_tcp_t tcp;
  std::string request;
  uv_write_t write;
  bool answered = false;
};

void client_close(Client* c) {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->tcp))) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
}

void client_answer(Client* c) {
  c->answered = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
  uv_buf_t buf = uv_buf_init(const_cast<char*>(kAnswer.data()), static_cast<unsigned>(kAnswer.size()));
  c->write.data = c;
  if (uv_write(&c->write, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1,
               [](uv_write_t* w, int) { client_close(static_cast<Client*>(w->data)); }) != 0)
    client_close(c);
}

void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* c = new Client;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    client_close(c);
    return;
  }
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static char scratch[4096];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* cl = static_cast<Client*>(s->data);
        if (n < 0) {
          client_close(cl);
          return;
        }
        cl->request.append(buf->base, static_cast<size_t>(n));
        if (cl->request.find("\r\n\r\n") != std::string::npos || cl->request.size() > kMaxRequest)
          client_answer(cl);
      });
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "discovery_driver: %s\nusage: discovery_driver [--name N] [--port P] [--encryption "
               "enabled|disabled]\n  [--txt key=value]... [--no-publish] [--no-browse] [--disabled] [--listen "
               "ADDR] [--log-level L] [--stop-on-peer]\n",
               msg);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  DiscoveryOptions options;
  std::string listen = "127.0.0.1";
  bool stop_on_peer = false;
  for (int i = 1; i < argc; i++) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (a == "--name") options.name = value();
    else if (a == "--port") {
      std::string v = value();
      char* end = nullptr;
      long p = std::strtol(v.c_str(), &end, 10);
      if (*end || p < 1 || p > 65535) usage("bad port");
      options.port = static_cast<uint16_t>(p);
    } else if (a == "--encryption") {
      std::string v = value();
      if (v != "enabled" && v != "disabled") usage("--encryption takes enabled or disabled");
      options.encrypted = v == "enabled";
    } else if (a == "--txt") options.extra_txt.push_back(value());
    else if (a == "--no-publish") options.publish = false;
    else if (a == "--no-browse") options.browse = false;
    else if (a == "--disabled") options.enabled = false;
    else if (a == "--listen") listen = value();
    else if (a == "--stop-on-peer") stop_on_peer = true;
    else if (a == "--log-level") {
      cloudlet::log::Level level;
      if (!cloudlet::log::parse_level(value(), &level)) usage("bad log level");
      cloudlet::log::set_level(level);
    } else usage("unknown option");
  }

  Loop loop;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  uv_tcp_t server;
  uv_tcp_init(loop.uv(), &server);
  sockaddr_storage addr{};
  if (uv_ip4_addr(listen.c_str(), options.port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(listen.c_str(), options.port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0)
    usage("bad --listen address");
  if (int rc = uv_tcp_bind(&server, reinterpret_cast<sockaddr*>(&addr), 0);
      rc != 0 || (rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server), 64, on_connection)) != 0) {
    cloudlet::log::error("driver", "cannot listen on {}:{}: {}", listen, options.port, uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
    loop.close();
    return 1;
  }
  cloudlet::log::info("driver", "serving on {}:{}", listen, options.port);

  Discovery discovery(loop, options);
  uv_signal_t usr1;
  uv_signal_init(loop.uv(), &usr1);
  bool stopping = false;
  auto shutdown = [&](const char* why) {
    if (stopping) return;
    stopping = true;
    cloudlet::log::info("driver", "{}: stopping", why);
    uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&usr1), nullptr);
    discovery.stop([] { cloudlet::log::info("driver", "discovery stopped"); });
  };
  discovery.on_peer_change([&](const Peer& p, bool present) {
    if (present) {
      std::string addresses;
      for (const auto& a : p.addresses) addresses += (addresses.empty() ? "" : ",") + a;
      std::printf("peer+ name=%s host=%s addresses=%s port=%u encryption=%s interface=%s\n", p.name.c_str(),
                  p.host.c_str(), addresses.c_str(), p.port, p.encryption ? "enabled" : "disabled",
                  p.interface.c_str());
    } else {
      std::printf("peer- name=%s interface=%s\n", p.name.c_str(), p.interface.c_str());
    }
    if (stop_on_peer) shutdown("peer seen");
  });
  if (cloudlet::Status started = discovery.start(); !started.ok()) {
    cloudlet::log::error("driver", "discovery: {}", started.message());
    uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&usr1), nullptr);
    loop.close();
    return 2;
  }

  usr1.data = &discovery;
  uv_signal_start(
      &usr1,
      [](uv_signal_t* s, int) {
        auto* d = static_cast<Discovery*>(s->data);
        d->set_encrypted(!d->options().encrypted);
      },
      SIGUSR1);
  uv_unref(reinterpret_cast<uv_handle_t*>(&usr1));
  loop.watch_signals([&](int signum) { shutdown(signum == SIGINT ? "SIGINT" : "SIGTERM"); });

  loop.run();
  int rc = loop.close();
  cloudlet::log::info("driver", "exit {}", rc);
  return rc == 0 ? 0 : 3;
}
