// Running a helper program (qemu-img, useradd) with an argv: posix_spawn, never a shell.
//
// Blocking: call on a worker thread. Output is captured up to a bound, the run is bounded in time (the child is
// killed with SIGKILL when the timeout passes), and the child gets /dev/null as stdin.
#pragma once

#include <string>
#include <vector>

namespace cloudlet::virt {

struct ProcessResult {
  bool started = false;   // false: the program could not be spawned (see error)
  bool timed_out = false;
  int exit_code = -1;     // when it exited normally
  int signal = 0;         // when killed by a signal
  std::string out;        // stdout, truncated to max_output bytes
  std::string err;        // stderr, truncated to max_output bytes
  std::string error;      // spawn failure text

  bool ok() const { return started && !timed_out && signal == 0 && exit_code == 0; }
  // One line for logs and error messages: "qemu-img exited with 1: <first stderr line>".
  std::string describe(const std::string& program) const;
};

struct ProcessOptions {
  int timeout_ms = 60000;
  size_t max_output = 1 << 20;
};

// argv[0] is the program: an absolute path, or a name looked up in PATH.
ProcessResult process_run(const std::vector<std::string>& argv, ProcessOptions options = {});

}  // namespace cloudlet::virt
