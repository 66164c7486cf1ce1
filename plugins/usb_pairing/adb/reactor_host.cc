#include "adb/reactor_host.h"

#include <utility>

namespace cloudlet::adb {

// A callback may stop its own watch or timer; the entry is then freed only after the callback returns.
struct HostReactor::Io {
  HostReactor* self;
  Id id = 0;
  IoCb cb;
  int busy = 0;
  bool dead = false;
};

struct HostReactor::Timer {
  HostReactor* self;
  Id id = 0;
  std::function<void()> cb;
  int busy = 0;
  bool dead = false;
};

namespace {

struct Post {
  std::function<void()> fn;
};

struct Work {
  std::function<void()> work;
  std::function<void(bool)> done;
};

}  // namespace

HostReactor::~HostReactor() {
  for (auto& [id, io] : ios_) {
    api_->io_stop(host_, id);
    if (io->busy) io->dead = true;
    else delete io;
  }
  for (auto& [id, t] : timers_) {
    api_->timer_stop(host_, id);
    if (t->busy) t->dead = true;
    else delete t;
  }
}

void HostReactor::on_io(void* ud, cl_io_id_t, cl_status_t status, uint32_t events) {
  auto* io = static_cast<Io*>(ud);
  if (io->dead) return;
  io->busy++;
  io->cb(status == CL_OK ? 0 : -1, events);
  io->busy--;
  if (io->dead && io->busy == 0) delete io;
}

Reactor::Id HostReactor::io_start(int fd, uint32_t events, IoCb cb) {
  auto* io = new Io{this, 0, std::move(cb)};
  cl_io_id_t id = 0;
  if (api_->io_start(host_, fd, events, &HostReactor::on_io, io, &id) != CL_OK || id == 0) {
    delete io;
    return 0;
  }
  io->id = id;
  ios_[id] = io;
  return id;
}

bool HostReactor::io_update(Id id, uint32_t events) {
  if (!ios_.count(id)) return false;
  return api_->io_update(host_, id, events) == CL_OK;
}

void HostReactor::io_stop(Id id) {
  auto it = ios_.find(id);
  if (it == ios_.end()) return;
  Io* io = it->second;
  ios_.erase(it);
  api_->io_stop(host_, id);
  if (io->busy) io->dead = true;
  else delete io;
}

void HostReactor::on_timer(void* ud, cl_timer_id_t id) {
  auto* t = static_cast<Timer*>(ud);
  if (t->dead) return;
  // One-shot: the core forgets the timer once it fired, so do we (before the callback, which may start a
  // new timer that could reuse nothing of this one).
  t->self->timers_.erase(id);
  t->busy++;
  t->cb();
  t->busy--;
  delete t;
}

Reactor::Id HostReactor::timer_start(uint64_t timeout_ms, std::function<void()> cb) {
  auto* t = new Timer{this, 0, std::move(cb)};
  cl_timer_id_t id = 0;
  if (api_->timer_start(host_, timeout_ms, 0, &HostReactor::on_timer, t, &id) != CL_OK || id == 0) {
    delete t;
    return 0;
  }
  t->id = id;
  timers_[id] = t;
  return id;
}

void HostReactor::timer_stop(Id id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  Timer* t = it->second;
  timers_.erase(it);
  api_->timer_stop(host_, id);
  if (t->busy) t->dead = true;
  else delete t;
}

bool HostReactor::post(std::function<void()> fn) {
  auto* p = new Post{std::move(fn)};
  cl_status_t rc = api_->post(
      host_,
      [](void* ud) {
        auto* q = static_cast<Post*>(ud);
        q->fn();
        delete q;
      },
      p);
  if (rc != CL_OK) {
    delete p;
    return false;
  }
  return true;
}

bool HostReactor::work_queue(std::function<void()> work, std::function<void(bool)> done) {
  auto* w = new Work{std::move(work), std::move(done)};
  cl_status_t rc = api_->work_queue(
      host_, [](void* ud) { static_cast<Work*>(ud)->work(); },
      [](void* ud, cl_status_t status) {
        auto* x = static_cast<Work*>(ud);
        x->done(status == CL_ECANCELED);
        delete x;
      },
      w, nullptr);
  if (rc != CL_OK) {
    delete w;
    return false;
  }
  return true;
}

uint64_t HostReactor::now_ms() { return api_->now_ms(host_); }

bool HostReactor::log_enabled(int level) { return api_->log_enabled(host_, level) != 0; }

void HostReactor::log(int level, const std::string& msg) {
  api_->log(host_, level, cl_str_t{msg.data(), msg.size()});
}

}  // namespace cloudlet::adb
