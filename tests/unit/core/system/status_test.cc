#include "system/status.h"

#include <gtest/gtest.h>

#include <type_traits>

using cloudlet::Status;

namespace {

Status fail_with(cl_status_t code) { return Status::error(code, "disk.qcow2: No such file or directory"); }

TEST(Status, DefaultIsSuccessWithoutMessage) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), CL_OK);
  EXPECT_EQ(s.message(), "");
}

TEST(Status, FailuresCarryTheirCodeAndMessage) {
  Status s = fail_with(CL_ENOENT);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), CL_ENOENT);
  EXPECT_EQ(s.message(), "disk.qcow2: No such file or directory");
  EXPECT_EQ(Status::invalid("bad").code(), CL_EINVAL);
  EXPECT_EQ(Status::io("broken").code(), CL_EIO);
  EXPECT_EQ(Status::io("broken").message(), "broken");
}

TEST(Status, AFailureIsNeverReadAsSuccess) {
  Status s = Status::error(CL_OK, "something failed");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), CL_EIO);
  EXPECT_EQ(s.message(), "something failed");
}

TEST(Status, PrefixedAddsContextAndKeepsTheCode) {
  Status s = fail_with(CL_ENOENT).prefixed("the instance's disk: ");
  EXPECT_EQ(s.code(), CL_ENOENT);
  EXPECT_EQ(s.message(), "the instance's disk: disk.qcow2: No such file or directory");
  Status ok = Status().prefixed("context: ");
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.message(), "");
}

// Only ok() answers whether it worked: no conversion that could be read either way.
static_assert(!std::is_convertible_v<Status, bool>);
static_assert(!std::is_constructible_v<bool, Status>);

}  // namespace
