// An AvahiPoll on the core libuv loop, so avahi-client runs on the loop thread without a poll thread.
//
// Watches map to uv_poll handles and timeouts to uv_timer handles. libuv allows one poll handle per file
// descriptor, while libdbus registers a read watch and a write watch on the same socket, so watches on one fd
// share a single uv_poll polling the union of their events. Avahi may free any watch or timeout from inside
// any callback: a freed object is stopped at once, then closed, and its memory is released only in the
// handle's close callback, so a callback in progress never touches freed memory.
//
// Loop thread only. The poll must outlive the AvahiClient using it; closing finishes after the client has
// been freed (see when_closed()).
#pragma once

#include <avahi-common/watch.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "loop/loop.h"

namespace cloudlet {

class AvahiUvPoll {
 public:
  explicit AvahiUvPoll(Loop& loop);
  // Closes whatever avahi did not free (a bug in the owner, logged); memory is released by the loop later.
  ~AvahiUvPoll();
  AvahiUvPoll(const AvahiUvPoll&) = delete;
  AvahiUvPoll& operator=(const AvahiUvPoll&) = delete;

  // What avahi_client_new() takes.
  const AvahiPoll* api() const { return &api_; }

  // Calls done (once, on the loop) as soon as every handle this poll ever opened has finished closing;
  // right away (deferred) if none is open. Replaces an earlier pending callback.
  void when_closed(std::function<void()> done);

  // Live objects (created and not yet freed by avahi), and uv handles not yet through their close callback.
  size_t live_watches() const { return live_watches_; }
  size_t live_timeouts() const { return live_timeouts_; }
  size_t open_handles() const;

  struct Tracker;  // shared with handles so close callbacks never reach a destroyed poll
  struct FdPoll;
  struct Watch;
  struct Timeout;

 private:
  static AvahiWatch* watch_new(const AvahiPoll* api, int fd, AvahiWatchEvent event, AvahiWatchCallback cb,
                               void* userdata);
  static void watch_update(AvahiWatch* w, AvahiWatchEvent event);
  static AvahiWatchEvent watch_get_events(AvahiWatch* w);
  static void watch_free(AvahiWatch* w);
  static AvahiTimeout* timeout_new(const AvahiPoll* api, const struct timeval* tv, AvahiTimeoutCallback cb,
                                   void* userdata);
  static void timeout_update(AvahiTimeout* t, const struct timeval* tv);
  static void timeout_free(AvahiTimeout* t);

  void fd_poll_release(FdPoll* p);
  void timeout_release(Timeout* t);

  Loop& loop_;
  AvahiPoll api_;
  std::shared_ptr<Tracker> tracker_;
  std::unordered_map<int, FdPoll*> fd_polls_;  // open (not closing) polls by fd
  std::unordered_set<Timeout*> timeouts_;  // live timeouts, for the destructor's clean-up
  size_t live_watches_ = 0;
  size_t live_timeouts_ = 0;
};

}  // namespace cloudlet
