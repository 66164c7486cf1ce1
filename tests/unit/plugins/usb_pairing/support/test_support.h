// Helpers for the ADB tests and the bench: temporary directories, programs run with a deadline (argv only,
// never a shell), network namespaces with only loopback, and driving a libuv loop until a condition holds.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cloudlet::adb::test {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "adbtest");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void tree_remove(const std::string& path);

struct RunResult {
  int status = -1;  // exit code, or -1 when killed or not started
  bool timed_out = false;
  std::string out, err;
};

// Runs argv (PATH is searched) with extra environment variables, waits at most timeout_ms (then kills the
// child by its pid). stdin is /dev/null.
RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
              uint64_t timeout_ms = 30000);

// A background program; killed (by pid) and reaped on destruction.
class Child {
 public:
  Child() = default;
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // Starts argv and waits up to timeout_ms for a first stdout line, returned in *first_line.
  bool start(const std::vector<std::string>& argv, std::string* first_line, uint64_t timeout_ms = 10000);
  void stop();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
};

// A network namespace that has only loopback, deleted on destruction after every process in it was killed.
class Netns {
 public:
  Netns();
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  const std::string& error() const { return error_; }
  // argv prefixed with "ip netns exec <name>".
  std::vector<std::string> wrap(std::vector<std::string> argv) const;
  // Moves the calling thread into the namespace (sockets it creates afterwards, and processes it spawns,
  // live there). Returns false on failure. leave() moves it back.
  bool enter();
  void leave();
  // Kills every process in the namespace (by pid).
  void kill_all();

 private:
  std::string name_, error_;
  bool ok_ = false;
  int home_fd_ = -1;
};

// Removes namespaces left behind by test processes that died (name prefix cladb-<pid>-, pid gone).
void netns_sweep_stale();

std::string file_read(const std::string& path);
bool file_write(const std::string& path, const std::string& data, unsigned mode = 0644);
// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
std::string bytes_make(size_t n, uint64_t seed);
// Writes a file of n pseudo-random bytes without holding it all in memory.
bool file_make(const std::string& path, size_t n, uint64_t seed, unsigned mode = 0644);

// Runs the loop until pred() holds or timeout_ms passes. Returns pred().
bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, uint64_t timeout_ms);
// Runs the loop for about ms milliseconds without blocking (lets posted callbacks and closes run).
void loop_settle(uv_loop_t* loop, uint64_t ms);
// Runs the loop until nothing is pending (closes finished), bounded in time.
void loop_drain(uv_loop_t* loop, uint64_t timeout_ms = 2000);

// Open file descriptors of this process (for leak checks), and what they are.
int fd_count();
std::string fd_describe();

double now_seconds();

}  // namespace cloudlet::adb::test
