// Discovery without avahi-daemon: it must start, keep retrying and stop cleanly. Publishing and browsing
// against a real avahi-daemon are tested in network namespaces (tests/integration/discovery).
#include "discovery/discovery.h"

#include <avahi-common/strlst.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>

#include "log/log.h"
#include "loop/loop.h"

extern char** environ;

using cloudlet::Discovery;
using cloudlet::DiscoveryOptions;
using cloudlet::Loop;

namespace {

bool run_until(Loop& loop, const std::function<bool()>& pred, uint64_t ms = 3000) {
  bool expired = false;
  auto guard = loop.timer_start(ms, 0, [&] { expired = true; });
  auto tick = loop.timer_start(5, 5, [] {});
  while (!pred() && !expired) uv_run(loop.uv(), UV_RUN_ONCE);
  loop.timer_stop(guard);
  loop.timer_stop(tick);
  return pred();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = hay.find(needle); pos != std::string::npos; pos = hay.find(needle, pos + 1)) n++;
  return n;
}

// libdbus reads DBUS_SYSTEM_BUS_ADDRESS once per process, so every test shares one bus path (the bus
// itself is started and stopped per test).
const std::string& scratch_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/cloudlet-discovery-test-XXXXXX";
    if (!mkdtemp(tmpl)) abort();
    std::string d = tmpl;
    static std::string to_remove = d;
    atexit([] { rmdir(to_remove.c_str()); });
    setenv("DBUS_SYSTEM_BUS_ADDRESS", ("unix:path=" + d + "/bus").c_str(), 1);
    return d;
  }();
  return dir;
}

class DiscoveryNoDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = scratch_dir();
    socket_ = dir_ + "/bus";
    log_ = dir_ + "/log";
    unlink(log_.c_str());
    ASSERT_TRUE(cloudlet::log::set_output_file(log_));
    cloudlet::log::set_level(cloudlet::log::Level::debug);
  }
  void TearDown() override {
    stop_bus();
    cloudlet::log::set_level(cloudlet::log::Level::info);
    cloudlet::log::set_output_file("/dev/stderr");
    std::string rm[] = {socket_, log_, dir_ + "/bus.conf"};
    for (auto& f : rm) unlink(f.c_str());
  }
  std::string log_text() { return read_file(log_); }

  // A private message bus (plain IPC, no network). Returns false if dbus-daemon is not installed.
  bool start_bus() {
    if (access("/usr/bin/dbus-daemon", X_OK) != 0) return false;
    std::string conf = dir_ + "/bus.conf";
    std::ofstream(conf) << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
                           " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                           "<busconfig><type>system</type><listen>unix:path="
                        << socket_
                        << "</listen><auth>EXTERNAL</auth>"
                           "<policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>"
                           "<allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n";
    std::string arg = "--config-file=" + conf;
    char* argv[] = {const_cast<char*>("dbus-daemon"), const_cast<char*>(arg.c_str()), const_cast<char*>("--nofork"),
                    nullptr};
    if (posix_spawn(&bus_pid_, "/usr/bin/dbus-daemon", nullptr, nullptr, argv, environ) != 0) return false;
    for (int i = 0; i < 200; i++) {  // up to 2 s for the socket
      struct stat st;
      if (stat(socket_.c_str(), &st) == 0) return true;
      usleep(10000);
    }
    return false;
  }
  void stop_bus() {
    if (bus_pid_ <= 0) return;
    kill(bus_pid_, SIGTERM);
    int status;
    waitpid(bus_pid_, &status, 0);
    bus_pid_ = -1;
  }

  std::string dir_, socket_, log_;
  pid_t bus_pid_ = -1;
};

}  // namespace

// client-lib splits the TXT string it reads on '=': "encryption=..." comes first in the record's wire form
// (length-prefixed strings, as avahi serialises it into the DNS answer) whatever discovery.extra_txt adds.
TEST(Discovery, EncryptionIsTheFirstTxtStringOnTheWire) {
  std::vector<std::string> extra = {"aaa=0", "version=2", "zzz=1", "path=/x=y"};
  for (bool encrypted : {false, true}) {
    AvahiStringList* record = cloudlet::discovery_txt_record(encrypted, extra);
    uint8_t wire[1024];
    size_t n = avahi_string_list_serialize(record, wire, sizeof wire);
    avahi_string_list_free(record);
    std::vector<std::string> strings;
    for (size_t at = 0; at < n; at += 1 + wire[at]) {
      ASSERT_LE(at + 1 + wire[at], n);
      strings.emplace_back(reinterpret_cast<const char*>(wire + at + 1), wire[at]);
    }
    std::vector<std::string> want = {encrypted ? "encryption=enabled" : "encryption=disabled"};
    want.insert(want.end(), extra.begin(), extra.end());
    EXPECT_EQ(strings, want);
    EXPECT_EQ(strings[0].substr(strings[0].find('=') + 1), encrypted ? "enabled" : "disabled");
  }
}

TEST(Discovery, DisabledOpensNothing) {
  Loop loop;
  DiscoveryOptions o;
  o.enabled = false;
  Discovery d(loop, o);
  ASSERT_TRUE(d.start().ok());
  EXPECT_FALSE(d.published());
  EXPECT_TRUE(d.peers().empty());
  bool stopped = false;
  d.stop([&] { stopped = true; });
  EXPECT_TRUE(run_until(loop, [&] { return stopped; }));
  EXPECT_EQ(loop.close(), 0);
}

TEST(Discovery, BadOptionsAreRefused) {
  Loop loop;
  DiscoveryOptions o;
  o.extra_txt = {"encryption=enabled"};
  Discovery d(loop, o);
  cloudlet::Status started = d.start();
  EXPECT_EQ(started.code(), CL_EINVAL);
  EXPECT_NE(started.message().find("encryption"), std::string::npos) << started.message();
  EXPECT_EQ(loop.close(), 0);
}

TEST(Discovery, DefaultNameIsTheHostName) {
  Loop loop;
  DiscoveryOptions o;
  o.enabled = true;
  scratch_dir();  // no bus is running there
  Discovery d(loop, o);
  ASSERT_TRUE(d.start().ok());
  EXPECT_EQ(d.name(), cloudlet::discovery_default_name());
  bool stopped = false;
  d.stop([&] { stopped = true; });
  EXPECT_TRUE(run_until(loop, [&] { return stopped; }));
  EXPECT_EQ(loop.close(), 0);
}

// No system bus at all: start succeeds, the connection is retried with back-off, stop is clean.
TEST_F(DiscoveryNoDaemon, NoBusRetriesAndStopsCleanly) {
  Loop loop;
  DiscoveryOptions o;
  o.name = "unit";
  o.retry_min_ms = 10;
  o.retry_max_ms = 20;
  Discovery d(loop, o);
  ASSERT_TRUE(d.start().ok());
  run_until(loop, [] { return false; }, 200);
  std::string text = log_text();
  EXPECT_EQ(count(text, "cannot reach avahi-daemon"), 1u) << text;  // warned once
  EXPECT_GE(count(text, "still unreachable"), 3u) << text;          // then retried quietly
  EXPECT_FALSE(d.published());
  bool stopped = false;
  d.stop([&] { stopped = true; });
  d.stop(nullptr);  // a second stop joins the first
  EXPECT_TRUE(run_until(loop, [&] { return stopped; }));
  EXPECT_EQ(loop.close(), 0);
}

// The bus appears after start: the next retry connects and the client waits for avahi-daemon on it.
TEST_F(DiscoveryNoDaemon, BusAppearingLaterIsUsedAndDaemonIsWaitedFor) {
  Loop loop;
  DiscoveryOptions o;
  o.name = "unit";
  o.retry_min_ms = 20;
  o.retry_max_ms = 50;
  Discovery d(loop, o);
  ASSERT_TRUE(d.start().ok());
  run_until(loop, [] { return false; }, 60);
  if (!start_bus()) GTEST_SKIP() << "dbus-daemon not available";
  ASSERT_TRUE(run_until(loop, [&] { return log_text().find("avahi-daemon is not running") != std::string::npos; }))
      << log_text();
  EXPECT_FALSE(d.published());
  bool stopped = false;
  d.stop([&] { stopped = true; });
  EXPECT_TRUE(run_until(loop, [&] { return stopped; }));
  EXPECT_EQ(loop.close(), 0);
}

// Losing the bus while connected: the client fails, Discovery reconnects (and keeps retrying) without
// crashing, and the loop still closes cleanly.
TEST_F(DiscoveryNoDaemon, BusGoingAwayIsSurvived) {
  if (!start_bus()) GTEST_SKIP() << "dbus-daemon not available";
  Loop loop;
  DiscoveryOptions o;
  o.name = "unit";
  o.retry_min_ms = 20;
  o.retry_max_ms = 40;
  Discovery d(loop, o);
  ASSERT_TRUE(d.start().ok());
  ASSERT_TRUE(run_until(loop, [&] { return log_text().find("avahi-daemon is not running") != std::string::npos; }));
  stop_bus();
  ASSERT_TRUE(run_until(loop, [&] { return log_text().find("lost avahi-daemon") != std::string::npos; }))
      << log_text();
  ASSERT_TRUE(run_until(loop, [&] { return log_text().find("still unreachable") != std::string::npos ||
                                           log_text().find("cannot reach") != std::string::npos; }))
      << log_text();
  bool stopped = false;
  d.stop([&] { stopped = true; });
  EXPECT_TRUE(run_until(loop, [&] { return stopped; }));
  EXPECT_EQ(loop.close(), 0);
}

// Destroying a running Discovery without stop() frees everything; the loop still closes cleanly.
TEST_F(DiscoveryNoDaemon, DestructorWithoutStopLeavesNoHandles) {
  if (!start_bus()) GTEST_SKIP() << "dbus-daemon not available";
  Loop loop;
  {
    DiscoveryOptions o;
    o.name = "unit";
    Discovery d(loop, o);
    ASSERT_TRUE(d.start().ok());
    ASSERT_TRUE(
        run_until(loop, [&] { return log_text().find("avahi-daemon is not running") != std::string::npos; }));
  }
  EXPECT_EQ(loop.close(), 0);
}
