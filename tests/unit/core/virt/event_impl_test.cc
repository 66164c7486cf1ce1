// libvirt's event implementation on the Loop: handles and timeouts added, updated and removed from other
// threads, free callbacks on a clean stack, shutdown, and real libvirt use through the test driver.
#include "virt/event_impl.h"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "test_util.h"
#include "virt/connection.h"
#include "virt/fork_guard.h"

using namespace cloudlet;
using namespace cloudlet::virt;

// libvirt and GLib are not instrumented: TSan sees their mutex and allocator calls but not the atomics between
// them (virObjectUnref's reference counts, GLib's per-thread slice magazines), and reports races inside them that
// their own synchronization excludes. Races with a frame in those libraries are suppressed; ours are not.
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libglib-2.0.so.0\nrace:libglib-2.0.so.0\nrace:libvirt.so.0\n";
}

namespace {

// Each test binds the implementation to its own loop and shuts it down at the end.
class EventImplTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(event_impl_register(loop_)); }
  void TearDown() override {
    event_impl_shutdown();
    EXPECT_EQ(loop_.close(), 0);
    auto s = event_impl_stats();
    EXPECT_EQ(s.handles + s.timeouts, 0u);
    EXPECT_EQ(s.uv_handles, 0u);
    EXPECT_EQ(s.frees_pending, 0u);
  }
  Loop loop_;
};

struct Probe {
  std::atomic<int> calls{0};
  std::atomic<int> frees{0};
  std::atomic<int> last_events{0};
  std::atomic<int> last_fd{-1};
  std::atomic<bool> wrong_thread{false};
  Loop* loop = nullptr;
};

thread_local bool t_inside_remove = false;
std::atomic<bool> g_free_inside_remove{false};

void handle_cb(int, int fd, int events, void* opaque) {
  auto* p = static_cast<Probe*>(opaque);
  if (!p->loop->on_loop_thread()) p->wrong_thread = true;
  p->last_fd = fd;
  p->last_events = events;
  p->calls++;
}
void timeout_cb(int, void* opaque) {
  auto* p = static_cast<Probe*>(opaque);
  if (!p->loop->on_loop_thread()) p->wrong_thread = true;
  p->calls++;
}
void free_cb(void* opaque) {
  auto* p = static_cast<Probe*>(opaque);
  if (t_inside_remove) g_free_inside_remove = true;
  if (!p->loop->on_loop_thread()) p->wrong_thread = true;
  p->frees++;
}

TEST_F(EventImplTest, HandleAddedFromAnotherThreadFiresOnTheLoop) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  Probe p;
  p.loop = &loop_;
  std::atomic<int> id{0};
  std::thread([&] { id = virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, handle_cb, &p, free_cb); }).join();
  ASSERT_GT(id.load(), 0);  // the id is known synchronously
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.calls > 0; }, 5000));
  EXPECT_EQ(p.last_fd, fds[0]);  // libvirt gets its own fd back, not our dup
  EXPECT_TRUE(p.last_events & VIR_EVENT_HANDLE_READABLE);
  // Disable from another thread: no more calls although the pipe stays readable.
  std::thread([&] { virEventUpdateHandle(id, 0); }).join();
  vt::pump(loop_, 30);
  int calls = p.calls;
  vt::pump(loop_, 50);
  EXPECT_EQ(p.calls, calls);
  // Re-enable for writing, then remove from another thread; the free callback runs once, on the loop.
  std::thread([&] { virEventUpdateHandle(id, VIR_EVENT_HANDLE_WRITABLE); }).join();
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.calls > calls && (p.last_events & VIR_EVENT_HANDLE_WRITABLE); }, 5000));
  std::thread([&] { EXPECT_EQ(virEventRemoveHandle(id), 0); }).join();
  EXPECT_EQ(virEventRemoveHandle(id), -1);  // twice is an error, not a crash
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.frees == 1; }, 5000));
  EXPECT_FALSE(p.wrong_thread);
  close(fds[0]);
  close(fds[1]);
}

TEST_F(EventImplTest, HangupIsReported) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  Probe p;
  p.loop = &loop_;
  int id = virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, handle_cb, &p, nullptr);
  ASSERT_GT(id, 0);
  close(fds[1]);
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.calls > 0; }, 5000));
  EXPECT_TRUE(p.last_events & (VIR_EVENT_HANDLE_HANGUP | VIR_EVENT_HANDLE_READABLE));
  EXPECT_EQ(virEventRemoveHandle(id), 0);
  close(fds[0]);
}

TEST_F(EventImplTest, FreeCallbackNeverRunsInsideRemove) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  Probe p;
  p.loop = &loop_;
  g_free_inside_remove = false;
  // Removed on the loop thread from within its own callback, the way libvirt does when a stream ends.
  struct Ctx {
    Probe* p;
    int id = 0;
    bool freed_before_return = true;
  } ctx{&p};
  auto cb = [](int watch, int, int, void* opaque) {
    auto* c = static_cast<Ctx*>(opaque);
    t_inside_remove = true;
    virEventRemoveHandle(watch);
    t_inside_remove = false;
    c->freed_before_return = c->p->frees > 0;
    c->p->calls++;
  };
  auto ff = [](void* opaque) { free_cb(static_cast<Ctx*>(opaque)->p); };
  ctx.id = virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, cb, &ctx, ff);
  ASSERT_GT(ctx.id, 0);
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.frees == 1; }, 5000));
  EXPECT_EQ(p.calls, 1);  // removed in its callback: never called again although still readable
  EXPECT_FALSE(ctx.freed_before_return);
  EXPECT_FALSE(g_free_inside_remove);
  close(fds[0]);
  close(fds[1]);
}

TEST_F(EventImplTest, TimeoutFrequencies) {
  Probe p;
  p.loop = &loop_;
  std::atomic<int> id{0};
  std::thread([&] { id = virEventAddTimeout(10, timeout_cb, &p, free_cb); }).join();
  ASSERT_GT(id.load(), 0);
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.calls >= 3; }, 5000));
  // -1: disabled.
  std::thread([&] { virEventUpdateTimeout(id, -1); }).join();
  vt::pump(loop_, 20);
  int calls = p.calls;
  vt::pump(loop_, 60);
  EXPECT_EQ(p.calls, calls);
  // 0: every loop iteration (many calls in a short time, and other handles still get their turn).
  std::thread([&] { virEventUpdateTimeout(id, 0); }).join();
  int64_t t0 = vt::mono_ms();
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.calls >= calls + 200; }, 5000));
  EXPECT_LT(vt::mono_ms() - t0, 2000);
  // Removed from another thread while firing every iteration.
  std::thread([&] { EXPECT_EQ(virEventRemoveTimeout(id), 0); }).join();
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p.frees == 1; }, 5000));
  calls = p.calls;
  vt::pump(loop_, 30);
  EXPECT_EQ(p.calls, calls);
  EXPECT_FALSE(p.wrong_thread);
  EXPECT_EQ(virEventRemoveTimeout(id), -1);
  EXPECT_EQ(virEventRemoveHandle(id), -1);  // a timeout id is not a handle id
}

// libvirt may remove a handle and close its fd at once; the process then reuses the number for a new fd.
TEST_F(EventImplTest, FdClosedAndReusedRightAfterRemove) {
  Probe p1, p2;
  p1.loop = p2.loop = &loop_;
  int a[2];
  ASSERT_EQ(pipe(a), 0);
  int old_fd = a[0];
  std::thread([&] {
    int id = virEventAddHandle(a[0], VIR_EVENT_HANDLE_READABLE, handle_cb, &p1, free_cb);
    EXPECT_GT(id, 0);
    EXPECT_EQ(virEventRemoveHandle(id), 0);
    close(a[0]);
    close(a[1]);
  }).join();
  int b[2];
  ASSERT_EQ(pipe(b), 0);
  int id2 = 0;
  std::thread([&] { id2 = virEventAddHandle(b[0], VIR_EVENT_HANDLE_READABLE, handle_cb, &p2, free_cb); }).join();
  ASSERT_GT(id2, 0);
  ASSERT_EQ(write(b[1], "y", 1), 1);
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p2.calls > 0 && p1.frees == 1; }, 5000));
  EXPECT_EQ(p1.calls, 0);
  EXPECT_EQ(p2.last_fd, b[0]);
  (void)old_fd;
  EXPECT_EQ(virEventRemoveHandle(id2), 0);
  ASSERT_TRUE(vt::run_until(loop_, [&] { return p2.frees == 1; }, 5000));
  close(b[0]);
  close(b[1]);
}

// Many threads adding, updating and removing at once; every free callback runs exactly once, ids are unique.
TEST_F(EventImplTest, ConcurrentAddUpdateRemove) {
  constexpr int kThreads = 4, kRounds = 300;
  Probe p;
  p.loop = &loop_;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ASSERT_EQ(write(fds[1], "z", 1), 1);  // always readable: handles fire while being churned
  std::mutex ids_mu;
  std::set<int> ids;
  std::atomic<int> done_threads{0};
  std::atomic<int> adds{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; r++) {
        int h = virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, handle_cb, &p, free_cb);
        int to = virEventAddTimeout((r + t) % 3 == 0 ? 0 : 1, timeout_cb, &p, free_cb);
        if (h > 0) adds++;
        if (to > 0) adds++;
        {
          std::lock_guard<std::mutex> lock(ids_mu);
          EXPECT_TRUE(ids.insert(h).second);
          EXPECT_TRUE(ids.insert(to).second);
        }
        virEventUpdateHandle(h, r % 2 ? 0 : VIR_EVENT_HANDLE_READABLE);
        virEventUpdateTimeout(to, r % 2 ? -1 : 2);
        if (r % 7 == 0) std::this_thread::yield();
        EXPECT_EQ(virEventRemoveHandle(h), 0);
        EXPECT_EQ(virEventRemoveTimeout(to), 0);
      }
      done_threads++;
    });
  }
  // The loop keeps running (dispatching) while the threads churn.
  ASSERT_TRUE(vt::run_until(loop_, [&] { return done_threads == kThreads && p.frees == adds; }, 60000))
      << "frees " << p.frees << " of " << adds;
  for (auto& th : threads) th.join();
  vt::pump(loop_, 20);
  EXPECT_EQ(p.frees, kThreads * kRounds * 2);
  auto s = event_impl_stats();
  EXPECT_EQ(s.handles + s.timeouts, 0u);
  EXPECT_EQ(s.uv_handles, 0u);
  EXPECT_FALSE(p.wrong_thread);
  close(fds[0]);
  close(fds[1]);
}

TEST_F(EventImplTest, ShutdownClosesEverythingAndRunsFrees) {
  Probe p;
  p.loop = &loop_;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  for (int i = 0; i < 5; i++) {
    ASSERT_GT(virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, handle_cb, &p, free_cb), 0);
    ASSERT_GT(virEventAddTimeout(i == 0 ? 0 : 1000, timeout_cb, &p, free_cb), 0);
  }
  vt::pump(loop_, 20);
  EXPECT_EQ(event_impl_stats().uv_handles, 10u);
  event_impl_shutdown();
  EXPECT_EQ(virEventAddTimeout(5, timeout_cb, &p, free_cb), -1);  // refused after shutdown
  EXPECT_EQ(loop_.close(), 0);  // TearDown checks again (idempotent)
  EXPECT_EQ(p.frees, 10);
  close(fds[0]);
  close(fds[1]);
}

TEST_F(EventImplTest, SecondLoopIsRefusedWhileBound) {
  Loop other;
  EXPECT_FALSE(event_impl_register(other));
  EXPECT_TRUE(event_impl_register(loop_));  // same loop again: fine
  EXPECT_EQ(other.close(), 0);
}

// ---- real libvirt: the test driver through Connection ----------------------------------------------------------

const char* kDomainXml =
    "<domain type='test'><name>evtest</name><memory>8192</memory><os><type>hvm</type></os></domain>";

TEST_F(EventImplTest, ConnectionDeliversLifecycleEventsOnTheLoop) {
  Connection conn(loop_, ConnectionOptions{"test:///default"});
  std::vector<DomainEvent> events;
  bool wrong_thread = false;
  conn.on_domain_event([&](const DomainEvent& ev) {
    if (!loop_.on_loop_thread()) wrong_thread = true;
    events.push_back(ev);
  });
  std::vector<std::string> states;
  conn.on_state([&](bool up, const std::string& why) { states.push_back((up ? "up:" : "down:") + why); });
  std::optional<Status> opened;
  conn.open([&](Status s) { opened = std::move(s); });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return opened.has_value(); }, 30000));
  ASSERT_TRUE(vt::ok(*opened));
  ASSERT_TRUE(conn.connected());

  // Blocking calls from several requests at once; results come back on the loop.
  int pending = 0;
  std::string uuid;
  Status call_status = Status::io("not called back");
  pending++;
  conn.call<std::string>(
      [](virConnectPtr c) {
        virDomainPtr d = virDomainCreateXML(c, kDomainXml, 0);
        if (!d) return std::string();
        char u[VIR_UUID_STRING_BUFLEN];
        virDomainGetUUIDString(d, u);
        virDomainFree(d);
        return std::string(u);
      },
      [&](std::string u, Status e) {
        uuid = u;
        call_status = e;
        pending--;
      });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return pending == 0; }, 10000));
  ASSERT_TRUE(vt::ok(call_status));
  ASSERT_EQ(uuid.size(), 36u);
  for (auto op : {1, 2, 3}) {
    pending++;
    conn.call<int>(
        [op](virConnectPtr c) {
          virDomainPtr d = virDomainLookupByName(c, "evtest");
          if (!d) return -1;
          int rc = op == 1 ? virDomainSuspend(d) : op == 2 ? virDomainResume(d) : virDomainDestroy(d);
          virDomainFree(d);
          return rc;
        },
        [&](int rc, Status e) {
          EXPECT_EQ(rc, 0) << e.message();
          pending--;
        });
    ASSERT_TRUE(vt::run_until(loop_, [&] { return pending == 0; }, 10000));
  }
  ASSERT_TRUE(vt::run_until(loop_, [&] { return events.size() >= 4; }, 10000)) << events.size();
  std::vector<std::string> kinds;
  for (auto& ev : events) {
    kinds.push_back(std::string(DomainEvent::kind_name(ev.kind)) + ":" + ev.detail_name());
    EXPECT_EQ(ev.name, "evtest");
    EXPECT_EQ(ev.uuid, uuid);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"started:booted", "suspended:paused", "resumed:unpaused",
                                             "stopped:destroyed"}));
  EXPECT_FALSE(wrong_thread);

  // A libvirt error is reported with libvirt's text, from the worker that made the call.
  pending++;
  conn.call<int>([](virConnectPtr c) { return virDomainLookupByName(c, "no-such-domain") ? 0 : -1; },
                 [&](int rc, Status e) {
                   EXPECT_EQ(rc, -1);
                   EXPECT_TRUE(vt::fails(e, CL_EIO, "not found"));
                   pending--;
                 });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return pending == 0; }, 10000));

  // A dropped connection is re-opened by itself.
  conn.simulate_drop("test drop");
  EXPECT_FALSE(conn.connected());
  ASSERT_TRUE(vt::run_until(loop_, [&] { return conn.connected(); }, 10000));
  EXPECT_EQ(conn.reconnects(), 1u);
  EXPECT_EQ(states, (std::vector<std::string>{"up:opened", "down:test drop", "up:reconnected"}));
  // And events still flow on the new connection.
  size_t before = events.size();
  pending++;
  conn.call<int>(
      [](virConnectPtr c) {
        virDomainPtr d = virDomainCreateXML(c, kDomainXml, 0);
        if (!d) return -1;
        virDomainDestroy(d);
        virDomainFree(d);
        return 0;
      },
      [&](int rc, Status e) {
        EXPECT_EQ(rc, 0) << e.message();
        pending--;
      });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return pending == 0 && events.size() >= before + 2; }, 10000));

  bool closed = false;
  conn.close([&] { closed = true; });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return closed; }, 10000));
  EXPECT_FALSE(conn.connected());
  // Calls after close fail cleanly.
  std::optional<Status> after;
  conn.call<int>([](virConnectPtr) { return 0; }, [&](int, Status e) { after = std::move(e); });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return after.has_value(); }, 1000));
  EXPECT_TRUE(vt::fails(*after, CL_EUNAVAIL, "libvirt connection is not open"));
  // libvirt may still hold callbacks briefly after close; keep the loop turning a moment.
  vt::pump(loop_, 50);
}

TEST_F(EventImplTest, OpenFailsCleanlyForABadUri) {
  Connection conn(loop_, ConnectionOptions{"nosuchdriver:///x"});
  std::optional<Status> opened;
  conn.open([&](Status s) { opened = std::move(s); });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return opened.has_value(); }, 30000));
  EXPECT_TRUE(vt::fails(*opened, CL_EUNAVAIL, "cannot open"));
  EXPECT_FALSE(conn.connected());
  Connection embed(loop_, ConnectionOptions{"qemu:///embed"});
  opened.reset();
  embed.open([&](Status s) { opened = std::move(s); });
  ASSERT_TRUE(vt::run_until(loop_, [&] { return opened.has_value(); }, 30000));
  EXPECT_TRUE(vt::fails(*opened, CL_EINVAL, "root="));
}

}  // namespace

// libuv's fork handler closes and re-creates its pipe in every forked child. libvirt starts QEMU through a double
// fork whose middle process closes all fds and makes a pipe at 3/4 for the grandchild to report on: with the
// guard those numbers are never libuv's, so the grandchild's write arrives (without it, it fails with EBADF).
TEST(ForkGuard, LibuvForkHandlerLeavesChildPipesAlone) {
  Loop loop;  // libuv's global signal state (and its fork handler) exists from the first loop on
  EXPECT_TRUE(fork_guard_intact());
  pid_t pid = fork();
  if (pid == 0) {
    for (int fd = 3; fd < 1024; fd++) close(fd);
    int p[2];
    if (pipe(p) != 0) _exit(10);
    pid_t g = fork();
    if (g == 0) _exit(write(p[1], "1", 1) == 1 ? 0 : 11);
    close(p[1]);
    char c;
    ssize_t n = read(p[0], &c, 1);
    int st = 0;
    waitpid(g, &st, 0);
    _exit(n == 1 ? 0 : 12);
  }
  ASSERT_GT(pid, 0);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child exit " << WEXITSTATUS(st);
  EXPECT_EQ(loop.close(), 0);
}
