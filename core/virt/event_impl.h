// libvirt's event loop implemented on the cloudlet Loop (virEventRegisterImpl).
//
// libvirt adds, updates and removes handles and timeouts from any of its threads. Every call records the wanted
// state under one mutex and returns at once (add returns its id synchronously); the loop thread then makes the
// uv handle match the record (calls on the loop thread apply at once, others through Loop::post). A handle polls
// a dup() of libvirt's fd, so libvirt may close its fd right after removing the handle without the loop ever
// touching a closed or reused descriptor. Free callbacks run later on the loop from a clean stack (Loop::defer),
// never inside the remove call and never while the handle's own callback is running.
//
// Timeouts follow libvirt's meaning: frequency -1 = disabled, 0 = fire on every loop iteration, N = every N ms.
#pragma once

#include <cstddef>
#include <cstdint>

#include "loop/loop.h"

namespace cloudlet::virt {

// Loop thread. Binds libvirt's event implementation to `loop`. The first call registers it with libvirt
// (virEventRegisterImpl, once per process, before any other libvirt call: opening qemu:///embed needs it).
// It also routes libvirt's default error printing to the log at debug level (callers read errors themselves).
// Calling it again for the same loop does nothing; binding another loop is allowed only after
// event_impl_shutdown() (tests use one loop per test). Returns false if another loop is still bound.
bool event_impl_register(Loop& loop);

// Loop thread. Stops and closes every uv handle the implementation owns, refuses later adds (they return -1),
// and schedules the pending free callbacks on the loop, so that Loop::close() returns 0 afterwards. Close libvirt
// connections first: their watches go away with them.
void event_impl_shutdown();

struct EventImplStats {
  size_t handles = 0;        // live (added, not removed) handles
  size_t timeouts = 0;       // live timeouts
  size_t uv_handles = 0;     // uv handles currently open on the loop (loop thread view)
  size_t frees_pending = 0;  // free callbacks scheduled but not run yet
  uint64_t dispatched = 0;   // callbacks delivered to libvirt so far
};

// Any thread.
EventImplStats event_impl_stats();

}  // namespace cloudlet::virt
