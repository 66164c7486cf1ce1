// HTTP server: what a listener refuses before routing (issue 15): Host names it does not serve (DNS
// rebinding), requests other sites' pages make a browser send (CSRF), and JSON routes' bodies without
// Content-Type application/json.
#include "server_test_util.h"

using namespace httptest;

namespace {

std::string request(std::string_view method, std::string_view target, std::string_view headers,
                    std::string_view body = {}, std::string_view version = "HTTP/1.1") {
  std::string r = std::string(method) + " " + std::string(target) + " " + std::string(version) + "\r\n" +
                  std::string(headers);
  if (!body.empty() || method == "POST") r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + std::string(body);
}

int status_of(uint16_t port, const std::string& req) {
  Client c(port);
  auto r = c.roundtrip(req);
  return r ? r->status : 0;
}

http::ListenerOptions guarded(http::HostCheck check) {
  auto o = Harness::options();
  o.host_check = check;
  o.server_names = {"cloudlet.lan", "192.0.2.7"};
  return o;
}

}  // namespace

TEST(HttpServerGuard, HostMustBeANameTheListenerServes) {
  Harness h(guarded(http::HostCheck::names));
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    std::string port = std::to_string(h.port);
    struct Case {
      std::string headers;
      int status;
    } cases[] = {
        {"Host: localhost\r\n", 200},
        {"Host: LOCALHOST:" + port + "\r\n", 200},
        {"Host: app.localhost\r\n", 200},
        {"Host: 127.0.0.1:" + port + "\r\n", 200},  // the address the client connected to
        {"Host: cloudlet.lan\r\n", 200},               // server_names
        {"Host: cloudlet.lan.:" + port + "\r\n", 200},
        {"Host: 192.0.2.7\r\n", 200},
        {"Host: evil.example:" + port + "\r\n", 421},  // a rebinding page's name
        {"Host: localhost.evil.example\r\n", 421},
        {"Host: 10.9.8.7\r\n", 421},                   // an address this connection is not on
        {"Host: [::1]:" + port + "\r\n", 421},
        {"Host: 0.0.0.0:" + port + "\r\n", 421},
        {"", 400},                                      // HTTP/1.1 requires Host
        {"Host: a b\r\n", 400},
        {"Host: localhost\r\nHost: evil.example\r\n", 400},
    };
    for (const auto& k : cases) {
      EXPECT_EQ(status_of(h.port, request("GET", "/hello", k.headers)), k.status) << k.headers;
    }
    // HTTP/1.0 may omit it; an absolute-form target names the host instead of the header.
    EXPECT_EQ(status_of(h.port, request("GET", "/hello", "", {}, "HTTP/1.0")), 200);
    EXPECT_EQ(status_of(h.port, request("GET", "http://evil.example/hello", "Host: localhost\r\n")), 421);
    EXPECT_EQ(status_of(h.port, request("GET", "http://localhost/hello", "Host: evil.example\r\n")), 200);
    // Refused before routing: the body of a refused request never reaches a handler, and the answer says why.
    Client c(h.port);
    auto r = c.roundtrip(request("GET", "/hello", "Host: evil.example\r\n"));
    ASSERT_TRUE(r);
    EXPECT_NE(r->body.find("server_names"), std::string::npos) << r->body;
  });
}

TEST(HttpServerGuard, ApiListenersAcceptAnyIpLiteral) {
  Harness h(guarded(http::HostCheck::names_or_ip));
  h.route("GET", "/hello", text("hello"));
  h.run([&] {
    EXPECT_EQ(status_of(h.port, request("GET", "/hello", "Host: 10.9.8.7:9999\r\n")), 200);  // a phone
    EXPECT_EQ(status_of(h.port, request("GET", "/hello", "Host: [fe80::1]:9999\r\n")), 200);
    EXPECT_EQ(status_of(h.port, request("GET", "/hello", "Host: evil.example\r\n")), 421);
  });
}

TEST(HttpServerGuard, CrossSiteRequestsAreRefused) {
  Harness h(guarded(http::HostCheck::names));
  int changes = 0;
  h.route("POST", "/change", [&](Request& r) {
    changes++;
    return r.send(200, "text/plain", "changed");
  });
  h.route("GET", "/page", text("page"));
  h.route("DELETE", "/thing", text("deleted"));
  h.run([&] {
    std::string host = "Host: 127.0.0.1:" + std::to_string(h.port) + "\r\n";
    std::string origin = "Origin: http://127.0.0.1:" + std::to_string(h.port) + "\r\n";
    struct Case {
      std::string method, target, headers;
      int status;
    } cases[] = {
        // Same origin (the manager's own pages), and clients that are not browsers (phones, curl).
        {"POST", "/change", host + origin + "Sec-Fetch-Site: same-origin\r\n", 200},
        {"POST", "/change", host, 200},
        {"POST", "/change", "Host: localhost\r\nOrigin: http://LOCALHOST\r\n", 200},  // both on port 80 (a proxy)
        {"POST", "/change", "Host: localhost:" + std::to_string(h.port) + "\r\nOrigin: http://localhost:" +
                                std::to_string(h.port) + "\r\n", 200},
        // Another origin: a page elsewhere, another port of localhost, a sandboxed page.
        {"POST", "/change", host + "Origin: http://evil.example\r\n", 403},
        {"POST", "/change", host + "Origin: http://127.0.0.1:8080\r\n", 403},
        {"POST", "/change", host + "Origin: null\r\n", 403},
        {"DELETE", "/thing", host + "Origin: http://evil.example\r\n", 403},
        {"POST", "/change", host + "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n", 403},
        {"POST", "/change", host + "Sec-Fetch-Site: same-site\r\nSec-Fetch-Mode: navigate\r\n", 403},
        // Reads: another site's images, scripts and EventSources are refused, links (navigations) work.
        {"GET", "/page", host + "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n", 403},
        {"GET", "/page", host + "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\n", 403},
        {"GET", "/page", host + "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\n", 200},
        {"GET", "/page", host + "Sec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\n", 200},
        {"GET", "/page", host + "Origin: http://evil.example\r\n", 200},  // a read the browser will not show
    };
    for (const auto& k : cases) {
      EXPECT_EQ(status_of(h.port, request(k.method, k.target, k.headers)), k.status)
          << k.method << " " << k.headers;
    }
  });
  EXPECT_EQ(changes, 4);
}

TEST(HttpServerGuard, JsonRoutesRequireJsonBodies) {
  Harness h;
  int calls = 0;
  http::Route route;
  route.method = "POST";
  route.pattern = "/json";
  route.json_body = true;
  route.handler = [&](Request& r) {
    calls++;
    return r.send(200, "application/json", r.body.empty() ? "{}" : r.body);
  };
  ASSERT_EQ(h.router().add(std::move(route)), CL_OK);
  h.run([&] {
    std::string host = "Host: localhost\r\n";
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host + "Content-Type: text/plain\r\n", "{\"a\":1}")), 415);
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host, "{\"a\":1}")), 415);
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host + "Content-Type: application/x-www-form-urlencoded\r\n",
                                        "{\"a\":1}")),
              415);
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host + "Content-Type: application/json\r\n", "{\"a\":1}")),
              200);
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host + "Content-Type: Application/JSON; charset=utf-8\r\n",
                                        "{\"a\":1}")),
              200);
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host + "Content-Type: application/merge-patch+json\r\n",
                                        "{\"a\":1}")),
              200);
    EXPECT_EQ(status_of(h.port, request("POST", "/json", host)), 200);  // no body, nothing to check
  });
  EXPECT_EQ(calls, 4);
}
