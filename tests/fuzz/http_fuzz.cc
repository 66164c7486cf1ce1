// The HTTP request path: each input is the byte stream of one client connection, sent over loopback to a real
// http::Server (llhttp callbacks, router, query parsing, buffered, streamed and form bodies with urlencoded and
// multipart parsing, static files with Range). The pure parsers that path uses (percent-decoding, query
// strings, route matching, multipart) also get the input directly, which is much faster per byte.
//
// Per input: write everything (reading answers as they come), wait until the server has been quiet for a
// moment with no work on its workers (form uploads are spooled there), half-close, and wait for the server to
// close the connection. A server that keeps a connection open after its client's EOF for longer than
// kCloseDeadlineMs is a finding (abort). FUZZ_HTTP_SHOW=1 fuzz_http FILE... prints what the server answered.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "http/form_reader.h"
#include "http/multipart.h"
#include "http/request.h"
#include "http/router.h"
#include "http/server.h"
#include "http/url.h"
#include "json/json.h"
#include "loop/loop.h"

namespace http = cloudlet::http;

namespace {

constexpr int kCloseDeadlineMs = 3000;

using Clock = std::chrono::steady_clock;

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

cl_status_t answer_params(http::Request& r) {
  std::string out;
  std::string_view name, value;
  for (size_t i = 0; r.param_at(i, &name, &value) == CL_OK; i++) {
    out.append(name).append("=").append(value).append("\n");
  }
  std::string_view h;
  if (r.header("Content-Type", &h) == CL_OK) out.append(h);
  return r.send(200, "text/plain", out);
}

// Bytes streamed so far per request (reset for every input: a request whose client left is simply dropped).
std::map<cl_request_t*, size_t> streamed;

void on_body(void*, cl_request_t* req, cl_status_t status, cl_str_t chunk) {
  if (status != CL_OK) {  // the body broke off (the client left): the handler still ends the request
    streamed.erase(req);
    req->send(400, "text/plain", "");
    return;
  }
  if (chunk.len > 0) {
    streamed[req] += chunk.len;
    return;
  }
  req->send(200, "text/plain", std::to_string(streamed[req]));
  streamed.erase(req);
}

// FUZZ_HTTP_SHOW=1 prints the server's answers (to check what an input reaches: fuzz_http FILE).
const bool show = getenv("FUZZ_HTTP_SHOW") != nullptr;

// One server for the whole run (the fuzzer calls the target millions of times).
struct Harness {
  cloudlet::Loop loop;
  std::string dir;
  std::unique_ptr<http::Server> server;
  uint16_t port = 0;
  http::Router pure_router;  // for direct route matching

  Harness() {
    char tmpl[] = "/tmp/cl-fuzz-http-XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (!d) abort();
    dir = d;
    mkdir((dir + "/spool").c_str(), 0700);
    mkdir((dir + "/www").c_str(), 0700);
    mkdir((dir + "/www/sub").c_str(), 0700);
    std::ofstream(dir + "/www/index.html") << "<html>index</html>\n";
    std::ofstream(dir + "/www/sub/data.txt") << std::string(5000, 'd');
    server = std::make_unique<http::Server>(loop, dir + "/spool");
    http::ListenerOptions o;
    o.name = "manager";
    o.host = "127.0.0.1";
    o.port = 0;
    o.webroot = dir + "/www";
    o.limits.max_header_bytes = 4096;
    o.limits.max_uri_bytes = 2048;
    o.limits.max_body_bytes = 64 * 1024;
    o.limits.max_upload_bytes = 256 * 1024;
    o.limits.header_timeout_ms = 2000;
    o.limits.body_timeout_ms = 2000;
    o.limits.idle_timeout_ms = 2000;
    o.limits.write_timeout_ms = 2000;
    std::string error;
    if (server->listen(o, &error) != CL_OK) {
      fprintf(stderr, "http_fuzz: listen: %s\n", error.c_str());
      abort();
    }
    port = server->listener("manager")->bound_port;
    for (http::Router* r : {server->router("manager"), &pure_router}) add_routes(*r);
  }

  void add_routes(http::Router& router) {
    auto add = [&](const char* method, const char* pattern, uint32_t flags,
                   std::function<cl_status_t(http::Request&)> fn) {
      http::Route r;
      r.method = method;
      r.pattern = pattern;
      r.flags = flags;
      r.handler = std::move(fn);
      router.add(std::move(r));
    };
    add("GET", "/echo/{a}/{*rest}", 0, answer_params);
    add("GET", "/echo", 0, answer_params);
    add("", "/any", 0, [](http::Request& r) { return r.send(204, "text/plain", ""); });
    add("POST", "/json", 0, [](http::Request& r) {
      cloudlet::json::Document d;
      std::string err;
      if (!cloudlet::json::parse(r.body, &d, &err)) {
        return r.send(400, "application/json", cloudlet::json::error_object(err));
      }
      return r.send(200, "application/json", cloudlet::json::stringify(d));
    });
    add("POST", "/form", CL_ROUTE_F_FORM, answer_params);
    add("PUT", "/stream/{name}", CL_ROUTE_F_STREAM_BODY,
        [](http::Request& r) { return r.read_body(on_body, nullptr); });
    add("GET", "/events", 0, [](http::Request& r) {
      r.sse_start();
      r.sse_send("hello", "one\ntwo");
      return r.end();
    });
    add("GET", "/decline/{x}", 0, [](http::Request&) { return CL_EDECLINED; });
    add("GET", "/decline/{y}", 0, answer_params);
  }

  // Runs the server's loop once without blocking.
  void turn() { uv_run(loop.uv(), UV_RUN_NOWAIT); }

  void exchange(const uint8_t* data, size_t size) {
    streamed.clear();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) abort();
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) abort();
    char buf[65536];
    size_t sent = 0;
    bool eof = false;
    int quiet = 0;  // consecutive turns in which nothing happened after everything was sent
    bool half_closed = false;
    Clock::time_point closed_at;
    auto start = Clock::now();
    while (!eof) {
      turn();
      if (sent < size) {
        ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<size_t>(n);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) sent = size;  // the server closed: stop sending
      }
      pollfd p{fd, POLLIN, 0};
      bool readable = poll(&p, 1, sent < size ? 0 : 1) > 0;
      bool progress = false;
      if (readable) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
        progress = n != 0;
        if (n > 0 && show) fwrite(buf, 1, static_cast<size_t>(n), stderr);
      }
      quiet = progress ? 0 : quiet + 1;
      // Quiet, and no upload spooling on the workers: the server has answered what it could.
      bool idle = quiet >= 3 && loop.pending_work() == 0;
      if (sent >= size && !half_closed && (idle || ms_since(start) > 1000)) {
        shutdown(fd, SHUT_WR);
        half_closed = true;
        closed_at = Clock::now();
      }
      if (half_closed && ms_since(closed_at) > kCloseDeadlineMs) {
        fprintf(stderr, "http_fuzz: the server kept the connection open %d ms after the client's EOF\n",
                kCloseDeadlineMs);
        abort();
      }
    }
    close(fd);
    for (int i = 0; i < 4; i++) turn();  // the server's close callbacks
  }
};

Harness& harness() {
  static Harness* h = new Harness;  // never destroyed: the fuzzer exits the process
  return *h;
}

// The parsers on the request path, called directly.
void pure(std::string_view in) {
  std::string out;
  http::percent_decode(in, &out, false);
  http::percent_decode(in, &out, true);
  std::vector<std::pair<std::string, std::string>> pairs;
  http::parse_query(in, &pairs);
  std::string line(in.substr(0, in.find('\n')));
  size_t sp = line.find(' ');
  std::string method = line.substr(0, sp), path = sp == std::string::npos ? "" : line.substr(sp + 1);
  std::vector<http::Router::Match> matches;
  std::string allowed;
  harness().pure_router.match(method, path, &matches, &allowed);

  std::string boundary;
  http::MultipartParser::boundary_from_content_type(line, &boundary);
  http::FormReader::kind_of(line);
  size_t parts = 0, bytes = 0;
  http::MultipartParser mp("fuzzb",
                           {[&](const http::PartHeaders&) {
                              parts++;
                              return CL_OK;
                            },
                            [&](std::string_view d) {
                              bytes += d.size();
                              return CL_OK;
                            },
                            [] { return CL_OK; }},
                           http::MultipartLimits{1024, 50});
  // Fed in chunks whose sizes come from the input itself, so delimiters get split everywhere.
  size_t at = 0, i = 0;
  while (at < in.size()) {
    size_t n = 1 + static_cast<unsigned char>(in[i++ % in.size()]) % 64;
    mp.feed(in.substr(at, n));
    at += n;
  }
  mp.finish();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  harness();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pure(std::string_view(reinterpret_cast<const char*>(data), size));
  harness().exchange(data, size);
  return 0;
}
