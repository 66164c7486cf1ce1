#include "virt/save_image.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "test_util.h"

using namespace cloudlet::virt;

namespace {

// A synthetic image in libvirt's layout: header, XML + cookie (padded), then a "stream".
std::string make_image(const std::string& xml, const std::string& cookie, const std::string& stream, uint32_t pad) {
  std::string area = xml + '\0';
  uint32_t cookie_off = 0;
  if (!cookie.empty()) {
    cookie_off = static_cast<uint32_t>(area.size());
    area += cookie + '\0';
  }
  area.append(pad, '\0');
  uint32_t v[19] = {2, static_cast<uint32_t>(area.size()), 1, 0, cookie_off};
  std::string out("LibvirtQemudSave", 16);
  out.append(reinterpret_cast<char*>(v), sizeof v);
  return out + area + stream;
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

}  // namespace

TEST(SaveImage, ReadsHeaderXmlCookieAndStreamOffset) {
  std::string dir = vt::make_temp_dir("cl-saveimg");
  std::string stream(100000, 'S');
  stream[0] = 'Q';
  std::string img = make_image("<domain><name>a</name></domain>", "<cookie/>", stream, 777);
  write_file(dir + "/s", img);
  SaveImage si;
  ASSERT_TRUE(vt::ok(save_image_read(dir + "/s", &si)));
  EXPECT_EQ(si.version, 2u);
  EXPECT_EQ(si.was_running, 1u);
  EXPECT_EQ(si.xml, "<domain><name>a</name></domain>");
  EXPECT_EQ(si.cookie, "<cookie/>");
  EXPECT_EQ(si.stream_offset, img.size() - stream.size());
  EXPECT_EQ(si.file_size, img.size());

  // Rewriting to a regular file: new XML, same cookie and stream, readable again.
  int fd = open((dir + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(vt::ok(save_image_write(dir + "/s", si, "<domain><name>longer-name</name></domain>", fd)));
  close(fd);
  SaveImage again;
  ASSERT_TRUE(vt::ok(save_image_read(dir + "/out", &again)));
  EXPECT_EQ(again.xml, "<domain><name>longer-name</name></domain>");
  EXPECT_EQ(again.cookie, "<cookie/>");
  std::string out = vt::read_file(dir + "/out");
  EXPECT_EQ(out.substr(again.stream_offset), stream);

  // Through a FIFO with a slow reader (the restore path).
  std::string fifo = dir + "/f";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::string got;
  std::thread reader([&] {
    int r = open(fifo.c_str(), O_RDONLY);
    char buf[4096];
    ssize_t n;
    while ((n = read(r, buf, sizeof buf)) > 0) {
      got.append(buf, n);
      if (got.size() < 8192) usleep(1000);
    }
    close(r);
  });
  int w = open(fifo.c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  fcntl(w, F_SETFL, fcntl(w, F_GETFL) | O_NONBLOCK);
  EXPECT_TRUE(vt::ok(save_image_write(dir + "/s", si, "<domain/>", w)));
  close(w);
  reader.join();
  EXPECT_EQ(got.substr(got.size() - stream.size()), stream);
  EXPECT_EQ(got.substr(0, 16), "LibvirtQemudSave");

  // A reader that goes away: an error, not a hang or a SIGPIPE death.
  unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::thread quitter([&] {
    int r = open(fifo.c_str(), O_RDONLY);
    char buf[100];
    EXPECT_GT(read(r, buf, sizeof buf), 0);
    close(r);
  });
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  w = open(fifo.c_str(), O_WRONLY);
  fcntl(w, F_SETFL, fcntl(w, F_GETFL) | O_NONBLOCK);
  EXPECT_TRUE(vt::fails(save_image_write(dir + "/s", si, "<domain/>", w, 5000), CL_EIO));
  quitter.join();
  close(w);
  timespec zero{0, 0};
  sigtimedwait(&set, nullptr, &zero);  // consume the pending SIGPIPE
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  std::filesystem::remove_all(dir);
}

TEST(SaveImage, RejectsBrokenHeaders) {
  std::string dir = vt::make_temp_dir("cl-saveimg");
  std::string good = make_image("<domain/>", "", "stream", 0);
  struct Case {
    const char* what;
    std::string data;
  };
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  std::string bad_version = good;
  bad_version[16] = 3;
  std::string huge_len = good;
  uint32_t big = 0x7fffffff;
  std::memcpy(&huge_len[20], &big, 4);
  std::string bad_cookie = make_image("<domain/>", "<c/>", "s", 0);
  uint32_t off = 1000;
  std::memcpy(&bad_cookie[32], &off, 4);
  std::string no_nul = make_image("<domain/>", "", "s", 0);
  no_nul[16 + 76 + 9] = 'x';  // overwrite the XML's terminating NUL
  Case cases[] = {{"short", "LibvirtQemudSave"}, {"magic", bad_magic}, {"version", bad_version},
                  {"data_len", huge_len},         {"cookie", bad_cookie}, {"nul", no_nul}};
  for (auto& c : cases) {
    write_file(dir + "/x", c.data);
    SaveImage si;
    EXPECT_TRUE(vt::fails(save_image_read(dir + "/x", &si), CL_EINVAL)) << c.what;
  }
  SaveImage si;
  EXPECT_TRUE(vt::fails(save_image_read(dir + "/missing", &si), CL_ENOENT, "cannot open saved state"));
  EXPECT_TRUE(vt::fails(save_image_read(dir, &si), CL_EINVAL));  // a directory
  // Replacement XML that cannot go into a header.
  int fd = open((dir + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(vt::fails(save_image_write(dir + "/missing", si, "", fd), CL_EINVAL, "empty"));
  EXPECT_TRUE(vt::fails(save_image_write(dir + "/missing", si, "<domain/>", fd), CL_ENOENT));
  close(fd);
  std::filesystem::remove_all(dir);
}
