// core/http/client.h against real loopback servers: bodies both ways (Content-Length, chunked, some MiB with
// back-pressure), timeouts, refused connections, cancel, malformed and oversized responses, and TLS (CA file,
// host name and IP checks, untrusted certificates, client certificates, pins).
#include "http/client.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fetch_server.h"
#include "system/digest.h"

using cloudlet::http::Fetch;
using cloudlet::http::FetchOptions;
using cloudlet::http::FetchUrl;
using cloudlet::http::parse_fetch_url;
using fetchtest::Conn;
using fetchtest::Server;

namespace {

std::string big(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>('a' + (i * 7 + i / 1000) % 26);
  return s;
}

// Certificates made by the openssl CLI in a fresh temporary directory: a CA, a server certificate for
// 127.0.0.1 and localhost, one for another name, a self-signed one nobody trusts, and a client certificate.
class Certs {
 public:
  Certs() {
    char tmpl[] = "/tmp/cl-fetch-test-XXXXXX";
    if (!mkdtemp(tmpl)) abort();
    dir_ = tmpl;
    std::string d = dir_;
    std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
    std::string script =
        "set -e; cd " + d + ";"
        "openssl req -x509" + key + "-keyout ca.key -out ca.pem -subj /CN=test-ca -days 2;"
        "sign() { openssl req -new" + key + "-keyout $1.key -out $1.csr -subj /CN=$1;"
        "  printf \"$2\" > $1.ext;"
        "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $1.pem -days 2 -extfile $1.ext; };"
        "sign server 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n';"
        "sign other 'subjectAltName=DNS:other.example\\n';"
        "sign client 'extendedKeyUsage=clientAuth\\n';"
        "openssl req -x509" + key + "-keyout rogue.key -out rogue.pem -subj /CN=localhost -days 2 "
        "-addext subjectAltName=IP:127.0.0.1,DNS:localhost";
    ok_ = std::system(("(" + script + ") >/dev/null 2>&1").c_str()) == 0;
  }
  ~Certs() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  // A server context for the named certificate; clients must present one signed by the CA when asked.
  SSL_CTX* server_ctx(const std::string& name, bool require_client = false) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_chain_file(ctx, file(name + ".pem").c_str());
    SSL_CTX_use_PrivateKey_file(ctx, file(name + ".key").c_str(), SSL_FILETYPE_PEM);
    if (require_client) {
      SSL_CTX_load_verify_locations(ctx, file("ca.pem").c_str(), nullptr);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    return ctx;
  }
  // Hex SHA-256 of a certificate's DER.
  std::string fingerprint(const std::string& name) {
    std::string out = file(name + ".der");
    std::system(("openssl x509 -in " + file(name + ".pem") + " -outform DER -out " + out).c_str());
    std::ifstream f(out, std::ios::binary);
    std::string der((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return cloudlet::sha256_hex(der);
  }

 private:
  std::string dir_;
  bool ok_ = false;
};

struct Result {
  std::optional<unsigned> status;
  std::string body;
  std::optional<cl_status_t> final;
  int finals = 0;
  int chunks = 0;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_DEFAULT);  // every Fetch frees itself once its handles closed
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // What a test adds to the recording of the head and the body (both get the exchange's handle).
  struct Hooks {
    std::function<void(Fetch*)> head;
    std::function<void(Fetch*, std::string_view)> chunk;
  };

  // Starts an exchange that records into *r (which must outlive it).
  Fetch* start(FetchOptions o, Result* r, cl_status_t expect = CL_OK, Hooks hooks = {}) {
    auto self = std::make_shared<Fetch*>(nullptr);  // set before any callback: none runs from inside start
    std::string error;
    cl_status_t st = Fetch::start(
        &loop_, std::move(o),
        [r, self, hooks](unsigned status) {
          r->status = status;
          if (hooks.head) hooks.head(*self);
        },
        [r, self, hooks](cl_status_t status, std::string_view chunk) {
          if (status == CL_OK && !chunk.empty()) {
            r->chunks++;
            r->body.append(chunk);
            if (hooks.chunk) hooks.chunk(*self, chunk);
            return;
          }
          r->finals++;
          r->final = status;
        },
        self.get(), &error);
    EXPECT_EQ(st, expect) << error;
    return *self;
  }

  // Runs the loop until the final call, or fails after 20 s.
  void wait(Result* r) {
    uint64_t deadline = uv_now(&loop_) + 20000;
    while (!r->final && uv_now(&loop_) < deadline) uv_run(&loop_, UV_RUN_ONCE);
    ASSERT_TRUE(r->final.has_value());
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(r->finals, 1);
  }

  Result get(FetchOptions o) {
    Result r;
    if (start(std::move(o), &r)) wait(&r);
    return r;
  }

  // Runs the loop for ms (a timer bounds each turn).
  void run_for(uint64_t ms) {
    uv_timer_t t;
    uv_timer_init(&loop_, &t);
    uv_timer_start(&t, [](uv_timer_t*) {}, ms, 0);
    uint64_t until = uv_now(&loop_) + ms;
    while (uv_now(&loop_) < until) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }

  static FetchOptions opts(std::string url) {
    FetchOptions o;
    o.url = std::move(url);
    return o;
  }

  uv_loop_t loop_;
};

// A script that reads the request, then writes `bytes` and closes.
Server::Script answer(std::string bytes) {
  return [bytes](Conn& c) {
    std::string head, body;
    if (c.read_request(&head, &body)) c.write(bytes);
  };
}

// Answers every request with its own method, target and body.
void echo(Conn& c) {
  std::string head, body;
  if (!c.read_request(&head, &body)) return;
  std::string line = head.substr(0, head.find("\r\n"));
  std::string out = line + "\n" + body;
  c.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(out.size()) + "\r\nX-Echo: yes\r\n\r\n" + out);
}

TEST(FetchUrl, Parses) {
  FetchUrl u;
  ASSERT_TRUE(parse_fetch_url("http://127.0.0.1:8080/a/b?c=d#frag", &u));
  EXPECT_FALSE(u.tls);
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 8080);
  EXPECT_EQ(u.target, "/a/b?c=d");
  EXPECT_EQ(u.authority, "127.0.0.1:8080");
  ASSERT_TRUE(parse_fetch_url("HTTPS://[::1]", &u));
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.target, "/");
  EXPECT_EQ(u.authority, "[::1]");
  ASSERT_TRUE(parse_fetch_url("http://example.org?q", &u));
  EXPECT_EQ(u.target, "/?q");
  for (const char* bad : {"ftp://x/", "http://", "http://u@h/", "http://h:0/", "http://h:65536/", "http://h:/",
                          "http://[::1/", "http://[zz]/", "http://h/a b", "http://h/\r\nX: y", "http://h\x01/",
                          "//h/", "http://h:8x/"}) {
    EXPECT_FALSE(parse_fetch_url(bad, &u)) << bad;
  }
}

TEST_F(ClientTest, GetStreamsTheBodyBack) {
  Server s(echo);
  Result r = get(opts(s.url("/path?x=1")));
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, "GET /path?x=1 HTTP/1.1\n");
}

TEST_F(ClientTest, ResponseHeadersAndRequestHeaders) {
  std::string seen;
  Server s([&](Conn& c) {
    std::string body;
    c.read_request(&seen, &body);
    c.write("HTTP/1.1 201 Created\r\nX-One: 1\r\nx-two: second\r\nContent-Length: 0\r\n\r\n");
  });
  auto o = opts(s.url("/h"));
  o.headers = {{"X-Custom", "value with spaces"}, {"Accept", "*/*"}};
  Result r;
  std::string one, two;
  bool missing = false;
  start(o, &r, CL_OK, {[&](Fetch* f) {
                         one = *f->header("x-one");
                         two = *f->header("X-TWO");
                         missing = f->header("X-Three") == nullptr;
                       },
                       nullptr});
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.status, 201u);
  EXPECT_EQ(one, "1");
  EXPECT_EQ(two, "second");
  EXPECT_TRUE(missing);
  EXPECT_NE(seen.find("\r\nHost: 127.0.0.1:" + std::to_string(s.port()) + "\r\n"), std::string::npos);
  EXPECT_NE(seen.find("\r\nX-Custom: value with spaces\r\n"), std::string::npos);
  EXPECT_NE(seen.find("\r\nConnection: close\r\n"), std::string::npos);
}

TEST_F(ClientTest, RefusesBadRequests) {
  Result r;
  auto bad = [&](FetchOptions o) { EXPECT_EQ(start(std::move(o), &r, CL_EINVAL), nullptr); };
  auto o = opts("http://127.0.0.1:1/");
  o.method = "GET /x";
  bad(o);
  o = opts("http://127.0.0.1:1/");
  o.headers = {{"X-A", "b\r\nInjected: yes"}};
  bad(o);
  o.headers = {{"X-A\n", "b"}};
  bad(o);
  o.headers = {{"X-A", std::string("b\0c", 3)}};
  bad(o);
  o.headers = {{"Content-Length", "3"}};
  bad(o);
  o = opts("http://127.0.0.1:1/\r\n");
  bad(o);
  o = opts("https://127.0.0.1:1/");
  o.ca_file = "/nonexistent/ca.pem";
  bad(o);
  o = opts("https://127.0.0.1:1/");
  o.pin_sha256 = "abc";
  bad(o);
  o = opts("http://127.0.0.1:1/");
  o.body_length = -2;
  bad(o);
  EXPECT_EQ(r.finals, 0);
}

TEST_F(ClientTest, PostWithContentLength) {
  Server s(echo);
  auto o = opts(s.url("/up"));
  o.method = "POST";
  o.body_length = 11;
  Result r;
  Fetch* f = start(o, &r);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->write("hello ", nullptr), CL_OK);
  int dones = 0;
  EXPECT_EQ(f->write("world", [&] { dones++; }), CL_OK);
  EXPECT_EQ(f->write("!", nullptr), CL_ESTATE);  // past body_length
  EXPECT_EQ(f->end(), CL_ESTATE);                // not chunked
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "POST /up HTTP/1.1\nhello world");
  EXPECT_EQ(dones, 1);
}

TEST_F(ClientTest, PostChunked) {
  Server s(echo);
  auto o = opts(s.url("/c"));
  o.method = "PUT";
  o.body_length = -1;
  Result r;
  Fetch* f = start(o, &r);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->write("one,", nullptr), CL_OK);
  EXPECT_EQ(f->write("", nullptr), CL_OK);  // not the end of the body
  EXPECT_EQ(f->write("two", nullptr), CL_OK);
  EXPECT_EQ(f->end(), CL_OK);
  EXPECT_EQ(f->end(), CL_ESTATE);
  EXPECT_EQ(f->write("x", nullptr), CL_ESTATE);
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "PUT /c HTTP/1.1\none,two");
}

TEST_F(ClientTest, NoBodyDeclaredRefusesWrites) {
  Server s(echo);
  Result r;
  Fetch* f = start(opts(s.url("/")), &r);
  EXPECT_EQ(f->write("x", nullptr), CL_ESTATE);
  EXPECT_EQ(f->end(), CL_ESTATE);
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
}

// Several MiB each way, lent in pieces paced by their done callbacks, with the response read while paused
// now and then: the client never holds more than the pieces in flight.
TEST_F(ClientTest, LargeBodiesWithBackPressure) {
  const size_t kSize = 8 << 20;
  const std::string payload = big(kSize);
  Server s([&](Conn& c) {
    std::string head, body;
    if (!c.read_request(&head, &body)) return;
    std::string answer = body == payload ? big(kSize + 7) : "mismatch";
    c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < answer.size(); off += 100000) {
      std::string piece = answer.substr(off, 100000);
      char size[16];
      snprintf(size, sizeof size, "%zx\r\n", piece.size());
      if (!c.write(size + piece + "\r\n")) return;
    }
    c.write("0\r\n\r\n");
  });
  auto o = opts(s.url("/big"));
  o.method = "POST";
  o.body_length = -1;
  Result r;
  size_t max_chunk = 0;
  int pauses = 0;
  uv_timer_t resume;
  uv_timer_init(&loop_, &resume);
  Fetch* f = start(o, &r, CL_OK, {nullptr, [&](Fetch* self, std::string_view chunk) {
                                    max_chunk = std::max(max_chunk, chunk.size());
                                    if (r.chunks % 16 == 0) {  // a slow consumer: pause, resume 5 ms later
                                      pauses++;
                                      EXPECT_EQ(self->pause(true), CL_OK);
                                      resume.data = self;
                                      uv_timer_start(&resume, [](uv_timer_t* t) { static_cast<Fetch*>(t->data)->pause(false); }, 5, 0);
                                    }
                                  }});
  ASSERT_NE(f, nullptr);
  const size_t kPiece = 256 << 10;
  size_t next = 0, in_flight = 0, max_in_flight = 0;
  std::function<void()> pump = [&] {
    while (in_flight < 2 && next < payload.size()) {
      std::string_view piece = std::string_view(payload).substr(next, kPiece);
      next += piece.size();
      in_flight++;
      max_in_flight = std::max(max_in_flight, in_flight);
      ASSERT_EQ(f->write(piece, [&] {
        in_flight--;
        pump();
      }), CL_OK);
    }
    if (next == payload.size() && in_flight == 0 && f) {
      EXPECT_EQ(f->end(), CL_OK);
      next++;
    }
  };
  pump();
  wait(&r);
  uv_close(reinterpret_cast<uv_handle_t*>(&resume), nullptr);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body.size(), kSize + 7);
  EXPECT_TRUE(r.body == big(kSize + 7));
  EXPECT_LE(max_in_flight, 2u);
  EXPECT_LE(max_chunk, 65536u);
  EXPECT_GT(pauses, 0);
}

// Paused from the start: nothing is read (not even the head) and no idle timeout runs until the resume; then
// everything arrives in order.
TEST_F(ClientTest, PausedFromTheStartHoldsTheBodyUntilResumed) {
  Server s(echo);
  auto o = opts(s.url("/held"));
  o.idle_timeout_ms = 100;
  Result r;
  Fetch* f = start(o, &r);
  ASSERT_EQ(f->pause(true), CL_OK);
  run_for(300);
  EXPECT_FALSE(r.status.has_value());
  EXPECT_FALSE(r.final.has_value());
  ASSERT_EQ(f->pause(false), CL_OK);
  EXPECT_EQ(r.body, "");  // never from inside the call
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "GET /held HTTP/1.1\n");
}

TEST_F(ClientTest, CopiedWritesAreBounded) {
  Server s([](Conn& c) {
    std::string head, body;
    c.read_request(&head, &body);
  });
  auto o = opts(s.url("/"));
  o.method = "POST";
  o.body_length = -1;
  Result r;
  Fetch* f = start(o, &r);
  std::string piece(256 << 10, 'x');
  cl_status_t st = CL_OK;
  int accepted = 0;
  while ((st = f->write(piece, nullptr)) == CL_OK) accepted++;  // nothing is sent before the connect
  EXPECT_EQ(st, CL_EBUSY);
  EXPECT_LE(static_cast<size_t>(accepted) * piece.size(), Fetch::kMaxCopiedBytes);
  EXPECT_EQ(f->cancel(CL_ECANCELED), CL_OK);
  wait(&r);
  EXPECT_EQ(r.final, CL_ECANCELED);
}

TEST_F(ClientTest, IdleTimeoutWhenTheServerNeverAnswers) {
  Server s([](Conn& c) {
    std::string head, body;
    c.read_request(&head, &body);
    char buf[16];
    c.read_some(buf, sizeof buf);  // holds the connection open until the client leaves
  });
  auto o = opts(s.url("/"));
  o.idle_timeout_ms = 200;
  uint64_t t0 = uv_now(&loop_);
  Result r = get(o);
  EXPECT_EQ(r.final, CL_ETIMEDOUT);
  EXPECT_FALSE(r.status.has_value());
  EXPECT_GE(uv_now(&loop_) - t0, 190u);
}

TEST_F(ClientTest, ClosedPortIsUnavailable) {
  uint16_t port;
  { Server s([](Conn&) {}); port = s.port(); }  // bound and released: nothing listens there now
  Result r = get(opts("http://127.0.0.1:" + std::to_string(port) + "/"));
  EXPECT_EQ(r.final, CL_EUNAVAIL);
}

TEST_F(ClientTest, UnknownNameIsUnavailable) {
  Result r = get(opts("http://name.invalid/"));
  EXPECT_EQ(r.final, CL_EUNAVAIL);
}

TEST_F(ClientTest, CancelMidBody) {
  Server s([](Conn& c) {
    std::string head, body;
    if (!c.read_request(&head, &body)) return;
    c.write("HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
    std::string piece(65536, 'z');
    while (c.write(piece)) {
    }
  });
  Result r;
  int after_cancel = 0;
  bool cancelled = false;
  start(opts(s.url("/")), &r, CL_OK, {nullptr, [&](Fetch* f, std::string_view) {
                                        if (cancelled) after_cancel++;
                                        if (r.body.size() <= 200000 || cancelled) return;
                                        cancelled = true;
                                        EXPECT_EQ(f->cancel(CL_ECANCELED), CL_OK);
                                        EXPECT_EQ(f->cancel(CL_ECANCELED), CL_ESTATE);
                                        EXPECT_EQ(f->pause(true), CL_ESTATE);
                                      }});
  wait(&r);
  EXPECT_EQ(r.final, CL_ECANCELED);
  EXPECT_EQ(after_cancel, 0);
}

TEST_F(ClientTest, CancelBeforeConnectReturnsLentWrites) {
  Result r;
  auto o = opts("http://127.0.0.1:9/");
  o.method = "POST";
  o.body_length = 4;
  Fetch* f = start(o, &r);
  int dones = 0;
  EXPECT_EQ(f->write("abcd", [&] { dones++; }), CL_OK);
  EXPECT_EQ(f->cancel(CL_ECANCELED), CL_OK);
  EXPECT_EQ(dones, 0);  // never from inside the call
  wait(&r);
  EXPECT_EQ(r.final, CL_ECANCELED);
  EXPECT_EQ(dones, 1);
}

TEST_F(ClientTest, OversizedHeadIsRefused) {
  Server s(answer("HTTP/1.1 200 OK\r\nX-Big: " + std::string(5000, 'h') + "\r\nContent-Length: 0\r\n\r\n"));
  auto o = opts(s.url("/"));
  o.max_header_bytes = 4096;
  Result r = get(o);
  EXPECT_EQ(r.final, CL_EINVAL);
  EXPECT_FALSE(r.status.has_value());
}

TEST_F(ClientTest, MalformedResponseIsRefused) {
  Server s(answer("HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\nhello"));
  Result r = get(opts(s.url("/")));
  EXPECT_EQ(r.final, CL_EINVAL);
}

TEST_F(ClientTest, ServerClosingEarlyIsClosing) {
  Server s(answer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"));
  Result r = get(opts(s.url("/")));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, "only this");
  EXPECT_EQ(r.final, CL_ECLOSING);
}

TEST_F(ClientTest, BodyUntilCloseAndInformationalHeads) {
  Server s(answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil the end"));
  Result r = get(opts(s.url("/")));
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, "until the end");
}

TEST_F(ClientTest, HeadHasNoBody) {
  Server s(answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"));
  auto o = opts(s.url("/"));
  o.method = "HEAD";
  Result r = get(o);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "");
}

// ---- TLS ----

class ClientTlsTest : public ClientTest {
 protected:
  void SetUp() override {
    ClientTest::SetUp();
    ASSERT_TRUE(certs_.ok()) << "openssl CLI failed";
  }
  void TearDown() override {
    ClientTest::TearDown();
    for (SSL_CTX* c : ctxs_) SSL_CTX_free(c);
  }
  SSL_CTX* ctx(const std::string& name, bool require_client = false) {
    ctxs_.push_back(certs_.server_ctx(name, require_client));
    return ctxs_.back();
  }
  FetchOptions tls(const Server& s, std::string_view host = "127.0.0.1") {
    auto o = opts(s.url("/tls", true, host));
    o.ca_file = certs_.file("ca.pem");
    return o;
  }
  Certs certs_;
  std::vector<SSL_CTX*> ctxs_;
};

TEST_F(ClientTlsTest, TrustedServerByIpAndName) {
  Server s(echo, ctx("server"));
  Result r = get(tls(s));
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "GET /tls HTTP/1.1\n");
  r = get(tls(s, "localhost"));
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "GET /tls HTTP/1.1\n");
}

// The server certificate's fingerprint is known from the head on, to be pinned next time.
TEST_F(ClientTlsTest, PeerFingerprintFromTheHeadOn) {
  Server s(echo, ctx("server"));
  Result r;
  std::string fp;
  start(tls(s), &r, CL_OK, {[&](Fetch* f) { fp = f->peer_fingerprint(); }, nullptr});
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(fp, certs_.fingerprint("server"));
}

TEST_F(ClientTlsTest, PostOverTls) {
  Server s(echo, ctx("server"));
  auto o = tls(s);
  o.method = "POST";
  o.body_length = -1;
  Result r;
  Fetch* f = start(o, &r);
  std::string payload = big(3 << 20);
  int dones = 0;
  EXPECT_EQ(f->write(payload, [&] { dones++; }), CL_OK);
  EXPECT_EQ(f->end(), CL_OK);
  wait(&r);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(dones, 1);
  EXPECT_TRUE(r.body == "POST /tls HTTP/1.1\n" + payload);
}

TEST_F(ClientTlsTest, WrongHostNameIsRefused) {
  Server s(echo, ctx("other"));
  Result r = get(tls(s));
  EXPECT_EQ(r.final, CL_EPERM);
  EXPECT_FALSE(r.status.has_value());
}

TEST_F(ClientTlsTest, UntrustedCertificateIsRefused) {
  Server s(echo, ctx("rogue"));
  Result r = get(tls(s));
  EXPECT_EQ(r.final, CL_EPERM);
}

// A server that accepts but never answers the ClientHello: the connect deadline covers the handshake.
TEST_F(ClientTlsTest, HandshakeThatNeverEndsTimesOut) {
  Server s([](Conn& c) {
    char buf[4096];
    c.read_some(buf, sizeof buf);  // the ClientHello, unanswered
    c.read_some(buf, sizeof buf);  // until the client leaves
  });
  auto o = tls(s);
  o.connect_timeout_ms = 200;
  uint64_t t0 = uv_now(&loop_);
  Result r = get(o);
  EXPECT_EQ(r.final, CL_ETIMEDOUT);
  EXPECT_GE(uv_now(&loop_) - t0, 190u);
}

TEST_F(ClientTlsTest, SystemTrustStoreDoesNotKnowTheTestCa) {
  Server s(echo, ctx("server"));
  auto o = tls(s);
  o.ca_file.clear();
  Result r = get(o);
  EXPECT_EQ(r.final, CL_EPERM);
}

TEST_F(ClientTlsTest, ClientCertificateIsPresented) {
  Server s(echo, ctx("server", true));
  auto o = tls(s);
  o.cert_file = certs_.file("client.pem");
  o.key_file = certs_.file("client.key");
  Result r = get(o);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "GET /tls HTTP/1.1\n");
  // Without one the server ends the handshake: the exchange fails, whatever the moment TLS reports it.
  r = get(tls(s));
  EXPECT_NE(r.final, CL_OK);
  EXPECT_FALSE(r.status.has_value());
}

TEST_F(ClientTlsTest, Pins) {
  Server s(echo, ctx("rogue"));
  std::string fp = certs_.fingerprint("rogue");
  auto o = tls(s);
  o.pin_sha256 = fp;
  o.pin_only = true;
  Result r = get(o);
  EXPECT_EQ(r.final, CL_OK);
  EXPECT_EQ(r.body, "GET /tls HTTP/1.1\n");
  // The right pin on an untrusted chain without pin_only: the chain check still refuses it.
  o.pin_only = false;
  r = get(o);
  EXPECT_EQ(r.final, CL_EPERM);
  // A pin that does not match a trusted server.
  Server good(echo, ctx("server"));
  auto g = tls(good);
  g.pin_sha256 = std::string(64, 'a');
  r = get(g);
  EXPECT_EQ(r.final, CL_EPERM);
  g.pin_sha256 = certs_.fingerprint("server");
  r = get(g);
  EXPECT_EQ(r.final, CL_OK);
}

}  // namespace
