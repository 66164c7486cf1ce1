// The ADB host (plugins/usb_pairing/adb): each input is what a device sends on one connection. The real TCP
// transport reads it from a socketpair (header framing, length and magic checks, payload assembly) and the real
// connection speaks the protocol above it: CNXN banner parsing, AUTH (signing on a worker), stream OKAY/WRTE/CLSE,
// and, once the device is online, the replies of a stat, a pull and a push (sync protocol) and a shell command,
// which the host starts at once so that streams 1-4 exist for the input's messages to answer.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "adb/connection.h"
#include "adb/host_key.h"
#include "adb/reactor_uv.h"
#include "adb/tcp_transport.h"

using namespace cloudlet::adb;

namespace {

using Clock = std::chrono::steady_clock;

struct Harness {
  uv_loop_t loop;
  std::unique_ptr<UvReactor> reactor;
  std::shared_ptr<const HostKey> key;

  Harness() {
    uv_loop_init(&loop);
    reactor = std::make_unique<UvReactor>(&loop, CL_LOG_ERROR, [](int, const std::string&) {});
    char tmpl[] = "/tmp/cl-fuzz-adb-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    if (!dir) abort();
    Error err;
    key = HostKey::load_or_create(std::string(dir) + "/adb", "cloudletd@fuzz", &err);
    if (!key) {
      fprintf(stderr, "adb_fuzz: no host key\n");
      abort();
    }
  }

  void exchange(const uint8_t* data, size_t size) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) abort();
    ConnectionOptions o;
    o.handshake_timeout_ms = 100;
    o.auth_timeout_ms = 100;
    o.io_timeout_ms = 100;
    auto conn = Connection::create(*reactor, std::make_unique<TcpTransport>(*reactor, sv[0], "fuzz"), key, o);
    int pending = 1;  // callbacks still to come: start, then the operations
    auto done = [&pending](Error) { pending--; };
    conn->start([&, done](Error e) {
      done(e);
      if (e) return;
      pending += 4;
      conn->file_stat("/sdcard/x", [done](Error e2, RemoteStat) { done(e2); });
      conn->file_pull("/sdcard/y", 64 * 1024, [done](Error e2, std::string) { done(e2); });
      PushRequest push;
      push.data = "payload";
      push.remote_path = "/sdcard/z";
      conn->file_push(std::move(push), done);
      conn->shell_run("echo hi", 64 * 1024, [done](Error e2, std::string) { done(e2); });
    });
    size_t sent = 0;
    bool half_closed = false;
    char sink[65536];
    auto start = Clock::now();
    while (pending > 0) {
      uv_run(&loop, UV_RUN_NOWAIT);
      if (sent < size) {
        ssize_t n = send(sv[1], data + sent, size - sent, MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<size_t>(n);
        if (n < 0 && errno != EAGAIN) sent = size;
      } else if (!half_closed) {
        shutdown(sv[1], SHUT_WR);  // the device is done talking: pending operations must fail, not hang
        half_closed = true;
      }
      while (read(sv[1], sink, sizeof sink) > 0) {
      }
      if (std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count() > 5000) {
        fprintf(stderr, "adb_fuzz: %d callback(s) never came\n", pending);
        abort();
      }
      if (pending > 0) usleep(100);
    }
    conn->close();
    conn.reset();
    close(sv[1]);
    for (int i = 0; i < 8; i++) uv_run(&loop, UV_RUN_NOWAIT);
    // A signature may still be computing on a worker (the connection failed first). Wait for it: a worker
    // still inside OpenSSL when the fuzzer exits crashes in OpenSSL's exit-time cleanup.
    auto drain = Clock::now();
    while (reactor->pending_work() > 0) {
      uv_run(&loop, UV_RUN_ONCE);
      if (std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - drain).count() > 5000) {
        fprintf(stderr, "adb_fuzz: a work item never completed\n");
        abort();
      }
    }
  }
};

Harness& harness() {
  static Harness* h = new Harness;
  return *h;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);  // as in cloudletd (core/loop): a peer that left is an error code, not a signal
  harness();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The header codec directly: decode/encode is a round trip, and the checks never crash.
  if (size >= kHeaderSize) {
    Header h = header_decode(data);
    uint8_t again[kHeaderSize];
    header_encode(h, again);
    for (size_t i = 0; i < kHeaderSize; i++) {
      if (again[i] != data[i]) abort();
    }
    header_check(h, kMaxPayload);
    command_name(h.command);
  }
  harness().exchange(data, size);
  return 0;
}
