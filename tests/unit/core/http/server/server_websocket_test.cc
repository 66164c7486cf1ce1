// WebSockets on the real server (core/http/ws_session.h): upgrade, messages both ways (split and joined),
// ping/pong, the closing handshake from either side, protocol errors, a peer that vanishes, server shutdown,
// early frames behind the request, a late accept, and TLS. The client is a raw socket speaking RFC 6455.
#include "http/ws_session.h"

#include <mutex>

#include "server_test_util.h"
#include "ws_test_client.h"

using namespace httptest;

namespace {

// What the server side saw, filled on the loop thread and read after run().
struct Seen {
  std::mutex mu;
  std::vector<std::string> messages;
  int closes = 0;
  cl_status_t status = 1;
  uint16_t code = 0;
  std::string reason;
};

// A route that accepts a WebSocket and echoes each message (with its type), counting what it saw.
std::function<cl_status_t(Request&)> echo_route(Seen* seen, std::string subprotocol = "") {
  return [seen, subprotocol](Request& r) -> cl_status_t {
    http::WsSession* s = nullptr;
    std::string error;
    http::WsOptions o;
    o.subprotocol = subprotocol;
    o.max_message = 100000;
    auto holder = std::make_shared<http::WsSession*>();
    cl_status_t st = http::WsSession::accept(
        &r, o,
        [seen, holder](ws::Opcode type, std::string_view data) {
          {
            std::lock_guard<std::mutex> l(seen->mu);
            seen->messages.emplace_back(data);
          }
          if (data == "close please") {
            (*holder)->close(4000, "as you wish");
            return;
          }
          (*holder)->send(type, data.data(), data.size(), nullptr, nullptr);
        },
        [seen](cl_status_t status, uint16_t code, std::string_view reason) {
          std::lock_guard<std::mutex> l(seen->mu);
          seen->closes++;
          seen->status = status;
          seen->code = code;
          seen->reason = std::string(reason);
        },
        &s, &error);
    if (st == CL_EINVAL) return r.send_error(400, error);
    if (st == CL_OK) *holder = s;
    return st;
  };
}

}  // namespace

TEST(HttpServerWebSocket, EchoesMessagesAnswersPingsAndClosesCleanly) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  h.run([&] {
    Client c(h.port);
    // A first frame right behind the request, in the same segment: it must not be lost or parsed as HTTP.
    ASSERT_TRUE(c.send(upgrade_request() + masked(0x81, "early")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 101);
    EXPECT_EQ(r->header("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    EXPECT_EQ(r->header("upgrade"), "websocket");
    auto f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kText);
    EXPECT_EQ(f->payload, "early");
    // A fragmented text message with a ping between its fragments, then a large binary one.
    ASSERT_TRUE(c.send(masked(0x01, "Hel") + masked(0x89, "are you there") + masked(0x80, "lo")));
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kPong);
    EXPECT_EQ(f->payload, "are you there");
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->payload, "Hello");
    std::string big = pattern_bytes(70000, 3);
    ASSERT_TRUE(c.send(masked(0x82, big)));
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kBinary);
    EXPECT_EQ(fnv(f->payload), fnv(big));
    // The client closes: the server echoes the code and closes the TCP connection.
    ASSERT_TRUE(c.send(masked(0x88, ws::close_payload(1000, "bye"))));
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kClose);
    EXPECT_EQ(f->code(), 1000);
    EXPECT_TRUE(c.wait_closed(3000));
  });
  EXPECT_EQ(seen.messages.size(), 3u);
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_OK);
  EXPECT_EQ(seen.code, 1000);
  EXPECT_EQ(seen.reason, "bye");
}

TEST(HttpServerWebSocket, ServerClosesWithItsCodeAfterTheHandshake) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(upgrade_request());
    ASSERT_TRUE(r && r->status == 101);
    ASSERT_TRUE(c.send(masked(0x81, "close please")));
    auto f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kClose);
    EXPECT_EQ(f->code(), 4000);
    EXPECT_EQ(f->payload.substr(2), "as you wish");
    ASSERT_TRUE(c.send(masked(0x88, ws::close_payload(4000, ""))));
    EXPECT_TRUE(c.wait_closed(3000));
  });
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_OK);
  EXPECT_EQ(seen.code, 4000);
}

TEST(HttpServerWebSocket, BadUpgradesAreRefusedAndTheRequestStaysTheHandlers) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  h.route("GET", "/proto", echo_route(&seen, "cloudlet.v1"));
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_NE(r->body.find("Sec-WebSocket-Key"), std::string::npos) << r->body;
    Client d(h.port);
    r = d.roundtrip(upgrade_request("/proto", "Sec-WebSocket-Protocol: chat\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    Client e(h.port);
    r = e.roundtrip(upgrade_request("/proto", "Sec-WebSocket-Protocol: chat, cloudlet.v1\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 101);
    EXPECT_EQ(r->header("sec-websocket-protocol"), "cloudlet.v1");
  });
}

TEST(HttpServerWebSocket, ProtocolErrorsCloseWithTheirCode) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.roundtrip(upgrade_request()));
    ASSERT_TRUE(c.send(std::string("\x81\x02hi", 4)));  // not masked
    auto f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kClose);
    EXPECT_EQ(f->code(), ws::kProtocolError);
    EXPECT_TRUE(c.wait_closed(3000));
    Client d(h.port);
    ASSERT_TRUE(d.roundtrip(upgrade_request()));
    ASSERT_TRUE(d.send(masked(0x82, std::string(100001, 'x'))));  // over max_message
    f = read_frame(d);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->code(), ws::kTooBig);
    EXPECT_TRUE(d.wait_closed(3000));
  });
  EXPECT_EQ(seen.closes, 2);
  EXPECT_EQ(seen.status, CL_ETOOBIG);
  EXPECT_EQ(seen.code, ws::kTooBig);
  EXPECT_TRUE(seen.messages.empty());
}

TEST(HttpServerWebSocket, APeerThatVanishesIsReportedOnce) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.roundtrip(upgrade_request()));
    c.reset();
    EXPECT_TRUE(wait_for([&] {
      std::lock_guard<std::mutex> l(seen.mu);
      return seen.closes == 1;
    }, 3000));
  });
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_ECLOSING);
  EXPECT_EQ(seen.code, ws::kAbnormal);
}

TEST(HttpServerWebSocket, ShutdownSaysGoingAway) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  std::optional<Frame> got;
  std::atomic<bool> closed{false};
  std::thread reader;
  auto c = std::make_unique<Client>(h.port);
  h.run(
      [&] {
        ASSERT_TRUE(c->roundtrip(upgrade_request()));
        // The client returns at once: the harness shuts the server down while the socket is open.
        reader = std::thread([&] {
          got = read_frame(*c, 5000);
          if (got) c->send(masked(0x88, ws::close_payload(1001, "")));
          closed = c->wait_closed(5000);
        });
      },
      20000, 3000);
  reader.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->opcode, ws::kClose);
  EXPECT_EQ(got->code(), ws::kGoingAway);
  EXPECT_TRUE(closed);
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_ECLOSING);
}

TEST(HttpServerWebSocket, WorksOverTls) {
  TempDir certs;
  std::string cert, key;
  ASSERT_TRUE(make_self_signed(certs.path(), &cert, &key));
  auto o = Harness::options();
  o.tls_cert = cert;
  o.tls_key = key;
  Harness h(o);
  Seen seen;
  h.route("GET", "/ws", echo_route(&seen));
  h.run([&] {
    TlsClient c(h.port, cert);
    ASSERT_TRUE(c.handshake_ok()) << c.handshake_error();
    auto r = c.roundtrip(upgrade_request());
    ASSERT_TRUE(r && r->status == 101);
    ASSERT_TRUE(c.send(masked(0x81, "secret hello")));
    auto f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->payload, "secret hello");
    ASSERT_TRUE(c.send(masked(0x88, ws::close_payload(1000, ""))));
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->code(), 1000);
  });
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_OK);
}

TEST(HttpServerWebSocket, ALateAcceptGetsTheFramesThatCameFirst) {
  Harness h;
  Seen seen;
  auto accept_now = echo_route(&seen);
  h.route("GET", "/ws", [&](Request& r) {
    // Accepted 150 ms later (as after an operation call): the client's first frames wait, undelivered.
    Request* held = &r;
    h.loop.timer_start(150, 0, [held, &accept_now] { accept_now(*held); });
    return CL_OK;
  });
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.send(upgrade_request() + masked(0x81, "one") + masked(0x81, "two")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 101);
    auto a = read_frame(c);
    auto b = read_frame(c);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->payload, "one");
    EXPECT_EQ(b->payload, "two");
    ASSERT_TRUE(c.send(masked(0x88, "")));
    auto f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, ws::kClose);
    EXPECT_EQ(f->payload, "");  // no code came, none goes back
  });
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.code, ws::kNoStatus);
}

TEST(HttpServerWebSocket, PingsKeepItOpenAndASilentPeerIsDropped) {
  Harness h;
  Seen seen;
  h.route("GET", "/ws", [&](Request& r) {
    http::WsSession* s = nullptr;
    std::string error;
    http::WsOptions o;
    o.ping_interval_ms = 100;
    return http::WsSession::accept(
        &r, o, [](ws::Opcode, std::string_view) {},
        [&seen](cl_status_t status, uint16_t code, std::string_view) {
          std::lock_guard<std::mutex> l(seen.mu);
          seen.closes++;
          seen.status = status;
          seen.code = code;
        },
        &s, &error);
  });
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.roundtrip(upgrade_request()));
    // Answering pings for 500 ms keeps it open...
    auto start = Clock::now();
    int pings = 0;
    while (ms_since(start) < 500) {
      auto f = read_frame(c, 1000);
      ASSERT_TRUE(f);
      EXPECT_EQ(f->opcode, ws::kPing);
      pings++;
      ASSERT_TRUE(c.send(masked(0x8A, f->payload)));
    }
    EXPECT_GE(pings, 3);
    // ...then silence: dropped after two intervals without a word.
    auto silent = Clock::now();
    EXPECT_TRUE(c.wait_closed(2000));
    EXPECT_LT(ms_since(silent), 1000);
  });
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_ETIMEDOUT);
  EXPECT_EQ(seen.code, ws::kAbnormal);
}

TEST(HttpServerWebSocket, PausedDeliveryWaitsAndIsNotMistakenForASilentPeer) {
  Harness h;
  Seen seen;
  auto holder = std::make_shared<http::WsSession*>();
  h.route("GET", "/ws", [&, holder](Request& r) {
    std::string error;
    http::WsOptions o;
    o.ping_interval_ms = 100;
    cl_status_t st = http::WsSession::accept(
        &r, o,
        [&seen](ws::Opcode, std::string_view data) {
          std::lock_guard<std::mutex> l(seen.mu);
          seen.messages.emplace_back(data);
        },
        [&seen](cl_status_t status, uint16_t code, std::string_view) {
          std::lock_guard<std::mutex> l(seen.mu);
          seen.closes++;
          seen.status = status;
          seen.code = code;
        },
        holder.get(), &error);
    if (st == CL_OK) {
      EXPECT_EQ((*holder)->pause(true), CL_OK);  // paused from the start
    }
    return st;
  });
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.roundtrip(upgrade_request()));
    ASSERT_TRUE(c.send(masked(0x81, "held")));
    sleep_ms(600);  // six ping intervals without a word from the client: paused, so not "silent"
    {
      std::lock_guard<std::mutex> l(seen.mu);
      EXPECT_TRUE(seen.messages.empty());
      EXPECT_EQ(seen.closes, 0);
    }
    ASSERT_TRUE(h.on_loop([&] { EXPECT_EQ((*holder)->pause(false), CL_OK); }));
    EXPECT_TRUE(wait_for([&] {
      std::lock_guard<std::mutex> l(seen.mu);
      return seen.messages.size() == 1;
    }, 3000));
    ASSERT_TRUE(c.send(masked(0x88, ws::close_payload(1000, ""))));
    std::string rest;
    c.wait_closed(3000, &rest);
  });
  EXPECT_EQ(seen.closes, 1);
  EXPECT_EQ(seen.status, CL_OK);
  ASSERT_EQ(seen.messages.size(), 1u);
  EXPECT_EQ(seen.messages[0], "held");
}
