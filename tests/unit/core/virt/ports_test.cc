#include "virt/ports.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "test_util.h"

using namespace cloudlet::virt;

namespace {

// A listening socket on 127.0.0.1:port (a port some other program holds).
int hold(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 1) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The first port of `count` consecutive ports that nobody listens on and that the kernel never hands out as
// ephemeral ports (outside net.ipv4.ip_local_port_range: fixed ports inside it get taken by outgoing connections
// after heavy loopback traffic), picked at random so that concurrent test runs rarely meet. 0 if none is found.
uint16_t port_block(uint16_t count) {
  int lo = 32768, hi = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> lo >> hi;
  // Below the range (above the registered services most hosts run) or above it.
  std::vector<std::pair<int, int>> spans;  // first ports that fit
  if (lo - count >= 10000) spans.emplace_back(10000, lo - count);
  if (hi + 1 <= 65536 - count) spans.emplace_back(hi + 1, 65536 - count);
  if (spans.empty()) return 0;
  std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 200; attempt++) {
    auto [first, last] = spans[rng() % spans.size()];
    int start = std::uniform_int_distribution<int>(first, last)(rng);
    bool free = true;
    for (int p = start; p < start + count && free; p++) {
      free = PortAllocator::bind_test("127.0.0.1", static_cast<uint16_t>(p));
    }
    if (free) return static_cast<uint16_t>(start);
  }
  return 0;
}

}  // namespace

TEST(Ports, BlocksAreOutsideTheEphemeralRange) {
  int lo = 32768, hi = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> lo >> hi;
  for (int i = 0; i < 20; i++) {
    uint16_t b = port_block(200);
    ASSERT_NE(b, 0);
    EXPECT_TRUE(b + 199 < lo || b > hi) << b << " in " << lo << "-" << hi;
  }
}

TEST(Ports, ReservesReleasesAndSkipsBusyPorts) {
  const uint16_t b = port_block(10);
  ASSERT_NE(b, 0);
  PortAllocator pa("127.0.0.1", b, b + 9);
  ASSERT_TRUE(vt::ok(pa.status()));
  int busy = hold(b);
  ASSERT_GE(busy, 0);
  std::set<uint16_t> got;
  for (int i = 0; i < 9; i++) {
    uint16_t p = 0;
    ASSERT_TRUE(vt::ok(pa.reserve(&p))) << i;
    EXPECT_NE(p, b);  // held by someone else
    EXPECT_TRUE(got.insert(p).second);
  }
  uint16_t none = 0;
  EXPECT_TRUE(vt::fails(pa.reserve(&none), CL_EBUSY, "no free port"));
  EXPECT_EQ(none, 0);
  EXPECT_TRUE(pa.release(b + 5));
  EXPECT_FALSE(pa.release(b + 5));
  uint16_t again = 0;
  ASSERT_TRUE(vt::ok(pa.reserve(&again)));
  EXPECT_EQ(again, b + 5);
  close(busy);
  EXPECT_EQ(pa.reserved_count(), 9u);
}

TEST(Ports, ReserveManyIsAllOrNothing) {
  const uint16_t b = port_block(4);
  ASSERT_NE(b, 0);
  PortAllocator pa("127.0.0.1", b, b + 3);
  std::vector<uint16_t> two;
  ASSERT_TRUE(vt::ok(pa.reserve_many(2, &two)));
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NE(two[0], two[1]);
  std::vector<uint16_t> three;
  EXPECT_TRUE(vt::fails(pa.reserve_many(3, &three), CL_EBUSY));
  EXPECT_TRUE(three.empty());
  EXPECT_EQ(pa.reserved_count(), 2u);  // the failed attempt kept nothing
  EXPECT_TRUE(vt::ok(pa.reserve_many(2, &two)));
}

TEST(Ports, ExactReservationForReattach) {
  const uint16_t b = port_block(10);
  ASSERT_NE(b, 0);
  PortAllocator pa("127.0.0.1", b, b + 9);
  EXPECT_TRUE(pa.reserve_exact(b + 3));
  EXPECT_FALSE(pa.reserve_exact(b + 3));
  EXPECT_FALSE(pa.reserve_exact(b + 10));  // outside the range
  for (int i = 0; i < 9; i++) {
    uint16_t p = 0;
    ASSERT_TRUE(vt::ok(pa.reserve(&p)));
    EXPECT_NE(p, b + 3);
  }
}

TEST(Ports, InvalidConfiguration) {
  EXPECT_FALSE(PortAllocator("localhost", 1000, 2000).valid());
  EXPECT_FALSE(PortAllocator("127.0.0.1", 2000, 1000).valid());
  EXPECT_FALSE(PortAllocator("127.0.0.1", 0, 10).valid());
  PortAllocator bad("nope", 1, 2);
  EXPECT_TRUE(vt::fails(bad.status(), CL_EINVAL, "not a numeric IP address"));
  uint16_t p = 0;
  EXPECT_TRUE(vt::fails(bad.reserve(&p), CL_EUNAVAIL, "not a numeric IP address"));
  EXPECT_TRUE(PortAllocator("::1", 20000, 20001).valid());  // nothing is bound: any range will do
}

// Many threads reserving at once never get the same port; all ports come back on release.
TEST(Ports, ConcurrentReservationsNeverCollide) {
  constexpr int kThreads = 8, kEach = 25;
  const uint16_t b = port_block(kThreads * kEach);
  ASSERT_NE(b, 0);
  PortAllocator pa("127.0.0.1", b, b + kThreads * kEach - 1);
  std::mutex mu;
  std::multiset<uint16_t> all;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++) {
    ts.emplace_back([&] {
      std::vector<uint16_t> mine;
      for (int i = 0; i < kEach; i++) {
        uint16_t p = 0;
        if (pa.reserve(&p).ok()) mine.push_back(p);
      }
      std::lock_guard<std::mutex> lock(mu);
      all.insert(mine.begin(), mine.end());
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  for (auto p : all) EXPECT_EQ(all.count(p), 1u) << p;
  // Release from several threads while others reserve again.
  std::vector<uint16_t> list(all.begin(), all.end());
  ts.clear();
  for (int t = 0; t < kThreads; t++) {
    ts.emplace_back([&, t] {
      for (int i = t; i < static_cast<int>(list.size()); i += kThreads) EXPECT_TRUE(pa.release(list[i]));
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(pa.reserved_count(), 0u);
}
