// Counting work in flight (libvirt calls, file work, probes), so that shutdown can wait until every callback that
// refers to the services and instances has come back before they are destroyed.
//
// Each asynchronous step holds a token; when the last token is released and someone waits, the waiter runs
// (deferred, from a clean stack). Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "loop/loop.h"

namespace cloudlet::virt {

class Pending {
 public:
  explicit Pending(Loop& loop) : loop_(loop), alive_(std::make_shared<bool>(true)) {}
  ~Pending() { *alive_ = false; }

  std::shared_ptr<void> hold() {
    count_++;
    std::weak_ptr<bool> alive = alive_;
    return std::shared_ptr<void>(nullptr, [this, alive](void*) {
      if (alive.expired()) return;
      if (--count_ == 0 && !idle_.empty()) {
        auto fns = std::move(idle_);
        idle_.clear();
        for (auto& fn : fns) loop_.defer(std::move(fn));
      }
    });
  }

  // Runs fn once nothing is in flight (at once, deferred, if nothing is).
  void when_idle(std::function<void()> fn) {
    if (count_ == 0) loop_.defer(std::move(fn));
    else idle_.push_back(std::move(fn));
  }

  size_t count() const { return count_; }

 private:
  Loop& loop_;
  size_t count_ = 0;
  std::vector<std::function<void()>> idle_;
  std::shared_ptr<bool> alive_;
};

}  // namespace cloudlet::virt
