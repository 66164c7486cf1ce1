// Measures the store on this machine and prints the numbers (lines starting with "PERF"). The assertions are
// loose bounds that catch a broken design (a loop that waits for fsync), not a slow disk.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "loop/loop.h"
#include "store/store.h"
#include "store_test_util.h"

using cloudlet::Loop;
using cloudlet::Store;
using namespace cloudlet::test;

namespace {

// Context switches of the calling thread: voluntary ones mean it slept (a contended mutex, I/O), involuntary
// ones that the scheduler preempted it.
std::pair<long, long> context_switches() {
  rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return {ru.ru_nvcsw, ru.ru_nivcsw};
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())));
  return v[i];
}

class StorePerf : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    store = Store::open(loop, {.dir = dir.sub("db")}, &err);
    ASSERT_TRUE(store) << err;
  }
  void TearDown() override { store->close(); }
  TempDir dir;
  Loop loop;
  std::unique_ptr<Store> store;
  const std::string doc = "{\"name\":\"instance\",\"state\":\"running\",\"port\":5900,\"pad\":\"" +
                          std::string(160, 'x') + "\"}";
};

// Time from commit() to the write being readable on the loop: commit + get, no disk involved.
TEST_F(StorePerf, CommitToVisibleLatency) {
  constexpr int kN = 20000;
  std::vector<double> visible, read_overlay, read_disk;
  visible.reserve(kN);
  int durable = 0;
  long slept = 0, preempted = 0;
  for (int i = 0; i < kN; i++) {
    std::string key = "i" + std::to_string(i), out;
    auto cs0 = context_switches();
    double t0 = now_us();
    auto t = store->begin();
    ASSERT_EQ(t->put("instances", key, doc), CL_OK);
    ASSERT_EQ(store->commit(std::move(t), [&](cl_status_t st) { durable += st == CL_OK; }), CL_OK);
    ASSERT_EQ(store->get("instances", key, &out), CL_OK);
    double t1 = now_us();
    auto cs1 = context_switches();
    slept += cs1.first - cs0.first;
    preempted += cs1.second - cs0.second;
    visible.push_back(t1 - t0);
    ASSERT_EQ(out, doc);
    if (i % 64 == 0) pump(loop);  // settle what the writer finished meanwhile
  }
  ASSERT_TRUE(run_until(loop, [&] { return durable == kN; }));
  // Reads: from the overlay (a pending write) and from LMDB.
  for (int i = 0; i < kN; i += 2) {
    std::string out;
    double t0 = now_us();
    ASSERT_EQ(store->get("instances", "i" + std::to_string(i), &out), CL_OK);
    read_disk.push_back(now_us() - t0);
  }
  {
    auto t = store->begin();
    for (int i = 0; i < 1000; i++) ASSERT_EQ(t->put("pending", std::to_string(i), doc), CL_OK);
    ASSERT_EQ(store->commit(std::move(t), nullptr), CL_OK);
    for (int i = 0; i < 1000; i++) {
      std::string out;
      double t0 = now_us();
      ASSERT_EQ(store->get("pending", std::to_string(i), &out), CL_OK);
      read_overlay.push_back(now_us() - t0);
    }
  }
  std::printf("PERF commit_to_visible_us p50=%.2f p99=%.2f p99.9=%.2f max=%.2f (n=%d)\n", pct(visible, 50),
              pct(visible, 99), pct(visible, 99.9), pct(visible, 100), kN);
  std::printf("PERF loop thread during the %d commit+get: slept %ld times, preempted %ld times\n", kN, slept,
              preempted);
  std::printf("PERF get_from_lmdb_us p50=%.2f p99=%.2f\n", pct(read_disk, 50), pct(read_disk, 99));
  std::printf("PERF get_from_overlay_us p50=%.2f p99=%.2f\n", pct(read_overlay, 50), pct(read_overlay, 99));
  // Microseconds, not milliseconds: the loop never waits for the disk.
  EXPECT_LT(pct(visible, 50), 500.0);
  EXPECT_LT(pct(read_disk, 50), 200.0);
}

// Batches committed as fast as the loop can, with at most `backlog` not yet durable: throughput, and the latency
// from commit to durable (mostly queueing behind the backlog when it is deep).
void run_throughput(Loop& loop, Store& store, const std::string& doc, size_t backlog, const char* name) {
  constexpr int kN = 30000;
  std::vector<double> committed_at(kN), latency;
  latency.reserve(kN);
  int durable = 0, next = 0;
  double start = now_us();
  while (next < kN) {
    while (next < kN && store.pending() < backlog) {
      auto t = store.begin();
      ASSERT_EQ(t->put(name, "j" + std::to_string(next), doc), CL_OK);
      const int i = next++;
      committed_at[i] = now_us();
      ASSERT_EQ(store.commit(std::move(t),
                             [&, i](cl_status_t st) {
                               EXPECT_EQ(st, CL_OK);
                               latency.push_back(now_us() - committed_at[i]);
                               durable++;
                             }),
                CL_OK);
    }
    pump(loop, 1000);  // the backlog is full: wait for the writer to report
  }
  ASSERT_TRUE(run_until(loop, [&] { return durable == kN; }));
  double secs = (now_us() - start) / 1e6;
  std::printf("PERF %s backlog=%zu: %.0f batches/s (%d one-document batches in %.2f s); commit-to-durable ms "
              "p50=%.2f p99=%.2f\n",
              name, backlog, kN / secs, kN, secs, pct(latency, 50) / 1000, pct(latency, 99) / 1000);
  EXPECT_GT(kN / secs, 200.0);
}

TEST_F(StorePerf, ThroughputDeepBacklog) { run_throughput(loop, *store, doc, 4096, "deep"); }
TEST_F(StorePerf, ThroughputShallowBacklog) { run_throughput(loop, *store, doc, 32, "shallow"); }

// One batch at a time (the next is committed when the previous is durable): the latency of one fdatasync round.
TEST_F(StorePerf, DurableLatencyIdle) {
  constexpr int kN = 300;
  std::vector<double> latency;
  for (int i = 0; i < kN; i++) {
    auto t = store->begin();
    ASSERT_EQ(t->put("single", std::to_string(i), doc), CL_OK);
    double t0 = now_us();
    bool done = false;
    ASSERT_EQ(store->commit(std::move(t),
                            [&](cl_status_t st) {
                              EXPECT_EQ(st, CL_OK);
                              latency.push_back(now_us() - t0);
                              done = true;
                            }),
              CL_OK);
    ASSERT_TRUE(run_until(loop, [&] { return done; }));
  }
  std::printf("PERF durable_latency_idle_ms p50=%.2f p99=%.2f (n=%d)\n", pct(latency, 50) / 1000,
              pct(latency, 99) / 1000, kN);
}

}  // namespace
