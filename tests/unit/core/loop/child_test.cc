// Child processes on the loop (core/loop/child.h) with real programs: capture, streaming, stdin, exit codes,
// signals, deadlines, stop, spawn failures, and the one exit report after the output ended.
#include "loop/child.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <optional>
#include <string>

using cloudlet::Child;
using cloudlet::ChildExit;
using cloudlet::ChildOptions;

namespace {

class ChildTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    uv_run(&loop_, UV_RUN_DEFAULT);  // every Child frees itself once its handles closed
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  static ChildOptions sh(const std::string& script) {
    ChildOptions o;
    o.argv = {"/bin/sh", "-c", script};
    o.env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8"};
    return o;
  }

  // Runs until the exit report, or fails after 20 s.
  ChildExit run(ChildOptions o, Child::OutputFn out = nullptr, Child** started = nullptr) {
    std::optional<ChildExit> got;
    int calls = 0;
    Child* c = Child::start(&loop_, std::move(o), std::move(out), [&](const ChildExit& e) {
      calls++;
      got = e;
    });
    if (started) *started = c;
    uint64_t deadline = uv_now(&loop_) + 20000;
    while (!got && uv_now(&loop_) < deadline) uv_run(&loop_, UV_RUN_ONCE);
    EXPECT_TRUE(got.has_value());
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(calls, 1);
    return got.value_or(ChildExit{});
  }

  uv_loop_t loop_;
};

TEST_F(ChildTest, CapturesOutputAndExitCode) {
  auto o = sh("printf out; printf err >&2; exit 3");
  o.capture[0] = o.capture[1] = true;
  ChildExit e = run(o);
  EXPECT_EQ(e.spawn_error, 0);
  EXPECT_EQ(e.exit_code, 3);
  EXPECT_EQ(e.term_signal, 0);
  EXPECT_EQ(e.out, "out");
  EXPECT_EQ(e.err, "err");
  EXPECT_FALSE(e.truncated[0] || e.truncated[1]);
}

TEST_F(ChildTest, GetsExactlyTheEnvironmentAndDirectoryItIsGiven) {
  auto o = sh("pwd; env | sort");
  o.capture[0] = true;
  o.cwd = "/tmp";
  ChildExit e = run(o);
  EXPECT_EQ(e.out.substr(0, 5), "/tmp\n");
  EXPECT_EQ(e.out.find("HOME="), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("LANG=C.UTF-8"), std::string::npos) << e.out;
}

TEST_F(ChildTest, NoShellArgumentsArePassedAsIs) {
  ChildOptions o;
  o.argv = {"/bin/echo", "$(touch /tmp/never)", ";", "rm", "-rf"};
  o.capture[0] = true;
  ChildExit e = run(o);
  EXPECT_EQ(e.out, "$(touch /tmp/never) ; rm -rf\n");
}

TEST_F(ChildTest, CaptureIsBoundedAndStreamingSeesEverything) {
  auto o = sh("head -c 300000 /dev/zero");
  o.capture[0] = o.stream[0] = true;
  o.max_capture = 1000;
  size_t streamed = 0;
  ChildExit e = run(o, [&](int fd, std::string_view chunk) {
    EXPECT_EQ(fd, 1);
    streamed += chunk.size();
  });
  EXPECT_EQ(e.out.size(), 1000u);
  EXPECT_TRUE(e.truncated[0]);
  EXPECT_EQ(streamed, 300000u);
}

TEST_F(ChildTest, StdinPipeCarriesWritesUntilClosed) {
  auto o = sh("wc -c");
  o.stdin_pipe = true;
  o.capture[0] = true;
  int done_ok = 0;
  std::string big(200000, 'x');  // more than a pipe buffer: written as the child reads
  std::optional<ChildExit> got;
  Child* c = Child::start(&loop_, o, nullptr, [&](const ChildExit& e) { got = e; });
  ASSERT_EQ(c->write(big, [&](int st) { done_ok += st == 0; }), 0);
  ASSERT_EQ(c->write("yz", [&](int st) { done_ok += st == 0; }), 0);
  ASSERT_EQ(c->close_stdin(), 0);
  EXPECT_EQ(c->close_stdin(), UV_EPIPE);
  EXPECT_EQ(c->write("late", [](int) { ADD_FAILURE() << "done of a refused write"; }), UV_EPIPE);
  while (!got) uv_run(&loop_, UV_RUN_ONCE);
  EXPECT_EQ(done_ok, 2);
  EXPECT_EQ(std::stoul(got->out), 200002u);
}

TEST_F(ChildTest, WritesWithoutAPipeAreRefused) {
  Child* c = nullptr;
  auto o = sh("exit 0");
  std::optional<ChildExit> got;
  c = Child::start(&loop_, o, nullptr, [&](const ChildExit& e) { got = e; });
  EXPECT_EQ(c->write("x", [](int) { ADD_FAILURE(); }), UV_EPIPE);
  EXPECT_EQ(c->close_stdin(), UV_EPIPE);
  while (!got) uv_run(&loop_, UV_RUN_ONCE);
}

TEST_F(ChildTest, KillSignalsTheWholeGroup) {
  // The shell starts a grandchild that holds stdout; a kill of the group ends both, so the report comes
  // without waiting for the drain grace.
  auto o = sh("sleep 30 & wait");
  o.capture[0] = true;
  Child* c = nullptr;
  std::optional<ChildExit> got;
  c = Child::start(&loop_, o, nullptr, [&](const ChildExit& e) { got = e; });
  uv_timer_t t;
  uv_timer_init(&loop_, &t);
  t.data = c;
  uv_timer_start(&t, [](uv_timer_t* h) { EXPECT_EQ(static_cast<Child*>(h->data)->kill(SIGTERM), 0); }, 200, 0);
  uint64_t start = uv_now(&loop_);
  while (!got) uv_run(&loop_, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);  // t lives on this stack: closed before it goes
  EXPECT_EQ(got->term_signal, SIGTERM);
  EXPECT_EQ(got->exit_code, -1);
  EXPECT_FALSE(got->timed_out);
  EXPECT_LT(uv_now(&loop_) - start, 900u);  // not the drain grace, not sleep's 30 s
}

TEST_F(ChildTest, DeadlineTermsThenKills) {
  auto o = sh("trap '' TERM; sleep 30");  // ignores SIGTERM: SIGKILL follows 2 s later
  o.timeout_ms = 100;
  uint64_t start = uv_now(&loop_);
  ChildExit e = run(o);
  uint64_t took = uv_now(&loop_) - start;
  EXPECT_TRUE(e.timed_out);
  EXPECT_EQ(e.term_signal, SIGKILL);
  EXPECT_GE(took, 2000u);
  EXPECT_LT(took, 6000u);
}

TEST_F(ChildTest, StopReportsStopped) {
  auto o = sh("sleep 30");
  Child* c = nullptr;
  std::optional<ChildExit> got;
  c = Child::start(&loop_, o, nullptr, [&](const ChildExit& e) { got = e; });
  c->stop();
  while (!got) uv_run(&loop_, UV_RUN_ONCE);
  EXPECT_TRUE(got->stopped);
  EXPECT_EQ(got->term_signal, SIGTERM);
}

TEST_F(ChildTest, MissingProgramIsReportedLaterNotFromStart) {
  ChildOptions o;
  o.argv = {"/nonexistent/program"};
  bool reported = false;
  Child::start(&loop_, o, nullptr, [&](const ChildExit& e) {
    reported = true;
    EXPECT_EQ(e.spawn_error, UV_ENOENT);
  });
  EXPECT_FALSE(reported);  // never from inside start()
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_TRUE(reported);
}

TEST_F(ChildTest, GrandchildHoldingThePipeDoesNotHoldTheReport) {
  // The child exits at once; a detached grandchild keeps stdout open. The report comes after the drain grace.
  auto o = sh("(sleep 5 &) ; echo hi");
  o.capture[0] = true;
  uint64_t start = uv_now(&loop_);
  ChildExit e = run(o);
  EXPECT_EQ(e.exit_code, 0);
  EXPECT_EQ(e.out, "hi\n");
  EXPECT_LT(uv_now(&loop_) - start, 3000u);
}

TEST_F(ChildTest, DetachedChildCallsNothingAndIsReaped) {
  auto o = sh("sleep 30");
  o.stream[0] = true;
  Child* c = Child::start(&loop_, o, [](int, std::string_view) { ADD_FAILURE(); },
                          [](const ChildExit&) { ADD_FAILURE() << "exit of a detached child"; });
  c->detach();
  uv_run(&loop_, UV_RUN_DEFAULT);  // returns once it was reaped and freed
}

}  // namespace
