// Listener guards, principals, peer certificates and static files (ABI 1.1, slots 67-71) with the real core:
// real sockets on loopback (TLS with client certificates included), core routes and the listener's webroot
// behind a plugin's guard, and what happens to a guarded listener when its plugin goes. The plugin is the
// conformance fixture (tests/fixtures/conformance.cc): it guards "manager", serves www/ with static_add and
// reports principals and certificates at /plugins/conformance/whoami.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "../http/server/server_test_util.h"
#include "http/request.h"
#include "http/router.h"
#include "plugin_core.h"
#include "plugin_test_util.h"

namespace fs = std::filesystem;
using namespace cloudlet;
using cloudlet::test::HttpResponse;
using cloudlet::test::PluginCore;

namespace {

std::string fixture() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/tests/fixtures/fixture_conformance.so"; }

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// A scratch directory: the plugin's files (www/), a webroot for the listener, and certificates.
class Scratch {
 public:
  explicit Scratch(const std::string& tag) {
    dir = fs::temp_directory_path() / ("cl-net-" + std::to_string(getpid()) + "-" + tag);
    fs::remove_all(dir);
    fs::create_directories(dir / "files" / "www" / "sub");
    fs::create_directories(dir / "webroot");
    fs::create_directories(dir / "server");
    fs::create_directories(dir / "client");
    write(dir / "files" / "www" / "hello.txt", "hello static\n");
    write(dir / "files" / "www" / "index.html", "<p>index</p>\n");
    write(dir / "webroot" / "page.html", "<p>page</p>\n");
    write(dir / "webroot" / "deny", "never served\n");
  }
  ~Scratch() { fs::remove_all(dir); }
  std::string files() const { return (dir / "files").string(); }
  std::string webroot() const { return (dir / "webroot").string(); }
  fs::path dir;
};

// Core routes on the manager listener: /core/hello answers with the principal the guard set, /core/deny would
// answer 200 if the guard let it through.
void add_core_routes(PluginCore& core) {
  http::Route hello;
  hello.method = "GET";
  hello.pattern = "/core/hello";
  hello.handler = [](http::Request& r) {
    return r.send(200, "text/plain", "core says " + (r.principal.empty() ? std::string("nobody") : r.principal));
  };
  ASSERT_EQ(core.server->router("manager")->add(std::move(hello)), CL_OK);
  http::Route deny;
  deny.pattern = "/core/deny";
  deny.handler = [](http::Request& r) { return r.send(200, "text/plain", "the guard let it through"); };
  ASSERT_EQ(core.server->router("manager")->add(std::move(deny)), CL_OK);
}

std::string get(const std::string& path, const std::string& extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra + "\r\n";
}

// Reads everything the server sends on fd until it closes (or 5 s pass).
std::string read_all(int fd) {
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// One HTTPS exchange over loopback, presenting a client certificate when cert is not empty. The server's
// certificate is not checked: these tests are about the client's. Returns the response (status 0 when none).
HttpResponse https(uint16_t port, const std::string& cert, const std::string& key, const std::string& request) {
  HttpResponse out;
  int fd = test::connect_loopback(port);
  if (fd < 0) return out;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!cert.empty()) {
    SSL_CTX_use_certificate_file(ctx, cert.c_str(), SSL_FILETYPE_PEM);
    SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM);
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string data;
  if (SSL_connect(ssl) == 1 && SSL_write(ssl, request.data(), static_cast<int>(request.size())) > 0) {
    char buf[4096];
    int n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  size_t pos = 0;
  if (!test::parse_response(data, &pos, &out)) out.status = 0;
  return out;
}

// The SHA-256 of a PEM certificate's DER, computed by the openssl and sha256sum commands (not by the core).
std::string fingerprint_by_cli(const std::string& cert) {
  std::string cmd = "openssl x509 -in '" + cert + "' -outform DER | sha256sum";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "";
  char buf[128] = {0};
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  pclose(p);
  std::string out(buf, n);
  return out.substr(0, out.find(' '));
}

// A principal or certificate from the whoami report ({"principal": "...", ...}).
std::string field(const std::string& json, const std::string& key) {
  size_t p = json.find("\"" + key + "\":");
  if (p == std::string::npos) return "<absent>";
  p += key.size() + 3;
  if (json[p] == '"') return json.substr(p + 1, json.find('"', p + 1) - p - 1);
  return json.substr(p, json.find_first_of(",}", p) - p);
}

TEST(PluginNet, GuardCoversPluginRoutesCoreRoutesAndStaticFiles) {
  Scratch s("covers");
  PluginCore core("net-covers", [&](http::ListenerOptions& o) { o.webroot = s.webroot(); });
  add_core_routes(core);
  core.guards = {"manager"};
  core.files_dir = s.files();
  std::string error;
  ASSERT_EQ(core.load("conformance", fixture(), {}, &error), CL_OK) << error;

  // A core route sees the principal the plugin's guard set.
  HttpResponse r = core.http(get("/core/hello", "X-User: bob\r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "core says user:bob");
  EXPECT_EQ(core.http(get("/core/hello")).body, "core says nobody");
  // Refused: core route, webroot file, plugin route, a path nothing serves.
  EXPECT_EQ(core.http(get("/core/deny")).status, 401);
  EXPECT_EQ(core.http(get("/deny")).status, 401);
  EXPECT_EQ(core.get("/page.html").status, 200);
  EXPECT_EQ(core.get("/plugins/conformance/guard/deny").status, 401);
  EXPECT_EQ(core.get("/nothing/here/deny").status, 401);
  // A refused upload is refused before its body is read; the guard's own answer goes out as it made it.
  std::string body(100, 'x');
  r = core.http("POST /core/deny HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n" + body);
  EXPECT_EQ(r.status, 401);
  r = core.http("POST /plugins/conformance/guard/answer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n" +
                body);
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(r.header("Location"), "/login");
  EXPECT_EQ(r.body, "log in first");
}

TEST(PluginNet, ARefusalWithoutBodyKeepsTheConnection) {
  Scratch s("keep");
  PluginCore core("net-keep");
  add_core_routes(core);
  core.guards = {"manager"};
  core.files_dir = s.files();
  ASSERT_EQ(core.load("conformance", fixture()), CL_OK);
  auto fut = std::async(std::launch::async, [&] {
    int fd = test::connect_loopback(core.port);
    test::send_all(fd,
                   "GET /core/deny HTTP/1.1\r\nHost: localhost\r\n\r\n"
                   "GET /core/hello HTTP/1.1\r\nHost: localhost\r\nX-User: kim\r\nConnection: close\r\n\r\n");
    std::string all = read_all(fd);
    close(fd);
    return all;
  });
  core.run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, 8000);
  std::string all = fut.get();
  size_t pos = 0;
  HttpResponse first, second;
  ASSERT_TRUE(test::parse_response(all, &pos, &first)) << all;
  ASSERT_TRUE(test::parse_response(all, &pos, &second)) << all;
  EXPECT_EQ(first.status, 401);
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.body, "core says user:kim");
}

TEST(PluginNet, UnloadingTheGuardsPluginClosesItsListener) {
  Scratch s("unload");
  PluginCore core("net-unload", [&](http::ListenerOptions& o) { o.webroot = s.webroot(); });
  add_core_routes(core);
  core.guards = {"manager"};
  core.files_dir = s.files();
  ASSERT_EQ(core.load("conformance", fixture()), CL_OK);
  EXPECT_EQ(core.get("/core/hello").status, 200);
  ASSERT_TRUE(core.unload_all());
  // Fail closed: the core's own routes and files are refused too, never served unguarded.
  EXPECT_EQ(core.get("/core/hello").status, 503);
  EXPECT_EQ(core.get("/page.html").status, 503);
  EXPECT_EQ(core.get("/plugins/conformance/static/hello.txt").status, 503);
  EXPECT_EQ(core.log_lines_with("lost its guard"), 1);
}

TEST(PluginNet, AnInitThatFailsAfterSettingTheGuardClosesTheListener) {
  Scratch s("initfail");
  PluginCore core("net-initfail");
  add_core_routes(core);
  core.guards = {"manager"};
  core.files_dir = (s.dir / "no-such-dir").string();  // static_add fails after the guard was set: init fails
  EXPECT_EQ(core.load("conformance", fixture()), CL_ENOENT);
  core.run_until([&] { return core.pm->retiring() == 0; }, 5000);
  EXPECT_EQ(core.get("/core/hello").status, 503);
}

// The daemon marks a listener whose guard the configuration grants (Server::expect_guard) before loading
// plugins: it refuses until the guard is installed, and stays closed when the plugin fails to load.
TEST(PluginNet, AGrantedGuardKeepsTheListenerClosedUntilInstalled) {
  Scratch s("expect");
  PluginCore core("net-expect");
  add_core_routes(core);
  ASSERT_EQ(core.server->expect_guard("manager"), CL_OK);
  EXPECT_EQ(core.server->expect_guard("nosuch"), CL_ENOENT);
  EXPECT_EQ(core.get("/core/hello").status, 503);
  core.guards = {"manager"};
  core.files_dir = s.files();
  EXPECT_NE(core.load("conformance", (s.dir / "missing.so").string()), CL_OK);
  EXPECT_EQ(core.get("/core/hello").status, 503);  // its plugin did not load: still closed
  ASSERT_EQ(core.load("conformance", fixture()), CL_OK);
  EXPECT_EQ(core.get("/core/hello").status, 200);  // through the installed guard
}

TEST(PluginNet, AGuardNotGrantedIsRefused) {
  Scratch s("notgranted");
  PluginCore core("net-notgranted");
  add_core_routes(core);
  core.files_dir = s.files();  // no guards granted
  EXPECT_EQ(core.load("conformance", fixture()), CL_EPERM);
  EXPECT_GE(core.log_lines_with("is not granted to this plugin"), 1);
  core.run_until([&] { return core.pm->retiring() == 0; }, 5000);
  EXPECT_EQ(core.get("/core/hello").status, 200);  // the listener was never guarded
}

TEST(PluginNet, StaticFilesHaveEtagRangeHeadAndRedirect) {
  Scratch s("static");
  PluginCore core("net-static");
  core.guards = {"manager"};
  core.files_dir = s.files();
  ASSERT_EQ(core.load("conformance", fixture()), CL_OK);
  HttpResponse r = core.get("/plugins/conformance/static/hello.txt");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello static\n");
  EXPECT_EQ(r.header("Content-Type").rfind("text/plain", 0), 0u) << r.header("Content-Type");
  std::string etag = r.header("ETag");
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(core.http(get("/plugins/conformance/static/hello.txt", "If-None-Match: " + etag + "\r\n")).status, 304);
  r = core.http(get("/plugins/conformance/static/hello.txt", "Range: bytes=0-4\r\n"));
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(r.header("Content-Range"), "bytes 0-4/13");
  auto head = std::async(std::launch::async, [&] {
    return test::http_raw("127.0.0.1", core.port,
                          "HEAD /plugins/conformance/static/hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                          5000, true);
  });
  core.run_until([&] { return head.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, 8000);
  r = head.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Length"), "13");
  r = core.get("/plugins/conformance/static");
  EXPECT_EQ(r.status, 301);
  EXPECT_EQ(r.header("Location"), "/plugins/conformance/static/");
  EXPECT_EQ(core.get("/plugins/conformance/static/").body, "<p>index</p>\n");
  EXPECT_EQ(core.get("/plugins/conformance/static/sub").status, 301);
  EXPECT_EQ(core.get("/plugins/conformance/static/%2e%2e/www/hello.txt").status, 404);
  // A symlink placed later that leads out of the directory is not followed.
  fs::create_symlink(s.dir / "webroot" / "page.html", s.dir / "files" / "www" / "late.html");
  EXPECT_EQ(core.get("/plugins/conformance/static/late.html").status, 404);
  // Only GET and HEAD.
  EXPECT_EQ(core.http("POST /plugins/conformance/static/hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                      "Content-Length: 0\r\n\r\n")
                .status,
            405);
}

class PeerCert : public ::testing::TestWithParam<http::ClientCerts> {};

TEST_P(PeerCert, FingerprintOfTheClientCertificateOverRealTls) {
  Scratch s(GetParam() == http::ClientCerts::require ? "mtls-require" : "mtls-optional");
  std::string server_cert, server_key, client_cert, client_key;
  ASSERT_TRUE(httptest::make_self_signed((s.dir / "server").string(), &server_cert, &server_key));
  ASSERT_TRUE(httptest::make_self_signed((s.dir / "client").string(), &client_cert, &client_key));
  PluginCore core("net-mtls", [&](http::ListenerOptions& o) {
    o.tls_cert = server_cert;
    o.tls_key = server_key;
    o.tls_client_certs = GetParam();
  });
  core.guards = {"manager"};
  core.files_dir = s.files();
  ASSERT_EQ(core.load("conformance", fixture()), CL_OK);
  auto exchange = [&](const std::string& cert, const std::string& key) {
    auto fut = std::async(std::launch::async, [&] { return https(core.port, cert, key, get("/plugins/conformance/whoami")); });
    core.run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, 8000);
    return fut.get();
  };
  std::string expected = fingerprint_by_cli(client_cert);
  ASSERT_EQ(expected.size(), 64u);
  HttpResponse r = exchange(client_cert, client_key);
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(field(r.body, "peer_cert_status"), std::to_string(CL_OK)) << r.body;
  EXPECT_EQ(field(r.body, "peer_cert"), expected) << r.body;
  // The same client again (a new connection, perhaps a resumed session): the same fingerprint.
  EXPECT_EQ(field(exchange(client_cert, client_key).body, "peer_cert"), expected);
  r = exchange("", "");
  if (GetParam() == http::ClientCerts::require) {
    EXPECT_EQ(r.status, 0) << r.body;  // no certificate, no connection
  } else {
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(field(r.body, "peer_cert_status"), std::to_string(CL_ENOENT)) << r.body;
    EXPECT_EQ(field(r.body, "peer_cert"), "-") << r.body;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, PeerCert, ::testing::Values(http::ClientCerts::optional, http::ClientCerts::require));

TEST(PluginNet, ATlsListenerThatAsksForNoCertificateReportsNone) {
  Scratch s("tls-none");
  std::string server_cert, server_key, client_cert, client_key;
  ASSERT_TRUE(httptest::make_self_signed((s.dir / "server").string(), &server_cert, &server_key));
  ASSERT_TRUE(httptest::make_self_signed((s.dir / "client").string(), &client_cert, &client_key));
  PluginCore core("net-tls-none", [&](http::ListenerOptions& o) {
    o.tls_cert = server_cert;
    o.tls_key = server_key;
  });
  core.guards = {"manager"};
  core.files_dir = s.files();
  ASSERT_EQ(core.load("conformance", fixture()), CL_OK);
  auto fut = std::async(std::launch::async,
                        [&] { return https(core.port, client_cert, client_key, get("/plugins/conformance/whoami")); });
  core.run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, 8000);
  HttpResponse r = fut.get();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(field(r.body, "peer_cert_status"), std::to_string(CL_ENOENT)) << r.body;
}

}  // namespace
