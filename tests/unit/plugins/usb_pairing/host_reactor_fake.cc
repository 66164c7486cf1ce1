#include "host_reactor_fake.h"

#include <cstdio>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace cloudlet::adb::test {

struct FakeHost::Impl {
  uv_loop_t* loop;
  uint64_t next = 1;
  struct Timer {
    uv_timer_t t;
    Impl* impl;
    uint64_t id;
    cl_timer_cb cb;
    void* ud;
  };
  struct Io {
    uv_poll_t p;
    uint64_t id;
    cl_io_cb cb;
    void* ud;
  };
  struct Work {
    uv_work_t req;
    cl_work_cb work;
    cl_done_cb done;
    void* ud;
  };
  std::unordered_map<uint64_t, Timer*> timers;
  std::unordered_map<uint64_t, Io*> ios;
  uv_async_t async;
  std::mutex mutex;
  std::vector<std::pair<cl_post_cb, void*>> posts;

  static Impl* of(cl_host_t* h) { return reinterpret_cast<FakeHost*>(h)->impl_.get(); }
};

size_t FakeHost::live_handles() const { return impl_->timers.size() + impl_->ios.size(); }

FakeHost::FakeHost(uv_loop_t* loop) : impl_(std::make_unique<Impl>()) {
  using Timer = Impl::Timer;
  using Io = Impl::Io;
  using Work = Impl::Work;
  impl_->loop = loop;
  impl_->async.data = impl_.get();
  uv_async_init(loop, &impl_->async, [](uv_async_t* a) {
    auto* im = static_cast<Impl*>(a->data);
    std::vector<std::pair<cl_post_cb, void*>> batch;
    {
      std::lock_guard<std::mutex> lock(im->mutex);
      batch.swap(im->posts);
    }
    for (auto& [cb, ud] : batch) cb(ud);
  });

  api_.struct_size = sizeof(cl_host_api_t);
  api_.abi_major = CL_ABI_MAJOR;
  api_.abi_minor = CL_ABI_MINOR;
  api_.log = [](cl_host_t*, int32_t level, cl_str_t msg) {
    if (level <= CL_LOG_WARN) std::fprintf(stderr, "fakehost log %d: %.*s\n", level, int(msg.len), msg.ptr);
  };
  api_.log_enabled = [](cl_host_t*, int32_t level) { return level <= CL_LOG_WARN ? 1 : 0; };
  api_.now_ms = [](cl_host_t* h) -> uint64_t { return uv_now(Impl::of(h)->loop); };
  api_.timer_start = [](cl_host_t* h, uint64_t timeout, uint64_t repeat, cl_timer_cb cb, void* ud,
                        cl_timer_id_t* out) -> cl_status_t {
    if (!cb) return CL_EINVAL;
    Impl* im = Impl::of(h);
    auto* t = new Timer{{}, im, im->next++, cb, ud};
    uv_timer_init(im->loop, &t->t);
    t->t.data = t;
    uv_timer_start(
        &t->t,
        [](uv_timer_t* tt) {
          auto* x = static_cast<Timer*>(tt->data);
          bool repeating = uv_timer_get_repeat(tt) != 0;
          uint64_t id = x->id;
          if (!repeating) {
            // The core forgets a one-shot timer once it fired.
            x->impl->timers.erase(id);
            uv_close(reinterpret_cast<uv_handle_t*>(tt), [](uv_handle_t* hh) { delete static_cast<Timer*>(hh->data); });
          }
          x->cb(x->ud, id);
        },
        timeout, repeat);
    im->timers[t->id] = t;
    *out = t->id;
    return CL_OK;
  };
  api_.timer_stop = [](cl_host_t* h, cl_timer_id_t id) -> cl_status_t {
    Impl* im = Impl::of(h);
    auto it = im->timers.find(id);
    if (it == im->timers.end()) return CL_ENOENT;
    uv_timer_stop(&it->second->t);
    uv_close(reinterpret_cast<uv_handle_t*>(&it->second->t), [](uv_handle_t* hh) { delete static_cast<Timer*>(hh->data); });
    im->timers.erase(it);
    return CL_OK;
  };
  api_.post = [](cl_host_t* h, cl_post_cb cb, void* ud) -> cl_status_t {
    Impl* im = Impl::of(h);
    {
      std::lock_guard<std::mutex> lock(im->mutex);
      im->posts.emplace_back(cb, ud);
    }
    uv_async_send(&im->async);
    return CL_OK;
  };
  api_.work_queue = [](cl_host_t* h, cl_work_cb work, cl_done_cb done, void* ud, cl_work_id_t* out) -> cl_status_t {
    Impl* im = Impl::of(h);
    auto* w = new Work{{}, work, done, ud};
    w->req.data = w;
    uv_queue_work(
        im->loop, &w->req, [](uv_work_t* r) { static_cast<Work*>(r->data)->work(static_cast<Work*>(r->data)->ud); },
        [](uv_work_t* r, int status) {
          auto* x = static_cast<Work*>(r->data);
          x->done(x->ud, status == UV_ECANCELED ? CL_ECANCELED : CL_OK);
          delete x;
        });
    if (out) *out = im->next++;
    return CL_OK;
  };
  api_.io_start = [](cl_host_t* h, int fd, uint32_t events, cl_io_cb cb, void* ud, cl_io_id_t* out) -> cl_status_t {
    Impl* im = Impl::of(h);
    auto* io = new Io{{}, im->next++, cb, ud};
    if (uv_poll_init(im->loop, &io->p, fd) != 0) {
      delete io;
      return CL_EINVAL;
    }
    io->p.data = io;
    int ev = (events & CL_IO_READABLE ? UV_READABLE : 0) | (events & CL_IO_WRITABLE ? UV_WRITABLE : 0) |
             (events & CL_IO_DISCONNECT ? UV_DISCONNECT : 0);
    uv_poll_start(&io->p, ev, [](uv_poll_t* p, int status, int e) {
      auto* x = static_cast<Io*>(p->data);
      uint32_t out_ev = (e & UV_READABLE ? CL_IO_READABLE : 0) | (e & UV_WRITABLE ? CL_IO_WRITABLE : 0) |
                        (e & UV_DISCONNECT ? CL_IO_DISCONNECT : 0);
      x->cb(x->ud, x->id, status < 0 ? CL_EIO : CL_OK, out_ev);
    });
    im->ios[io->id] = io;
    *out = io->id;
    return CL_OK;
  };
  api_.io_update = [](cl_host_t* h, cl_io_id_t id, uint32_t events) -> cl_status_t {
    Impl* im = Impl::of(h);
    auto it = im->ios.find(id);
    if (it == im->ios.end()) return CL_ENOENT;
    int ev = (events & CL_IO_READABLE ? UV_READABLE : 0) | (events & CL_IO_WRITABLE ? UV_WRITABLE : 0) |
             (events & CL_IO_DISCONNECT ? UV_DISCONNECT : 0);
    uv_poll_start(&it->second->p, ev, it->second->p.poll_cb);
    return CL_OK;
  };
  api_.io_stop = [](cl_host_t* h, cl_io_id_t id) -> cl_status_t {
    Impl* im = Impl::of(h);
    auto it = im->ios.find(id);
    if (it == im->ios.end()) return CL_ENOENT;
    uv_poll_stop(&it->second->p);
    uv_close(reinterpret_cast<uv_handle_t*>(&it->second->p), [](uv_handle_t* hh) { delete static_cast<Io*>(hh->data); });
    im->ios.erase(it);
    return CL_OK;
  };
  api_.strerror = [](cl_status_t) -> const char* { return "error"; };
}

FakeHost::~FakeHost() {
  for (auto& [id, t] : impl_->timers) {
    uv_timer_stop(&t->t);
    uv_close(reinterpret_cast<uv_handle_t*>(&t->t), [](uv_handle_t* hh) { delete static_cast<Impl::Timer*>(hh->data); });
  }
  for (auto& [id, io] : impl_->ios) {
    uv_poll_stop(&io->p);
    uv_close(reinterpret_cast<uv_handle_t*>(&io->p), [](uv_handle_t* hh) { delete static_cast<Impl::Io*>(hh->data); });
  }
  // The async handle is embedded in Impl: hand Impl to its close callback.
  Impl* im = impl_.release();
  uv_close(reinterpret_cast<uv_handle_t*>(&im->async), [](uv_handle_t* hh) { delete static_cast<Impl*>(hh->data); });
}

}  // namespace cloudlet::adb::test
