// The plugin loader and host table with the real core: loop, store, HTTP server, operations, events.
// Fixture plugins (tests/fixtures/) each get one thing wrong on purpose.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "events/bus.h"
#include "http/server.h"
#include "http_client.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "plugin/host.h"
#include "store/store.h"
#include "plugin_core.h"
#include "plugin_test_util.h"
#include "uv_run_probe.h"

namespace fs = std::filesystem;
using namespace cloudlet;

namespace {

std::string build_dir() { return getenv("CLOUDLET_BUILD_DIR"); }
std::string fixture(const std::string& name) { return build_dir() + "/tests/fixtures/fixture_" + name + ".so"; }

using test::run_until;

class LoaderTest : public ::testing::Test {
 protected:
  LoaderTest() : core_(::testing::UnitTest::GetInstance()->current_test_info()->name()) {}

  void SetUp() override { baseline_timers_ = loop_.active_timers(); }

  void TearDown() override {
    EXPECT_TRUE(core_.unload_all());
    EXPECT_EQ(events_.subscriber_count(), 0u);
    EXPECT_EQ(core_.close(), 0);
    EXPECT_EQ(test::uv_run_reentries(), 0);  // neither the core nor these tests ever re-enter uv_run
  }

  void unload_all() { ASSERT_TRUE(core_.unload_all()); }
  cl_status_t load(const std::string& name, const std::string& path, std::vector<std::string> prefixes = {}) {
    return core_.load(name, path, std::move(prefixes));
  }
  test::HttpResponse get(const std::string& path) { return core_.get(path); }
  std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args = "{}") {
    auto out = core_.call(op, args);
    EXPECT_NE(out.first, CL_ETIMEDOUT) << op;
    return out;
  }
  int log_lines_with(const std::string& needle) { return core_.log_lines_with(needle); }

  // Calls op until its result contains `want` (the loop turns between calls, never inside one).
  bool poll_call(const std::string& op, const std::string& want, int tries = 500) {
    for (int i = 0; i < tries; i++) {
      if (call(op).second.find(want) != std::string::npos) return true;
      run_until(loop_, [] { return false; }, 10);
    }
    return false;
  }

  test::PluginCore core_;
  Loop& loop_ = core_.loop;
  Operations& ops_ = core_.ops;
  EventBus& events_ = core_.events;
  std::unique_ptr<Store>& store_ = core_.store;
  std::unique_ptr<http::Server>& server_ = core_.server;
  std::unique_ptr<PluginManager>& pm_ = core_.pm;
  uint16_t& port_ = core_.port;
  fs::path& dir_ = core_.dir;
  size_t baseline_timers_ = 0;
};

TEST_F(LoaderTest, LoadsHelloAndServesIt) {
  ASSERT_EQ(load("hello", build_dir() + "/plugins/hello.so"), CL_OK);
  auto r = get("/plugins/hello/greet?name=x");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "{\"greeting\":\"hello, x\",\"count\":1}");
  std::string stored;
  EXPECT_EQ(store_->get("plugin:hello/greetings", "x", &stored), CL_OK);  // its private namespace
  EXPECT_EQ(stored, "1");
}

TEST_F(LoaderTest, WrongMajorIsRefusedWithOneLineAndServerServes) {
  ASSERT_EQ(load("hello", build_dir() + "/plugins/hello.so"), CL_OK);
  EXPECT_EQ(load("wrong_major", fixture("wrong_major")), CL_ENOTSUP);
  EXPECT_EQ(log_lines_with("refused"), 1);
  EXPECT_EQ(log_lines_with("built for plugin ABI 2.0"), 1);
  EXPECT_EQ(pm_->count(), 1u);
  EXPECT_EQ(get("/plugins/hello/greet").status, 200);
}

TEST_F(LoaderTest, NewerMinorIsRefused) {
  EXPECT_EQ(load("newer_minor", fixture("newer_minor")), CL_ENOTSUP);
  EXPECT_EQ(log_lines_with("needs plugin ABI 1."), 1);
}

TEST_F(LoaderTest, MissingEntrySymbolIsRefused) {
  EXPECT_EQ(load("no_entry", fixture("no_entry")), CL_EINVAL);
  EXPECT_EQ(log_lines_with("no 'cloudlet_plugin_v1' symbol"), 1);
}

TEST_F(LoaderTest, MissingFileIsRefused) {
  EXPECT_EQ(load("ghost", (dir_ / "ghost.so").string()), CL_ENOENT);
  EXPECT_EQ(pm_->count(), 0u);
}

TEST_F(LoaderTest, DuplicateNameIsRefused) {
  ASSERT_EQ(load("hello", build_dir() + "/plugins/hello.so"), CL_OK);
  EXPECT_EQ(load("hello", fixture("dup_name")), CL_EEXIST);
  // The same file under another configured name is refused too (the RTLD_NOLOAD probe).
  EXPECT_EQ(load("hello2", build_dir() + "/plugins/hello.so"), CL_EEXIST);
  EXPECT_EQ(pm_->count(), 1u);
}

TEST_F(LoaderTest, DescriptorNameMustMatchConfiguration) {
  EXPECT_EQ(load("other", fixture("dup_name")), CL_EINVAL);
  EXPECT_EQ(log_lines_with("declares the name 'hello'"), 1);
}

TEST_F(LoaderTest, GroupOrWorldWritableFileIsRefused) {
  fs::path copy = dir_ / "hello.so";
  fs::copy_file(build_dir() + "/plugins/hello.so", copy);
  chmod(copy.c_str(), 0664);
  EXPECT_EQ(load("hello", copy.string()), CL_EPERM);
  chmod(copy.c_str(), 0646);
  EXPECT_EQ(load("hello", copy.string()), CL_EPERM);
  EXPECT_EQ(log_lines_with("group- or world-writable"), 2);
  chmod(copy.c_str(), 0644);
  EXPECT_EQ(load("hello", copy.string()), CL_OK);
}

TEST_F(LoaderTest, FailedInitLeavesNothingBehind) {
  size_t routes = server_->router("manager")->size();
  EXPECT_EQ(load("init_fails", fixture("init_fails")), CL_EIO);
  EXPECT_EQ(server_->router("manager")->size(), routes);
  EXPECT_FALSE(ops_.exists("init_fails.op"));
  EXPECT_EQ(events_.subscriber_count(), 0u);
  EXPECT_EQ(loop_.active_timers(), baseline_timers_);
  EXPECT_EQ(get("/plugins/init_fails/x").status, 404);
}

// The work a failing init queued runs plugin code on a worker: the code stays mapped until that work is done
// and its completion was delivered (exactly once), and only then is it unmapped.
TEST_F(LoaderTest, FailedInitWaitsForItsWorkBeforeUnmapping) {
  EXPECT_EQ(load("init_fails", fixture("init_fails")), CL_EIO);
  EXPECT_EQ(pm_->retiring(), 1u);  // still mapped: its slow work is running
  ASSERT_TRUE(run_until(loop_, [&] { return pm_->retiring() == 0; }));
  EXPECT_EQ(log_lines_with("slow work done: status 0"), 1);
  EXPECT_EQ(log_lines_with("unloaded 'init_fails'"), 1);
}

// A 50 ms work function is fine: only hooks on the loop thread may be reported as blocking it.
TEST_F(LoaderTest, SlowWorkersAreNotReportedAsBlockingTheLoop) {
  // The conformance plugin guards "manager" and serves files/www (slots 67 and 71): grant both.
  fs::create_directories(core_.dir / "files" / "www");
  core_.guards = {"manager"};
  core_.files_dir = (core_.dir / "files").string();
  ASSERT_EQ(load("conformance", fixture("conformance")), CL_OK);
  EXPECT_EQ(call("conf.slow_work").first, CL_OK);
  EXPECT_EQ(log_lines_with("blocked the loop"), 0);
}

// Exceptions from a request's close callback and from the release of lent bytes stop at the boundary: the
// HTTP layer calls the core's trampolines, which call the plugin through the guard.
TEST_F(LoaderTest, ExceptionsFromCompletionCallbacksStopAtTheBoundary) {
  ASSERT_EQ(load("throws", fixture("throws")), CL_OK);
  ASSERT_EQ(load("hello", build_dir() + "/plugins/hello.so"), CL_OK);
  auto r = get("/plugins/throws/lent");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "lent bytes\n");
  // A client that asks for /hold and leaves: the plugin's close callback runs (and throws).
  auto fut = std::async(std::launch::async, [&] {
    return test::http_raw("127.0.0.1", port_, "GET /plugins/throws/hold HTTP/1.1\r\nHost: localhost\r\n\r\n", 200);
  });
  ASSERT_TRUE(run_until(loop_, [&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
  ASSERT_TRUE(poll_call("throws.ticks", "\"closed\":1"));
  std::string counts = call("throws.ticks").second;
  EXPECT_NE(counts.find("\"released\":1"), std::string::npos) << counts;  // exactly once
  EXPECT_EQ(log_lines_with("request close callback threw"), 1);
  EXPECT_EQ(log_lines_with("write completion threw"), 1);
  EXPECT_EQ(get("/plugins/hello/greet").status, 200);
}

// Request, response and SSE slots and txn_abort refuse other threads (rule T1) and do nothing.
TEST_F(LoaderTest, RequestSlotsRefuseOtherThreads) {
  ASSERT_EQ(load("misbehaves", fixture("misbehaves")), CL_OK);
  auto r = get("/plugins/misbehaves/offthread");
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  json::Document d;
  ASSERT_TRUE(json::parse(r.body, &d, nullptr)) << r.body;
  EXPECT_EQ(d["method_len"].GetInt(), 0);
  for (const char* k : {"header", "param", "header_add", "start", "write", "lent", "sse_start", "sse_send",
                        "body_read", "end", "send"}) {
    EXPECT_EQ(d[k].GetInt(), CL_ESTATE) << k;
  }
  EXPECT_EQ(d["txn_still_open"].GetInt(), CL_EBUSY);  // the refused txn_abort did not abort
  EXPECT_EQ(r.header("X-Off"), "");
  EXPECT_EQ(log_lines_with("called off the loop thread"), 13);
}

// Unloading never runs the loop: it returns at once, and the plugin's completions arrive while the caller's
// loop turns. A body stream still open ends with CL_ECANCELED at once; a lent write, the slow work and the
// posts of the plugin's own thread are waited for; each completion arrives exactly once, all before fini.
TEST_F(LoaderTest, UnloadIsAsynchronousAndDeliversEveryCompletionOnceBeforeFini) {
  ASSERT_EQ(load("unload_pending", fixture("unload_pending")), CL_OK);
  auto [st, queued] = call("unload_pending.work");
  ASSERT_EQ(st, CL_OK);
  EXPECT_EQ(queued, "{\"queued\":40}");
  // A download the client does not read (the lent 32 MiB stay pending) and an upload that stops half-way.
  int down = -1, up = -1;
  ASSERT_TRUE(test::hold_download_and_upload(port_, &down, &up));
  ASSERT_TRUE(poll_call("unload_pending.status", "\"lent_pending\":1,\"body_open\":1"));
  int runs = test::uv_run_calls();
  bool done = false;
  pm_->unload_all(true, [&] { done = true; });
  EXPECT_EQ(test::uv_run_calls(), runs);  // unload_all returned without running the loop
  EXPECT_FALSE(done);
  EXPECT_EQ(pm_->count(), 0u);
  EXPECT_EQ(pm_->retiring(), 1u);
  // The lent bytes are released once the client goes away; until then the plugin stays (fini not called).
  ASSERT_FALSE(run_until(loop_, [&] { return done; }, 700));
  EXPECT_EQ(log_lines_with("tally:"), 0);
  close(down);
  ASSERT_TRUE(run_until(loop_, [&] { return done; }, 20000));
  close(up);
  EXPECT_EQ(test::uv_run_reentries(), 0);
  std::string tally = core_.log_line("tally:");
  ASSERT_FALSE(tally.empty());
  auto value = [&](const std::string& key) { return test::tally_value(tally, key); };
  EXPECT_EQ(value("work_queued"), 40) << tally;
  EXPECT_EQ(value("work_ok") + value("work_canceled"), 40) << tally;
  EXPECT_GT(value("work_canceled"), 0) << tally;  // queued behind the busy workers: cancelled at unload
  EXPECT_EQ(value("work_twice"), 0) << tally;
  EXPECT_EQ(value("lent_done"), 1) << tally;
  EXPECT_EQ(value("lent_twice"), 0) << tally;
  EXPECT_EQ(value("body_final"), 1) << tally;
  EXPECT_EQ(value("body_status"), CL_ECANCELED) << tally;
  EXPECT_EQ(value("body_twice"), 0) << tally;
  EXPECT_GT(value("posts_accepted"), 0) << tally;
  EXPECT_EQ(value("posts_accepted"), value("posts_delivered")) << tally;
  EXPECT_EQ(value("pending_at_fini"), 0) << tally;
  EXPECT_EQ(log_lines_with("unloaded 'unload_pending'"), 1);
}

TEST_F(LoaderTest, ExceptionsStopAtTheBoundary) {
  ASSERT_EQ(load("throws", fixture("throws")), CL_OK);
  ASSERT_EQ(load("hello", build_dir() + "/plugins/hello.so"), CL_OK);
  auto r = get("/plugins/throws/boom");
  EXPECT_EQ(r.status, 500);
  EXPECT_TRUE(r.had_content_length);
  auto [st, out] = call("throws.boom");
  EXPECT_EQ(st, CL_EIO);
  EXPECT_NE(out.find("\"error\""), std::string::npos);
  // The throwing timer keeps being called (each throw is caught), and the server still serves.
  ASSERT_TRUE(run_until(loop_, [&] { return log_lines_with("timer callback threw") >= 3; }));
  EXPECT_EQ(get("/plugins/hello/greet").status, 200);
  EXPECT_GE(log_lines_with("caught at the plugin boundary"), 5);
}

TEST_F(LoaderTest, LeftoversAreReleasedAfterFini) {
  ASSERT_EQ(load("leaks", fixture("leaks")), CL_OK);  // its init also checks route_add refused a foreign prefix
  EXPECT_GT(loop_.active_timers(), baseline_timers_);
  EXPECT_EQ(events_.subscriber_count(), 1u);
  unload_all();
  EXPECT_EQ(loop_.active_timers(), baseline_timers_);
  EXPECT_EQ(events_.subscriber_count(), 0u);
  EXPECT_EQ(log_lines_with("unloading: stopped 1 timer(s), 0 watch(es), 1 subscription(s)"), 1);
}

TEST_F(LoaderTest, PostsFromAPluginThreadAllArriveInOrder) {
  ASSERT_EQ(load("posts_from_thread", fixture("posts_from_thread")), CL_OK);
  std::string last;
  for (int i = 0; i < 500 && last.find("\"delivered\":10000,") == std::string::npos; i++) {
    last = call("posts.count").second;  // each call runs the loop, which delivers pending posts
  }
  ASSERT_NE(last.find("\"delivered\":10000,"), std::string::npos) << last;
  EXPECT_NE(last.find("\"in_order\":true"), std::string::npos) << last;
}

TEST_F(LoaderTest, MisuseIsRefusedNotFatal) {
  ASSERT_EQ(load("misbehaves", fixture("misbehaves")), CL_OK);
  auto [st, out] = call("misbehaves.run");
  ASSERT_EQ(st, CL_OK) << out;
  json::Document d;
  ASSERT_TRUE(json::parse(out, &d, nullptr));
  EXPECT_EQ(d["off_thread_timer"].GetInt(), CL_ESTATE);
  EXPECT_EQ(d["second_txn"].GetInt(), CL_EBUSY);
  EXPECT_EQ(d["bad_json"].GetInt(), CL_EINVAL);
  EXPECT_EQ(d["late_route"].GetInt(), CL_ESTATE);
  // The transaction it left open is aborted at the end of the loop turn, so a new one can start.
  ASSERT_TRUE(run_until(loop_, [&] { return log_lines_with("left open past its loop turn") == 1; }));
  EXPECT_EQ(log_lines_with("called off the loop thread"), 1);
}

}  // namespace
