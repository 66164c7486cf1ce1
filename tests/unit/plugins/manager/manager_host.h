// The fake host set up as cloudletd's configuration sets up the manager plugin (shared by its tests).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "fakehost.h"

namespace manager_test {

inline std::string plugin_path() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/plugins/manager.so"; }

// Its URL prefix, the manager listener's guard granted to it, and a data directory of its own.
inline void configure(cloudlet::test::FakeHost& fh) {
  fh.prefixes = {"/manager/"};
  fh.guards = {"manager"};
  char dir[] = "/tmp/cl-manager-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  fh.facts["plugin_data_dir"] = dir;
  fh.facts["plugin_files_dir"] = std::string(getenv("CLOUDLET_SOURCE_DIR")) + "/plugins/manager";  // its www/
}

}  // namespace manager_test
