#include "events/bus.h"

#include <gtest/gtest.h>

#include "loop/loop.h"

using namespace cloudlet;

TEST(EventBus, PatternsMatch) {
  EXPECT_TRUE(EventBus::matches("*", "a.b"));
  EXPECT_TRUE(EventBus::matches("instance.*", "instance.state"));
  EXPECT_FALSE(EventBus::matches("instance.*", "instance"));
  EXPECT_FALSE(EventBus::matches("instance.*", "instances.x"));
  EXPECT_TRUE(EventBus::matches("job.done", "job.done"));
  EXPECT_FALSE(EventBus::matches("job.done", "job.done2"));
}

TEST(EventBus, DeliversAsynchronouslyInOrder) {
  Loop loop;
  EventBus bus(loop);
  std::vector<std::string> seen;
  uint64_t a = bus.subscribe("x.*", [&](std::string_view t, std::string_view p) { seen.push_back(std::string(t) + std::string(p)); });
  bus.subscribe("x.one", [&](std::string_view t, std::string_view) { seen.push_back("exact:" + std::string(t)); });
  EXPECT_NE(a, 0u);
  EXPECT_EQ(bus.subscribe("Bad Topic", [](std::string_view, std::string_view) {}), 0u);
  bus.publish("x.one", "{\"n\":1}");
  bus.publish("x.two", "{\"n\":2}");
  bus.publish("y.one", "{}");
  EXPECT_TRUE(seen.empty());
  loop.run();
  EXPECT_EQ(seen, (std::vector<std::string>{"x.one{\"n\":1}", "exact:x.one", "x.two{\"n\":2}"}));
  EXPECT_TRUE(bus.unsubscribe(a));
  EXPECT_FALSE(bus.unsubscribe(a));
  EXPECT_EQ(loop.close(), 0);
}

TEST(EventBus, UnsubscribeDuringDeliveryIsSafe) {
  Loop loop;
  EventBus bus(loop);
  int second_calls = 0;
  uint64_t second = 0;
  bus.subscribe("t", [&](std::string_view, std::string_view) { bus.unsubscribe(second); });
  second = bus.subscribe("t", [&](std::string_view, std::string_view) { second_calls++; });
  bus.publish("t", "{}");
  loop.run();
  EXPECT_EQ(second_calls, 0);
  EXPECT_EQ(loop.close(), 0);
}
