// Compatibility across minor versions, seen from a host that provides ABI 1.0 only: tests/fakehost compiled
// against the frozen header tests/abi/headers/cloudlet_plugin_1.0.h (cl_fakehost_1_0). A 1.0 plugin loads and
// works there; a plugin built for 1.1 (hello, which reads its arguments with the 1.1 JSON slots) is refused
// with a message naming both versions. (The other direction, today's core loading a 1.0 plugin, is
// Abi.FrozenOneZeroPluginStillLoads in abi_test.cc.)
#include <gtest/gtest.h>

#include "fakehost.h"

using cloudlet::test::FakeHost;

namespace {

std::string build_dir() { return getenv("CLOUDLET_BUILD_DIR"); }

TEST(AbiCompat, ThisHostProvidesOnlyOneZero) {
  FakeHost fh;
  EXPECT_EQ(fh.api()->abi_major, 1);
  EXPECT_EQ(fh.api()->abi_minor, 0);
  EXPECT_EQ(fh.api()->struct_size, 8u + 8u * 51);  // the 51 slots of 1.0
}

TEST(AbiCompat, OneZeroPluginLoadsOnAOneZeroHost) {
  FakeHost fh;
  std::string error;
  ASSERT_EQ(fh.load(build_dir() + "/tests/fixtures/frozen_1_0.so", "{}", &error), CL_OK) << error;
  auto [st, out] = fh.call("frozen.ping");
  EXPECT_EQ(st, CL_OK);
  EXPECT_EQ(out, "{\"pong\":true}");
}

TEST(AbiCompat, OneOnePluginIsRefusedClearlyByAOneZeroHost) {
  FakeHost fh;
  std::string error;
  EXPECT_EQ(fh.load(build_dir() + "/plugins/hello.so", "{}", &error), CL_ENOTSUP);
  EXPECT_EQ(error, "needs plugin ABI 1.1, this host provides 1.0");
  EXPECT_TRUE(fh.routes.empty());  // init never ran
}

}  // namespace
