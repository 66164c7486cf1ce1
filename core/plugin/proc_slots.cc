#include "plugin/proc_slots.h"

#include <signal.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace cloudlet {
namespace {

constexpr size_t kMaxStrings = 4096;
constexpr size_t kMaxStringBytes = 1 << 20;                // argv and env together, as execve's own limit
constexpr uint64_t kDefaultCapture = 1 << 20;
constexpr uint64_t kMaxCapture = uint64_t{256} << 20;      // per stream: bounds what one child makes us hold
constexpr uint32_t kKnownFlags = CL_PROC_F_CAPTURE_STDOUT | CL_PROC_F_CAPTURE_STDERR | CL_PROC_F_STREAM_STDOUT |
                                 CL_PROC_F_STREAM_STDERR | CL_PROC_F_STDIN_PIPE;

// Copies a NULL-terminated list; false when it is too long or too big.
bool copy_list(const char* const* list, std::vector<std::string>* out, size_t* bytes) {
  for (size_t i = 0; list[i]; i++) {
    if (i >= kMaxStrings) return false;
    size_t n = strlen(list[i]);
    *bytes += n + 1;
    if (*bytes > kMaxStringBytes) return false;
    out->emplace_back(list[i], n);
  }
  return true;
}

}  // namespace

cl_status_t proc_options(const cl_proc_desc_t* desc, const std::string& default_cwd, ChildOptions* out) {
  if (!desc || desc->struct_size < offsetof(cl_proc_desc_t, max_capture) + sizeof desc->max_capture) return CL_EINVAL;
  if ((desc->flags & ~kKnownFlags) != 0 || !desc->argv || !desc->argv[0] || !desc->argv[0][0]) return CL_EINVAL;
  ChildOptions o;
  size_t bytes = 0;
  if (!copy_list(desc->argv, &o.argv, &bytes)) return CL_EINVAL;
  if (desc->env) {
    if (!copy_list(desc->env, &o.env, &bytes)) return CL_EINVAL;
    for (const auto& e : o.env) {
      if (e.find('=') == std::string::npos || e[0] == '=') return CL_EINVAL;
    }
  } else {
    const char* path = getenv("PATH");
    o.env = {std::string("PATH=") + (path && *path ? path : "/usr/local/bin:/usr/bin:/bin"), "LANG=C.UTF-8"};
  }
  o.cwd = desc->cwd ? std::string(desc->cwd) : default_cwd;
  o.stdin_pipe = desc->flags & CL_PROC_F_STDIN_PIPE;
  o.capture[0] = desc->flags & CL_PROC_F_CAPTURE_STDOUT;
  o.capture[1] = desc->flags & CL_PROC_F_CAPTURE_STDERR;
  o.stream[0] = desc->flags & CL_PROC_F_STREAM_STDOUT;
  o.stream[1] = desc->flags & CL_PROC_F_STREAM_STDERR;
  o.timeout_ms = desc->timeout_ms;
  uint64_t cap = desc->max_capture == 0 ? kDefaultCapture : desc->max_capture;
  o.max_capture = static_cast<size_t>(cap > kMaxCapture ? kMaxCapture : cap);
  *out = std::move(o);
  return CL_OK;
}

void proc_exit_fill(const ChildExit& e, cl_proc_exit_t* x) {
  memset(x, 0, sizeof *x);
  x->struct_size = sizeof *x;
  if (e.spawn_error == UV_ENOENT) x->status = CL_ENOENT;
  else if (e.spawn_error == UV_EACCES || e.spawn_error == UV_EPERM) x->status = CL_EPERM;
  else if (e.spawn_error != 0) x->status = CL_EIO;
  else if (e.stopped) x->status = CL_ECANCELED;
  else if (e.timed_out) x->status = CL_ETIMEDOUT;
  else x->status = CL_OK;
  x->exit_code = e.exit_code;
  x->term_signal = e.term_signal;
  x->truncated = (e.truncated[0] ? 1u : 0u) | (e.truncated[1] ? 2u : 0u);
  x->out = cl_str_t{e.out.data(), e.out.size()};
  x->err = cl_str_t{e.err.data(), e.err.size()};
}

bool proc_signal_allowed(int32_t signum) {
  return signum == SIGTERM || signum == SIGKILL || signum == SIGHUP || signum == SIGINT;
}

}  // namespace cloudlet
