#include "support/test_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

extern char** environ;

namespace cloudlet::adb::test {

std::string fd_describe() {
  std::string out;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[512] = {};
    ssize_t n = readlink((std::string("/proc/self/fd/") + e->d_name).c_str(), target, sizeof target - 1);
    out += fmt::format("{} -> {}\n", e->d_name, n > 0 ? target : "?");
  }
  closedir(d);
  return out;
}

double now_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

TempDir::TempDir(const std::string& prefix) {
  const char* base = getenv("TMPDIR");
  std::string tmpl = fmt::format("{}/{}-XXXXXX", base && *base ? base : "/tmp", prefix);
  if (mkdtemp(tmpl.data())) path_ = tmpl;
}

TempDir::~TempDir() {
  if (!path_.empty()) tree_remove(path_);
}

void tree_remove(const std::string& path) {
  nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int type, struct FTW*) {
        if (type == FTW_DP) rmdir(p);
        else unlink(p);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

namespace {

std::vector<char*> env_make(const std::map<std::string, std::string>& extra, std::vector<std::string>* store) {
  for (char** e = environ; *e; e++) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    if (!extra.count(key)) store->push_back(kv);
  }
  for (auto& [k, v] : extra) store->push_back(k + "=" + v);
  std::vector<char*> out;
  for (auto& s : *store) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, int out_fd,
            int err_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so that nothing it forks inherits our terminal signals.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::vector<std::string> store;
  std::vector<char*> cenv = env_make(env, &store);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc == 0 ? pid : -1;
}

}  // namespace

RunResult run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              uint64_t timeout_ms) {
  RunResult r;
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return r;
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return r;
  }
  pid_t pid = spawn(argv, env, out[1], err[1]);
  close(out[1]);
  close(err[1]);
  if (pid < 0) {
    close(out[0]);
    close(err[0]);
    r.err = "cannot start " + argv[0];
    return r;
  }
  double deadline = now_seconds() + double(timeout_ms) / 1000.0;
  bool open_out = true, open_err = true;
  while (open_out || open_err) {
    double left = deadline - now_seconds();
    if (left <= 0) {
      r.timed_out = true;
      break;
    }
    pollfd pfd[2] = {{open_out ? out[0] : -1, POLLIN, 0}, {open_err ? err[0] : -1, POLLIN, 0}};
    int n = poll(pfd, 2, int(left * 1000) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[65536];
    for (int i = 0; i < 2; i++) {
      if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = read(i == 0 ? out[0] : err[0], buf, sizeof buf);
      if (got <= 0) (i == 0 ? open_out : open_err) = false;
      else (i == 0 ? r.out : r.err).append(buf, size_t(got));
    }
  }
  close(out[0]);
  close(err[0]);
  if (r.timed_out) kill(pid, SIGKILL);
  int status = 0;
  // Bounded: the child was killed if it overran; otherwise it closed its outputs and is exiting. One that
  // lingers for 5 s more is killed.
  bool reaped = false;
  for (int i = 0; i < 500 && !reaped; i++) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) reaped = true;
    else usleep(10000);
  }
  if (!reaped) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    r.timed_out = true;
  }
  r.status = (!r.timed_out && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return r;
}

Child::~Child() { stop(); }

bool Child::start(const std::vector<std::string>& argv, std::string* first_line, uint64_t timeout_ms) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return false;
  pid_ = spawn(argv, {}, out[1], -1);
  close(out[1]);
  out_fd_ = out[0];
  if (pid_ < 0) return false;
  std::string line;
  double deadline = now_seconds() + double(timeout_ms) / 1000.0;
  while (line.find('\n') == std::string::npos) {
    double left = deadline - now_seconds();
    if (left <= 0) return false;
    pollfd pfd{out_fd_, POLLIN, 0};
    int n = poll(&pfd, 1, int(left * 1000) + 1);
    if (n <= 0) continue;
    char c[256];
    ssize_t got = read(out_fd_, c, sizeof c);
    if (got <= 0) return false;
    line.append(c, size_t(got));
  }
  *first_line = line.substr(0, line.find('\n'));
  return true;
}

void Child::stop() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status;
    bool reaped = false;
    for (int i = 0; i < 300 && !reaped; i++) {  // up to 3 s for a clean exit
      if (waitpid(pid_, &status, WNOHANG) == pid_) reaped = true;
      else usleep(10000);
    }
    if (!reaped) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
  }
  pid_ = -1;
  if (out_fd_ >= 0) close(out_fd_);
  out_fd_ = -1;
}

// ---- network namespaces ------------------------------------------------------------------------------------

namespace {
std::atomic<int> g_netns_seq{0};

std::vector<pid_t> netns_pids(const std::string& name) {
  RunResult r = run({"ip", "netns", "pids", name}, {}, 10000);
  std::vector<pid_t> pids;
  std::istringstream in(r.out);
  long p;
  while (in >> p)
    if (p > 1 && p != getpid()) pids.push_back(pid_t(p));
  return pids;
}

void netns_kill(const std::string& name) {
  // Processes in a namespace this test created (adb servers, peers) are ours to end.
  for (int round = 0; round < 50; round++) {
    std::vector<pid_t> pids = netns_pids(name);
    if (pids.empty()) return;
    for (pid_t p : pids) kill(p, round < 10 ? SIGTERM : SIGKILL);
    usleep(20000);
  }
}
}  // namespace

void netns_sweep_stale() {
  DIR* d = opendir("/run/netns");
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("cladb-", 0) != 0) continue;
    long pid = std::strtol(n.c_str() + 6, nullptr, 10);
    if (pid > 0 && kill(pid_t(pid), 0) != 0 && errno == ESRCH) stale.push_back(n);
  }
  closedir(d);
  for (auto& n : stale) {
    netns_kill(n);
    run({"ip", "netns", "del", n}, {}, 10000);
  }
}

Netns::Netns() {
  netns_sweep_stale();
  name_ = fmt::format("cladb-{}-{}", getpid(), g_netns_seq++);
  RunResult r = run({"ip", "netns", "add", name_}, {}, 10000);
  if (r.status != 0) {
    error_ = "ip netns add failed: " + r.err;
    return;
  }
  r = run({"ip", "netns", "exec", name_, "ip", "link", "set", "lo", "up"}, {}, 10000);
  if (r.status != 0) {
    error_ = "cannot bring lo up: " + r.err;
    run({"ip", "netns", "del", name_}, {}, 10000);
    return;
  }
  ok_ = true;
}

Netns::~Netns() {
  leave();
  if (!ok_) return;
  kill_all();
  run({"ip", "netns", "del", name_}, {}, 10000);
}

void Netns::kill_all() {
  if (ok_) netns_kill(name_);
}

std::vector<std::string> Netns::wrap(std::vector<std::string> argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", name_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

bool Netns::enter() {
  if (!ok_) return false;
  if (home_fd_ < 0) home_fd_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int fd = open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
  bool ok = fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

void Netns::leave() {
  if (home_fd_ >= 0) {
    setns(home_fd_, CLONE_NEWNET);
    close(home_fd_);
    home_fd_ = -1;
  }
}

// ---- files ---------------------------------------------------------------------------------------------------

std::string file_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_write(const std::string& path, const std::string& data, unsigned mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = fchmod(fd, mode) == 0 && write(fd, data.data(), data.size()) == ssize_t(data.size());
  close(fd);
  return ok;
}

std::string bytes_make(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = char(x >> 24);
  }
  return s;
}

bool file_make(const std::string& path, size_t n, uint64_t seed, unsigned mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = fchmod(fd, mode) == 0;
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  std::string buf(1 << 20, '\0');
  size_t left = n;
  while (ok && left > 0) {
    size_t chunk = std::min(left, buf.size());
    for (size_t i = 0; i < chunk; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      buf[i] = char(x >> 24);
    }
    ok = write(fd, buf.data(), chunk) == ssize_t(chunk);
    left -= chunk;
  }
  close(fd);
  return ok;
}

// ---- loop ----------------------------------------------------------------------------------------------------

bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, uint64_t timeout_ms) {
  // A guard timer guarantees that UV_RUN_ONCE returns at least every 20 ms.
  uv_timer_t guard;
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, [](uv_timer_t*) {}, 20, 20);
  double deadline = now_seconds() + double(timeout_ms) / 1000.0;
  bool ok = pred();
  while (!ok && now_seconds() < deadline) {
    uv_run(loop, UV_RUN_ONCE);
    ok = pred();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

void loop_settle(uv_loop_t* loop, uint64_t ms) {
  double deadline = now_seconds() + double(ms) / 1000.0;
  do {
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
  } while (now_seconds() < deadline);
}

void loop_drain(uv_loop_t* loop, uint64_t timeout_ms) {
  double deadline = now_seconds() + double(timeout_ms) / 1000.0;
  while (uv_run(loop, UV_RUN_NOWAIT) != 0 && now_seconds() < deadline) usleep(1000);
}

int fd_count() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;  // the directory stream's own fd
}

}  // namespace cloudlet::adb::test
