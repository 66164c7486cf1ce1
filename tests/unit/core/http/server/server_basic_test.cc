// HTTP server: routing, parameters, status codes, framing, keep-alive, pipelining, HEAD, limits, Expect,
// chunked bodies, malformed requests, throwing and declining handlers.
#include <stdexcept>

#include "server_test_util.h"

using namespace httptest;

namespace {

// Every response with a body must say how long it is (mobile clients need Content-Length).
void expect_length_framed(const Response& r) {
  EXPECT_EQ(r.framing, Framing::length) << r.raw_head;
  EXPECT_EQ(r.header("content-length"), std::to_string(r.body.size())) << r.raw_head;
}

std::string param_or(Request& r, std::string_view name, std::string fallback = "<none>") {
  std::string_view v;
  return r.param(name, &v) == CL_OK ? std::string(v) : fallback;
}

}  // namespace

TEST(HttpServer, RoutesWithPathParameters) {
  Harness h;
  h.route("GET", "/things/{id}", [](Request& r) { return r.send(200, "text/plain", "id=" + param_or(r, "id")); });
  h.route("GET", "/things/special", text("special"));
  h.route("GET", "/files/{*rest}", [](Request& r) { return r.send(200, "text/plain", "rest=" + param_or(r, "rest")); });
  h.route("GET", "/a/{x}/b/{y}",
          [](Request& r) { return r.send(200, "text/plain", param_or(r, "x") + "," + param_or(r, "y")); });
  h.route("", "/any", [](Request& r) { return r.send(200, "text/plain", r.method); });
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.connected());
    struct Case {
      std::string target;
      int status;
      std::string body;
    } cases[] = {
        {"/things/42", 200, "id=42"},
        {"/things/special", 200, "special"},  // a literal route wins over a pattern
        {"/things/a%20b", 200, "id=a b"},     // parameters are percent-decoded
        {"/things/", 404, ""},                // {id} never matches an empty segment
        {"/things/42/more", 404, ""},
        {"/files/x/y/z.txt", 200, "rest=x/y/z.txt"},
        {"/files/", 200, "rest="},
        {"/files", 200, "rest="},
        {"/a/1/b/2", 200, "1,2"},
        {"/a/1/b", 404, ""},
        {"/any", 200, "GET"},
        {"http://example.com/things/7?x=1", 200, "id=7"},  // absolute-form target
    };
    for (const auto& k : cases) {
      auto r = c.roundtrip(get(k.target));
      ASSERT_TRUE(r) << k.target;
      EXPECT_EQ(r->status, k.status) << k.target;
      if (k.status == 200) {
        EXPECT_EQ(r->body, k.body) << k.target;
      }
      expect_length_framed(*r);
      EXPECT_FALSE(r->closes()) << k.target;
    }
    auto r = c.roundtrip("PUT /any HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "PUT");
  });
  EXPECT_EQ(h.stats.accepted, 1u);  // everything above used one keep-alive connection
}

TEST(HttpServer, QueryParametersAreDecoded) {
  Harness h;
  h.route("GET", "/q", [](Request& r) {
    std::string out;
    std::string_view n, v;
    for (size_t i = 0; r.param_at(i, &n, &v) == CL_OK; i++) out += std::string(n) + "=" + std::string(v) + ";";
    out += "|a=" + param_or(r, "a") + "|raw=" + r.query + "|path=" + r.path;
    return r.send(200, "text/plain", out);
  });
  h.route("GET", "/p/{a}", [](Request& r) { return r.send(200, "text/plain", param_or(r, "a")); });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/q?a=1&b=x%20y&c&d=%2B+z&e=%E2%82%AC&&a=2#frag"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "a=1;b=x y;c=;d=+ z;e=\xE2\x82\xAC;a=2;|a=1|raw=a=1&b=x%20y&c&d=%2B+z&e=%E2%82%AC&&a=2|path=/q");
    // A path parameter wins over a query parameter of the same name.
    r = c.roundtrip(get("/p/fromPath?a=fromQuery"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "fromPath");
    // A malformed escape in the query does not break the request.
    r = c.roundtrip(get("/q?ok=1&bad=%zz"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    expect_length_framed(*r);
    EXPECT_EQ(r->body.substr(0, 5), "ok=1;");  // the pairs before the bad escape are kept
  });
}

TEST(HttpServer, NotFoundAndMethodNotAllowedCarryLengthAndAllow) {
  Harness h;
  h.route("GET", "/thing", text("thing"));
  h.route("GET", "/both", text("get"));
  h.route("POST", "/both", text("post"));
  h.route("POSTX", "/x", text("postx"));
  h.route("POST", "/x", text("post"));
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/nope"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(r->body, "404 Not Found\n");
    EXPECT_EQ(r->header("content-type"), "text/plain; charset=utf-8");
    expect_length_framed(*r);

    r = c.roundtrip(post("/thing", "x"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405);
    EXPECT_EQ(r->header("allow"), "GET, HEAD");
    expect_length_framed(*r);

    r = c.roundtrip("DELETE /both HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405);
    EXPECT_EQ(r->header("allow"), "GET, HEAD, POST");
    expect_length_framed(*r);

    // Allow lists whole methods: POST is not part of POSTX.
    r = c.roundtrip(get("/x"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405);
    EXPECT_EQ(r->header("allow"), "POSTX, POST");

    // HEAD is served by GET routes.
    r = c.roundtrip(head("/thing"), true);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-length"), "5");
    // The connection survived all of it.
    r = c.roundtrip(get("/both"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "get");
  });
}

TEST(HttpServer, HandlerStatusCodesMapToHttp) {
  Harness h;
  h.route("GET", "/e/{code}", [](Request& r) -> cl_status_t { return std::stoi(param_or(r, "code")); });
  h.run([&] {
    Client c(h.port);
    std::pair<int, int> cases[] = {{CL_ENOENT, 404},    {CL_EPERM, 403},   {CL_EINVAL, 400}, {CL_EBUSY, 409},
                                   {CL_ETOOBIG, 413},   {CL_EUNAUTH, 401}, {CL_EIO, 500},    {CL_EUNAVAIL, 503},
                                   {CL_ETIMEDOUT, 504}, {CL_ENOTSUP, 501}};
    for (auto [st, code] : cases) {
      auto r = c.roundtrip(get("/e/" + std::to_string(st)));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, code) << st;
      expect_length_framed(*r);
    }
  });
}

TEST(HttpServer, KeepAliveServesManyRequestsOnOneConnection) {
  Harness h;
  int served = 0;
  h.route("GET", "/n", [&](Request& r) { return r.send(200, "text/plain", std::to_string(++served)); });
  h.run([&] {
    Client c(h.port);
    for (int i = 1; i <= 5; i++) {
      auto r = c.roundtrip(get("/n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, std::to_string(i));
      EXPECT_EQ(r->version, "HTTP/1.1");
      EXPECT_FALSE(r->has("connection"));
      EXPECT_TRUE(r->has("date"));
      EXPECT_EQ(r->header("server"), "cloudletd");
    }
    // "Connection: close" from the client is honoured: answer, then close.
    auto r = c.roundtrip(get("/n", "Connection: close\r\n"));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->closes());
    EXPECT_TRUE(c.wait_closed(1000));
  });
  EXPECT_EQ(h.stats.accepted, 1u);
  EXPECT_EQ(h.stats.requests, 6u);
}

TEST(HttpServer, Http10WithAndWithoutKeepAlive) {
  Harness h;
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    {
      Client c(h.port);
      auto r = c.roundtrip("GET /hello HTTP/1.0\r\n\r\n");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body, "hello");
      EXPECT_TRUE(r->closes());
      expect_length_framed(*r);
      EXPECT_TRUE(c.wait_closed(1000)) << "HTTP/1.0 without keep-alive must be closed after the response";
    }
    {
      Client c(h.port);
      for (int i = 0; i < 3; i++) {
        auto r = c.roundtrip("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        ASSERT_TRUE(r);
        EXPECT_EQ(r->body, "hello");
        EXPECT_EQ(lower(r->header("connection")), "keep-alive");
        expect_length_framed(*r);
      }
      auto r = c.roundtrip("GET /hello HTTP/1.0\r\n\r\n");
      ASSERT_TRUE(r);
      EXPECT_TRUE(r->closes());
      EXPECT_TRUE(c.wait_closed(1000));
    }
  });
}

TEST(HttpServer, PipelinedResponsesComeBackInOrder) {
  Harness h;
  std::vector<std::string> order;  // loop thread only
  bool slow_answered = false;
  h.route("GET", "/slow", [&](Request& r) {
    order.push_back("slow");
    Request* req = &r;
    h.loop.timer_start(150, 0, [&, req] {
      slow_answered = true;
      req->send(200, "text/plain", "slow");
    });
    return CL_OK;
  });
  h.route("GET", "/fast/{n}", [&](Request& r) {
    // Requests on one connection are handled one at a time.
    EXPECT_TRUE(slow_answered);
    order.push_back("fast" + param_or(r, "n"));
    return r.send(200, "text/plain", "fast " + param_or(r, "n"));
  });
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.send(get("/slow") + get("/fast/1") + post("/echo", "body-in-the-middle") + get("/fast/2")));
    const char* expected[] = {"slow", "fast 1", "body-in-the-middle", "fast 2"};
    for (const char* e : expected) {
      auto r = c.read_response();
      ASSERT_TRUE(r) << e;
      EXPECT_EQ(r->body, e);
      expect_length_framed(*r);
    }
  });
  EXPECT_EQ(order, (std::vector<std::string>{"slow", "fast1", "fast2"}));
}

TEST(HttpServer, HeadHasTheGetLengthAndNoBody) {
  Harness h;
  h.route("GET", "/hello", text("hello world\n"));
  h.route("GET", "/streamed", [](Request& r) {
    r.start(200, 5);
    r.write("abcde", 5, nullptr, nullptr);
    return r.end();
  });
  h.route("GET", "/nocontent", [](Request& r) {
    // A streamed 204 has no body: no chunk framing may leak onto the connection.
    r.start(204, -1);
    return r.end();
  });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(head("/hello"), true);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-length"), "12");
    r = c.roundtrip(head("/streamed"), true);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("content-length"), "5");
    // No stray body bytes: the next response parses cleanly.
    r = c.roundtrip(get("/hello"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "hello world\n");
    r = c.roundtrip(get("/nocontent"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 204);
    EXPECT_FALSE(r->has("content-length"));
    EXPECT_FALSE(r->has("transfer-encoding"));
    r = c.roundtrip(get("/streamed"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->raw_head;
    EXPECT_EQ(r->body, "abcde");
  });
}

namespace {
http::ListenerOptions small_limits() {
  auto o = Harness::options();
  o.limits.max_header_bytes = 4096;
  o.limits.max_uri_bytes = 200;
  o.limits.max_body_bytes = 1000;
  return o;
}

// An error that ends the connection: the right status, a length, "Connection: close", then a prompt close
// (well before the 3 s header/body timeouts).
void expect_rejected(Client& c, int status, const std::string& what) {
  auto r = c.read_response();
  ASSERT_TRUE(r) << what;
  EXPECT_EQ(r->status, status) << what;
  expect_length_framed(*r);
  EXPECT_TRUE(r->closes()) << what;
  auto t0 = Clock::now();
  EXPECT_TRUE(c.wait_closed(2500)) << what;
  EXPECT_LT(ms_since(t0), 1000) << what << ": the connection must close right after the error response";
}
}  // namespace

TEST(HttpServer, LimitsGive431And414And413) {
  Harness h(small_limits());
  h.route("POST", "/echo", echo_body);
  h.route("POST", "/tiny", echo_body, 0, 10);  // a route's own body limit
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    {
      Client c(h.port);
      c.send("GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(5000, 'a') + "\r\n\r\n");
      expect_rejected(c, 431, "header bytes");
    }
    {
      std::string many;
      for (int i = 0; i < 201; i++) many += "h" + std::to_string(i) + ": v\r\n";
      Client c(h.port);
      c.send(get("/hello", many));
      expect_rejected(c, 431, "header count");
    }
    {
      std::string fine;
      for (int i = 0; i < 150; i++) fine += "h" + std::to_string(i) + ": v\r\n";
      Client c(h.port);
      auto r = c.roundtrip(get("/hello", fine));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
    }
    {
      Client c(h.port);
      c.send(get("/" + std::string(300, 'u')));
      expect_rejected(c, 414, "uri");
    }
    {
      Client c(h.port);
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n");
      expect_rejected(c, 413, "content-length");
    }
    {
      Client c(h.port);
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
      c.send(chunked({std::string(400, 'a'), std::string(400, 'b'), std::string(400, 'c')}));
      expect_rejected(c, 413, "chunked body");
    }
    {
      Client c(h.port);
      auto r = c.roundtrip(post("/echo", std::string(1000, 'x')));  // exactly the limit
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body.size(), 1000u);
      c.send(post("/tiny", std::string(11, 'x')));
      expect_rejected(c, 413, "route limit");
    }
  });
}

TEST(HttpServer, ExpectContinue) {
  Harness h(small_limits());
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    {
      Client c(h.port);
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
      auto r = c.read_response();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 100);
      c.send("hello");
      r = c.read_response();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body, "hello");
    }
    {
      // Too large: refused before the client sends the body (no 100).
      Client c(h.port);
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
      expect_rejected(c, 413, "expect + too large");
    }
    {
      Client c(h.port);
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: teapot\r\n\r\n");
      expect_rejected(c, 417, "unknown expectation");
    }
  });
}

TEST(HttpServer, ChunkedRequestBodies) {
  Harness h;
  h.route("POST", "/echo", echo_body);
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello world");
    expect_length_framed(*r);
    // Byte by byte, the same.
    std::string req = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked({"ab", "cde"});
    for (char ch : req) ASSERT_TRUE(c.send(std::string_view(&ch, 1)));
    r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "abcde");
    // A large chunked body.
    std::string big = pattern_bytes(200000);
    r = c.roundtrip("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                    chunked({big.substr(0, 70000), big.substr(70000)}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body.size(), big.size());
    EXPECT_TRUE(r->body == big);
  });
}

TEST(HttpServer, MalformedRequestsGet400ThenClose) {
  Harness h;
  h.route("GET", "/hello", text("hello"));
  h.route("POST", "/echo", echo_body);
  const char* bad[] = {
      "GARBAGE\r\n\r\n",
      "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
      "GET /hello HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n",
      "GET /a%00b HTTP/1.1\r\nHost: t\r\n\r\n",
      "GET hello HTTP/1.1\r\nHost: t\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
  };
  h.run([&] {
    for (const char* req : bad) {
      Client c(h.port);
      c.send(req);
      expect_rejected(c, 400, req);
    }
    // Garbage after a good request on a keep-alive connection: the good one is answered, then 400 + close.
    Client c(h.port);
    c.send(get("/hello") + "NOT HTTP AT ALL\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "hello");
    expect_rejected(c, 400, "garbage after a request");
  });
}

TEST(HttpServer, ThrowingHandlerGives500AndTheConnectionLives) {
  Harness h;
  h.route("GET", "/throw", [](Request&) -> cl_status_t { throw std::runtime_error("boom"); });
  h.route("GET", "/throw42", [](Request&) -> cl_status_t { throw 42; });
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    Client c(h.port);
    for (const char* path : {"/throw", "/throw42"}) {
      auto r = c.roundtrip(get(path));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 500);
      expect_length_framed(*r);
    }
    auto r = c.roundtrip(get("/hello"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "hello");
  });
}

TEST(HttpServer, DecliningHandlerFallsThroughToTheNextRoute) {
  Harness h;
  int declined = 0;
  h.route("GET", "/d/x", [&](Request& r) {
    declined++;
    r.add_header("X-Declined", "leak");  // must not reach the answer of the route that takes the request
    r.add_header("Content-Type", "application/x-leak");
    return CL_EDECLINED;
  });
  h.route("GET", "/d/{id}", [](Request& r) { return r.send(200, "text/plain", "pattern " + param_or(r, "id")); });
  h.route("", "/d/{id}", [](Request& r) { return r.send(200, "text/plain", "any"); });
  h.route("GET", "/only/{id}", [&](Request&) {
    declined++;
    return CL_EDECLINED;
  });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/d/x"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "pattern x");  // the path parameter of the second route is set
    EXPECT_EQ(r->header("x-declined"), "");
    EXPECT_EQ(r->header("content-type"), "text/plain");
    r = c.roundtrip(get("/d/y"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "pattern y");
    r = c.roundtrip(get("/only/1"));  // every match declined: 404
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    expect_length_framed(*r);
  });
  EXPECT_EQ(declined, 2);
}

TEST(HttpServer, OneContentTypeHeader) {
  Harness h;
  h.route("GET", "/both", [](Request& r) {
    r.add_header("Content-Type", "text/html");
    return r.send(200, "application/json", "{}");  // send's argument wins
  });
  h.route("GET", "/header", [](Request& r) {
    r.add_header("Content-Type", "text/html");
    return r.send(200, "", "<p>");
  });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/both"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->raw_head.find("Content-Type"), r->raw_head.rfind("Content-Type")) << r->raw_head;
    EXPECT_EQ(r->header("content-type"), "application/json");
    r = c.roundtrip(get("/header"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("content-type"), "text/html");
  });
}

TEST(HttpServer, RequestAccessorsAndResponseHeaders) {
  Harness h;
  h.route("GET", "/info", [&](Request& r) {
    std::string_view v;
    std::string out;
    out += r.header("x-Multi", &v) == CL_OK ? std::string(v) : "-";  // case-insensitive, first wins
    out += "|";
    out += r.header("missing", &v) == CL_ENOENT ? "noent" : "?";
    EXPECT_EQ(r.addresses(), CL_OK);
    out += "|" + r.peer_ip + "|" + std::to_string(r.local_port);
    EXPECT_EQ(r.add_header("Content-Length", "5"), CL_EINVAL);
    EXPECT_EQ(r.add_header("Connection", "x"), CL_EINVAL);
    EXPECT_EQ(r.add_header("X-Inject", "a\r\nSet-Cookie: evil"), CL_EINVAL);
    EXPECT_EQ(r.add_header("Bad Name", "v"), CL_EINVAL);
    EXPECT_EQ(r.add_header("X-Custom", "yes"), CL_OK);
    return r.send(200, "text/plain", out);
  });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/info", "X-MULTI: one\r\nx-multi: two\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "one|noent|127.0.0.1|" + std::to_string(h.port));
    EXPECT_EQ(r->header("x-custom"), "yes");
    EXPECT_FALSE(r->has("set-cookie"));
    EXPECT_EQ(r->count("content-length"), 1u);
  });
}
