// The tunnel's replay cache (plugins/offload_api/replay.h): refusals, per-device histories, and its bounds.
#include "replay.h"

#include <gtest/gtest.h>

#include <string>

using cloudlet::offload::ReplayCache;

namespace {

// `n` distinct 16-byte blocks starting at number `first` (a command's ciphertext after its IV).
std::string blocks(uint64_t first, size_t n = 1) {
  std::string out;
  for (size_t i = 0; i < n; i++) {
    uint64_t v = first + i;
    std::string b(16, '\0');
    for (int k = 0; k < 8; k++) b[k] = static_cast<char>(v >> (8 * k));
    b[15] = 'x';
    out += b;
  }
  return out;
}

}  // namespace

TEST(ReplayCache, RefusesAnyReuseOfABlock) {
  ReplayCache c;
  EXPECT_TRUE(c.admit("phone", 1, blocks(100, 3)));
  EXPECT_FALSE(c.admit("phone", 1, blocks(100, 3)));  // the replay
  EXPECT_FALSE(c.admit("phone", 1, blocks(102, 1)));  // a forgery starting at its last block
  EXPECT_FALSE(c.admit("phone", 1, blocks(90, 11)));  // anything containing one of its blocks
  EXPECT_EQ(c.blocks(), 3u);                          // a refusal changes nothing
  EXPECT_TRUE(c.admit("phone", 1, blocks(200, 2)));
  EXPECT_TRUE(c.admit("other", 1, blocks(100, 3)));   // per device
  EXPECT_EQ(c.blocks_of("phone"), 5u);
  EXPECT_EQ(c.devices(), 2u);
}

TEST(ReplayCache, ANewKeyStartsAFreshHistory) {
  ReplayCache c;
  EXPECT_TRUE(c.admit("phone", 1, blocks(1, 4)));
  EXPECT_FALSE(c.admit("phone", 1, blocks(1, 4)));
  EXPECT_TRUE(c.admit("phone", 2, blocks(1, 4)));  // re-paired: old captures no longer decrypt
  EXPECT_EQ(c.blocks(), 4u);
}

TEST(ReplayCache, BoundedPerDevice) {
  ReplayCache c;
  for (uint64_t i = 0; i < ReplayCache::kMaxBlocksPerDevice + 500; i++) ASSERT_TRUE(c.admit("phone", 1, blocks(i)));
  EXPECT_EQ(c.blocks_of("phone"), ReplayCache::kMaxBlocksPerDevice);
  EXPECT_FALSE(c.admit("phone", 1, blocks(ReplayCache::kMaxBlocksPerDevice + 499)));  // recent: still known
  EXPECT_TRUE(c.admit("phone", 1, blocks(0)));  // the oldest fell out (the documented limit)
  // One huge command keeps the bound too.
  EXPECT_TRUE(c.admit("phone", 1, blocks(1000000, ReplayCache::kMaxBlocksPerDevice * 2)));
  EXPECT_EQ(c.blocks_of("phone"), ReplayCache::kMaxBlocksPerDevice);
}

TEST(ReplayCache, BoundedInAllAndFair) {
  ReplayCache c(10, 25, 3);
  for (uint64_t i = 0; i < 10; i++) {
    ASSERT_TRUE(c.admit("a", 1, blocks(i)));
    ASSERT_TRUE(c.admit("b", 1, blocks(100 + i)));
  }
  // A busy third device fills the total: whoever holds the most gives up its oldest (the busy one on a tie), so
  // it ends with a fair share and the others keep theirs.
  for (uint64_t i = 0; i < 100; i++) ASSERT_TRUE(c.admit("c", 1, blocks(200 + i)));
  EXPECT_EQ(c.blocks(), 25u);
  for (const char* d : {"a", "b", "c"}) {
    EXPECT_GE(c.blocks_of(d), 8u) << d;
    EXPECT_LE(c.blocks_of(d), 9u) << d;
  }
  EXPECT_FALSE(c.admit("c", 1, blocks(299)));
  EXPECT_FALSE(c.admit("a", 1, blocks(9)));  // a's most recent command is still refused as a replay
  // A fourth device pushes out the least recently used one: "a" (its last admitted command came just before
  // b's last one; a refused replay does not count as use).
  EXPECT_TRUE(c.admit("d", 1, blocks(500)));
  EXPECT_EQ(c.devices(), 3u);
  EXPECT_EQ(c.blocks_of("a"), 0u);
  EXPECT_LE(c.blocks(), 25u);
}

TEST(ReplayCache, PartialBlocksAreIgnored) {
  ReplayCache c;
  EXPECT_TRUE(c.admit("phone", 1, std::string(15, 'z')));  // tunnel_open only passes whole blocks anyway
  EXPECT_EQ(c.blocks(), 0u);
}
