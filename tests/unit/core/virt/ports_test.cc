#include "virt/ports.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <thread>

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

}  // namespace

TEST(Ports, ReservesReleasesAndSkipsBusyPorts) {
  PortAllocator pa("127.0.0.1", 45100, 45109);
  ASSERT_TRUE(pa.valid()) << pa.error();
  int busy = hold(45100);
  ASSERT_GE(busy, 0);
  std::set<uint16_t> got;
  for (int i = 0; i < 9; i++) {
    auto p = pa.reserve();
    ASSERT_TRUE(p) << i;
    EXPECT_NE(*p, 45100);  // held by someone else
    EXPECT_TRUE(got.insert(*p).second);
  }
  std::string err;
  EXPECT_FALSE(pa.reserve(&err));
  EXPECT_NE(err.find("no free port"), std::string::npos) << err;
  EXPECT_TRUE(pa.release(45105));
  EXPECT_FALSE(pa.release(45105));
  auto again = pa.reserve();
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 45105);
  close(busy);
  EXPECT_EQ(pa.reserved_count(), 9u);
}

TEST(Ports, ReserveManyIsAllOrNothing) {
  PortAllocator pa("127.0.0.1", 45120, 45123);
  auto two = pa.reserve_many(2);
  ASSERT_TRUE(two);
  EXPECT_NE((*two)[0], (*two)[1]);
  EXPECT_FALSE(pa.reserve_many(3));
  EXPECT_EQ(pa.reserved_count(), 2u);  // the failed attempt kept nothing
  EXPECT_TRUE(pa.reserve_many(2));
}

TEST(Ports, ExactReservationForReattach) {
  PortAllocator pa("127.0.0.1", 45130, 45139);
  EXPECT_TRUE(pa.reserve_exact(45133));
  EXPECT_FALSE(pa.reserve_exact(45133));
  EXPECT_FALSE(pa.reserve_exact(45140));  // outside the range
  for (int i = 0; i < 9; i++) {
    auto p = pa.reserve();
    ASSERT_TRUE(p);
    EXPECT_NE(*p, 45133);
  }
}

TEST(Ports, InvalidConfiguration) {
  EXPECT_FALSE(PortAllocator("localhost", 1000, 2000).valid());
  EXPECT_FALSE(PortAllocator("127.0.0.1", 2000, 1000).valid());
  EXPECT_FALSE(PortAllocator("127.0.0.1", 0, 10).valid());
  PortAllocator bad("nope", 1, 2);
  std::string err;
  EXPECT_FALSE(bad.reserve(&err));
  EXPECT_NE(err, "");
  EXPECT_TRUE(PortAllocator("::1", 45150, 45151).valid());
}

// Many threads reserving at once never get the same port; all ports come back on release.
TEST(Ports, ConcurrentReservationsNeverCollide) {
  constexpr int kThreads = 8, kEach = 25;
  PortAllocator pa("127.0.0.1", 45200, 45200 + kThreads * kEach - 1);
  std::mutex mu;
  std::multiset<uint16_t> all;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++) {
    ts.emplace_back([&] {
      std::vector<uint16_t> mine;
      for (int i = 0; i < kEach; i++) {
        auto p = pa.reserve();
        if (p) mine.push_back(*p);
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
