#include "virt/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "loop/loop.h"

extern char** environ;

namespace cloudlet::virt {
namespace {

void close_pair(int p[2]) {
  for (int i = 0; i < 2; i++)
    if (p[i] >= 0) ::close(p[i]);
}

}  // namespace

std::string ProcessResult::describe(const std::string& program) const {
  if (!started) return fmt::format("{} could not be started: {}", program, error);
  std::string first = err;
  auto nl = first.find('\n');
  if (nl != std::string::npos) first.resize(nl);
  if (first.empty()) {
    first = out;
    nl = first.find('\n');
    if (nl != std::string::npos) first.resize(nl);
  }
  std::string what = timed_out   ? std::string("timed out")
                     : signal    ? fmt::format("was killed by signal {}", signal)
                                 : fmt::format("exited with {}", exit_code);
  if (first.empty()) return fmt::format("{} {}", program, what);
  return fmt::format("{} {}: {}", program, what, first);
}

ProcessResult process_run(const std::vector<std::string>& argv, ProcessOptions options) {
  ProcessResult r;
  if (argv.empty() || argv[0].empty()) {
    r.error = "empty argv";
    return r;
  }
  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    r.error = fmt::format("pipe: {}", strerror(errno));
    close_pair(out_pipe);
    close_pair(err_pipe);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The child starts with default signal handling and nothing blocked, whatever this thread has.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid;
  int rc = argv[0].find('/') != std::string::npos ? posix_spawn(&pid, cargv[0], &fa, &attr, cargv.data(), environ)
                                                  : posix_spawnp(&pid, cargv[0], &fa, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    r.error = strerror(rc);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return r;
  }
  r.started = true;

  int64_t deadline = monotonic_ms() + options.timeout_ms;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* bufs[2] = {&r.out, &r.err};
  int open_fds = 2;
  char chunk[16384];
  while (open_fds > 0) {
    int64_t left = deadline - monotonic_ms();
    if (left <= 0) {
      r.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = read(fds[i].fd, chunk, sizeof chunk);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
        continue;
      }
      size_t room = options.max_output > bufs[i]->size() ? options.max_output - bufs[i]->size() : 0;
      bufs[i]->append(chunk, std::min(room, static_cast<size_t>(got)));
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

}  // namespace cloudlet::virt
