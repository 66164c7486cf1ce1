// The ADB host library against the device-side test peer over TCP on 127.0.0.1: pushes (several files, up
// to 50 MB, byte-exact with their modes), pulls, shell commands, the authorization paths, and the failures
// (refused key, disconnect mid-transfer, corrupt messages, oversized lengths, stalled peers). Every test runs
// twice: over the libuv reactor and over the plugin-ABI reactor (HostReactor on a fake host table), and
// checks that nothing is left behind (fds, watches, timers, streams).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>
#include <optional>

#include "adb/connection.h"
#include "adb/host_key.h"
#include "adb/reactor_host.h"
#include "adb/reactor_uv.h"
#include "adb/tcp_transport.h"
#include "host_reactor_fake.h"
#include "peer/adb_peer.h"
#include "support/test_support.h"

using namespace cloudlet::adb;
using namespace cloudlet::adb::test;
using cloudlet::adb::peer::Fault;
using cloudlet::adb::peer::Offer;
using cloudlet::adb::peer::Peer;
using cloudlet::adb::peer::PeerOptions;

namespace {

constexpr size_t kMiB = 1024 * 1024;

// One key for the whole suite: generating RSA-2048 keys is slow.
struct SharedKey {
  TempDir dir{"adbkey"};
  std::shared_ptr<const HostKey> key;
  SharedKey() {
    Error err;
    key = HostKey::load_or_create(dir.path() + "/credentials/adb", "cloudletd@test", &err);
  }
};
SharedKey& shared_key() {
  static SharedKey k;
  return k;
}

class AdbConnection : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    // Process-wide one-time descriptors (libuv's signal pipe, made by the first loop) are not leaks.
    static const bool warm = [] {
      uv_loop_t l;
      uv_loop_init(&l);
      return uv_loop_close(&l) == 0;
    }();
    ASSERT_TRUE(warm);
    key_ = shared_key().key;
    fds_before_ = fd_count();
    uv_loop_init(&loop_);
    if (std::string(GetParam()) == "uv") {
      reactor_ = std::make_unique<UvReactor>(&loop_, CL_LOG_WARN);
    } else {
      fake_ = std::make_unique<FakeHost>(&loop_);
      reactor_ = std::make_unique<HostReactor>(fake_->host(), fake_->api());
    }
    ASSERT_TRUE(key_) << "host key";
  }

  void TearDown() override {
    conn_.reset();
    peer_.reset();
    loop_settle(&loop_, 50);
    if (auto* uv = dynamic_cast<UvReactor*>(reactor_.get())) {
      EXPECT_EQ(uv->active_ios(), 0u) << "fd watches left behind";
      EXPECT_EQ(uv->active_timers(), 0u) << "timers left behind";
    }
    if (fake_) {
      EXPECT_EQ(fake_->live_handles(), 0u) << "host handles left behind";
    }
    reactor_.reset();
    fake_.reset();
    loop_drain(&loop_);
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "libuv handles left open";
    EXPECT_EQ(fd_count(), fds_before_) << "file descriptors leaked; open now:\n" << fd_describe();
  }

  // Starts a peer that trusts our key (unless trust is false).
  void peer_start(PeerOptions opts = {}, bool trust = true) {
    if (opts.dir.empty()) opts.dir = dir_ / "peer";
    peer_ = std::make_unique<Peer>(opts);
    std::string err;
    ASSERT_TRUE(peer_->listen("127.0.0.1", 0, &err)) << err;
    if (trust) {
      ASSERT_TRUE(file_write(peer_->keys_path(), key_->public_key() + "\n"));
    }
  }

  std::string addr() const { return "127.0.0.1:" + std::to_string(peer_->port()); }

  // Connects and runs the handshake; returns its result.
  Error connect(ConnectionOptions opts = {}, uint64_t wait_ms = 20000) {
    std::optional<Error> result;
    std::unique_ptr<Transport> transport;
    std::optional<Error> conn_err;
    TcpConnector connector(*reactor_, addr(), 5000, [&](Error e, std::unique_ptr<Transport> t) {
      conn_err = e;
      transport = std::move(t);
    });
    EXPECT_TRUE(run_until(&loop_, [&] { return conn_err.has_value(); }, 10000));
    if (!conn_err || *conn_err) return conn_err ? *conn_err : Error(Errc::timeout, "connect");
    conn_ = Connection::create(*reactor_, std::move(transport), key_, opts);
    conn_->on_close([this](Error e) { closed_ = e; });
    conn_->start([&](Error e) { result = e; });
    EXPECT_TRUE(run_until(&loop_, [&] { return result.has_value(); }, wait_ms));
    return result ? *result : Error(Errc::timeout, "test gave up waiting for the handshake");
  }

  Error push(PushRequest req, uint64_t wait_ms = 60000) {
    std::optional<Error> result;
    conn_->file_push(std::move(req), [&](Error e) { result = e; });
    EXPECT_TRUE(run_until(&loop_, [&] { return result.has_value(); }, wait_ms));
    return result ? *result : Error(Errc::timeout, "test gave up waiting for the push");
  }

  std::pair<Error, std::string> pull(const std::string& remote, size_t max = 16 * kMiB) {
    std::optional<std::pair<Error, std::string>> result;
    conn_->file_pull(remote, max, [&](Error e, std::string d) { result.emplace(e, std::move(d)); });
    EXPECT_TRUE(run_until(&loop_, [&] { return result.has_value(); }, 30000));
    return result ? *result : std::make_pair(Error(Errc::timeout, "gave up"), std::string());
  }

  std::pair<Error, std::string> shell(const std::string& cmd, size_t max = kMiB) {
    std::optional<std::pair<Error, std::string>> result;
    conn_->shell_run(cmd, max, [&](Error e, std::string d) { result.emplace(e, std::move(d)); });
    EXPECT_TRUE(run_until(&loop_, [&] { return result.has_value(); }, 30000));
    return result ? *result : std::make_pair(Error(Errc::timeout, "gave up"), std::string());
  }

  std::string device_file(const std::string& dev) const { return peer_->fs_root() + dev; }

  mode_t mode_of(const std::string& path) const {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) return 0;
    return st.st_mode & 07777;
  }

  int fds_before_ = 0;
  uv_loop_t loop_;
  std::unique_ptr<FakeHost> fake_;
  std::unique_ptr<Reactor> reactor_;
  std::shared_ptr<const HostKey> key_;
  TempDir dir_{"adbconn"};
  std::unique_ptr<Peer> peer_;
  std::shared_ptr<Connection> conn_;
  std::optional<Error> closed_;
};

TEST_P(AdbConnection, HandshakeWithTrustedKeyUsesTheSignature) {
  peer_start();
  Error e = connect();
  ASSERT_FALSE(e) << e.text();
  EXPECT_TRUE(conn_->online());
  EXPECT_EQ(conn_->device().state, "device");
  EXPECT_EQ(conn_->device().props.at("ro.product.model"), "AdbTestPeer");
  EXPECT_EQ(conn_->device().version, kVersionSkipChecksum);
  EXPECT_EQ(conn_->device().max_payload, 256u * 1024);
  EXPECT_TRUE(peer_->has_event("auth: signature accepted"));
  EXPECT_FALSE(peer_->has_event("offered"));
  EXPECT_TRUE(peer_->has_event("cnxn: version=0x1000001 maxdata=1048576 banner=host::"));
}

TEST_P(AdbConnection, PushesCredentialFilesByteExactWithTheirModes) {
  peer_start();
  ASSERT_FALSE(connect());
  struct F {
    std::string name;
    size_t size;
    unsigned mode;
  };
  // What pairing sends (server key, device key, RADIUS certificate) plus one large file, and an empty one.
  std::vector<F> files = {{"server_public.key", 0, 0644},
                          {"device.key", 32, 0600},
                          {"radius_cert.pem", 1318, 0644},
                          {"chunk_edge.bin", 3 * 65536, 0640},
                          {"big.bin", 50 * kMiB, 0640}};
  for (size_t i = 0; i < files.size(); i++) {
    std::string local = dir_ / files[i].name;
    ASSERT_TRUE(file_make(local, files[i].size, i + 1, 0600));  // local mode differs on purpose
    PushRequest req;
    req.local_path = local;
    req.remote_path = "/sdcard/cloudlet/adb/" + files[i].name;
    req.mode = files[i].mode;
    req.mtime = 1700000000 + int64_t(i);
    Error e = push(req);
    ASSERT_FALSE(e) << e.text();
    std::string got = device_file(req.remote_path);
    EXPECT_TRUE(file_read(got) == file_read(local)) << files[i].name << " differs";
    EXPECT_EQ(mode_of(got), files[i].mode) << files[i].name;
    struct stat st {};
    stat(got.c_str(), &st);
    EXPECT_EQ(st.st_mtime, 1700000000 + int64_t(i));
  }
  EXPECT_EQ(conn_->streams_active(), 0u);
}

TEST_P(AdbConnection, ConcurrentPushesShareOneConnection) {
  peer_start();
  ASSERT_FALSE(connect());
  const int n = 6;
  int done = 0;
  std::vector<Error> errs(n);
  for (int i = 0; i < n; i++) {
    std::string local = dir_ / ("f" + std::to_string(i));
    ASSERT_TRUE(file_make(local, (i + 1) * 700 * 1024 + i, 100 + i));
    PushRequest req;
    req.local_path = local;
    req.remote_path = "/data/local/tmp/f" + std::to_string(i);
    conn_->file_push(req, [&, i](Error e) {
      errs[i] = e;
      done++;
    });
  }
  EXPECT_GT(conn_->streams_active(), 1u);
  ASSERT_TRUE(run_until(&loop_, [&] { return done == n; }, 60000));
  for (int i = 0; i < n; i++) {
    ASSERT_FALSE(errs[i]) << errs[i].text();
    EXPECT_TRUE(file_read(device_file("/data/local/tmp/f" + std::to_string(i))) == file_read(dir_ / ("f" + std::to_string(i))));
  }
}

TEST_P(AdbConnection, PushesBytesFromMemory) {
  peer_start();
  ASSERT_FALSE(connect());
  PushRequest req;
  req.data = "{\"command\":\"wifi-profile\",\"ssid\":\"cloudlet\"}";
  req.remote_path = "/sdcard/cloudlet/adb/in_data.json";
  req.mode = 0600;
  ASSERT_FALSE(push(req));
  EXPECT_EQ(file_read(device_file(req.remote_path)), req.data);
  EXPECT_EQ(mode_of(device_file(req.remote_path)), 0600u);
}

TEST_P(AdbConnection, PullsAResultFileAndStats) {
  peer_start();
  ASSERT_FALSE(connect());
  std::string json = "{\"result\":\"success\",\"device_id\":\"a1b2c3\"}";
  std::string big = bytes_make(3 * kMiB + 17, 7);
  ASSERT_EQ(run({"mkdir", "-p", peer_->fs_root() + "/sdcard/cloudlet/adb"}).status, 0);
  ASSERT_TRUE(file_write(device_file("/sdcard/cloudlet/adb/out_data.json"), json));
  ASSERT_TRUE(file_write(device_file("/sdcard/cloudlet/adb/big"), big));

  auto [e1, d1] = pull("/sdcard/cloudlet/adb/out_data.json");
  ASSERT_FALSE(e1) << e1.text();
  EXPECT_EQ(d1, json);
  auto [e2, d2] = pull("/sdcard/cloudlet/adb/big");
  ASSERT_FALSE(e2) << e2.text();
  EXPECT_TRUE(d2 == big);

  auto [e3, d3] = pull("/sdcard/cloudlet/adb/missing.json");
  EXPECT_EQ(e3.code, Errc::not_found) << e3.text();
  EXPECT_NE(e3.message.find("missing.json"), std::string::npos) << e3.message;
  auto [e4, d4] = pull("/sdcard/cloudlet/adb/big", 1000);
  EXPECT_EQ(e4.code, Errc::too_big) << e4.text();

  std::optional<std::pair<Error, RemoteStat>> st;
  conn_->file_stat("/sdcard/cloudlet/adb/out_data.json", [&](Error e, RemoteStat s) { st.emplace(e, s); });
  ASSERT_TRUE(run_until(&loop_, [&] { return st.has_value(); }, 10000));
  ASSERT_FALSE(st->first) << st->first.text();
  EXPECT_TRUE(st->second.exists());
  EXPECT_EQ(st->second.size, json.size());
  st.reset();
  conn_->file_stat("/nope", [&](Error e, RemoteStat s) { st.emplace(e, s); });
  ASSERT_TRUE(run_until(&loop_, [&] { return st.has_value(); }, 10000));
  ASSERT_FALSE(st->first);
  EXPECT_FALSE(st->second.exists());
  // The connection still works after the failures above.
  auto [e5, d5] = shell("echo still here");
  EXPECT_FALSE(e5);
  EXPECT_EQ(d5, "still here\n");
}

TEST_P(AdbConnection, RunsShellCommands) {
  peer_start();
  ASSERT_FALSE(connect());
  auto [e1, out1] = shell("echo hello world");
  ASSERT_FALSE(e1) << e1.text();
  EXPECT_EQ(out1, "hello world\n");

  // The pairing flow's service calls, with a value that needs quoting.
  std::string cmd = shell_join({"am", "startservice", "-n", "edu.cmu.sei.cloudlet.client/.ska.adb.InDataService",
                                "-e", "ssid", "my net's name", "-e", "cloudlet_name", "lab-1"});
  auto [e2, out2] = shell(cmd);
  ASSERT_FALSE(e2) << e2.text();
  EXPECT_EQ(out2, "Starting service: Intent { cmp=edu.cmu.sei.cloudlet.client/.ska.adb.InDataService (has extras) }\n");
  EXPECT_EQ(file_read(peer_->am_log_path()),
            "{\"cmd\":\"startservice\",\"component\":\"edu.cmu.sei.cloudlet.client/.ska.adb.InDataService\","
            "\"extras\":{\"ssid\":\"my net's name\",\"cloudlet_name\":\"lab-1\"}}\n");

  auto [e3, out3] = shell("no_such_tool");
  ASSERT_FALSE(e3);
  EXPECT_NE(out3.find("not found"), std::string::npos);

  auto [e4, out4] = shell("cat /sdcard/none", 10);
  EXPECT_EQ(e4.code, Errc::too_big) << e4.text();
}

TEST_P(AdbConnection, OfferedKeyAcceptedThenRemembered) {
  PeerOptions o;
  o.offer = Offer::accept_save;
  peer_start(o, /*trust=*/false);
  Error e = connect();
  ASSERT_FALSE(e) << e.text();
  EXPECT_TRUE(peer_->has_event("auth: signature rejected"));
  EXPECT_TRUE(peer_->has_event("auth: offered key accepted and saved"));
  EXPECT_EQ(file_read(peer_->keys_path()), key_->public_key() + "\n");
  conn_.reset();
  loop_settle(&loop_, 50);
  // Next time the signature is enough.
  ASSERT_FALSE(connect());
  EXPECT_TRUE(peer_->has_event("auth: signature accepted"));
}

TEST_P(AdbConnection, RefusedKeyGivesAClearError) {
  PeerOptions o;
  o.offer = Offer::deny;
  peer_start(o, /*trust=*/false);
  Error e = connect();
  EXPECT_EQ(e.code, Errc::auth_refused) << e.text();
  EXPECT_NE(e.message.find("refused our key"), std::string::npos) << e.message;
  EXPECT_FALSE(conn_->online());
  EXPECT_TRUE(peer_->has_event("auth: offered key denied"));
}

TEST_P(AdbConnection, UnansweredPromptTimesOut) {
  PeerOptions o;
  o.offer = Offer::ignore;
  peer_start(o, /*trust=*/false);
  ConnectionOptions co;
  co.auth_timeout_ms = 300;
  Error e = connect(co);
  EXPECT_EQ(e.code, Errc::timeout) << e.text();
  EXPECT_NE(e.message.find("Allow USB debugging"), std::string::npos) << e.message;
}

TEST_P(AdbConnection, SilentDeviceTimesOutInTheHandshake) {
  PeerOptions o;
  o.fault = Fault::stall_handshake;
  peer_start(o);
  ConnectionOptions co;
  co.handshake_timeout_ms = 300;
  Error e = connect(co);
  EXPECT_EQ(e.code, Errc::timeout) << e.text();
  EXPECT_NE(e.message.find("handshake"), std::string::npos) << e.message;
}

TEST_P(AdbConnection, DisconnectMidTransferFailsThePushAndClosesTheConnection) {
  PeerOptions o;
  o.fault = Fault::close_after;
  o.fault_bytes = 5 * kMiB;
  peer_start(o);
  ASSERT_FALSE(connect());
  std::string local = dir_ / "big";
  ASSERT_TRUE(file_make(local, 20 * kMiB, 3));
  PushRequest req;
  req.local_path = local;
  req.remote_path = "/sdcard/big";
  Error e = push(req);
  EXPECT_EQ(e.code, Errc::closed) << e.text();
  EXPECT_NE(e.message.find("push of " + local + " to /sdcard/big"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("of 20971520 bytes sent"), std::string::npos) << e.message;
  ASSERT_TRUE(run_until(&loop_, [&] { return closed_.has_value(); }, 5000));
  EXPECT_EQ(closed_->code, Errc::closed);
  EXPECT_FALSE(conn_->online());
  // Later operations fail at once, cleanly.
  auto [e2, out] = shell("echo x");
  EXPECT_EQ(e2.code, Errc::closed) << e2.text();
  // The device dropped its partial file.
  ASSERT_TRUE(run_until(&loop_, [&] { return access(device_file("/sdcard/big.peer-tmp").c_str(), F_OK) != 0; }, 5000));
  EXPECT_NE(access(device_file("/sdcard/big").c_str(), F_OK), 0);
}

TEST_P(AdbConnection, StalledPeerTimesOut) {
  PeerOptions o;
  o.fault = Fault::stall_after;
  o.fault_bytes = 2 * kMiB;
  peer_start(o);
  ConnectionOptions co;
  co.io_timeout_ms = 400;
  ASSERT_FALSE(connect(co));
  std::string local = dir_ / "big";
  ASSERT_TRUE(file_make(local, 16 * kMiB, 4));
  PushRequest req;
  req.local_path = local;
  req.remote_path = "/sdcard/big";
  double t0 = now_seconds();
  Error e = push(req, 10000);
  double took = now_seconds() - t0;
  EXPECT_EQ(e.code, Errc::timeout) << e.text();
  EXPECT_NE(e.message.find("stopped responding"), std::string::npos) << e.message;
  EXPECT_LT(took, 5.0);
  EXPECT_EQ(conn_->streams_active(), 0u);
  conn_->close();
  peer_->stop();
}

TEST_P(AdbConnection, BadMagicIsAProtocolError) {
  PeerOptions o;
  o.fault = Fault::bad_magic;
  peer_start(o);
  ASSERT_FALSE(connect());
  auto [e, out] = shell("echo hi");
  EXPECT_EQ(e.code, Errc::protocol) << e.text();
  EXPECT_NE(e.message.find("magic"), std::string::npos) << e.message;
  ASSERT_TRUE(run_until(&loop_, [&] { return closed_.has_value(); }, 5000));
  EXPECT_EQ(closed_->code, Errc::protocol);
}

TEST_P(AdbConnection, BadChecksumIsAProtocolErrorWithOldVersions) {
  PeerOptions o;
  o.version = kVersionMin;
  o.fault = Fault::bad_checksum;
  peer_start(o);
  ASSERT_FALSE(connect());
  EXPECT_EQ(conn_->device().version, kVersionMin);
  auto [e, out] = shell("echo hi");
  EXPECT_EQ(e.code, Errc::protocol) << e.text();
  EXPECT_NE(e.message.find("checksum"), std::string::npos) << e.message;
}

TEST_P(AdbConnection, OldVersionWithChecksumsAndSmallPayloadsStillPushes) {
  PeerOptions o;
  o.version = kVersionMin;
  o.max_payload = kMaxPayloadV1;
  peer_start(o);
  ASSERT_FALSE(connect());
  EXPECT_EQ(conn_->device().max_payload, kMaxPayloadV1);
  std::string local = dir_ / "f";
  ASSERT_TRUE(file_make(local, kMiB + 123, 9));
  PushRequest req;
  req.local_path = local;
  req.remote_path = "/sdcard/f";
  ASSERT_FALSE(push(req));
  EXPECT_TRUE(file_read(device_file("/sdcard/f")) == file_read(local));
  EXPECT_FALSE(peer_->has_event("bad checksum"));
  auto [e, out] = shell("cat /sdcard/f", 2 * kMiB);
  ASSERT_FALSE(e) << e.text();
  EXPECT_TRUE(out == file_read(local));
}

TEST_P(AdbConnection, OversizedLengthIsRefusedBeforeReadingIt) {
  PeerOptions o;
  o.fault = Fault::oversized;
  peer_start(o);
  ASSERT_FALSE(connect());
  auto [e, out] = shell("echo hi");
  EXPECT_EQ(e.code, Errc::protocol) << e.text();
  EXPECT_NE(e.message.find("2147483647 byte payload"), std::string::npos) << e.message;
}

TEST_P(AdbConnection, CloseCancelsPendingOperations) {
  peer_start();
  ASSERT_FALSE(connect());
  std::string local = dir_ / "big";
  ASSERT_TRUE(file_make(local, 8 * kMiB, 5));
  PushRequest req;
  req.local_path = local;
  req.remote_path = "/sdcard/big";
  std::optional<Error> r1, r2;
  conn_->file_push(req, [&](Error e) { r1 = e; });
  conn_->shell_run("echo x", 100, [&](Error e, std::string) { r2 = e; });
  conn_->close();
  EXPECT_FALSE(r1.has_value()) << "callbacks never run inside the caller's frame";
  ASSERT_TRUE(run_until(&loop_, [&] { return r1 && r2; }, 5000));
  EXPECT_EQ(r1->code, Errc::cancelled);
  EXPECT_EQ(r2->code, Errc::cancelled);
  EXPECT_FALSE(closed_.has_value()) << "on_close is for unexpected ends only";
}

TEST_P(AdbConnection, BadRequestsFailCleanly) {
  peer_start();
  ASSERT_FALSE(connect());
  PushRequest req;
  req.data = "x";
  req.remote_path = "relative/path";
  EXPECT_EQ(push(req).code, Errc::invalid);
  req.remote_path = "/sdcard/../etc/passwd";
  EXPECT_EQ(push(req).code, Errc::invalid);
  req.remote_path = "/sdcard/x";
  req.mode = 04755;
  EXPECT_EQ(push(req).code, Errc::invalid);
  req.mode = 0644;
  req.data.clear();
  req.local_path = dir_ / "does-not-exist";
  Error e = push(req);
  EXPECT_EQ(e.code, Errc::local_io) << e.text();
  EXPECT_NE(e.message.find("No such file"), std::string::npos) << e.message;
  // The device refuses (sync FAIL): here its path is a directory.
  ASSERT_EQ(run({"mkdir", "-p", peer_->fs_root() + "/sdcard/adir"}).status, 0);
  req.local_path.clear();
  req.data = "payload";
  req.remote_path = "/sdcard/adir";
  e = push(req);
  EXPECT_EQ(e.code, Errc::remote) << e.text();
  EXPECT_NE(e.message.find("the device refused it: rename failed: Is a directory"), std::string::npos) << e.message;
  auto [e2, out] = shell("");
  EXPECT_EQ(e2.code, Errc::invalid);
  // The connection is still usable.
  auto [e3, out3] = shell("echo ok");
  EXPECT_FALSE(e3);
}

TEST_P(AdbConnection, ConnectionRefusedIsUnavailable) {
  peer_start();
  uint16_t port = peer_->port();
  peer_.reset();  // nothing listens there any more
  std::optional<Error> err;
  TcpConnector c(*reactor_, "127.0.0.1:" + std::to_string(port), 2000,
                 [&](Error e, std::unique_ptr<Transport>) { err = e; });
  ASSERT_TRUE(run_until(&loop_, [&] { return err.has_value(); }, 5000));
  EXPECT_EQ(err->code, Errc::unavailable) << err->text();
  std::optional<Error> err2;
  TcpConnector c2(*reactor_, "not a host:port", 2000, [&](Error e, std::unique_ptr<Transport>) { err2 = e; });
  ASSERT_TRUE(run_until(&loop_, [&] { return err2.has_value(); }, 5000));
  EXPECT_EQ(err2->code, Errc::invalid) << err2->text();
}

TEST_P(AdbConnection, OperationsBeforeTheHandshakeAreRefused) {
  peer_start();
  std::optional<Error> err;
  std::unique_ptr<Transport> transport;
  TcpConnector c(*reactor_, addr(), 2000, [&](Error e, std::unique_ptr<Transport> t) {
    err = e;
    transport = std::move(t);
  });
  ASSERT_TRUE(run_until(&loop_, [&] { return err.has_value(); }, 5000));
  ASSERT_FALSE(*err);
  conn_ = Connection::create(*reactor_, std::move(transport), key_);
  auto [e, out] = shell("echo x");
  EXPECT_EQ(e.code, Errc::invalid) << e.text();
}

INSTANTIATE_TEST_SUITE_P(Reactors, AdbConnection, ::testing::Values("uv", "host"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
