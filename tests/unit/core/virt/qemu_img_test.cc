#include "virt/qemu_img.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "virt/process.h"

using namespace cloudlet;
using namespace cloudlet::virt;

namespace {

class QemuImgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!process_run({"qemu-img", "--version"}).ok()) GTEST_SKIP() << "qemu-img is missing (qemu-utils)";
    dir_ = vt::make_temp_dir("cl-qimg");
    ASSERT_FALSE(dir_.empty());
    auto r = process_run({"qemu-img", "create", "-q", "-f", "qcow2", dir_ + "/base.qcow2", "16M"});
    ASSERT_TRUE(r.ok()) << r.describe("qemu-img");
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string dir_;
};

}  // namespace

TEST_F(QemuImgTest, OverlayInfoConvert) {
  std::string ov = dir_ + "/ov.qcow2";
  ASSERT_EQ(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "qcow2", ov), "");
  qemu_img::Info info;
  ASSERT_EQ(qemu_img::info_sync(ov, &info), "");
  EXPECT_EQ(info.format, "qcow2");
  EXPECT_EQ(info.virtual_size, 16u << 20);
  EXPECT_EQ(info.backing_file, dir_ + "/base.qcow2");
  EXPECT_EQ(info.backing_format, "qcow2");
  // An existing overlay is never overwritten.
  EXPECT_NE(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "qcow2", ov).find("already exists"), std::string::npos);
  ASSERT_EQ(qemu_img::convert_sync(ov, "qcow2", dir_ + "/flat.raw", "raw"), "");
  ASSERT_EQ(qemu_img::info_sync(dir_ + "/flat.raw", &info), "");
  EXPECT_EQ(info.format, "raw");
  EXPECT_EQ(info.backing_file, "");
  // A blank image (a disk for direct-kernel guests); never over an existing file.
  ASSERT_EQ(qemu_img::create_sync(dir_ + "/blank.qcow2", "qcow2", 8u << 20), "");
  ASSERT_EQ(qemu_img::info_sync(dir_ + "/blank.qcow2", &info), "");
  EXPECT_EQ(info.virtual_size, 8u << 20);
  EXPECT_NE(qemu_img::create_sync(dir_ + "/blank.qcow2", "qcow2", 8u << 20).find("exists"), std::string::npos);
  EXPECT_NE(qemu_img::create_sync(dir_ + "/zero.qcow2", "qcow2", 0), "");
  EXPECT_NE(qemu_img::create_sync("relative.qcow2", "qcow2", 1 << 20), "");
}

TEST_F(QemuImgTest, ErrorsAreReported) {
  std::string err = qemu_img::create_overlay_sync(dir_ + "/missing.qcow2", "qcow2", dir_ + "/o.qcow2");
  EXPECT_NE(err.find("missing"), std::string::npos) << err;
  EXPECT_NE(qemu_img::create_overlay_sync("relative.qcow2", "qcow2", dir_ + "/o.qcow2").find("absolute"), std::string::npos);
  EXPECT_NE(qemu_img::create_overlay_sync("json:{}", "qcow2", dir_ + "/o.qcow2"), "");
  EXPECT_NE(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "qcow2", dir_ + "/no/such/dir/o.qcow2"), "");
  EXPECT_NE(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "bogus", dir_ + "/o.qcow2"), "");
  // A raw file claimed to be qcow2: qemu-img itself refuses, and its stderr is in the message.
  {
    std::ofstream(dir_ + "/raw.img") << std::string(4096, 'x');
    err = qemu_img::create_overlay_sync(dir_ + "/raw.img", "qcow2", dir_ + "/o2.qcow2");
    EXPECT_NE(err.find("qemu-img create exited with"), std::string::npos) << err;
    struct stat sb;
    EXPECT_NE(stat((dir_ + "/o2.qcow2").c_str(), &sb), 0) << "no overlay left behind";
  }
  qemu_img::Info info;
  err = qemu_img::info_sync(dir_ + "/nope.qcow2", &info);
  EXPECT_NE(err.find("qemu-img info exited with"), std::string::npos) << err;
  EXPECT_NE(qemu_img::info_sync("", &info), "");
  EXPECT_NE(qemu_img::convert_sync(dir_ + "/nope", "qcow2", dir_ + "/x.raw", "raw"), "");
  struct stat sb;
  EXPECT_NE(stat((dir_ + "/x.raw").c_str(), &sb), 0);
  EXPECT_NE(qemu_img::convert_sync(dir_ + "/base.qcow2", "qcow2", dir_ + "/base.qcow2", "raw").find("exists"), std::string::npos);
  // A program that is not there.
  qemu_img::set_program("/nonexistent/qemu-img");
  err = qemu_img::info_sync(dir_ + "/base.qcow2", &info);
  qemu_img::set_program("qemu-img");
  EXPECT_NE(err.find("could not be started"), std::string::npos) << err;
}

TEST_F(QemuImgTest, AsyncResultsComeBackOnTheLoop) {
  Loop loop;
  std::string err = "pending";
  bool on_loop = false;
  qemu_img::create_overlay(loop, dir_ + "/base.qcow2", "qcow2", dir_ + "/a.qcow2", [&](std::string e) {
    on_loop = loop.on_loop_thread();
    err = e;
  });
  ASSERT_TRUE(vt::run_until(loop, [&] { return err != "pending"; }, 30000));
  EXPECT_EQ(err, "");
  EXPECT_TRUE(on_loop);
  qemu_img::Info got;
  err = "pending";
  qemu_img::info(loop, dir_ + "/a.qcow2", [&](qemu_img::Info i, std::string e) {
    got = i;
    err = e;
  });
  ASSERT_TRUE(vt::run_until(loop, [&] { return err != "pending"; }, 30000));
  EXPECT_EQ(err, "");
  EXPECT_EQ(got.backing_format, "qcow2");
  err = "pending";
  qemu_img::convert(loop, dir_ + "/missing", "raw", dir_ + "/m.qcow2", "qcow2", [&](std::string e) { err = e; });
  ASSERT_TRUE(vt::run_until(loop, [&] { return err != "pending"; }, 30000));
  EXPECT_NE(err, "");
  EXPECT_EQ(loop.close(), 0);
}

TEST(QemuImgJson, ParsesInfo) {
  qemu_img::Info i;
  EXPECT_EQ(qemu_img::parse_info_json(R"({"virtual-size": 1073741824, "filename": "/x", "format": "qcow2",
    "actual-size": 200704, "backing-filename": "b.qcow2", "full-backing-filename": "/d/b.qcow2",
    "backing-filename-format": "qcow2"})", &i), "");
  EXPECT_EQ(i.virtual_size, 1073741824u);
  EXPECT_EQ(i.backing_file, "/d/b.qcow2");
  EXPECT_EQ(i.data_file, "");
  // An external data file (qcow2 data_file option): a copy of the image would read that file too.
  EXPECT_EQ(qemu_img::parse_info_json(R"({"virtual-size": 10485760, "format": "qcow2", "format-specific":
    {"type": "qcow2", "data": {"compat": "1.1", "data-file": "/etc/shadow", "data-file-raw": false}}})", &i), "");
  EXPECT_EQ(i.data_file, "/etc/shadow");
  EXPECT_NE(qemu_img::parse_info_json("not json", &i), "");
  EXPECT_NE(qemu_img::parse_info_json("{}", &i), "");
}

TEST(Process, TimeoutKillsAndOutputIsBounded) {
  ProcessOptions o;
  o.timeout_ms = 300;
  int64_t t = vt::mono_ms();
  auto r = process_run({"sleep", "10"}, o);
  EXPECT_TRUE(r.timed_out);
  EXPECT_LT(vt::mono_ms() - t, 5000);
  EXPECT_FALSE(r.ok());
  o.timeout_ms = 10000;
  o.max_output = 1000;
  r = process_run({"head", "-c", "100000", "/dev/zero"}, o);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.out.size(), 1000u);
  r = process_run({"sh", "-c", "echo oops >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.describe("sh"), "sh exited with 3: oops");
}
