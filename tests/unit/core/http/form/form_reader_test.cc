#include "http/form_reader.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "form_test_util.h"
#include "loop/loop.h"

using cloudlet::Loop;
using cloudlet::http::FormKind;
using cloudlet::http::FormLimits;
using cloudlet::http::FormReader;
using formtest::make_body;
using formtest::PartSpec;

namespace fs = std::filesystem;

namespace {

const std::string kB = "XyZ-boundary-0123456789";
const std::string kCT = "multipart/form-data; boundary=" + kB;

class FormReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cloudlet-form-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    spool_ = base_ + "/spool";
    ASSERT_EQ(mkdir(spool_.c_str(), 0700), 0);
  }
  void TearDown() override {
    EXPECT_EQ(loop_.close(), 0);
    EXPECT_EQ(formtest::open_fd_count(), fds_before_) << "leaked file descriptors";
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  std::vector<std::string> spooled() { return formtest::list_dir(spool_); }

  struct Done {
    bool called = false;
    int calls = 0;
    cl_status_t status = CL_OK;
    std::string error;
  };
  // Feeds the whole body in chunks of `chunk` bytes, finishes, and runs the loop until done.
  Done read_all(FormReader& r, std::string_view body, size_t chunk = 1 << 16) {
    Done d;
    for (size_t at = 0; at < body.size(); at += chunk) {
      cl_status_t st = r.feed(body.substr(at, chunk));
      if (st != CL_OK) {
        d.called = true;
        d.status = st;
        d.error = r.error();
        return d;
      }
    }
    r.finish([&d](cl_status_t st, const std::string& err) {
      d.called = true;
      d.calls++;
      d.status = st;
      d.error = err;
    });
    EXPECT_FALSE(d.called) << "done must not run inside finish()";
    loop_.run();
    EXPECT_EQ(d.calls, 1);
    return d;
  }

  // Counted before the loop opens its own descriptors, after libuv's process-wide ones exist (the first loop
  // ever created opens a signal pipe that lives as long as the process).
  static int baseline_fds() {
    static const bool warmed = [] {
      Loop warm;
      return warm.close() == 0;
    }();
    EXPECT_TRUE(warmed);
    return formtest::open_fd_count();
  }
  int fds_before_ = baseline_fds();
  Loop loop_;
  std::string base_, spool_;
};

// Streams a multipart body (head, generated payload, tail) into a reader, honouring wants_pause() the way
// the server will: stop feeding when it says so, resume from the resume callback.
struct Streamer {
  FormReader& reader;
  std::string head, tail;
  uint64_t payload_size;
  std::function<void(uint64_t off, char* out, size_t n)> gen;
  std::vector<char> buf = std::vector<char>(64 << 10);
  std::mt19937 rng{7};

  uint64_t produced = 0;  // over head + payload + tail
  formtest::StreamHash payload_hash;
  bool ended = false;
  cl_status_t feed_status = CL_OK;
  int pauses = 0, resumes = 0;
  uint64_t max_queued = 0;
  long max_rss_kib = 0;
  uint64_t next_rss_sample = 0;
  bool done = false;
  cl_status_t done_status = CL_OK;
  std::string done_error;
  std::function<void()> on_resume_hook;

  void start() {
    reader.set_resume([this] {
      resumes++;
      if (on_resume_hook) on_resume_hook();
      pump();
    });
    pump();
  }

  size_t produce(char* out, size_t max) {
    // Chunk sizes vary so that chunk edges move relative to the data.
    size_t want = std::uniform_int_distribution<size_t>(1, max)(rng);
    size_t n = 0;
    uint64_t total = head.size() + payload_size + tail.size();
    while (n < want && produced < total) {
      if (produced < head.size()) {
        size_t k = std::min<uint64_t>(want - n, head.size() - produced);
        std::memcpy(out + n, head.data() + produced, k);
        n += k;
        produced += k;
      } else if (produced < head.size() + payload_size) {
        uint64_t off = produced - head.size();
        size_t k = std::min<uint64_t>(want - n, payload_size - off);
        gen(off, out + n, k);
        payload_hash.add(out + n, k);
        n += k;
        produced += k;
      } else {
        uint64_t off = produced - head.size() - payload_size;
        size_t k = std::min<uint64_t>(want - n, tail.size() - off);
        std::memcpy(out + n, tail.data() + off, k);
        n += k;
        produced += k;
      }
    }
    return n;
  }

  void pump() {
    while (!ended) {
      if (reader.wants_pause()) {
        pauses++;
        return;
      }
      size_t n = produce(buf.data(), buf.size());
      if (n == 0) {
        ended = true;
        reader.finish([this](cl_status_t st, const std::string& err) {
          done = true;
          done_status = st;
          done_error = err;
        });
        return;
      }
      feed_status = reader.feed(std::string_view(buf.data(), n));
      max_queued = std::max<uint64_t>(max_queued, reader.queued_bytes());
      if (produced >= next_rss_sample) {
        max_rss_kib = std::max(max_rss_kib, formtest::rss_kib());
        next_rss_sample = produced + (16 << 20);
      }
      if (feed_status != CL_OK) {
        ended = true;
        return;
      }
    }
  }
};

std::string file_head(const std::string& filename = "disk.qcow2") {
  return "--" + kB + "\r\nContent-Disposition: form-data; name=\"before\"\r\n\r\nB\r\n--" + kB +
         "\r\nContent-Disposition: form-data; name=\"disk_image_file\"; filename=\"" + filename +
         "\"\r\nContent-Type: application/octet-stream\r\n\r\n";
}
std::string file_tail() {
  return "\r\n--" + kB + "\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nA\r\n--" + kB + "--\r\n";
}

// A payload of `size` bytes: a random pattern of prime length (so its phase drifts against every block and
// chunk size) salted with near-delimiters, one of them straddling the pattern's wrap-around.
std::function<void(uint64_t, char*, size_t)> pattern_gen() {
  auto pattern = std::make_shared<std::string>(1048573, '\0');
  std::mt19937_64 rng(1234);
  for (size_t i = 0; i + 8 <= pattern->size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&(*pattern)[i], &v, 8);
  }
  std::string decoy = "\r\n--" + kB.substr(0, kB.size() - 1);
  for (size_t at : {size_t(1000), size_t(65535), size_t(500000)}) pattern->replace(at, decoy.size(), decoy);
  pattern->replace(pattern->size() - 6, 6, decoy.substr(0, 6));
  return [pattern](uint64_t off, char* out, size_t n) {
    const std::string& p = *pattern;
    size_t pos = static_cast<size_t>(off % p.size());
    while (n > 0) {
      size_t k = std::min(n, p.size() - pos);
      std::memcpy(out, p.data() + pos, k);
      out += k;
      n -= k;
      pos = 0;
    }
  };
}

uint64_t hash_file(const std::string& path, uint64_t* size) {
  formtest::StreamHash h;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return 0;
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.add(buf.data(), n);
  std::fclose(f);
  *size = h.size();
  return h.value();
}

}  // namespace

TEST(FormKind, FromContentType) {
  EXPECT_EQ(FormReader::kind_of("application/x-www-form-urlencoded"), FormKind::urlencoded);
  EXPECT_EQ(FormReader::kind_of(" Application/X-WWW-Form-Urlencoded ; charset=UTF-8"), FormKind::urlencoded);
  EXPECT_EQ(FormReader::kind_of("multipart/form-data; boundary=x"), FormKind::multipart);
  EXPECT_EQ(FormReader::kind_of("multipart/mixed; boundary=x"), FormKind::none);
  EXPECT_EQ(FormReader::kind_of("application/json"), FormKind::none);
  EXPECT_EQ(FormReader::kind_of(""), FormKind::none);
}

TEST_F(FormReaderTest, NotAFormIsRefused) {
  FormReader r(loop_, "application/json", spool_);
  EXPECT_EQ(r.kind(), FormKind::none);
  EXPECT_EQ(r.status(), CL_EINVAL);
  EXPECT_EQ(r.feed("{}"), CL_EINVAL);
  FormReader nob(loop_, "multipart/form-data", spool_);
  EXPECT_EQ(nob.kind(), FormKind::multipart);
  EXPECT_EQ(nob.feed("--x"), CL_EINVAL);
  EXPECT_NE(nob.error().find("boundary"), std::string::npos);
}

TEST_F(FormReaderTest, UrlencodedFields) {
  FormReader r(loop_, "application/x-www-form-urlencoded", spool_);
  Done d = read_all(r, "a=1&b=x%20y&c+d=%2B&e&&f=", 5);
  ASSERT_EQ(d.status, CL_OK) << d.error;
  FormReader::Fields want = {{"a", "1"}, {"b", "x y"}, {"c d", "+"}, {"e", ""}, {"f", ""}};
  EXPECT_EQ(r.fields(), want);
  EXPECT_TRUE(r.files().empty());
}

TEST_F(FormReaderTest, UrlencodedLimitsAndErrors) {
  FormLimits limits;
  limits.max_fields_bytes = 10;
  {
    FormReader r(loop_, "application/x-www-form-urlencoded", spool_, limits);
    EXPECT_EQ(r.feed("a=12345"), CL_OK);
    EXPECT_EQ(r.feed("6789"), CL_ETOOBIG);
    EXPECT_EQ(r.status(), CL_ETOOBIG);
    EXPECT_EQ(r.feed("x"), CL_ETOOBIG);
  }
  {
    FormReader r(loop_, "application/x-www-form-urlencoded", spool_);
    Done d = read_all(r, "a=%zz");
    EXPECT_EQ(d.status, CL_EINVAL);
    EXPECT_FALSE(d.error.empty());
  }
  {
    FormReader r(loop_, "application/x-www-form-urlencoded", spool_);
    Done d = read_all(r, "a=%00");  // NUL is refused by the decoder
    EXPECT_EQ(d.status, CL_EINVAL);
  }
  limits = FormLimits();
  limits.max_fields = 2;
  {
    FormReader r(loop_, "application/x-www-form-urlencoded", spool_, limits);
    Done d = read_all(r, "a&b&c");
    EXPECT_EQ(d.status, CL_ETOOBIG);
  }
}

TEST_F(FormReaderTest, MultipartFieldsAndFiles) {
  std::string big(3 << 20, '\0');
  std::mt19937 rng(3);
  for (auto& c : big) c = static_cast<char>(rng());
  std::vector<PartSpec> parts = {
      {"id", std::nullopt, "", "svm-42"},
      {"disk_image_file", std::string("disk.qcow2"), "application/octet-stream", big},
      {"note", std::nullopt, "text/plain", "line1\r\nline2"},
      {"small", std::string("s.txt"), "text/plain", "tiny"},
      {"emptyfile", std::string("zero.bin"), "", ""},
  };
  for (size_t chunk : {size_t(1) << 20, size_t(4096), size_t(997)}) {
    FormReader r(loop_, kCT, spool_);
    Done d = read_all(r, make_body(kB, parts), chunk);
    ASSERT_EQ(d.status, CL_OK) << d.error;
    FormReader::Fields want = {{"id", "svm-42"}, {"note", "line1\r\nline2"}};
    EXPECT_EQ(r.fields(), want);
    ASSERT_EQ(r.files().size(), 3u);
    const auto& f = r.files();
    EXPECT_EQ(f[0].field, "disk_image_file");
    EXPECT_EQ(f[0].filename, "disk.qcow2");
    EXPECT_EQ(f[0].content_type, "application/octet-stream");
    EXPECT_EQ(f[0].size, big.size());
    EXPECT_EQ(formtest::read_file(f[0].path), big);
    EXPECT_EQ(f[1].size, 4u);
    EXPECT_EQ(formtest::read_file(f[1].path), "tiny");
    EXPECT_EQ(f[2].filename, "zero.bin");
    EXPECT_EQ(f[2].size, 0u);
    EXPECT_EQ(formtest::read_file(f[2].path), "");
    for (const auto& file : f) {
      EXPECT_EQ(fs::path(file.path).parent_path(), fs::path(spool_));
      EXPECT_EQ(fs::path(file.path).filename().string().rfind("upload-", 0), 0u) << file.path;
      struct stat st;
      ASSERT_EQ(stat(file.path.c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777, 0600u);
    }
    EXPECT_NE(f[0].path, f[1].path);
    EXPECT_EQ(spooled().size(), 3u);
  }
  // Every untaken file is deleted once its reader is gone.
  loop_.run();
  EXPECT_TRUE(spooled().empty());
}

TEST_F(FormReaderTest, ByteByByteFeeding) {
  std::vector<PartSpec> parts = {
      {"a", std::nullopt, "", "1\r\n--" + kB.substr(0, 7)},
      {"f", std::string("x.bin"), "", "\r\n--" + kB + "Z-not-a-boundary-because-no-CRLF-before\r"},
  };
  parts[1].data[0] = 'Q';  // "Q\n--<boundary>..." is data, not a delimiter
  FormReader r(loop_, kCT, spool_);
  Done d = read_all(r, make_body(kB, parts, "preamble\r\n", "epilogue"), 1);
  ASSERT_EQ(d.status, CL_OK) << d.error;
  ASSERT_EQ(r.fields().size(), 1u);
  EXPECT_EQ(r.fields()[0].second, parts[0].data);
  ASSERT_EQ(r.files().size(), 1u);
  EXPECT_EQ(formtest::read_file(r.files()[0].path), parts[1].data);
}

TEST_F(FormReaderTest, ClientFilenamesNeverAffectPaths) {
  std::vector<std::string> names = {"../../../../etc/passwd", "/etc/shadow", "..",   "a/../../b",
                                    "C:\\evil\\..\\x",        "..%2F..%2Fx", "spool"};
  std::vector<PartSpec> parts;
  for (const auto& n : names) parts.push_back({"f", n, "", "data:" + n});
  FormReader r(loop_, kCT, spool_);
  Done d = read_all(r, make_body(kB, parts));
  ASSERT_EQ(d.status, CL_OK) << d.error;
  ASSERT_EQ(r.files().size(), names.size());
  for (size_t i = 0; i < names.size(); i++) {
    const auto& f = r.files()[i];
    EXPECT_EQ(f.filename, names[i]);  // reported as sent
    EXPECT_EQ(fs::path(f.path).parent_path(), fs::path(spool_));
    EXPECT_EQ(f.path.find(".."), std::string::npos);
    EXPECT_EQ(f.path.find("etc"), std::string::npos);
    EXPECT_EQ(formtest::read_file(f.path), "data:" + names[i]);
  }
  // Nothing appeared next to the spool directory, and the spool holds only our generated names.
  EXPECT_EQ(formtest::list_dir(base_), std::vector<std::string>{"spool"});
  for (const auto& n : spooled()) EXPECT_EQ(n.rfind("upload-", 0), 0u) << n;
}

TEST_F(FormReaderTest, EmptyFileInputGivesNoFile) {
  std::vector<PartSpec> parts = {
      {"nofile", std::string(""), "application/octet-stream", ""},  // what browsers send for an empty input
      {"unnamed", std::string(""), "", "has data"},
  };
  FormReader r(loop_, kCT, spool_);
  Done d = read_all(r, make_body(kB, parts));
  ASSERT_EQ(d.status, CL_OK) << d.error;
  ASSERT_EQ(r.files().size(), 1u);
  EXPECT_EQ(r.files()[0].field, "unnamed");
  EXPECT_EQ(r.files()[0].filename, "");
  EXPECT_EQ(formtest::read_file(r.files()[0].path), "has data");
}

TEST_F(FormReaderTest, MultipartLimits) {
  auto read_with = [&](FormLimits limits, const std::vector<PartSpec>& parts) {
    FormReader r(loop_, kCT, spool_, limits);
    Done d = read_all(r, make_body(kB, parts), 100);
    r.abort();
    loop_.run();
    EXPECT_TRUE(spooled().empty());
    return d.status;
  };
  FormLimits limits;
  limits.max_fields_bytes = 20;
  EXPECT_EQ(read_with(limits, {{"name", std::nullopt, "", std::string(16, 'v')}}), CL_OK);
  EXPECT_EQ(read_with(limits, {{"name", std::nullopt, "", std::string(17, 'v')}}), CL_ETOOBIG);
  EXPECT_EQ(read_with(limits, {{"aaaaaaaaaa", std::nullopt, "", "1"}, {"bbbbbbbbbb", std::nullopt, "", ""}}),
            CL_ETOOBIG);
  limits = FormLimits();
  limits.max_fields = 2;
  std::vector<PartSpec> three(3, PartSpec{"a", std::nullopt, "", "1"});
  EXPECT_EQ(read_with(limits, {three[0], three[1]}), CL_OK);
  EXPECT_EQ(read_with(limits, three), CL_ETOOBIG);
  limits = FormLimits();
  limits.max_files = 1;
  std::vector<PartSpec> files = {{"f", std::string("a"), "", "1"}, {"g", std::string("b"), "", "2"}};
  EXPECT_EQ(read_with(limits, {files[0]}), CL_OK);
  EXPECT_EQ(read_with(limits, files), CL_ETOOBIG);
  limits = FormLimits();
  limits.max_file_bytes = 1000;
  EXPECT_EQ(read_with(limits, {{"f", std::string("a"), "", std::string(600, 'x')},
                               {"g", std::string("b"), "", std::string(400, 'y')}}),
            CL_OK);
  EXPECT_EQ(read_with(limits, {{"f", std::string("a"), "", std::string(600, 'x')},
                               {"g", std::string("b"), "", std::string(401, 'y')}}),
            CL_ETOOBIG);
  limits = FormLimits();
  limits.max_part_header_bytes = 100;
  EXPECT_EQ(read_with(limits, {{std::string(100, 'n'), std::nullopt, "", "1"}}), CL_ETOOBIG);
  limits = FormLimits();
  limits.max_parts = 2;
  EXPECT_EQ(read_with(limits, three), CL_ETOOBIG);
}

TEST_F(FormReaderTest, MalformedBodyFailsAndCleansUp) {
  FormReader r(loop_, kCT, spool_);
  std::string body = file_head() + std::string(100000, 'd');  // never closed
  Done d = read_all(r, body);
  EXPECT_EQ(d.status, CL_EINVAL);
  EXPECT_NE(d.error.find("inside a part"), std::string::npos) << d.error;
  loop_.run();
  EXPECT_TRUE(spooled().empty());  // a failed read deletes its files without waiting for the destructor
}

TEST_F(FormReaderTest, TakeFileNeverOverwrites) {
  std::vector<PartSpec> parts = {{"a", std::string("a.bin"), "", "AAAA"}, {"b", std::string("b.bin"), "", "BB"}};
  FormReader r(loop_, kCT, spool_);
  std::string body = make_body(kB, parts);
  ASSERT_EQ(r.feed(body), CL_OK);
  EXPECT_EQ(r.take_file(0, base_ + "/early"), CL_ESTATE);  // not finished yet
  Done d;
  r.finish([&](cl_status_t st, const std::string& err) {
    d.called = true;
    d.status = st;
    d.error = err;
  });
  loop_.run();
  ASSERT_TRUE(d.called);
  ASSERT_EQ(d.status, CL_OK) << d.error;

  std::string dest = base_ + "/store/services/x/disk.qcow2";
  std::string err;
  ASSERT_EQ(r.take_file(0, dest, &err), CL_OK) << err;
  EXPECT_EQ(formtest::read_file(dest), "AAAA");
  EXPECT_FALSE(fs::exists(r.files()[0].path));
  EXPECT_EQ(r.take_file(0, dest + "2"), CL_ENOENT);  // already taken

  // An existing destination is never replaced, and the upload stays where it was.
  EXPECT_EQ(r.take_file(1, dest, &err), CL_EEXIST);
  EXPECT_FALSE(err.empty());
  EXPECT_EQ(formtest::read_file(dest), "AAAA");
  EXPECT_EQ(formtest::read_file(r.files()[1].path), "BB");

  for (const std::string& bad : {std::string("relative/x"), base_ + "/a/../b", base_ + "/./b", base_ + "//b",
                                 base_ + "/dir/", std::string("/"), std::string()}) {
    EXPECT_EQ(r.take_file(1, bad), CL_EINVAL) << bad;
  }
  EXPECT_EQ(r.take_file(7, base_ + "/nope"), CL_ENOENT);
  // A parent that is a file: an I/O error, not a crash.
  EXPECT_EQ(r.take_file(1, dest + "/sub", &err), CL_EIO);
  EXPECT_FALSE(err.empty());

  // release_file: the caller owns the spooled file now.
  std::string released = r.files()[1].path;
  EXPECT_EQ(r.release_file(1), CL_OK);
  EXPECT_EQ(r.release_file(1), CL_ENOENT);
  r.abort();
  loop_.run();
  EXPECT_EQ(formtest::read_file(released), "BB");
  EXPECT_EQ(formtest::read_file(dest), "AAAA");
  unlink(released.c_str());
}

TEST_F(FormReaderTest, TakeFileAsync) {
  std::vector<PartSpec> parts = {{"a", std::string("a.bin"), "", "AAAA"},
                                 {"b", std::string("b.bin"), "", "BB"},
                                 {"c", std::string("c.bin"), "", "C"}};
  std::string dest = base_ + "/final/a";
  {
    FormReader r(loop_, kCT, spool_);
    Done d = read_all(r, make_body(kB, parts));
    ASSERT_EQ(d.status, CL_OK) << d.error;
    std::map<int, std::pair<cl_status_t, std::string>> results;  // completion order is not call order
    auto record = [&](int key) {
      return [&results, key](cl_status_t st, const std::string& err) {
        EXPECT_EQ(results.count(key), 0u);
        results[key] = {st, err};
      };
    };
    r.take_file_async(0, dest, record(0));
    loop_.run();
    r.take_file_async(1, dest, record(1));
    r.take_file_async(2, "../x", record(2));
    r.take_file_async(9, base_ + "/y", record(3));
    loop_.run();
    ASSERT_EQ(results.size(), 4u);
    EXPECT_EQ(results[0].first, CL_OK) << results[0].second;
    EXPECT_EQ(results[1].first, CL_EEXIST);
    EXPECT_EQ(results[2].first, CL_EINVAL);
    EXPECT_EQ(results[3].first, CL_ENOENT);
    EXPECT_EQ(formtest::read_file(dest), "AAAA");
    // File 1's move failed: it is ours again and can still be taken.
    EXPECT_EQ(r.take_file(1, base_ + "/final/b"), CL_OK);
    // A move in flight when the reader goes away: the callback is not called.
    bool called = false;
    r.take_file_async(2, base_ + "/final/c", [&](cl_status_t, const std::string&) { called = true; });
    r.abort();
    loop_.run();
    EXPECT_FALSE(called);
  }
  loop_.run();
  EXPECT_TRUE(spooled().empty());
  EXPECT_EQ(formtest::read_file(base_ + "/final/b"), "BB");
  EXPECT_EQ(formtest::read_file(base_ + "/final/c"), "C");  // the move had started: it completes
}

TEST_F(FormReaderTest, PauseAndResume) {
  FormLimits limits;
  limits.pause_bytes = 256 << 10;
  limits.sync = false;
  FormReader r(loop_, kCT, spool_, limits);
  Streamer s{r, file_head(), file_tail(), 24u << 20, pattern_gen()};
  s.start();
  EXPECT_TRUE(r.wants_pause());  // the disk cannot have kept up within one loop turn
  loop_.run();
  ASSERT_TRUE(s.done);
  ASSERT_EQ(s.done_status, CL_OK) << s.done_error;
  EXPECT_GT(s.pauses, 1);
  EXPECT_EQ(s.resumes, s.pauses);  // every pause was followed by exactly one resume
  // Queued bytes never exceed the threshold by more than one fed chunk.
  EXPECT_LE(s.max_queued, limits.pause_bytes + s.buf.size());
  EXPECT_EQ(r.queued_bytes(), 0u);
  ASSERT_EQ(r.files().size(), 1u);
  uint64_t size = 0;
  EXPECT_EQ(hash_file(r.files()[0].path, &size), s.payload_hash.value());
  EXPECT_EQ(size, 24u << 20);
  FormReader::Fields want = {{"before", "B"}, {"after", "A"}};
  EXPECT_EQ(r.fields(), want);
}

TEST_F(FormReaderTest, AbortWithWritesInFlight) {
  std::string data(8 << 20, 'w');
  std::string body = make_body(kB, {{"f", std::string("a"), "", data}, {"g", std::string("b"), "", data}});
  // 1. abort mid-body, reader kept alive for a while.
  {
    FormReader r(loop_, kCT, spool_);
    ASSERT_EQ(r.feed(std::string_view(body).substr(0, body.size() - 5000)), CL_OK);
    bool resumed = false;
    r.set_resume([&] { resumed = true; });
    EXPECT_TRUE(r.wants_pause());
    r.abort();
    EXPECT_EQ(r.status(), CL_ECANCELED);
    EXPECT_EQ(r.feed("x"), CL_ECANCELED);
    r.finish([](cl_status_t, const std::string&) { ADD_FAILURE() << "done after abort"; });
    loop_.run();
    EXPECT_FALSE(resumed);
  }
  loop_.run();
  EXPECT_TRUE(spooled().empty());
  // 2. destroyed (no abort) right after feeding: the in-flight work owns the state.
  {
    FormReader r(loop_, kCT, spool_);
    ASSERT_EQ(r.feed(body), CL_OK);
  }
  loop_.run();
  EXPECT_TRUE(spooled().empty());
  // 3. finish() then abort before done: done never runs, files go away.
  {
    FormReader r(loop_, kCT, spool_);
    ASSERT_EQ(r.feed(body), CL_OK);
    r.finish([](cl_status_t, const std::string&) { ADD_FAILURE() << "done after abort"; });
    r.abort();
  }
  loop_.run();
  EXPECT_TRUE(spooled().empty());
  // 4. abort from inside the resume callback.
  {
    FormLimits limits;
    limits.pause_bytes = 128 << 10;
    FormReader r(loop_, kCT, spool_, limits);
    Streamer s{r, file_head(), file_tail(), 16u << 20, pattern_gen()};
    int hook_calls = 0;
    s.on_resume_hook = [&] {
      if (++hook_calls == 3) r.abort();
    };
    s.start();
    loop_.run();
    EXPECT_EQ(hook_calls, 3);
    EXPECT_FALSE(s.done);
    EXPECT_EQ(s.feed_status, CL_ECANCELED);
  }
  loop_.run();
  EXPECT_TRUE(spooled().empty());
  // 5. abort after success deletes the untaken files.
  {
    FormReader r(loop_, kCT, spool_);
    Done d = read_all(r, body);
    ASSERT_EQ(d.status, CL_OK);
    EXPECT_EQ(spooled().size(), 2u);
    r.abort();
    EXPECT_EQ(r.take_file(0, base_ + "/late"), CL_ESTATE);
  }
  EXPECT_EQ(loop_.close(), 0);
  EXPECT_TRUE(spooled().empty());
  EXPECT_FALSE(fs::exists(base_ + "/late"));
}

TEST_F(FormReaderTest, SpoolDirectoryErrorIsReported) {
  FormReader r(loop_, kCT, base_ + "/does-not-exist");
  Done d = read_all(r, make_body(kB, {{"f", std::string("a"), "", std::string(100000, 'x')}}));
  EXPECT_EQ(d.status, CL_EIO);
  EXPECT_NE(d.error.find("spool"), std::string::npos) << d.error;
  FormReader rel(loop_, kCT, "relative/dir");
  EXPECT_EQ(rel.feed("--"), CL_EIO);
}

// A disk that fills up mid-upload (simulated with RLIMIT_FSIZE): the error reaches the server through the
// resume callback and feed(), and nothing is left behind.
TEST_F(FormReaderTest, DiskFullWhilePaused) {
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 1 << 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  {
    FormLimits limits;
    limits.pause_bytes = 256 << 10;
    limits.sync = false;
    FormReader r(loop_, kCT, spool_, limits);
    Streamer s{r, file_head(), file_tail(), 8u << 20, pattern_gen()};
    s.start();
    loop_.run();
    EXPECT_EQ(s.feed_status, CL_EIO);
    EXPECT_FALSE(s.done);
    EXPECT_NE(r.error().find("File too large"), std::string::npos) << r.error();
    r.abort();
  }
  loop_.run();
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(spooled().empty());
}

// The real thing: a 1 GiB file part, generated on the fly and streamed with back-pressure, fsync'd. Memory
// must stay flat; the spooled file must hash like what was sent. CLOUDLET_FORM_BIG_MIB overrides the size,
// CLOUDLET_FORM_BIG_SYNC=0 turns fsync off (to measure the pipeline without the disk flush).
TEST_F(FormReaderTest, StreamsOneGibFileWithFlatMemory) {
  uint64_t mib = 1024;
  if (const char* e = std::getenv("CLOUDLET_FORM_BIG_MIB")) mib = std::max<uint64_t>(1, std::strtoull(e, nullptr, 10));
  FormLimits limits;  // the defaults: 4 MiB pause threshold, sync on
  if (const char* e = std::getenv("CLOUDLET_FORM_BIG_SYNC")) limits.sync = std::string(e) != "0";
  FormReader r(loop_, kCT, spool_, limits);
  Streamer s{r, file_head("../../vm.qcow2"), file_tail(), mib << 20, pattern_gen()};
  long rss_before = formtest::rss_kib();
  auto t0 = std::chrono::steady_clock::now();
  double c0 = formtest::thread_cpu_seconds();
  s.start();
  loop_.run();
  double loop_cpu = formtest::thread_cpu_seconds() - c0;  // generating + hashing the data included
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(s.done);
  ASSERT_EQ(s.done_status, CL_OK) << s.done_error;
  std::printf(
      "streamed %llu MiB to disk (sync=%d) in %.2f s: %.0f MiB/s; loop thread CPU %.2f s (with the test's "
      "data generation and hashing); %d pauses; max queued %llu KiB; RSS %ld -> max %ld KiB\n",
      static_cast<unsigned long long>(mib), limits.sync, secs, static_cast<double>(mib) / secs, loop_cpu, s.pauses,
      static_cast<unsigned long long>(s.max_queued >> 10), rss_before, s.max_rss_kib);
  EXPECT_LT(s.max_rss_kib - rss_before, 48 * 1024) << "memory grew with the upload";
  EXPECT_LE(s.max_queued, (4u << 20) + s.buf.size());
  ASSERT_EQ(r.files().size(), 1u);
  EXPECT_EQ(r.files()[0].size, mib << 20);
  EXPECT_EQ(r.files()[0].filename, "../../vm.qcow2");
  uint64_t size = 0;
  EXPECT_EQ(hash_file(r.files()[0].path, &size), s.payload_hash.value());
  EXPECT_EQ(size, mib << 20);
  std::string dest = base_ + "/services/svc1/disk.qcow2";
  EXPECT_EQ(r.take_file(0, dest), CL_OK);
  struct stat st;
  ASSERT_EQ(stat(dest.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), mib << 20);
}

TEST_F(FormReaderTest, SweepSpoolRemovesOnlyOurLeftovers) {
  auto touch = [&](const std::string& name) {
    FILE* f = std::fopen((spool_ + "/" + name).c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  };
  touch("upload-0123456789abcdef");  // a crash's leftover
  touch("upload-fedcba9876543210");
  touch("upload-0123");              // not our name
  touch("upload-0123456789ABCDEF");  // not our name (upper case)
  touch("keep.txt");
  ASSERT_EQ(mkdir((spool_ + "/upload-aaaaaaaaaaaaaaaa").c_str(), 0700), 0);  // a directory is never removed
  ASSERT_EQ(symlink("/etc/hostname", (spool_ + "/upload-bbbbbbbbbbbbbbbb").c_str()), 0);
  EXPECT_EQ(FormReader::sweep_spool(spool_), 2);
  auto left = spooled();
  std::sort(left.begin(), left.end());
  std::vector<std::string> want = {"keep.txt", "upload-0123", "upload-0123456789ABCDEF", "upload-aaaaaaaaaaaaaaaa",
                                   "upload-bbbbbbbbbbbbbbbb"};
  EXPECT_EQ(left, want);
  EXPECT_EQ(FormReader::sweep_spool(base_ + "/missing"), -1);
}
