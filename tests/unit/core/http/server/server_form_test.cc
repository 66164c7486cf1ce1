// HTTP server: CL_ROUTE_F_FORM routes. urlencoded fields become parameters; multipart file parts are spooled
// to the server's spool directory, visible through Request::form while the request lives, deleted after.
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "http/form_reader.h"
#include "server_test_util.h"

using namespace httptest;

namespace {

// Counts directory entries with open + getdents64 rather than opendir: libuv closes sockets with a raw close
// syscall that TSan does not see, so closedir on a reused descriptor number looks like a data race to it
// (open() resets TSan's view of the number, opendir does not).
size_t spool_entries(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  size_t n = 0;
  alignas(8) char buf[4096];
  for (;;) {
    long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (got <= 0) break;
    for (long off = 0; off < got;) {
      auto* d = reinterpret_cast<dirent64*>(buf + off);
      if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0) n++;
      off += d->d_reclen;
    }
  }
  close(fd);
  return n;
}

std::string multipart_body(const std::string& boundary, const std::string& file_data) {
  return "--" + boundary +
         "\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello world\r\n"
         "--" +
         boundary +
         "\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"image.qcow2\"\r\n"
         "Content-Type: application/octet-stream\r\n\r\n" +
         file_data +
         "\r\n"
         "--" +
         boundary + "--\r\n";
}

}  // namespace

TEST(HttpServerForm, FieldsBecomeParametersAndFilesAreSpooled) {
  Harness h;
  std::vector<std::string> spooled;  // loop thread
  h.route(
      "POST", "/form",
      [&](Request& r) {
        std::string out;
        std::string_view n, v;
        for (size_t i = 0; r.param_at(i, &n, &v) == CL_OK; i++) out += std::string(n) + "=" + std::string(v) + ";";
        EXPECT_TRUE(r.body.empty()) << "form fields are parameters, not a body";
        if (r.form) {
          for (const auto& f : r.form->files()) {
            out += "|file " + f.field + " " + f.filename + " " + f.content_type + " " + std::to_string(f.size);
            std::string data = read_file(f.path);
            out += " " + std::to_string(fnv(data));
            EXPECT_EQ(f.path.rfind(h.spool.path() + "/", 0), 0u) << f.path;
            spooled.push_back(f.path);
          }
        }
        return r.send(200, "text/plain", out);
      },
      CL_ROUTE_F_FORM);
  h.route(
      "POST", "/form-json", [](Request& r) { return r.send(200, "text/plain", "body=" + r.body); }, CL_ROUTE_F_FORM);
  std::string file_data = pattern_bytes(300 * 1024, 33);
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(
        post("/form?q=1", "a=1&b=x+y%21&c=%E2%82%AC", "Content-Type: application/x-www-form-urlencoded\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "q=1;a=1;b=x y!;c=\xE2\x82\xAC;");  // query first, then form fields

    std::string boundary = "----cloudlet-boundary-42";
    r = c.roundtrip(post("/form", multipart_body(boundary, file_data),
                         "Content-Type: multipart/form-data; boundary=" + boundary + "\r\n"),
                    false, 10000);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "title=hello world;|file upload image.qcow2 application/octet-stream " +
                           std::to_string(file_data.size()) + " " + std::to_string(fnv(file_data)));

    // Chunked multipart works the same.
    std::string body = multipart_body(boundary, file_data);
    r = c.roundtrip(
        "POST /form HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/form-data; "
        "boundary=" +
            boundary + "\r\n\r\n" + chunked({body.substr(0, 1000), body.substr(1000)}),
        false, 10000);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);

    // Not a form: the body is buffered as usual.
    r = c.roundtrip(post("/form-json", "{\"x\":1}", "Content-Type: application/json\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "body={\"x\":1}");

    // A malformed multipart body: 400, and nothing stays in the spool.
    Client bad(h.port);
    r = bad.roundtrip(post("/form", "no boundary here", "Content-Type: multipart/form-data\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(r->header("content-length"), std::to_string(r->body.size()));
    Client bad2(h.port);
    r = bad2.roundtrip(post("/form",
                            "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\nunterminated",
                            "Content-Type: multipart/form-data; boundary=b\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);

    // Spooled files are deleted (on a worker) once their request ended.
    EXPECT_TRUE(wait_for([&] { return spool_entries(h.spool.path()) == 0; }, 3000))
        << spool_entries(h.spool.path()) << " file(s) left in the spool";
  });
  EXPECT_EQ(spooled.size(), 2u);
  for (const auto& p : spooled) EXPECT_NE(access(p.c_str(), F_OK), 0) << p;
}

TEST(HttpServerForm, ClientLeavingMidUploadLeavesNoSpoolFile) {
  Harness h;
  std::atomic<int> handled{0};
  h.route(
      "POST", "/form",
      [&](Request& r) {
        handled++;
        return r.send(200, "text/plain", "ok");
      },
      CL_ROUTE_F_FORM);
  h.run([&] {
    std::string boundary = "xyz";
    std::string body = multipart_body(boundary, pattern_bytes(2 << 20, 5));
    Client c(h.port);
    c.send("POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nContent-Type: multipart/form-data; boundary=" + boundary + "\r\n\r\n" + body.substr(0, 1 << 20));
    // File parts go to disk while they arrive.
    EXPECT_TRUE(wait_for([&] { return spool_entries(h.spool.path()) >= 1; }, 3000));
    c.reset();
    EXPECT_TRUE(wait_for([&] { return spool_entries(h.spool.path()) == 0; }, 3000));
  });
  EXPECT_EQ(handled, 0);
}
