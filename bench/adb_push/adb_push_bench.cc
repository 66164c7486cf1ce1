// adb_push_bench: how fast the ADB host library pushes a file compared with the real `adb push`, in the same
// run, against the same device-side test peer, inside a network namespace that has only loopback.
//
//   adb_push_bench [--runs N] [--size-mb M] [--peer-max-payload BYTES]
//
// Each run pushes the same M MB file once with the library (wall time including TCP connect, CNXN/AUTH with
// an RSA signature, the push and the close) and once with `adb -s 127.0.0.1:5555 push` (wall time of the adb
// client process; its server is already connected). The order alternates between runs. Prints the median of
// each, and ours/adb; exits 1 when the ratio is above 1.0. Needs root (ip netns) and the adb package.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "adb/connection.h"
#include "adb/host_key.h"
#include "adb/reactor_uv.h"
#include "adb/tcp_transport.h"
#include "peer/adb_peer.h"
#include "support/test_support.h"

using namespace cloudlet::adb;
using namespace cloudlet::adb::test;

namespace {

constexpr const char* kSerial = "127.0.0.1:5555";

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Bench {
  uv_loop_t loop;
  std::unique_ptr<UvReactor> reactor;
  std::shared_ptr<const HostKey> key;
  std::string home, tmpdir;

  RunResult adb(std::vector<std::string> args, uint64_t timeout_ms = 120000) {
    std::vector<std::string> argv = {"adb", "-P", "5037"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, {{"HOME", home}, {"TMPDIR", tmpdir}, {"LOGNAME", "bench"}, {"HOSTNAME", "netns"}}, timeout_ms);
  }

  // Connect, authenticate, push, close. Returns wall seconds, or a negative value on failure.
  double ours_push(const std::string& local, const std::string& remote, bool reuse_only,
                   std::shared_ptr<Connection>* keep) {
    double t0 = now_seconds();
    std::shared_ptr<Connection> conn = keep ? *keep : nullptr;
    if (!conn) {
      std::optional<Error> cerr;
      std::unique_ptr<Transport> transport;
      TcpConnector c(*reactor, kSerial, 5000, [&](Error e, std::unique_ptr<Transport> t) {
        cerr = e;
        transport = std::move(t);
      });
      if (!run_until(&loop, [&] { return cerr.has_value(); }, 10000) || *cerr) {
        std::fprintf(stderr, "connect failed: %s\n", cerr ? cerr->text().c_str() : "timeout");
        return -1;
      }
      conn = Connection::create(*reactor, std::move(transport), key);
      std::optional<Error> herr;
      conn->start([&](Error e) { herr = e; });
      if (!run_until(&loop, [&] { return herr.has_value(); }, 10000) || *herr) {
        std::fprintf(stderr, "handshake failed: %s\n", herr ? herr->text().c_str() : "timeout");
        return -1;
      }
    }
    if (reuse_only) t0 = now_seconds();
    PushRequest req;
    req.local_path = local;
    req.remote_path = remote;
    req.mode = 0644;
    std::optional<Error> perr;
    conn->file_push(req, [&](Error e) { perr = e; });
    if (!run_until(&loop, [&] { return perr.has_value(); }, 120000) || *perr) {
      std::fprintf(stderr, "push failed: %s\n", perr ? perr->text().c_str() : "timeout");
      return -1;
    }
    double t1 = now_seconds();
    if (keep) *keep = conn;
    else conn->close();
    return t1 - t0;
  }
};

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  size_t size_mb = 50;
  uint32_t peer_max = 256 * 1024;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--size-mb" && i + 1 < argc) size_mb = size_t(std::atol(argv[++i]));
    else if (a == "--peer-max-payload" && i + 1 < argc) peer_max = uint32_t(std::atol(argv[++i]));
    else {
      std::fprintf(stderr, "usage: adb_push_bench [--runs N] [--size-mb M] [--peer-max-payload BYTES]\n");
      return 2;
    }
  }
  if (runs < 5) runs = 5;
  if (geteuid() != 0 || access("/usr/bin/adb", X_OK) != 0) {
    std::fprintf(stderr, "adb_push_bench needs root (network namespaces) and /usr/bin/adb\n");
    return 2;
  }

  Netns ns;
  if (!ns.ok() || !ns.enter()) {
    std::fprintf(stderr, "cannot set up the network namespace: %s\n", ns.error().c_str());
    return 2;
  }
  int rc = 0;
  {
    TempDir tmp("adbbench");
    Bench b;
    b.home = tmp / "home";
    b.tmpdir = tmp.path();
    mkdir(b.home.c_str(), 0700);
    std::string src = tmp / "payload.bin";
    if (!file_make(src, size_mb * 1024 * 1024, 2024)) {
      std::fprintf(stderr, "cannot write %s\n", src.c_str());
      return 2;
    }
    Error err;
    b.key = HostKey::load_or_create(tmp / "keys", "cloudletd@bench", &err);
    if (!b.key) {
      std::fprintf(stderr, "host key: %s\n", err.text().c_str());
      return 2;
    }

    // The peer runs in this process, on threads created inside the namespace.
    peer::PeerOptions po;
    po.dir = tmp / "peer";
    po.offer = peer::Offer::accept_save;
    po.max_payload = peer_max;
    peer::Peer p(po);
    std::string perr;
    if (!p.listen("127.0.0.1", 5555, &perr)) {
      std::fprintf(stderr, "peer: %s\n", perr.c_str());
      return 2;
    }
    file_write(p.keys_path(), b.key->public_key() + "\n");

    uv_loop_init(&b.loop);
    b.reactor = std::make_unique<UvReactor>(&b.loop);

    b.adb({"start-server"}, 30000);
    b.adb({"connect", kSerial}, 30000);
    bool online = false;
    for (int i = 0; i < 100 && !online; i++) {
      online = b.adb({"devices"}, 10000).out.find(std::string(kSerial) + "\tdevice") != std::string::npos;
      if (!online) usleep(100 * 1000);
    }
    if (!online) {
      std::fprintf(stderr, "adb did not see the peer as a device\n");
      rc = 2;
    }

    std::vector<double> ours, adb_wall, reuse;
    std::string remote = "/sdcard/bench/payload.bin";
    std::string on_peer = p.fs_root() + remote;
    std::string expected = file_read(src);
    // One untimed round each: page cache, adb server warm-up, first-key generation.
    if (rc == 0 && (b.ours_push(src, remote, false, nullptr) < 0 ||
                    b.adb({"-s", kSerial, "push", src, remote}).status != 0)) {
      std::fprintf(stderr, "warm-up failed\n");
      rc = 2;
    }
    for (int i = 0; i < runs && rc == 0; i++) {
      for (int k = 0; k < 2 && rc == 0; k++) {
        unlink(on_peer.c_str());
        bool ours_turn = (i + k) % 2 == 0;
        if (ours_turn) {
          double t = b.ours_push(src, remote, false, nullptr);
          if (t < 0) rc = 2;
          ours.push_back(t);
        } else {
          double t0 = now_seconds();
          RunResult r = b.adb({"-s", kSerial, "push", src, remote});
          double t = now_seconds() - t0;
          if (r.status != 0) {
            std::fprintf(stderr, "adb push failed: %s%s\n", r.out.c_str(), r.err.c_str());
            rc = 2;
          }
          adb_wall.push_back(t);
        }
        if (rc == 0 && file_read(on_peer) != expected) {
          std::fprintf(stderr, "the pushed file differs (%s)\n", ours_turn ? "ours" : "adb");
          rc = 2;
        }
      }
    }
    // For information: pushes over one connection that stays open (no connect or handshake in the time).
    std::shared_ptr<Connection> kept;
    for (int i = 0; i < runs && rc == 0; i++) {
      unlink(on_peer.c_str());
      double t = b.ours_push(src, remote, true, &kept);
      if (t < 0) rc = 2;
      reuse.push_back(t);
    }
    if (kept) kept->close();
    kept.reset();

    if (rc == 0) {
      double mo = median(ours), ma = median(adb_wall), mr = median(reuse);
      double mb = double(size_mb);
      std::printf("adb_push_bench: %zu MB file, %d runs each, peer max payload %u, netns %s\n", size_mb, runs, peer_max,
                  ns.name().c_str());
      std::printf("  ours (connect+auth+push+close)   median %.1f ms  (%.0f MB/s)\n", mo * 1000, mb / mo);
      std::printf("  adb push (client process wall)   median %.1f ms  (%.0f MB/s)\n", ma * 1000, mb / ma);
      std::printf("  ours, push on an open connection median %.1f ms  (%.0f MB/s)\n", mr * 1000, mb / mr);
      std::printf("  ratio ours/adb = %.3f  (acceptance: <= 1.0) %s\n", mo / ma, mo / ma <= 1.0 ? "PASS" : "FAIL");
      std::printf("  samples ours:");
      for (double t : ours) std::printf(" %.1f", t * 1000);
      std::printf("\n  samples adb: ");
      for (double t : adb_wall) std::printf(" %.1f", t * 1000);
      std::printf("\n");
      if (mo / ma > 1.0) rc = 1;
    }

    b.adb({"kill-server"}, 10000);
    b.reactor.reset();
    loop_drain(&b.loop);
    uv_loop_close(&b.loop);
    p.stop();
  }
  ns.leave();
  // ~Netns kills anything left in the namespace (an adb server that did not exit) and deletes it.
  return rc;
}
