// The outcome of a core function that can fail: success, or a cl_status_t code with a message for people.
//
// Why: errors used to be std::string with "" meaning success. Such a result was easy to drop without a word, and a
// caller answering an operation had to guess the code from the text. A Status carries the code the caller can
// answer with, and [[nodiscard]] makes the compiler point at every result nobody looks at.
//
// There is no conversion to bool: `if (status)` would read as "if it failed" to some and "if it worked" to others.
// Ask ok().
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "cloudlet_plugin.h"

namespace cloudlet {

class [[nodiscard]] Status {
 public:
  // Success.
  Status() = default;

  // A failure. A CL_OK code here is a bug; it becomes CL_EIO so that a failure is never read as success.
  static Status error(cl_status_t code, std::string message) {
    return Status(code == CL_OK ? CL_EIO : code, std::move(message));
  }
  static Status invalid(std::string message) { return error(CL_EINVAL, std::move(message)); }
  static Status io(std::string message) { return error(CL_EIO, std::move(message)); }

  bool ok() const { return code_ == CL_OK; }
  cl_status_t code() const { return code_; }
  // One line naming what failed and why; "" on success.
  const std::string& message() const { return message_; }

  // The same failure with `context` put in front of its message ("saving the memory state: " + message).
  // Success stays success.
  Status prefixed(std::string_view context) const {
    return ok() ? Status() : Status(code_, std::string(context) + message_);
  }

 private:
  Status(cl_status_t code, std::string message) : code_(code), message_(std::move(message)) {}

  cl_status_t code_ = CL_OK;
  std::string message_;
};

}  // namespace cloudlet
