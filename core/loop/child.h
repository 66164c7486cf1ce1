// A child process watched on a libuv loop: the plugin ABI's proc_* slots (core/plugin/host_api.cc) and the
// fake host (tests/fakehost) both run their processes through it, so the two behave alike.
//
// Never a shell: argv is executed as is. The child gets its own session and process group (signals reach its
// children too), default signal handling, exactly the environment it is given, stdin from /dev/null or a
// pipe, and stdout/stderr read as they come: streamed to a callback and/or captured up to a bound (the rest is
// dropped and reported as truncated). A deadline sends SIGTERM, then SIGKILL 2 s later; stop() does the same
// at once (unloading). on_exit runs exactly once, from a clean loop turn, after the child exited and its
// output ended (or 1 s after it exited, when a grandchild keeps the pipes open), and also when it could not
// be started. Then the Child frees itself once its handles are closed.
//
// Thread: loop thread only. Depends on libuv alone (the fake host links it without the rest of the core).
// Ownership: the Child owns itself; a pointer stays valid until on_exit returns.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace cloudlet {

struct ChildOptions {
  std::vector<std::string> argv;  // argv[0]: an absolute path, or a name looked up in env's PATH
  std::vector<std::string> env;   // "NAME=value", exactly what the child gets
  std::string cwd;                // "" = the caller's working directory
  bool stdin_pipe = false;        // else /dev/null
  bool capture[2] = {false, false};  // [0] stdout, [1] stderr: kept for ChildExit
  bool stream[2] = {false, false};   // delivered to on_output as they arrive
  uint64_t timeout_ms = 0;           // 0 = none
  size_t max_capture = 1 << 20;      // per captured stream
};

struct ChildExit {
  int spawn_error = 0;     // a libuv error (UV_ENOENT, UV_EACCES...) when it could not be started, else 0
  bool timed_out = false;  // the deadline passed and it was killed
  bool stopped = false;    // stop() killed it
  int64_t exit_code = -1;  // when it exited normally
  int term_signal = 0;     // the signal that ended it
  bool truncated[2] = {false, false};
  std::string out, err;    // captured stdout / stderr
};

class Child {
 public:
  using OutputFn = std::function<void(int fd, std::string_view chunk)>;  // fd 1 or 2
  using ExitFn = std::function<void(const ChildExit&)>;
  using WriteDone = std::function<void(int uv_status)>;

  // Starts a child. Never fails synchronously and never calls back from inside: a program that cannot be
  // started is reported through on_exit (spawn_error) on a later loop turn. argv must not be empty.
  static Child* start(uv_loop_t* loop, ChildOptions options, OutputFn on_output, ExitFn on_exit);

  // Writes to stdin (stdin_pipe). When it returns 0, `data` must stay valid until done runs (exactly once: 0,
  // or a libuv error when the child closed its stdin or exited first). Otherwise done is not called: UV_EPIPE
  // (no stdin pipe, or closed by close_stdin), UV_ECANCELED (the child has exited) or a libuv error.
  int write(std::string_view data, WriteDone done);
  // Ends stdin once pending writes are sent. Returns 0 or UV_EPIPE (no pipe, or closed already).
  int close_stdin();
  // Signals the child's process group. Returns 0, UV_ESRCH (it has exited) or a libuv error.
  int kill(int signum);
  // Kills it (SIGTERM, SIGKILL 2 s later); on_exit reports stopped. Nothing if it has exited.
  void stop();
  // Forgets both callbacks and kills it with SIGKILL: for an owner that goes away without waiting. The Child
  // still reaps the process and frees itself.
  void detach();

  bool exited() const { return exited_; }
  int pid() const { return pid_; }

 private:
  struct Pipe {
    uv_pipe_t handle;
    Child* child;
    int fd;  // 0, 1 or 2
    bool open = false;
  };
  struct Write;

  Child(uv_loop_t* loop, ChildOptions options, OutputFn on_output, ExitFn on_exit);
  ~Child() = default;
  void spawn();
  void arm_timer(uint64_t ms);
  void on_timer();
  void on_read(Pipe* p, ssize_t n, const uv_buf_t* buf);
  void on_process_exit(int64_t status, int signal);
  void close_pipe(Pipe* p);
  void maybe_finish();
  void finish();
  void handle_closed();

  uv_loop_t* loop_;
  ChildOptions options_;
  OutputFn on_output_;
  ExitFn on_exit_;
  ChildExit result_;

  uv_process_t process_;
  uv_timer_t timer_;
  Pipe pipes_[3];
  int pid_ = 0;
  bool spawned_ = false;
  bool exited_ = false;    // the process ended (or never started)
  bool finished_ = false;  // on_exit ran (or was dropped by detach)
  bool killing_ = false;   // SIGTERM sent by the deadline or stop(): SIGKILL follows
  bool stdin_closing_ = false;
  int handles_open_ = 0;
  char read_buf_[65536];
};

}  // namespace cloudlet
