// HTTP server: timeouts (idle, header/slowloris, body, write), the connection cap, graceful shutdown and TLS.
#include "server_test_util.h"

using namespace httptest;

namespace {

http::ListenerOptions timeouts(uint32_t header_ms, uint32_t body_ms, uint32_t idle_ms, uint32_t write_ms) {
  auto o = Harness::options();
  o.limits.header_timeout_ms = header_ms;
  o.limits.body_timeout_ms = body_ms;
  o.limits.idle_timeout_ms = idle_ms;
  o.limits.write_timeout_ms = write_ms;
  return o;
}

// The sweep runs every 250 ms: a timeout of T closes between T and T + 250 ms (plus scheduling noise).
constexpr int kSweepSlackMs = 700;

}  // namespace

TEST(HttpServerConn, IdleKeepAliveConnectionIsClosedAfterTheIdleTimeout) {
  Harness h(timeouts(3000, 3000, 400, 3000));
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    // Activity keeps a connection alive: 6 requests 200 ms apart outlive the 400 ms idle timeout.
    Client busy(h.port);
    for (int i = 0; i < 6; i++) {
      auto r = busy.roundtrip(get("/hello"));
      ASSERT_TRUE(r) << i;
      sleep_ms(200);
    }
    // Then silence closes it.
    auto t0 = Clock::now();
    EXPECT_TRUE(busy.wait_closed(3000));
    int64_t took = ms_since(t0);
    EXPECT_GE(took, 150);
    EXPECT_LE(took, 400 + kSweepSlackMs);
  });
  EXPECT_GE(h.stats.timed_out, 1u);
}

TEST(HttpServerConn, SlowlorisIsClosedAfterTheHeaderTimeoutWhileOthersAreServed) {
  Harness h(timeouts(600, 3000, 3000, 3000));
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    std::atomic<int64_t> slow_closed_after{-1};
    std::atomic<int> bytes_sent{0};
    std::thread slowloris([&] {
      Client s(h.port);
      std::string req = "GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: " + std::string(100, 'a');
      auto t0 = Clock::now();
      for (char ch : req) {
        if (!s.send(std::string_view(&ch, 1))) break;
        bytes_sent++;
        pollfd p{s.fd(), POLLIN, 0};
        if (poll(&p, 1, 100) > 0) break;  // the server closed (or answered)
      }
      if (s.wait_closed(2000)) slow_closed_after = ms_since(t0);
    });
    sleep_ms(150);
    // Meanwhile, normal clients are answered promptly.
    int64_t worst_us = 0;
    for (int i = 0; i < 10; i++) {
      Client c(h.port);
      auto t0 = Clock::now();
      auto r = c.roundtrip(get("/hello"));
      worst_us =
          std::max<int64_t>(worst_us, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "hello");
      sleep_ms(30);
    }
    slowloris.join();
    EXPECT_LT(worst_us, 100000) << "a normal request took " << worst_us << " us next to a slowloris client";
    printf("[   INFO   ] worst normal request latency next to a slowloris client: %lld us\n",
           static_cast<long long>(worst_us));
    EXPECT_GE(slow_closed_after, 500);
    EXPECT_LE(slow_closed_after, 600 + kSweepSlackMs);
    EXPECT_LT(bytes_sent, 40) << "the trickle must not keep pushing the header deadline back";
  });
  EXPECT_GE(h.stats.timed_out, 1u);
}

TEST(HttpServerConn, SilentConnectionsAreClosedAndManyIdleOnesCostNothing) {
  Harness h(timeouts(1500, 3000, 3000, 3000));
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    constexpr int kIdle = 1000;
    std::vector<std::unique_ptr<Client>> idle;
    for (int i = 0; i < kIdle; i++) {
      // From ten addresses: one address may hold only max_connections_per_address.
      std::string source = "127.0.0." + std::to_string(2 + i / 100);
      idle.push_back(std::make_unique<Client>(h.port, 0, source.c_str()));
      ASSERT_TRUE(idle.back()->connected());
    }
    auto opened = Clock::now();
    sleep_ms(100);
    int64_t worst_us = 0;
    for (int i = 0; i < 20; i++) {
      Client c(h.port);
      auto t0 = Clock::now();
      auto r = c.roundtrip(get("/hello"));
      worst_us =
          std::max<int64_t>(worst_us, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
      ASSERT_TRUE(r);
    }
    printf("[   INFO   ] worst request latency with %d idle connections: %lld us\n", kIdle,
           static_cast<long long>(worst_us));
    EXPECT_LT(worst_us, 100000);
    // Every silent connection is closed by the header timeout.
    int closed = 0;
    for (auto& c : idle) closed += c->wait_closed(std::max<int64_t>(1, 1500 + 2000 - ms_since(opened)));
    EXPECT_EQ(closed, kIdle);
    EXPECT_LE(ms_since(opened), 1500 + 2000);
  });
  EXPECT_GE(h.stats.timed_out, 1000u);
}

TEST(HttpServerConn, BodyTimeoutIsAboutPausesNotTotalTime) {
  Harness h(timeouts(3000, 500, 3000, 3000));
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    {
      // A trickle of one byte every 150 ms for 1.5 s is fine: it never pauses for 500 ms.
      Client c(h.port);
      ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"));
      for (int i = 0; i < 10; i++) {
        sleep_ms(150);
        ASSERT_TRUE(c.send(std::string_view("0123456789" + i, 1))) << i;  // one byte
      }
      auto r = c.read_response();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "0123456789");
    }
    {
      // A stalled body is dropped.
      Client c(h.port);
      ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789"));
      auto t0 = Clock::now();
      EXPECT_TRUE(c.wait_closed(3000));
      EXPECT_GE(ms_since(t0), 400);
      EXPECT_LE(ms_since(t0), 500 + kSweepSlackMs);
    }
  });
}

TEST(HttpServerConn, WriteTimeoutDropsClientsThatDoNotRead) {
  Harness h(timeouts(3000, 3000, 3000, 500));
  std::string big = pattern_bytes(32 << 20, 2);
  h.route("GET", "/big", [&](Request& r) { return r.send(200, "application/octet-stream", big); });
  // An endless stream (like a busy SSE feed) to a client that never reads: new writes must not count as the
  // client's progress, and once kStreamUnsentFactor * max_unsent_bytes of copied writes are unread the
  // client is dropped before its write timeout.
  struct Flood {
    Harness* h;
    Request* req = nullptr;
    cloudlet::Loop::TimerId timer = 0;
    int close_calls = 0;
    std::atomic<bool> closed{false};
    std::string block = std::string(64 * 1024, 'f');
  } flood{&h};
  h.route("GET", "/flood", [&](Request& r) {
    flood.req = &r;
    r.start(200, -1);
    r.close_ud = &flood;
    r.close_cb = [](void* ud, cl_request_t* req) {
      auto* f = static_cast<Flood*>(ud);
      f->close_calls++;
      f->h->loop.timer_stop(f->timer);
      req->end();
      f->closed = true;
    };
    flood.timer =
        h.loop.timer_start(5, 5, [&] { flood.req->write(flood.block.data(), flood.block.size(), nullptr, nullptr); });
    return CL_OK;
  });
  h.run([&] {
    {
      Client c(h.port, 8 * 1024);
      ASSERT_TRUE(c.send(get("/big")));
      sleep_ms(1500);
      std::string got;
      EXPECT_TRUE(c.wait_closed(3000, &got));
      EXPECT_LT(got.size(), big.size()) << "the server should have given up on this client";
    }
    {
      Client c(h.port, 8 * 1024);
      ASSERT_TRUE(c.send(get("/flood")));
      auto t0 = Clock::now();
      EXPECT_TRUE(wait_for([&] { return flood.closed.load(); }, 4000))
          << "a client that reads nothing must be dropped";
      EXPECT_LT(ms_since(t0), 500) << "dropped for the unread stream, before its write timeout";
    }
  });
  EXPECT_GE(h.stats.timed_out, 1u);
  EXPECT_EQ(flood.close_calls, 1);
}

TEST(HttpServerConn, ConnectionCap) {
  auto o = Harness::options();
  o.limits.max_connections = 3;
  Harness h(o);
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    std::vector<std::unique_ptr<Client>> held;
    for (int i = 0; i < 3; i++) {
      held.push_back(std::make_unique<Client>(h.port));
      auto r = held.back()->roundtrip(get("/hello"));
      ASSERT_TRUE(r) << i;
    }
    {
      // Over the cap: accepted by the kernel, closed at once by the server, no response.
      Client extra(h.port);
      ASSERT_TRUE(extra.connected());
      extra.send(get("/hello"));
      std::string got;
      auto t0 = Clock::now();
      EXPECT_TRUE(extra.wait_closed(2000, &got));
      EXPECT_LT(ms_since(t0), 500);
      EXPECT_EQ(got, "");
    }
    // The held connections still work.
    for (auto& c : held) {
      auto r = c->roundtrip(get("/hello"));
      ASSERT_TRUE(r);
    }
    // A slot frees up when one leaves.
    held.pop_back();
    EXPECT_TRUE(wait_for(
        [&] {
          Client c(h.port);
          auto r = c.roundtrip(get("/hello"), false, 500);
          return r && r->body == "hello";
        },
        3000));
  });
  EXPECT_GE(h.stats.rejected_over_cap, 1u);
}

TEST(HttpServerConn, GracefulShutdown) {
  Harness h;
  std::atomic<bool> slow_started{false};
  bool answered = false;
  h.route("GET", "/slow", [&](Request& r) {
    Request* req = &r;
    slow_started = true;
    h.loop.timer_start(400, 0, [&, req] {
      answered = true;
      req->send(200, "text/plain", "finished");
    });
    return CL_OK;
  });
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    Client idle(h.port);
    auto r = idle.roundtrip(get("/hello"));
    ASSERT_TRUE(r);
    Client busy(h.port);
    ASSERT_TRUE(busy.send(get("/slow")));
    ASSERT_TRUE(wait_for([&] { return slow_started.load(); }, 3000));
    auto t0 = Clock::now();
    ASSERT_TRUE(h.on_loop([&] { h.shutdown(5000); }));
    // The idle connection is closed at once.
    EXPECT_TRUE(idle.wait_closed(1000));
    EXPECT_LT(ms_since(t0), 300);
    // New connections are refused.
    Client late(h.port);
    EXPECT_FALSE(late.connected());
    EXPECT_EQ(late.connect_errno(), ECONNREFUSED);
    // The in-flight request completes, told that the connection closes.
    r = busy.read_response(false, 3000);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "finished");
    EXPECT_TRUE(r->closes());
    EXPECT_TRUE(busy.wait_closed(1000));
    EXPECT_GE(ms_since(t0), 350);
  });
  EXPECT_TRUE(answered);
}

TEST(HttpServerConn, ShutdownDeadlineClosesStuckRequests) {
  Harness h;
  struct Stuck {
    int close_calls = 0;
    cl_status_t send = 1;
  } stuck;
  std::atomic<bool> started{false};
  h.route("GET", "/stuck", [&](Request& r) {
    r.close_ud = &stuck;
    r.close_cb = [](void* ud, cl_request_t* req) {
      auto* s = static_cast<Stuck*>(ud);
      s->close_calls++;
      s->send = req->send(503, "text/plain", "gone");
    };
    started = true;
    return CL_OK;  // never answers on its own
  });
  h.run(
      [&] {
        Client c(h.port);
        ASSERT_TRUE(c.send(get("/stuck")));
        ASSERT_TRUE(wait_for([&] { return started.load(); }, 3000));
        auto t0 = Clock::now();
        ASSERT_TRUE(h.on_loop([&] { h.shutdown(300); }));
        EXPECT_TRUE(c.wait_closed(2000));
        EXPECT_GE(ms_since(t0), 250);
        EXPECT_LE(ms_since(t0), 1000);
      },
      10000);
  EXPECT_EQ(stuck.close_calls, 1);
  EXPECT_EQ(stuck.send, CL_ECLOSING);
}

// ---- TLS ----------------------------------------------------------------------------------------------------

TEST(HttpServerTls, ServesOverTlsAndDropsPlainTextClients) {
  TempDir certs, webroot;
  std::string cert, key;
  ASSERT_TRUE(make_self_signed(certs.path(), &cert, &key));
  std::string big = pattern_bytes(700 * 1024, 44);
  webroot.write("big.bin", big);
  auto o = Harness::options();
  o.tls_cert = cert;
  o.tls_key = key;
  o.webroot = webroot.path();
  Harness h(o);
  h.route("GET", "/hello", text("hello over tls"));
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    {
      TlsClient c(h.port, cert);
      ASSERT_TRUE(c.handshake_ok()) << c.handshake_error();
      EXPECT_TRUE(c.version() == "TLSv1.3" || c.version() == "TLSv1.2") << c.version();
      for (int i = 0; i < 3; i++) {
        auto r = c.roundtrip(get("/hello"));
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200);
        EXPECT_EQ(r->body, "hello over tls");
        EXPECT_EQ(r->header("content-length"), "14");
      }
      std::string body = pattern_bytes(300000, 45);
      auto r = c.roundtrip(post("/echo", body));
      ASSERT_TRUE(r);
      EXPECT_TRUE(r->body == body);
      r = c.roundtrip(get("/big.bin"), false, 10000);
      ASSERT_TRUE(r);
      EXPECT_TRUE(r->body == big);
    }
    {
      // Plain HTTP on the TLS port: the handshake fails and the connection is closed, nothing crashes.
      Client plain(h.port);
      ASSERT_TRUE(plain.send(get("/hello")));
      std::string got;
      EXPECT_TRUE(plain.wait_closed(2000, &got));
      EXPECT_EQ(got.find("hello over tls"), std::string::npos);
    }
    {
      // Random bytes, then a client that leaves mid-handshake.
      Client junk(h.port);
      junk.send(pattern_bytes(5000, 46));
      EXPECT_TRUE(junk.wait_closed(2000));
      Client half(h.port);
      half.send(std::string("\x16\x03\x01\x00\x10", 5));
      half.close();
    }
    TlsClient again(h.port, cert);
    ASSERT_TRUE(again.handshake_ok()) << again.handshake_error();
    auto r = again.roundtrip(get("/hello"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "hello over tls");
  });
}

TEST(HttpServerTls, BadCertificateConfigurationIsRefusedClearly) {
  TempDir certs;
  std::string cert, key, cert2, key2;
  ASSERT_TRUE(make_self_signed(certs.path(), &cert, &key));
  TempDir other;
  ASSERT_TRUE(make_self_signed(other.path(), &cert2, &key2));
  cloudlet::Loop loop;
  {
    http::Server server(loop, certs.path());
    std::string error;
    auto o = Harness::options();
    o.tls_cert = cert;
    EXPECT_EQ(server.listen(o, &error), CL_EINVAL);  // a certificate without a key
    EXPECT_NE(error.find("both"), std::string::npos) << error;
    o.tls_key = key2;  // not the certificate's key
    error.clear();
    EXPECT_EQ(server.listen(o, &error), CL_EINVAL);
    EXPECT_TRUE(error.find("does not match") != std::string::npos || error.find("mismatch") != std::string::npos)
        << error;
    EXPECT_NE(error.find("key.pem"), std::string::npos) << error;
    o.tls_key = certs.file("missing.pem");
    error.clear();
    EXPECT_EQ(server.listen(o, &error), CL_EINVAL);
    EXPECT_NE(error.find("missing.pem"), std::string::npos) << error;
    bool done = false;
    server.shutdown(0, [&] { done = true; });
    loop.run();
    EXPECT_TRUE(done);
  }
  EXPECT_EQ(loop.close(), 0);
}

TEST(HttpServerConn, ListenErrors) {
  cloudlet::Loop loop;
  TempDir spool;
  {
    http::Server server(loop, spool.path());
    std::string error;
    auto o = Harness::options();
    ASSERT_EQ(server.listen(o, &error), CL_OK) << error;
    uint16_t port = server.listener("test")->bound_port;
    EXPECT_NE(port, 0);
    EXPECT_EQ(server.listen(o, &error), CL_EEXIST);  // same name
    auto o2 = o;
    o2.name = "other";
    o2.port = port;
    error.clear();
    EXPECT_EQ(server.listen(o2, &error), CL_EIO);  // address in use
    EXPECT_NE(error.find("cannot listen"), std::string::npos) << error;
    o2.host = "not-an-address";
    o2.port = 0;
    EXPECT_EQ(server.listen(o2, &error), CL_EINVAL);
    bool done = false;
    server.shutdown(0, [&] { done = true; });
    loop.run();
    EXPECT_TRUE(done);
  }
  EXPECT_EQ(loop.close(), 0);
}
