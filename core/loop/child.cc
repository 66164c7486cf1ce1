#include "loop/child.h"

#include <signal.h>

#include <cstring>
#include <memory>

namespace cloudlet {
namespace {

constexpr uint64_t kKillGraceMs = 2000;   // SIGTERM, then SIGKILL this much later
constexpr uint64_t kDrainGraceMs = 1000;  // after exit: how long a grandchild may keep the output pipes open

template <typename H>
uv_handle_t* as_handle(H* h) {
  return reinterpret_cast<uv_handle_t*>(h);
}

}  // namespace

// One stdin write: owns a copy when asked to, and the done callback (which libuv always calls: 0, an error,
// or UV_ECANCELED when the pipe closes first).
struct Child::Write {
  uv_write_t req;
  WriteDone done;
};

Child* Child::start(uv_loop_t* loop, ChildOptions options, OutputFn on_output, ExitFn on_exit) {
  auto* c = new Child(loop, std::move(options), std::move(on_output), std::move(on_exit));
  c->spawn();
  return c;
}

Child::Child(uv_loop_t* loop, ChildOptions options, OutputFn on_output, ExitFn on_exit)
    : loop_(loop), options_(std::move(options)), on_output_(std::move(on_output)), on_exit_(std::move(on_exit)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  handles_open_++;
  for (int fd = 0; fd < 3; fd++) {
    pipes_[fd].child = this;
    pipes_[fd].fd = fd;
  }
}

void Child::spawn() {
  std::vector<char*> args, env;
  for (auto& a : options_.argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : options_.env) env.push_back(e.data());
  env.push_back(nullptr);

  uv_stdio_container_t stdio[3];
  memset(stdio, 0, sizeof stdio);
  for (int fd = 0; fd < 3; fd++) {
    bool want = fd == 0 ? options_.stdin_pipe : (options_.capture[fd - 1] || options_.stream[fd - 1]);
    if (!want) {
      stdio[fd].flags = UV_IGNORE;  // libuv opens /dev/null for 0-2
      continue;
    }
    uv_pipe_init(loop_, &pipes_[fd].handle, 0);
    pipes_[fd].handle.data = &pipes_[fd];
    pipes_[fd].open = true;
    handles_open_++;
    stdio[fd].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | (fd == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE));
    stdio[fd].data.stream = reinterpret_cast<uv_stream_t*>(&pipes_[fd].handle);
  }

  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.file = args[0];
  po.args = args.data();
  po.env = env.data();
  po.cwd = options_.cwd.empty() ? nullptr : options_.cwd.c_str();
  po.flags = UV_PROCESS_DETACHED;  // setsid: its own process group, which kill() and the deadline signal
  po.stdio_count = 3;
  po.stdio = stdio;
  po.exit_cb = [](uv_process_t* p, int64_t status, int sig) {
    static_cast<Child*>(p->data)->on_process_exit(status, sig);
  };
  process_.data = this;
  int rc = uv_spawn(loop_, &process_, &po);
  handles_open_++;  // initialised by uv_spawn even when it fails: closed either way
  if (rc != 0) {
    result_.spawn_error = rc;
    exited_ = true;
    for (auto& p : pipes_) close_pipe(&p);
    arm_timer(0);  // report from a later loop turn, never from inside start()
    return;
  }
  spawned_ = true;
  pid_ = process_.pid;
  for (int fd = 1; fd < 3; fd++) {
    if (!pipes_[fd].open) continue;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&pipes_[fd].handle),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          Child* c = static_cast<Pipe*>(h->data)->child;
          *buf = uv_buf_init(c->read_buf_, sizeof c->read_buf_);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* p = static_cast<Pipe*>(s->data);
          p->child->on_read(p, n, buf);
        });
  }
  if (options_.timeout_ms > 0) arm_timer(options_.timeout_ms);
}

void Child::arm_timer(uint64_t ms) {
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Child*>(t->data)->on_timer(); }, ms, 0);
}

void Child::on_timer() {
  if (exited_) {  // a failed spawn to report, or output a grandchild still holds open after the exit
    for (int fd = 1; fd < 3; fd++) close_pipe(&pipes_[fd]);
    maybe_finish();
    return;
  }
  if (killing_) {
    uv_kill(-pid_, SIGKILL);
    return;
  }
  result_.timed_out = true;
  killing_ = true;
  uv_kill(-pid_, SIGTERM);
  arm_timer(kKillGraceMs);
}

void Child::on_read(Pipe* p, ssize_t n, const uv_buf_t* buf) {
  if (n < 0) {  // UV_EOF or an error: this stream has ended
    close_pipe(p);
    maybe_finish();
    return;
  }
  if (n == 0) return;
  size_t i = static_cast<size_t>(p->fd - 1);
  std::string_view chunk(buf->base, static_cast<size_t>(n));
  if (options_.capture[i]) {
    std::string& kept = i == 0 ? result_.out : result_.err;
    size_t room = options_.max_capture > kept.size() ? options_.max_capture - kept.size() : 0;
    if (chunk.size() > room) result_.truncated[i] = true;
    kept.append(chunk.substr(0, room));
  }
  if (options_.stream[i] && on_output_ && !finished_) on_output_(p->fd, chunk);
}

void Child::on_process_exit(int64_t status, int sig) {
  exited_ = true;
  result_.exit_code = sig == 0 ? status : -1;
  result_.term_signal = sig;
  uv_timer_stop(&timer_);
  close_pipe(&pipes_[0]);  // nobody reads stdin any more: pending writes end with UV_ECANCELED
  if (pipes_[1].open || pipes_[2].open) arm_timer(kDrainGraceMs);
  maybe_finish();
}

void Child::close_pipe(Pipe* p) {
  if (!p->open) return;
  p->open = false;
  uv_close(as_handle(&p->handle), [](uv_handle_t* h) { static_cast<Pipe*>(h->data)->child->handle_closed(); });
}

void Child::maybe_finish() {
  if (finished_ || !exited_ || pipes_[1].open || pipes_[2].open) return;
  if (result_.spawn_error != 0 && uv_is_active(as_handle(&timer_))) return;  // reported by the timer
  finish();
}

void Child::finish() {
  finished_ = true;
  uv_timer_stop(&timer_);
  ExitFn cb = std::move(on_exit_);
  on_output_ = nullptr;
  if (cb) cb(result_);
  // Close what is left; the last close callback frees this.
  for (auto& p : pipes_) close_pipe(&p);
  uv_close(as_handle(&timer_), [](uv_handle_t* h) { static_cast<Child*>(h->data)->handle_closed(); });
  uv_close(as_handle(&process_), [](uv_handle_t* h) { static_cast<Child*>(h->data)->handle_closed(); });
}

void Child::handle_closed() {
  if (--handles_open_ == 0) delete this;
}

int Child::write(std::string_view data, WriteDone done) {
  if (!options_.stdin_pipe || stdin_closing_) return UV_EPIPE;
  if (exited_ || !pipes_[0].open) return UV_ECANCELED;  // done is not called: the caller reports it
  auto w = std::make_unique<Write>();
  w->done = std::move(done);
  uv_buf_t buf = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
  w->req.data = w.get();
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&pipes_[0].handle), &buf, 1,
                    [](uv_write_t* req, int status) {
                      std::unique_ptr<Write> wr(static_cast<Write*>(req->data));
                      if (wr->done) wr->done(status);
                    });
  if (rc != 0) return rc;  // nothing was queued: the caller still owns done's duty
  w.release();
  return 0;
}

int Child::close_stdin() {
  if (!options_.stdin_pipe || stdin_closing_) return UV_EPIPE;
  stdin_closing_ = true;
  if (!pipes_[0].open) return 0;
  auto* req = new uv_shutdown_t;
  req->data = this;
  int rc = uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&pipes_[0].handle), [](uv_shutdown_t* r, int) {
    auto* c = static_cast<Child*>(r->data);
    delete r;
    c->close_pipe(&c->pipes_[0]);
  });
  if (rc != 0) {
    delete req;
    close_pipe(&pipes_[0]);
  }
  return 0;
}

int Child::kill(int signum) {
  if (exited_ || !spawned_) return UV_ESRCH;
  return uv_kill(-pid_, signum);
}

void Child::stop() {
  if (exited_ || killing_) {
    if (!exited_) result_.stopped = true;
    return;
  }
  result_.stopped = true;
  killing_ = true;
  uv_kill(-pid_, SIGTERM);
  arm_timer(kKillGraceMs);
}

void Child::detach() {
  on_output_ = nullptr;
  on_exit_ = nullptr;
  if (!exited_ && spawned_) uv_kill(-pid_, SIGKILL);
}

}  // namespace cloudlet
