#include "loop/loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

using cloudlet::Loop;

TEST(Loop, TimerFiresOnceAndRepeats) {
  Loop loop;
  int once = 0, repeats = 0;
  loop.timer_start(1, 0, [&] { once++; });
  Loop::TimerId rep = 0;
  rep = loop.timer_start(1, 1, [&] {
    if (++repeats == 3) loop.timer_stop(rep);
  });
  loop.run();
  EXPECT_EQ(once, 1);
  EXPECT_EQ(repeats, 3);
  EXPECT_EQ(loop.active_timers(), 0u);
  EXPECT_EQ(loop.close(), 0);
}

TEST(Loop, StoppedTimerNeverFires) {
  Loop loop;
  bool fired = false;
  auto id = loop.timer_start(5, 0, [&] { fired = true; });
  EXPECT_TRUE(loop.timer_stop(id));
  EXPECT_FALSE(loop.timer_stop(id));
  loop.run();
  EXPECT_FALSE(fired);
  EXPECT_EQ(loop.close(), 0);
}

// Posts from many threads are all delivered, exactly once each, in order per thread.
TEST(Loop, PostFromManyThreadsDeliversEveryItem) {
  Loop loop;
  constexpr int kThreads = 4, kPerThread = 20000;
  std::vector<int> last(kThreads, -1);
  int delivered = 0;
  bool in_order = true;
  auto keepalive = loop.timer_start(60000, 0, [] {});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; i++) {
        ASSERT_TRUE(loop.post([&, t, i] {
          if (last[t] != i - 1) in_order = false;
          last[t] = i;
          if (++delivered == kThreads * kPerThread) {
            loop.timer_stop(keepalive);
          }
        }));
      }
    });
  }
  loop.run();
  for (auto& th : threads) th.join();
  EXPECT_EQ(delivered, kThreads * kPerThread);
  EXPECT_TRUE(in_order);
  EXPECT_EQ(loop.close(), 0);
}

TEST(Loop, PostAfterCloseIsRefused) {
  Loop loop;
  EXPECT_EQ(loop.close(), 0);
  EXPECT_FALSE(loop.post([] {}));
}

TEST(Loop, WorkRunsOffLoopAndCompletesOnLoop) {
  Loop loop;
  std::atomic<int> ran{0};
  std::thread::id worker_thread;
  int done = 0;
  for (int i = 0; i < 50; i++) {
    loop.queue_work(
        [&] {
          worker_thread = std::this_thread::get_id();
          ran++;
        },
        [&](bool cancelled) {
          EXPECT_FALSE(cancelled);
          EXPECT_TRUE(loop.on_loop_thread());
          done++;
        });
  }
  loop.run();
  EXPECT_EQ(ran.load(), 50);
  EXPECT_EQ(done, 50);
  EXPECT_NE(worker_thread, std::this_thread::get_id());
  EXPECT_EQ(loop.close(), 0);
}

TEST(Loop, DeferRunsFromCleanStackInOrder) {
  Loop loop;
  std::vector<int> order;
  int depth = 0;
  loop.defer([&] {
    EXPECT_EQ(depth, 0);
    order.push_back(1);
    loop.defer([&] { order.push_back(3); });
  });
  loop.defer([&] { order.push_back(2); });
  depth = 0;
  loop.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(loop.close(), 0);
}

TEST(Loop, CloseWaitsForRunningWork) {
  Loop loop;
  std::atomic<bool> finished{false};
  bool done = false;
  loop.queue_work(
      [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        finished = true;
      },
      [&](bool) { done = true; });
  EXPECT_EQ(loop.close(), 0);
  EXPECT_TRUE(finished);
  EXPECT_TRUE(done);
}
