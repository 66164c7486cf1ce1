// HTTP server: static files from a webroot (MIME types, ETag/If-None-Match, Range, HEAD, large files streamed
// from disk, no path traversal, directory redirects) and resp_file for handlers.
#include <fmt/format.h>
#include <sys/stat.h>

#include "server_test_util.h"

using namespace httptest;

namespace {

struct Webroot {
  TempDir root, outside;
  std::string big = pattern_bytes(600 * 1024 + 123, 21);  // > 256 KiB: streamed, not cached
  Webroot() {
    root.write("index.html", "<h1>home</h1>\n");
    root.write("style.css", "body{}\n");
    root.write("app.js", "let a;\n");
    root.write("data.json", "{}\n");
    root.write("IMAGE.PNG", "\x89PNG....");
    root.write("noext", "raw");
    root.write("empty.txt", "");
    root.write("big.bin", big);
    root.write("sub/index.html", "<p>sub</p>\n");
    root.write("sub/page.txt", "page\n");
    root.write("my dir?x/index.html", "<p>odd name</p>\n");
    root.write("swap.txt", "original\n");
    root.write("changing.txt", "version 1\n");
    outside.write("secret.txt", "TOP SECRET\n");
    outside.write("dir/secret.txt", "TOP SECRET 2\n");
    symlink(outside.file("secret.txt").c_str(), root.file("evil").c_str());
    symlink(outside.file("dir").c_str(), root.file("evildir").c_str());
    symlink(root.file("index.html").c_str(), root.file("goodlink").c_str());
  }
};

http::ListenerOptions with_webroot(const Webroot& w) {
  auto o = Harness::options();
  o.webroot = w.root.path();
  return o;
}

void expect_length_framed(const Response& r) {
  EXPECT_EQ(r.framing, Framing::length) << r.raw_head;
  EXPECT_EQ(r.header("content-length"), std::to_string(r.body.size())) << r.raw_head;
}

}  // namespace

TEST(HttpServerStatic, MimeTypesLengthsAndIndex) {
  Webroot w;
  Harness h(with_webroot(w));
  h.run([&] {
    Client c(h.port);
    struct Case {
      std::string path, type, body;
    } cases[] = {
        {"/", "text/html; charset=utf-8", "<h1>home</h1>\n"},
        {"/index.html", "text/html; charset=utf-8", "<h1>home</h1>\n"},
        {"/style.css", "text/css; charset=utf-8", "body{}\n"},
        {"/app.js", "text/javascript; charset=utf-8", "let a;\n"},
        {"/data.json", "application/json", "{}\n"},
        {"/IMAGE.PNG", "image/png", "\x89PNG...."},
        {"/noext", "application/octet-stream", "raw"},
        {"/empty.txt", "text/plain; charset=utf-8", ""},
        {"/sub/", "text/html; charset=utf-8", "<p>sub</p>\n"},
        {"/sub/page.txt", "text/plain; charset=utf-8", "page\n"},
        {"/goodlink", "application/octet-stream", "<h1>home</h1>\n"},  // a symlink inside the root is fine
    };
    for (const auto& k : cases) {
      auto r = c.roundtrip(get(k.path));
      ASSERT_TRUE(r) << k.path;
      EXPECT_EQ(r->status, 200) << k.path;
      EXPECT_EQ(r->header("content-type"), k.type) << k.path;
      EXPECT_EQ(r->body, k.body) << k.path;
      EXPECT_FALSE(r->header("etag").empty()) << k.path;
      EXPECT_EQ(r->header("accept-ranges"), "bytes") << k.path;
      expect_length_framed(*r);
    }
    auto r = c.roundtrip(get("/missing.html"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    expect_length_framed(*r);
    // No route and not GET/HEAD: the webroot does not answer.
    r = c.roundtrip(post("/index.html", "x"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
  });
}

TEST(HttpServerStatic, EtagAndIfNoneMatch) {
  Webroot w;
  Harness h(with_webroot(w));
  h.run([&] {
    Client c(h.port);
    for (const char* path : {"/index.html", "/big.bin"}) {
      auto r = c.roundtrip(get(path));
      ASSERT_TRUE(r);
      std::string etag = r->header("etag");
      ASSERT_FALSE(etag.empty());
      EXPECT_EQ(etag.front(), '"');
      r = c.roundtrip(get(path, "If-None-Match: " + etag + "\r\n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 304) << path;
      EXPECT_EQ(r->header("etag"), etag);
      EXPECT_FALSE(r->has("content-length"));
      r = c.roundtrip(get(path, "If-None-Match: \"other\", " + etag + "\r\n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 304);
      r = c.roundtrip(get(path, "If-None-Match: \"other\"\r\n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      r = c.roundtrip(get(path, "If-None-Match: *\r\n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 304);
    }
    // The connection is still in sync after the bodiless 304s.
    auto r = c.roundtrip(get("/style.css"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "body{}\n");
  });
}

// Issue 15: If-None-Match is a list of entity tags compared whole (weakly), not a substring search, and the
// ETag tells nothing about the file's inode.
TEST(HttpServerStatic, IfNoneMatchComparesListedTagsAndEtagHidesTheInode) {
  Webroot w;
  Harness h(with_webroot(w));
  h.route("POST", "/file", [&](Request& r) {
    return r.send_file(w.root.file("style.css"), "text/css") == CL_OK ? CL_OK : CL_EIO;
  });
  struct stat st {};
  ASSERT_EQ(stat(w.root.file("index.html").c_str(), &st), 0);
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/index.html"));
    ASSERT_TRUE(r);
    std::string etag = r->header("etag");
    ASSERT_GE(etag.size(), 3u);
    int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    EXPECT_EQ(etag, fmt::format("\"{:x}-{:x}\"", st.st_size, mtime_ns));
    EXPECT_EQ(etag.find(fmt::format("{:x}", st.st_ino)), std::string::npos) << etag << " shows the inode";
    std::string inner = etag.substr(1, etag.size() - 2);
    // Substrings and look-alikes of the tag are not the tag.
    for (std::string header : {"\"x" + inner + "\"", "\"" + inner + "x\"", inner, "\"a\"" + etag, "W/\"" + inner}) {
      r = c.roundtrip(get("/index.html", "If-None-Match: " + header + "\r\n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200) << header;
    }
    // Weak comparison for GET, anywhere in the list, with or without spaces.
    for (std::string header : {"W/" + etag, "\"a\",W/" + etag + " , \"b\"", "\"a, b\", " + etag, std::string(" *")}) {
      r = c.roundtrip(get("/index.html", "If-None-Match: " + header + "\r\n"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 304) << header;
    }
    // Another method answered with a file: a matching tag is a failed precondition.
    r = c.roundtrip(post("/file", "", "If-None-Match: *\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 412);
  });
}

TEST(HttpServerStatic, RangesOnCachedAndStreamedFiles) {
  Webroot w;
  Harness h(with_webroot(w));
  const std::string small = "<h1>home</h1>\n";
  h.run([&] {
    Client c(h.port);
    struct Case {
      std::string path, range;
      int status;
      std::string body, content_range;
    } cases[] = {
        {"/index.html", "bytes=0-3", 206, "<h1>", "bytes 0-3/14"},
        {"/index.html", "bytes=4-", 206, small.substr(4), "bytes 4-13/14"},
        {"/index.html", "bytes=-5", 206, small.substr(9), "bytes 9-13/14"},
        {"/index.html", "bytes=-500", 206, small, "bytes 0-13/14"},
        {"/index.html", "bytes=10-9999", 206, small.substr(10), "bytes 10-13/14"},
        {"/index.html", "bytes=14-", 416, "", "bytes */14"},
        {"/index.html", "bytes=0-1,4-5", 200, small, ""},  // several ranges: the whole file
        {"/index.html", "items=0-1", 200, small, ""},
        {"/big.bin", "bytes=300000-300099", 206, w.big.substr(300000, 100),
         "bytes 300000-300099/" + std::to_string(w.big.size())},
        {"/big.bin", "bytes=-1000", 206, w.big.substr(w.big.size() - 1000),
         "bytes " + std::to_string(w.big.size() - 1000) + "-" + std::to_string(w.big.size() - 1) + "/" +
             std::to_string(w.big.size())},
        {"/big.bin", "bytes=100-", 206, w.big.substr(100),
         "bytes 100-" + std::to_string(w.big.size() - 1) + "/" + std::to_string(w.big.size())},
        {"/big.bin", "bytes=99999999-", 416, "", "bytes */" + std::to_string(w.big.size())},
    };
    for (const auto& k : cases) {
      auto r = c.roundtrip(get(k.path, "Range: " + k.range + "\r\n"));
      ASSERT_TRUE(r) << k.range;
      EXPECT_EQ(r->status, k.status) << k.path << " " << k.range;
      if (k.status != 416) {
        EXPECT_TRUE(r->body == k.body) << k.path << " " << k.range;
      }
      EXPECT_EQ(r->header("content-range"), k.content_range) << k.path << " " << k.range;
      expect_length_framed(*r);
    }
  });
}

TEST(HttpServerStatic, LargeFileAndHead) {
  Webroot w;
  Harness h(with_webroot(w));
  h.run([&] {
    Client c(h.port);
    for (int i = 0; i < 2; i++) {
      auto r = c.roundtrip(get("/big.bin"), false, 10000);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->header("content-type"), "application/octet-stream");
      EXPECT_EQ(r->body.size(), w.big.size());
      EXPECT_TRUE(r->body == w.big);
      expect_length_framed(*r);
    }
    for (const char* path : {"/big.bin", "/index.html", "/empty.txt"}) {
      auto r = c.roundtrip(head(path), true);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      size_t expected = std::string(path) == "/big.bin" ? w.big.size() : std::string(path) == "/index.html" ? 14 : 0;
      EXPECT_EQ(r->header("content-length"), std::to_string(expected)) << path;
    }
    // No body bytes leaked after the HEADs.
    auto r = c.roundtrip(get("/sub/page.txt"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "page\n");
    // A slow reader of the large file gets every byte.
    Client slow(h.port, 16 * 1024);
    ASSERT_TRUE(slow.send(get("/big.bin")));
    sleep_ms(200);
    r = slow.read_response(false, 10000);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->body == w.big);
    // A client leaving in the middle of the large file does no harm.
    Client quitter(h.port, 16 * 1024);
    ASSERT_TRUE(quitter.send(get("/big.bin")));
    quitter.read_raw(50000, 3000);
    quitter.reset();
    sleep_ms(100);
    r = c.roundtrip(get("/index.html"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  });
}

TEST(HttpServerStatic, NoPathTraversal) {
  Webroot w;
  Harness h(with_webroot(w));
  h.run([&] {
    const char* attempts[] = {
        "/../outside/secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/secret.txt",
        "/sub/..%2f..%2fetc%2fpasswd",
        "/sub%2f..%2f..%2fetc%2fpasswd",
        "/sub/%2e%2e%2findex.html",
        "/./index.html",
        "/..\\..\\etc\\passwd",
        "/sub/..%5c..%5cetc%5cpasswd",
        "/evil",
        "/evildir/secret.txt",
        "//etc/passwd",
    };
    for (const char* target : attempts) {
      Client c(h.port);
      auto r = c.roundtrip(get(target));
      ASSERT_TRUE(r) << target;
      EXPECT_TRUE(r->status == 404 || r->status == 400) << target << " -> " << r->status;
      EXPECT_EQ(r->body.find("SECRET"), std::string::npos) << target;
      EXPECT_EQ(r->body.find("root:"), std::string::npos) << target;
    }
    // The real path to the secret, relative to the webroot, is refused too.
    std::string rel = "/../" + std::filesystem::path(w.outside.path()).filename().string() + "/secret.txt";
    Client c(h.port);
    auto r = c.roundtrip(get(rel));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
  });
}

TEST(HttpServerStatic, DirectoryRedirectsToItsSlashForm) {
  Webroot w;
  Harness h(with_webroot(w));
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/sub"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 301);
    EXPECT_EQ(r->header("location"), "/sub/");
    expect_length_framed(*r);
    r = c.roundtrip(get("/sub?x=1"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 301);
    EXPECT_EQ(r->header("location"), "/sub/?x=1");
    r = c.roundtrip(get("/sub/"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "<p>sub</p>\n");
    // The Location is a URL: the decoded name is encoded again.
    r = c.roundtrip(get("/my%20dir%3Fx"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 301);
    EXPECT_EQ(r->header("location"), "/my%20dir%3Fx/");
    r = c.roundtrip(get(r->header("location")));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "<p>odd name</p>\n");
  });
}

// A cached file replaced on disk is revalidated (new content, new ETag); replaced by a symlink leading out of
// the webroot it is refused, even though the path was known to the cache.
TEST(HttpServerStatic, ChangedFilesAreRevalidatedAndStayConfined) {
  Webroot w;
  Harness h(with_webroot(w));
  h.run([&] {
    Client c(h.port);
    auto r1 = c.roundtrip(get("/changing.txt"));
    auto s1 = c.roundtrip(get("/swap.txt"));
    ASSERT_TRUE(r1 && s1);
    EXPECT_EQ(r1->body, "version 1\n");
    EXPECT_EQ(s1->body, "original\n");
    w.root.write("changing.txt", "version 2, longer\n");
    unlink(w.root.file("swap.txt").c_str());
    ASSERT_EQ(symlink(w.outside.file("secret.txt").c_str(), w.root.file("swap.txt").c_str()), 0);
    sleep_ms(1100);  // the cache revalidates at most once a second
    auto r2 = c.roundtrip(get("/changing.txt"));
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->body, "version 2, longer\n");
    EXPECT_NE(r2->header("etag"), r1->header("etag"));
    auto s2 = c.roundtrip(get("/swap.txt"));
    ASSERT_TRUE(s2);
    EXPECT_EQ(s2->status, 404);
    EXPECT_EQ(s2->body.find("SECRET"), std::string::npos);
  });
}

TEST(HttpServerStatic, HandlerSendsAFile) {
  Webroot w;
  Harness h;  // no webroot: only the handler serves files
  h.route("GET", "/dl/{name}", [&](Request& r) {
    std::string_view name;
    r.param("name", &name);
    return r.send_file(w.root.file(std::string(name)), name == "noext" ? "text/x-custom" : "");
  });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/dl/big.bin"), false, 10000);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(r->body == w.big);
    r = c.roundtrip(get("/dl/noext"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("content-type"), "text/x-custom");
    EXPECT_EQ(r->body, "raw");
    r = c.roundtrip(get("/dl/style.css", "Range: bytes=0-3\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 206);
    EXPECT_EQ(r->body, "body");
    r = c.roundtrip(get("/dl/missing"));  // CL_ENOENT from the handler: 404
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    r = c.roundtrip(get("/dl/sub"));  // a directory is not a file
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
  });
}
