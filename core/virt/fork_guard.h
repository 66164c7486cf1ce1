// Protecting libvirt's forked children from libuv's fork handler.
//
// libuv 1.44 registers a pthread_atfork child handler (uv__signal_global_reinit) that, in every forked child,
// closes the two fd numbers of its signal lock pipe and creates a new pipe at the lowest free numbers. libvirt
// starts QEMU with a double fork in which the middle process closes all fds and creates its own pipe at 3/4;
// when libuv's pipe had landed on 4/5 in that middle process, the grandchild's handler closes libvirt's pipe and
// QEMU never starts ("Unable to wait for child process", "Child process ... unexpected exit status 1").
//
// The guard keeps fds 3..18 occupied (by /dev/null) for the life of the process, from before the first uv loop is
// created: libuv's pipe then always lives above them, in the parent and in libvirt's middle process, while
// libvirt's own fds in its children (allocated after it closes everything) land in 3..18, out of reach.
#pragma once

namespace cloudlet::virt {

// Idempotent; any thread. Runs automatically before main() (a constructor in fork_guard.cc, linked in through
// event_impl_register); calling it first thing in main() keeps the guarantee explicit. Returns false if some fd
// in the range could not be occupied.
bool fork_guard_install();

// True if every fd in the guarded range is still open (placeholders or inherited fds).
bool fork_guard_intact();

}  // namespace cloudlet::virt
