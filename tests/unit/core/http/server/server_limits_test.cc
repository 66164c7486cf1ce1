// HTTP server: memory and connections one client can make the server hold (issue 15): clients that pipeline
// and never read, whole-request deadlines and the minimum body rate, connections per address with a
// reserved share, the servers' totals, and Upgrade requests.
#include "server_test_util.h"

using namespace httptest;

namespace {

// Sends as much of data as the server takes until nothing moves for quiet_ms; returns the bytes sent.
size_t send_until_stuck(Client& c, std::string_view data, int quiet_ms) {
  size_t sent = 0;
  while (sent < data.size()) {
    pollfd p{c.fd(), POLLOUT, 0};
    if (poll(&p, 1, quiet_ms) <= 0) break;
    ssize_t n = ::send(c.fd(), data.data() + sent, data.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      break;
    }
    sent += static_cast<size_t>(n);
  }
  return sent;
}

std::string pipelined(std::string_view target, int n) {
  std::string out;
  for (int i = 0; i < n; i++) out += get(target);
  return out;
}

// The server's unsent bytes and requests parsed so far (read on the loop).
struct Held {
  uint64_t unsent = 0, requests = 0;
};
Held held(Harness& h) {
  Held out;
  EXPECT_TRUE(h.on_loop([&] {
    out.unsent = h.server->unsent_total();
    out.requests = h.server->stats().requests;
  }));
  return out;
}

// Reads n responses of body_size bytes each: a held client is answered in full once it reads.
void read_all(Client& c, size_t n, size_t body_size) {
  for (size_t i = 0; i < n; i++) {
    auto r = c.read_response(false, 5000);
    ASSERT_TRUE(r) << i;
    ASSERT_EQ(r->body.size(), body_size) << i;
  }
}

}  // namespace

TEST(HttpServerLimits, PipeliningClientThatNeverReadsHoldsBoundedMemory) {
  auto o = Harness::options();
  o.limits.max_unsent_bytes = 16 * 1024;
  Harness h(o);
  const std::string body(2000, 'x');
  h.route("GET", "/small", text(body));
  h.run([&] {
    constexpr int kRequests = 20000;
    Client c(h.port, 4096);  // a small, closed receive window
    size_t sent = send_until_stuck(c, pipelined("/small", kRequests), 500);
    Held now = held(h);
    printf("[   INFO   ] non-reader: sent %zu bytes of requests, %llu parsed, %llu bytes unsent\n", sent,
           static_cast<unsigned long long>(now.requests), static_cast<unsigned long long>(now.unsent));
    EXPECT_LE(now.unsent, o.limits.max_unsent_bytes + 4096) << "one response beyond the bound at most";
    EXPECT_LT(now.requests, static_cast<uint64_t>(kRequests / 4)) << "the server must stop parsing";
    // Once the client reads, every request is answered, in order, on the same connection.
    read_all(c, sent / get("/small").size(), body.size());
  });
}

// The same over TLS: the bound counts encrypted bytes.
TEST(HttpServerLimits, PipeliningTlsClientThatNeverReadsHoldsBoundedMemory) {
  TempDir certs;
  std::string cert, key;
  ASSERT_TRUE(make_self_signed(certs.path(), &cert, &key));
  auto o = Harness::options();
  o.tls_cert = cert;
  o.tls_key = key;
  o.limits.max_unsent_bytes = 16 * 1024;
  Harness h(o);
  const std::string body(2000, 'x');
  h.route("GET", "/small", text(body));
  h.run([&] {
    constexpr int kRequests = 3000;
    TlsClient c(h.port, cert);
    ASSERT_TRUE(c.handshake_ok()) << c.handshake_error();
    ASSERT_TRUE(c.send(pipelined("/small", kRequests)));
    sleep_ms(500);
    Held now = held(h);
    EXPECT_LE(now.unsent, o.limits.max_unsent_bytes + 4096);
    EXPECT_LT(now.requests, static_cast<uint64_t>(kRequests)) << "the server must stop parsing";
    read_all(c, kRequests, body.size());
  });
}

TEST(HttpServerLimits, UnsentTotalHoldsConnectionsWithUnsentBytesOnly) {
  auto o = Harness::options();
  o.limits.max_unsent_bytes = 256 * 1024;
  Harness h(o);
  h.server->set_totals({64 * 1024, 16 << 20});
  const std::string body(8000, 'y');
  h.route("GET", "/small", text(body));
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    std::vector<std::unique_ptr<Client>> readers_never;
    for (int i = 0; i < 4; i++) {
      std::string source = "127.0.0." + std::to_string(2 + i);
      readers_never.push_back(std::make_unique<Client>(h.port, 4096, source.c_str()));
      send_until_stuck(*readers_never.back(), pipelined("/small", 2000), 300);
    }
    // The total stops them well before each reaches its own bound (4 x 256 KiB).
    uint64_t unsent = held(h).unsent;
    EXPECT_LE(unsent, 64 * 1024 + 4 * (8000 + 512)) << unsent;
    // A client with nothing unsent is served.
    Client fresh(h.port);
    auto t0 = Clock::now();
    auto r = fresh.roundtrip(get("/hello"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "hello");
    EXPECT_LT(ms_since(t0), 500);
  });
}

TEST(HttpServerLimits, WholeRequestDeadlineEndsATrickledBody) {
  auto o = Harness::options();
  o.limits.body_timeout_ms = 3000;
  o.limits.request_timeout_ms = 800;
  o.limits.min_body_rate = 1024;  // the trickle below is far slower
  Harness h(o);
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    // One byte every 100 ms never pauses for body_timeout_ms, but the request must end in 800 ms.
    Client c(h.port);
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"));
    auto t0 = Clock::now();
    bool closed = false;
    for (int i = 0; i < 40 && !closed; i++) {
      sleep_ms(100);
      closed = !c.send("z") || c.wait_closed(1);
    }
    if (!closed) closed = c.wait_closed(1000);
    EXPECT_TRUE(closed);
    EXPECT_GE(ms_since(t0), 700);
    EXPECT_LE(ms_since(t0), 800 + 700);
  });
  EXPECT_GE(h.stats.timed_out, 1u);
}

TEST(HttpServerLimits, BodyKeepingTheMinimumRateOutlivesTheRequestTimeout) {
  auto o = Harness::options();
  o.limits.request_timeout_ms = 500;
  o.limits.min_body_rate = 100 * 1000;  // a window of 500 ms needs 50 kB
  o.limits.max_body_bytes = 4 << 20;
  Harness h(o);
  h.route("POST", "/len", [](Request& r) { return r.send(200, "text/plain", std::to_string(r.body.size())); });
  h.run([&] {
    // 1.5 MB at about 1 MB/s: three times the request timeout, ten times the minimum rate.
    constexpr size_t kTotal = 1500 * 1000, kChunk = 50 * 1000;
    Client c(h.port);
    ASSERT_TRUE(c.send("POST /len HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(kTotal) + "\r\n\r\n"));
    std::string chunk(kChunk, 'u');
    auto t0 = Clock::now();
    for (size_t sent = 0; sent < kTotal; sent += kChunk) {
      ASSERT_TRUE(c.send(chunk)) << sent;
      sleep_ms(50);
    }
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, std::to_string(kTotal));
    EXPECT_GT(ms_since(t0), 1000);
  });
}

TEST(HttpServerLimits, ConnectionsPerAddressLeaveRoomForOthers) {
  auto o = Harness::options();
  o.limits.max_connections = 20;
  o.limits.max_connections_per_address = 10;
  o.limits.reserved_connections = 8;  // the last 8: addresses with fewer than kReservedPerAddress only
  Harness h(o);
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    auto served = [&](Client& c) {
      auto r = c.roundtrip(get("/hello"), false, 2000);
      return r && r->body == "hello";
    };
    std::vector<std::unique_ptr<Client>> held;
    for (int i = 0; i < 10; i++) {
      held.push_back(std::make_unique<Client>(h.port, 0, "127.0.0.2"));
      ASSERT_TRUE(served(*held.back())) << i;
    }
    Client over(h.port, 0, "127.0.0.2");  // the address's 11th
    EXPECT_TRUE(over.wait_closed(2000));
    // Another address: 2 in the general share, then the reserved share allows it kReservedPerAddress in all.
    for (uint32_t i = 0; i < http::kReservedPerAddress; i++) {
      held.push_back(std::make_unique<Client>(h.port, 0, "127.0.0.3"));
      ASSERT_TRUE(served(*held.back())) << i;
    }
    Client over3(h.port, 0, "127.0.0.3");
    EXPECT_TRUE(over3.wait_closed(2000)) << "in the reserved share an address holds fewer than 8";
    // The operator, from yet another address, is answered.
    Client op(h.port);
    EXPECT_TRUE(served(op));
    // A connection that goes gives its address a slot back.
    held.back().reset();
    sleep_ms(100);
    Client again(h.port, 0, "127.0.0.3");
    EXPECT_TRUE(served(again));
  });
  EXPECT_GE(h.stats.rejected_per_address, 2u);
}

TEST(HttpServerLimits, BufferedBodiesBeyondTheTotalGet503) {
  auto o = Harness::options();
  o.limits.body_timeout_ms = 3000;
  Harness h(o);
  h.server->set_totals({16 << 20, 100 * 1000});
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    // A body announced at 80 kB and stalled holds its reservation.
    Client stalled(h.port, 0, "127.0.0.2");
    ASSERT_TRUE(stalled.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 80000\r\n\r\nabc"));
    sleep_ms(100);
    Client c(h.port);
    auto r = c.roundtrip(post("/echo", std::string(30000, 'b')));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    // A chunked body is counted as it arrives.
    Client ch(h.port);
    r = ch.roundtrip("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                     chunked({std::string(15000, 'c'), std::string(15000, 'd')}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    // Small bodies still fit, and the stalled one's reservation is given back when it goes.
    Client small(h.port);
    r = small.roundtrip(post("/echo", "tiny"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "tiny");
    stalled.close();
    uint64_t total = 1;
    EXPECT_TRUE(wait_for([&] {
      h.on_loop([&] { total = h.server->body_total(); });
      return total == 0;
    }, 2000)) << total;
    Client later(h.port);
    r = later.roundtrip(post("/echo", std::string(30000, 'e')));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  });
}

TEST(HttpServerLimits, UpgradeRequestIsAnsweredAndClosedPromptly) {
  auto o = Harness::options();
  o.limits.idle_timeout_ms = 5000;
  Harness h(o);
  h.route("GET", "/hello", text("hello"));
  h.route("GET", "/later", [&](Request& r) {
    Request* req = &r;
    h.loop.timer_start(50, 0, [req] { req->send(200, "text/plain", "later"); });
    return CL_OK;
  });
  h.run([&] {
    for (const char* path : {"/hello", "/later"}) {
      Client c(h.port);
      auto t0 = Clock::now();
      auto r = c.roundtrip(get(path, "Connection: Upgrade\r\nUpgrade: websocket\r\n"));
      ASSERT_TRUE(r) << path;
      EXPECT_EQ(r->status, 200);
      EXPECT_TRUE(r->closes()) << r->raw_head;
      EXPECT_TRUE(c.wait_closed(1000)) << path << ": left open until the idle timeout";
      EXPECT_LT(ms_since(t0), 1000);
    }
  });
}
