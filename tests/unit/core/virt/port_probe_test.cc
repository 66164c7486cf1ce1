// The readiness probe against local servers that behave like the cases QEMU's port forwarding produces: the guest
// accepted (answers or closes cleanly), refused (reset), not up yet (silence), nothing listening (refused).
#include "virt/port_probe.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "test_util.h"

using namespace cloudlet;
using namespace cloudlet::virt;

namespace {

enum class Mode { answer, close_clean, reset, silent };

// A loopback listener on a free port; a thread treats each connection according to mode (changeable).
class Server {
 public:
  explicit Server(Mode m, bool accept = true) : mode_(m) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd_, 16);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (accept) thread_ = std::thread([this] { loop(); });
  }
  ~Server() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    close(fd_);
    for (int c : held_) close(c);
  }
  uint16_t port() const { return port_; }
  void set_mode(Mode m) { mode_ = m; }
  int accepted() const { return accepted_; }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) != 1) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      accepted_++;
      switch (mode_.load()) {
        case Mode::answer: {
          char buf[16];
          recv(c, buf, sizeof buf, 0);
          send(c, "hello\n", 6, MSG_NOSIGNAL);
          close(c);
          break;
        }
        case Mode::close_clean: {
          char buf[16];
          recv(c, buf, sizeof buf, 0);  // reads the probe's bytes: a clean close follows
          close(c);
          break;
        }
        case Mode::reset: {
          // Closing with the probe's bytes unread (and linger 0) sends a reset, as QEMU does for a refused guest.
          usleep(2000);
          linger l{1, 0};
          setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
          close(c);
          break;
        }
        case Mode::silent:
          held_.push_back(c);  // never answers, never closes
          break;
      }
    }
  }
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<Mode> mode_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;
  std::thread thread_;
};

struct Outcome {
  bool done = false, ready = false;
  std::string detail;
  int64_t ms = 0;
};

std::shared_ptr<PortProbe> probe(Loop& loop, uint16_t port, uint64_t timeout_ms, Outcome* out,
                                 uint64_t attempt_ms = 200) {
  PortProbeOptions o;
  o.port = port;
  o.timeout_ms = timeout_ms;
  o.attempt_ms = attempt_ms;
  o.retry_ms = 10;
  int64_t t0 = vt::mono_ms();
  return PortProbe::start(loop, o, [out, t0](bool ready, const std::string& detail) {
    out->done = true;
    out->ready = ready;
    out->detail = detail;
    out->ms = vt::mono_ms() - t0;
  });
}

TEST(PortProbe, AnswerOrCleanCloseIsReady) {
  Loop loop;
  for (Mode m : {Mode::answer, Mode::close_clean}) {
    Server s(m);
    Outcome o;
    auto p = probe(loop, s.port(), 5000, &o);
    ASSERT_TRUE(vt::run_until(loop, [&] { return o.done; }, 10000));
    EXPECT_TRUE(o.ready) << o.detail;
    EXPECT_LT(o.ms, 1000);
  }
  EXPECT_EQ(loop.close(), 0);
}

TEST(PortProbe, ResetSilenceAndRefusalAreNotReady) {
  Loop loop;
  {
    Server s(Mode::reset);
    Outcome o;
    auto p = probe(loop, s.port(), 600, &o);
    ASSERT_TRUE(vt::run_until(loop, [&] { return o.done; }, 5000));
    EXPECT_FALSE(o.ready);
    EXPECT_GE(s.accepted(), 2) << "retries after a reset";
    EXPECT_NE(o.detail.find("did not answer"), std::string::npos) << o.detail;
  }
  {
    Server s(Mode::silent);
    Outcome o;
    auto p = probe(loop, s.port(), 700, &o);
    ASSERT_TRUE(vt::run_until(loop, [&] { return o.done; }, 5000));
    EXPECT_FALSE(o.ready);
    EXPECT_NE(o.detail.find("no answer"), std::string::npos) << o.detail;
  }
  {
    uint16_t port;
    { Server gone(Mode::answer, false); port = gone.port(); }
    Outcome o;
    auto p = probe(loop, port, 300, &o);
    ASSERT_TRUE(vt::run_until(loop, [&] { return o.done; }, 5000));
    EXPECT_FALSE(o.ready);
    EXPECT_NE(o.detail.find("connect"), std::string::npos) << o.detail;
  }
  EXPECT_EQ(loop.close(), 0);
}

// The guest's service comes up while the probe runs: refused first, then answered.
TEST(PortProbe, BecomesReadyWhenTheServiceComesUp) {
  Loop loop;
  Server s(Mode::reset);
  Outcome o;
  auto p = probe(loop, s.port(), 10000, &o);
  vt::pump(loop, 200);
  EXPECT_FALSE(o.done);
  s.set_mode(Mode::answer);
  ASSERT_TRUE(vt::run_until(loop, [&] { return o.done; }, 10000));
  EXPECT_TRUE(o.ready) << o.detail;
  EXPECT_EQ(loop.close(), 0);
}

TEST(PortProbe, CancelMeansNoCallback) {
  Loop loop;
  Server s(Mode::silent);
  Outcome o;
  auto p = probe(loop, s.port(), 10000, &o);
  vt::pump(loop, 50);
  p->cancel();
  p.reset();
  vt::pump(loop, 100);
  EXPECT_FALSE(o.done);
  // Dropping the last reference cancels too.
  Outcome o2;
  { auto p2 = probe(loop, s.port(), 10000, &o2); }
  vt::pump(loop, 100);
  EXPECT_FALSE(o2.done);
  EXPECT_EQ(loop.close(), 0);
}

TEST(PortProbe, AddressForWildcards) {
  EXPECT_EQ(probe_address_for("0.0.0.0"), "127.0.0.1");
  EXPECT_EQ(probe_address_for("::"), "::1");
  EXPECT_EQ(probe_address_for("192.168.1.2"), "192.168.1.2");
}

}  // namespace
