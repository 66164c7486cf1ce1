#include "virt/qemu_img.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <optional>

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
  ASSERT_TRUE(vt::ok(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "qcow2", ov)));
  qemu_img::Info info;
  ASSERT_TRUE(vt::ok(qemu_img::info_sync(ov, &info)));
  EXPECT_EQ(info.format, "qcow2");
  EXPECT_EQ(info.virtual_size, 16u << 20);
  EXPECT_EQ(info.backing_file, dir_ + "/base.qcow2");
  EXPECT_EQ(info.backing_format, "qcow2");
  // An existing overlay is never overwritten.
  EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "qcow2", ov), CL_EEXIST, "already exists"));
  ASSERT_TRUE(vt::ok(qemu_img::convert_sync(ov, "qcow2", dir_ + "/flat.raw", "raw")));
  ASSERT_TRUE(vt::ok(qemu_img::info_sync(dir_ + "/flat.raw", &info)));
  EXPECT_EQ(info.format, "raw");
  EXPECT_EQ(info.backing_file, "");
  // A blank image (a disk for direct-kernel guests); never over an existing file.
  ASSERT_TRUE(vt::ok(qemu_img::create_sync(dir_ + "/blank.qcow2", "qcow2", 8u << 20)));
  ASSERT_TRUE(vt::ok(qemu_img::info_sync(dir_ + "/blank.qcow2", &info)));
  EXPECT_EQ(info.virtual_size, 8u << 20);
  EXPECT_TRUE(vt::fails(qemu_img::create_sync(dir_ + "/blank.qcow2", "qcow2", 8u << 20), CL_EEXIST, "exists"));
  EXPECT_TRUE(vt::fails(qemu_img::create_sync(dir_ + "/zero.qcow2", "qcow2", 0), CL_EINVAL));
  EXPECT_TRUE(vt::fails(qemu_img::create_sync("relative.qcow2", "qcow2", 1 << 20), CL_EINVAL));
}

TEST_F(QemuImgTest, ErrorsAreReported) {
  EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync(dir_ + "/missing.qcow2", "qcow2", dir_ + "/o.qcow2"), CL_ENOENT,
                        "missing"));
  EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync("relative.qcow2", "qcow2", dir_ + "/o.qcow2"), CL_EINVAL,
                        "absolute"));
  EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync("json:{}", "qcow2", dir_ + "/o.qcow2"), CL_EINVAL));
  EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "qcow2", dir_ + "/no/such/dir/o.qcow2"),
                        CL_EIO));
  EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync(dir_ + "/base.qcow2", "bogus", dir_ + "/o.qcow2"), CL_EINVAL));
  // A raw file claimed to be qcow2: qemu-img itself refuses, and its stderr is in the message.
  {
    std::ofstream(dir_ + "/raw.img") << std::string(4096, 'x');
    EXPECT_TRUE(vt::fails(qemu_img::create_overlay_sync(dir_ + "/raw.img", "qcow2", dir_ + "/o2.qcow2"), CL_EIO,
                          "qemu-img create exited with"));
    struct stat sb;
    EXPECT_NE(stat((dir_ + "/o2.qcow2").c_str(), &sb), 0) << "no overlay left behind";
  }
  qemu_img::Info info;
  EXPECT_TRUE(vt::fails(qemu_img::info_sync(dir_ + "/nope.qcow2", &info), CL_EIO, "qemu-img info exited with"));
  EXPECT_TRUE(vt::fails(qemu_img::info_sync("", &info), CL_EINVAL));
  EXPECT_TRUE(vt::fails(qemu_img::convert_sync(dir_ + "/nope", "qcow2", dir_ + "/x.raw", "raw"), CL_EIO));
  struct stat sb;
  EXPECT_NE(stat((dir_ + "/x.raw").c_str(), &sb), 0);
  EXPECT_TRUE(vt::fails(qemu_img::convert_sync(dir_ + "/base.qcow2", "qcow2", dir_ + "/base.qcow2", "raw"), CL_EEXIST,
                        "exists"));
  // A program that is not there.
  qemu_img::set_program("/nonexistent/qemu-img");
  Status err = qemu_img::info_sync(dir_ + "/base.qcow2", &info);
  qemu_img::set_program("qemu-img");
  EXPECT_TRUE(vt::fails(err, CL_EUNAVAIL, "could not be started"));
}

TEST_F(QemuImgTest, AsyncResultsComeBackOnTheLoop) {
  Loop loop;
  std::optional<Status> err;
  bool on_loop = false;
  qemu_img::create_overlay(loop, dir_ + "/base.qcow2", "qcow2", dir_ + "/a.qcow2", [&](Status e) {
    on_loop = loop.on_loop_thread();
    err = e;
  });
  ASSERT_TRUE(vt::run_until(loop, [&] { return err.has_value(); }, 30000));
  EXPECT_TRUE(vt::ok(*err));
  EXPECT_TRUE(on_loop);
  qemu_img::Info got;
  err.reset();
  qemu_img::info(loop, dir_ + "/a.qcow2", [&](qemu_img::Info i, Status e) {
    got = i;
    err = e;
  });
  ASSERT_TRUE(vt::run_until(loop, [&] { return err.has_value(); }, 30000));
  EXPECT_TRUE(vt::ok(*err));
  EXPECT_EQ(got.backing_format, "qcow2");
  err.reset();
  qemu_img::convert(loop, dir_ + "/missing", "raw", dir_ + "/m.qcow2", "qcow2", [&](Status e) { err = e; });
  ASSERT_TRUE(vt::run_until(loop, [&] { return err.has_value(); }, 30000));
  EXPECT_TRUE(vt::fails(*err, CL_EIO));
  EXPECT_EQ(loop.close(), 0);
}

TEST(QemuImgJson, ParsesInfo) {
  qemu_img::Info i;
  EXPECT_TRUE(vt::ok(qemu_img::parse_info_json(R"({"virtual-size": 1073741824, "filename": "/x", "format": "qcow2",
    "actual-size": 200704, "backing-filename": "b.qcow2", "full-backing-filename": "/d/b.qcow2",
    "backing-filename-format": "qcow2"})", &i)));
  EXPECT_EQ(i.virtual_size, 1073741824u);
  EXPECT_EQ(i.backing_file, "/d/b.qcow2");
  EXPECT_EQ(i.data_file, "");
  // An external data file (qcow2 data_file option): a copy of the image would read that file too.
  EXPECT_TRUE(vt::ok(qemu_img::parse_info_json(R"({"virtual-size": 10485760, "format": "qcow2", "format-specific":
    {"type": "qcow2", "data": {"compat": "1.1", "data-file": "/etc/shadow", "data-file-raw": false}}})", &i)));
  EXPECT_EQ(i.data_file, "/etc/shadow");
  EXPECT_TRUE(vt::fails(qemu_img::parse_info_json("not json", &i), CL_EIO));
  EXPECT_TRUE(vt::fails(qemu_img::parse_info_json("{}", &i), CL_EIO));
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
