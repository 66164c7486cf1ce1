// The device-side test peer checked against the real `adb` client (Debian's adb 29): connect with the RSA
// authorization paths, push, pull, shell. Everything runs in a network namespace that has only loopback; the
// adb server daemon runs there too and is killed with the namespace at the end, also on failure.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "adb/host_key.h"
#include "support/test_support.h"

using namespace cloudlet::adb;
using namespace cloudlet::adb::test;

namespace {

constexpr const char* kSerial = "127.0.0.1:5555";

class RealAdb : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(access("/usr/bin/adb", X_OK), 0) << "the adb package is a test dependency (debian/control)";
    ASSERT_EQ(geteuid(), 0u) << "network namespaces need root";
    ASSERT_TRUE(ns_.ok()) << ns_.error();
    const char* build = getenv("CLOUDLET_BUILD_DIR");
    peer_bin_ = std::string(build ? build : ".") + "/tests/adb_test_peer";
    ASSERT_EQ(access(peer_bin_.c_str(), X_OK), 0) << peer_bin_;
    ASSERT_EQ(mkdir((tmp_ / "home").c_str(), 0700), 0);
  }

  void TearDown() override {
    adb({"kill-server"}, 10000);
    peer_.stop();
    // ~Netns kills whatever is left in the namespace (a hung adb server) and deletes it.
  }

  void peer_start(const std::string& offer) {
    std::string line;
    ASSERT_TRUE(peer_.start(ns_.wrap({peer_bin_, "--dir", tmp_ / "peer", "--listen", kSerial, "--offer", offer}), &line))
        << "the peer did not start";
    ASSERT_EQ(line, "listening 5555");
  }

  RunResult adb(std::vector<std::string> args, uint64_t timeout_ms = 30000,
                std::map<std::string, std::string> extra_env = {}) {
    std::vector<std::string> argv = {"adb", "-P", "5037"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::map<std::string, std::string> env = {{"HOME", home_}, {"TMPDIR", tmp_.path()}, {"LOGNAME", "tester"},
                                              {"HOSTNAME", "netns"}, {"ANDROID_ADB_SERVER_PORT", "5037"}};
    for (auto& [k, v] : extra_env) env[k] = v;
    return run(ns_.wrap(argv), env, timeout_ms);
  }

  // Polls `adb devices` until our device shows `state` (bounded).
  bool wait_state(const std::string& state, double seconds = 20) {
    double end = now_seconds() + seconds;
    while (now_seconds() < end) {
      RunResult r = adb({"devices"}, 10000);
      if (r.out.find(std::string(kSerial) + "\t" + state) != std::string::npos) return true;
      usleep(200 * 1000);
    }
    return false;
  }

  std::string events() const { return file_read(tmp_ / "peer/events.log"); }

  Netns ns_;
  TempDir tmp_{"realadb"};
  std::string home_ = tmp_ / "home";
  std::string peer_bin_;
  Child peer_;
};

TEST_F(RealAdb, ConnectAuthorizePushPullShell) {
  peer_start("save");
  // adb 29 reports "connected to" or, when the key had to be offered first, "failed to authenticate" and
  // retries in the background; either way the device must come up.
  RunResult r = adb({"connect", kSerial});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(r.out.find("connected to 127.0.0.1:5555") != std::string::npos ||
              r.out.find("failed to authenticate to 127.0.0.1:5555") != std::string::npos)
      << r.out;
  ASSERT_TRUE(wait_state("device")) << adb({"devices"}).out << "\npeer events:\n" << events();

  // adb had no key in this HOME: it made one, its signature was rejected, it offered the public key, the
  // peer's "user" accepted and remembered it.
  std::string ev = events();
  EXPECT_NE(ev.find("auth: signature rejected"), std::string::npos) << ev;
  EXPECT_NE(ev.find("auth: offered key accepted and saved"), std::string::npos) << ev;
  EXPECT_EQ(file_read(tmp_ / "peer/adb_keys"), file_read(home_ + "/.android/adbkey.pub") + "\n");

  // push: byte-exact, with the local file's permission bits.
  std::string local = tmp_ / "payload.bin";
  ASSERT_TRUE(file_make(local, 5 * 1024 * 1024 + 333, 42, 0640));
  r = adb({"-s", kSerial, "push", local, "/sdcard/cloudlet/adb/payload.bin"}, 60000);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::string on_device = tmp_ / "peer/fs/sdcard/cloudlet/adb/payload.bin";
  EXPECT_TRUE(file_read(on_device) == file_read(local));
  struct stat st {};
  ASSERT_EQ(stat(on_device.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  // pull it back.
  r = adb({"-s", kSerial, "pull", "/sdcard/cloudlet/adb/payload.bin", tmp_ / "pulled.bin"}, 60000);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(file_read(tmp_ / "pulled.bin") == file_read(local));
  r = adb({"-s", kSerial, "pull", "/sdcard/none.json", tmp_ / "none.json"}, 30000);
  EXPECT_NE(r.status, 0);

  // shell: echo, cat, and the pairing flow's am startservice.
  r = adb({"-s", kSerial, "shell", "echo", "hello", "peer"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "hello peer\n");
  ASSERT_TRUE(file_write(tmp_ / "peer/fs/sdcard/cloudlet/adb/out_data.json", "{\"result\":\"success\"}"));
  r = adb({"-s", kSerial, "shell", "cat", "/sdcard/cloudlet/adb/out_data.json"});
  EXPECT_EQ(r.out, "{\"result\":\"success\"}");
  r = adb({"-s", kSerial, "shell", "am", "startservice", "-n", "edu.cmu.sei.cloudlet.client/.ska.adb.CleanupService"});
  EXPECT_EQ(r.out, "Starting service: Intent { cmp=edu.cmu.sei.cloudlet.client/.ska.adb.CleanupService }\n");
  EXPECT_NE(file_read(tmp_ / "peer/am.log").find(".ska.adb.CleanupService"), std::string::npos);

  // A new server (same HOME): the remembered key's signature is accepted, no prompt.
  adb({"kill-server"}, 10000);
  r = adb({"connect", kSerial});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  ASSERT_TRUE(wait_state("device")) << events();
  EXPECT_NE(events().find("auth: signature accepted"), std::string::npos) << events();
}

TEST_F(RealAdb, DeniedKeyLeavesTheDeviceUnusable) {
  peer_start("deny");
  adb({"connect", kSerial});
  // The peer drops the connection when its "user" denies the key: adb never sees it as a usable device.
  usleep(1500 * 1000);
  EXPECT_FALSE(wait_state("device", 2)) << events();
  EXPECT_NE(events().find("auth: offered key denied"), std::string::npos) << events();
  RunResult r = adb({"-s", kSerial, "shell", "echo", "x"}, 15000);
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(r.out.find("x\n"), std::string::npos);
}

// Our key files work for the real adb too: as a vendor key, our private key signs the peer's token.
TEST_F(RealAdb, RealAdbSignsWithOurKey) {
  Error err;
  auto key = HostKey::load_or_create(tmp_ / "ours", "cloudletd@netns", &err);
  ASSERT_TRUE(key) << err.text();
  ASSERT_EQ(mkdir((tmp_ / "peer").c_str(), 0755), 0);
  ASSERT_TRUE(file_write(tmp_ / "peer/adb_keys", key->public_key() + "\n"));
  peer_start("deny");  // only a known key gets in
  RunResult r = adb({"connect", kSerial}, 30000, {{"ADB_VENDOR_KEYS", key->private_path()}});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  ASSERT_TRUE(wait_state("device")) << events();
  EXPECT_NE(events().find("auth: signature accepted"), std::string::npos) << events();
  EXPECT_EQ(events().find("offered"), std::string::npos) << events();
}

}  // namespace
