// The libuv AvahiPoll against the contract avahi-client relies on: events, updates, frees from inside any
// callback, absolute timeouts, and every handle closed at the end.
#include "discovery/avahi_poll.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <functional>

#include "loop/loop.h"

using cloudlet::AvahiUvPoll;
using cloudlet::Loop;

namespace {

struct SocketPair {
  int fd[2] = {-1, -1};
  SocketPair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd), 0); }
  ~SocketPair() {
    for (int f : fd)
      if (f >= 0) close(f);
  }
  void send_byte() { ASSERT_EQ(write(fd[1], "x", 1), 1); }
};

// Runs the loop until pred() holds or ms pass (bounded); returns pred().
bool run_until(Loop& loop, const std::function<bool()>& pred, uint64_t ms = 2000) {
  bool expired = false;
  auto guard = loop.timer_start(ms, 0, [&] { expired = true; });
  auto tick = loop.timer_start(5, 5, [] {});  // keeps UV_RUN_ONCE returning
  while (!pred() && !expired) uv_run(loop.uv(), UV_RUN_ONCE);
  loop.timer_stop(guard);
  loop.timer_stop(tick);
  return pred();
}

void run_for(Loop& loop, uint64_t ms) { run_until(loop, [] { return false; }, ms); }

timeval in_ms(int64_t ms) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  int64_t us = tv.tv_usec + ms * 1000;
  tv.tv_sec += us / 1000000;
  tv.tv_usec = us % 1000000;
  if (tv.tv_usec < 0) {
    tv.tv_sec -= 1;
    tv.tv_usec += 1000000;
  }
  return tv;
}

// A callback target: a std::function behind avahi's C signature.
struct WatchCb {
  std::function<void(AvahiWatch*, int, AvahiWatchEvent)> fn;
  static void call(AvahiWatch* w, int fd, AvahiWatchEvent ev, void* self) {
    static_cast<WatchCb*>(self)->fn(w, fd, ev);
  }
};
struct TimeoutCb {
  std::function<void(AvahiTimeout*)> fn;
  static void call(AvahiTimeout* t, void* self) { static_cast<TimeoutCb*>(self)->fn(t); }
};

// Destroys the poll and checks that everything closes: when_closed() fires and the loop closes cleanly.
void finish(Loop& loop, std::unique_ptr<AvahiUvPoll>& poll) {
  bool closed = false;
  poll->when_closed([&] { closed = true; });
  EXPECT_TRUE(run_until(loop, [&] { return closed; }));
  EXPECT_EQ(poll->open_handles(), 0u);
  poll.reset();
  EXPECT_EQ(loop.close(), 0);
}

}  // namespace

TEST(AvahiUvPoll, WatchReportsReadableAndEventsOnlyDuringCallback) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  int calls = 0;
  AvahiWatchEvent seen{}, during{};
  WatchCb cb;
  cb.fn = [&](AvahiWatch* w, int fd, AvahiWatchEvent ev) {
    EXPECT_EQ(fd, sp.fd[0]);
    calls++;
    seen = ev;
    during = api->watch_get_events(w);
    char c;
    EXPECT_EQ(read(fd, &c, 1), 1);
  };
  AvahiWatch* w = api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &cb);
  ASSERT_NE(w, nullptr);
  run_for(loop, 30);
  EXPECT_EQ(calls, 0);  // nothing to read yet
  sp.send_byte();
  ASSERT_TRUE(run_until(loop, [&] { return calls == 1; }));
  EXPECT_EQ(seen, AVAHI_WATCH_IN);
  EXPECT_EQ(during, AVAHI_WATCH_IN);
  EXPECT_EQ(api->watch_get_events(w), 0);
  api->watch_free(w);
  EXPECT_EQ(poll->live_watches(), 0u);
  finish(loop, poll);
}

// libdbus puts a read watch and a write watch on one socket; libuv allows one poll handle per fd.
TEST(AvahiUvPoll, TwoWatchesShareOneFd) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  int reads = 0, writes = 0;
  WatchCb rd, wr;
  AvahiWatch* wout = nullptr;
  rd.fn = [&](AvahiWatch*, int fd, AvahiWatchEvent ev) {
    EXPECT_TRUE(ev & AVAHI_WATCH_IN);
    char c;
    if (read(fd, &c, 1) == 1) reads++;
  };
  wr.fn = [&](AvahiWatch* w, int, AvahiWatchEvent ev) {
    EXPECT_TRUE(ev & AVAHI_WATCH_OUT);
    writes++;
    api->watch_update(w, AvahiWatchEvent(0));  // like libdbus once its queue is flushed
  };
  AvahiWatch* win = api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &rd);
  wout = api->watch_new(api, sp.fd[0], AVAHI_WATCH_OUT, WatchCb::call, &wr);
  ASSERT_NE(win, nullptr);
  ASSERT_NE(wout, nullptr);
  ASSERT_TRUE(run_until(loop, [&] { return writes == 1; }));
  sp.send_byte();
  ASSERT_TRUE(run_until(loop, [&] { return reads == 1; }));
  run_for(loop, 30);
  EXPECT_EQ(writes, 1);  // disabled by the update
  api->watch_update(wout, AVAHI_WATCH_OUT);
  ASSERT_TRUE(run_until(loop, [&] { return writes == 2; }));
  api->watch_free(win);
  api->watch_free(wout);
  finish(loop, poll);
}

TEST(AvahiUvPoll, UpdateToNothingPausesAndBackResumes) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  int calls = 0;
  WatchCb cb;
  cb.fn = [&](AvahiWatch*, int fd, AvahiWatchEvent) {
    calls++;
    char c;
    EXPECT_EQ(read(fd, &c, 1), 1);
  };
  AvahiWatch* w = api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &cb);
  api->watch_update(w, AvahiWatchEvent(0));
  sp.send_byte();
  run_for(loop, 40);
  EXPECT_EQ(calls, 0);
  api->watch_update(w, AVAHI_WATCH_IN);
  EXPECT_TRUE(run_until(loop, [&] { return calls == 1; }));
  api->watch_free(w);
  finish(loop, poll);
}

// avahi may free any watch from any callback, including the one about to be called next on the same fd.
TEST(AvahiUvPoll, FreeingAnotherWatchInsideACallbackSkipsIt) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  AvahiWatch* a = nullptr;
  AvahiWatch* b = nullptr;
  int a_calls = 0, b_calls = 0;
  WatchCb ca, cbb;
  char c;
  ca.fn = [&](AvahiWatch*, int fd, AvahiWatchEvent) {
    a_calls++;
    EXPECT_EQ(read(fd, &c, 1), 1);
    if (b) {
      api->watch_free(b);
      b = nullptr;
    }
  };
  cbb.fn = [&](AvahiWatch*, int fd, AvahiWatchEvent) {
    b_calls++;
    EXPECT_EQ(read(fd, &c, 1), 1);
    if (a) {
      api->watch_free(a);
      a = nullptr;
    }
  };
  a = api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &ca);
  b = api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &cbb);
  sp.send_byte();
  ASSERT_TRUE(run_until(loop, [&] { return a_calls + b_calls >= 1; }));
  run_for(loop, 20);
  EXPECT_EQ(a_calls + b_calls, 1);  // the first one called freed the other before its turn
  EXPECT_EQ(poll->live_watches(), 1u);
  EXPECT_TRUE((a == nullptr) != (b == nullptr));
  api->watch_free(a ? a : b);
  EXPECT_EQ(poll->live_watches(), 0u);
  finish(loop, poll);
}

// The dbus pattern on reconnect: the last watch of an fd is freed and a new one created on the same fd
// number inside a callback.
TEST(AvahiUvPoll, FreeSelfAndWatchSameFdAgainInsideCallback) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  int first = 0, second = 0;
  WatchCb c1, c2;
  AvahiWatch* again = nullptr;
  c2.fn = [&](AvahiWatch*, int fd, AvahiWatchEvent) {
    second++;
    char c;
    EXPECT_EQ(read(fd, &c, 1), 1);
  };
  c1.fn = [&](AvahiWatch* self, int fd, AvahiWatchEvent) {
    first++;
    api->watch_free(self);
    again = api->watch_new(api, fd, AVAHI_WATCH_IN, WatchCb::call, &c2);
    EXPECT_NE(again, nullptr);
  };
  api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &c1);
  sp.send_byte();
  ASSERT_TRUE(run_until(loop, [&] { return second == 1; }));
  EXPECT_EQ(first, 1);
  api->watch_free(again);
  finish(loop, poll);
}

TEST(AvahiUvPoll, HangupIsReported) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  int calls = 0;
  WatchCb cb;
  AvahiWatch* w = nullptr;
  cb.fn = [&](AvahiWatch* self, int fd, AvahiWatchEvent ev) {
    calls++;
    char c;
    EXPECT_EQ(read(fd, &c, 1), 0);  // end of stream
    EXPECT_TRUE(ev & (AVAHI_WATCH_IN | AVAHI_WATCH_HUP));
    api->watch_free(self);
    w = nullptr;
  };
  w = api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &cb);
  close(sp.fd[1]);
  sp.fd[1] = -1;
  ASSERT_TRUE(run_until(loop, [&] { return calls == 1; }));
  EXPECT_EQ(w, nullptr);
  finish(loop, poll);
}

// POLLERR (a pipe whose reader is gone) is reported once as AVAHI_WATCH_ERR and does not spin the loop.
TEST(AvahiUvPoll, ErrorIsReportedOnceWithoutSpinning) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  int calls = 0;
  AvahiWatchEvent seen{};
  WatchCb cb;
  cb.fn = [&](AvahiWatch*, int, AvahiWatchEvent ev) {
    calls++;
    seen = ev;
  };
  close(fds[0]);
  AvahiWatch* w = api->watch_new(api, fds[1], AVAHI_WATCH_IN, WatchCb::call, &cb);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(run_until(loop, [&] { return calls >= 1; }));
  run_for(loop, 50);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(seen & AVAHI_WATCH_ERR);
  api->watch_free(w);
  close(fds[1]);
  finish(loop, poll);
}

TEST(AvahiUvPoll, TimeoutFiresOnceAtTheAbsoluteTime) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  int fired = 0;
  uint64_t fired_at = 0;
  TimeoutCb cb;
  cb.fn = [&](AvahiTimeout*) {
    fired++;
    fired_at = uv_hrtime();
  };
  uint64_t t0 = uv_hrtime();
  timeval tv = in_ms(60);
  AvahiTimeout* t = api->timeout_new(api, &tv, TimeoutCb::call, &cb);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(run_until(loop, [&] { return fired == 1; }));
  uint64_t ms = (fired_at - t0) / 1000000;
  EXPECT_GE(ms, 55u);
  EXPECT_LT(ms, 1000u);
  run_for(loop, 100);
  EXPECT_EQ(fired, 1);  // disabled after expiry
  // Re-enable with a time in the past: runs as soon as possible.
  timeval past = in_ms(-500);
  api->timeout_update(t, &past);
  ASSERT_TRUE(run_until(loop, [&] { return fired == 2; }, 200));
  api->timeout_free(t);
  finish(loop, poll);
}

TEST(AvahiUvPoll, DisabledTimeoutNeverFiresAndUpdateRearms) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  int fired = 0;
  TimeoutCb cb;
  cb.fn = [&](AvahiTimeout*) { fired++; };
  AvahiTimeout* t = api->timeout_new(api, nullptr, TimeoutCb::call, &cb);
  run_for(loop, 50);
  EXPECT_EQ(fired, 0);
  timeval tv = in_ms(10);
  api->timeout_update(t, &tv);
  api->timeout_update(t, nullptr);  // disabled again before it fires
  run_for(loop, 50);
  EXPECT_EQ(fired, 0);
  api->timeout_update(t, &tv);
  EXPECT_TRUE(run_until(loop, [&] { return fired == 1; }));
  api->timeout_free(t);
  finish(loop, poll);
}

// Freed from inside callbacks: its own, and another timeout due in the same loop turn.
TEST(AvahiUvPoll, TimeoutsFreedInsideCallbacks) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  AvahiTimeout* a = nullptr;
  AvahiTimeout* b = nullptr;
  int a_calls = 0, b_calls = 0;
  TimeoutCb ca, cbb;
  ca.fn = [&](AvahiTimeout* self) {
    a_calls++;
    if (b) api->timeout_free(b);
    b = nullptr;
    api->timeout_free(self);
  };
  cbb.fn = [&](AvahiTimeout* self) {
    b_calls++;
    if (a) api->timeout_free(a);
    a = nullptr;
    api->timeout_free(self);
  };
  timeval tv = in_ms(5);
  a = api->timeout_new(api, &tv, TimeoutCb::call, &ca);
  b = api->timeout_new(api, &tv, TimeoutCb::call, &cbb);
  ASSERT_TRUE(run_until(loop, [&] { return a_calls + b_calls >= 1; }));
  run_for(loop, 30);
  EXPECT_EQ(a_calls + b_calls, 1);
  EXPECT_EQ(poll->live_timeouts(), 0u);
  finish(loop, poll);
}

// An owner that forgets to free (a bug) still leaves a loop that closes cleanly.
TEST(AvahiUvPoll, DestroyingThePollClosesLeftovers) {
  Loop loop;
  auto poll = std::make_unique<AvahiUvPoll>(loop);
  const AvahiPoll* api = poll->api();
  SocketPair sp;
  WatchCb cb;
  cb.fn = [](AvahiWatch*, int, AvahiWatchEvent) {};
  TimeoutCb tcb;
  tcb.fn = [](AvahiTimeout*) {};
  timeval tv = in_ms(10000);
  api->watch_new(api, sp.fd[0], AVAHI_WATCH_IN, WatchCb::call, &cb);
  api->timeout_new(api, &tv, TimeoutCb::call, &tcb);
  poll.reset();
  EXPECT_EQ(loop.close(), 0);
}

TEST(AvahiUvPoll, WhenClosedWithNothingOpenRunsDeferred) {
  Loop loop;
  AvahiUvPoll poll(loop);
  bool done = false;
  poll.when_closed([&] { done = true; });
  EXPECT_FALSE(done);  // never inside the caller's frame
  EXPECT_TRUE(run_until(loop, [&] { return done; }));
  EXPECT_EQ(loop.close(), 0);
}
