#include "uv_run_probe.h"

#include <uv.h>

#include <atomic>

namespace {
thread_local int depth = 0;  // per thread: each thread may run its own loop
std::atomic<int> calls{0};
std::atomic<int> reentries{0};
}  // namespace

extern "C" int __real_uv_run(uv_loop_t* loop, uv_run_mode mode);

extern "C" int __wrap_uv_run(uv_loop_t* loop, uv_run_mode mode) {
  calls++;
  if (depth++ > 0) reentries++;
  int rc = __real_uv_run(loop, mode);
  depth--;
  return rc;
}

namespace cloudlet::test {
int uv_run_calls() { return calls.load(); }
int uv_run_reentries() { return reentries.load(); }
}  // namespace cloudlet::test
