#include "ops/operations.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "loop/loop.h"

using namespace cloudlet;

TEST(Operations, CallIsAlwaysAsynchronousAndExactlyOnce) {
  Loop loop;
  Operations ops(loop);
  ASSERT_EQ(ops.add("t.echo", [](std::string_view args, Operations::Reply r) { r(CL_OK, std::string(args)); }), CL_OK);
  int calls = 0;
  std::string got;
  ASSERT_EQ(ops.call("t.echo", "{\"a\":1}", [&](cl_status_t st, std::string_view res) {
    EXPECT_EQ(st, CL_OK);
    got = res;
    calls++;
  }), CL_OK);
  EXPECT_EQ(calls, 0);  // not inside call()
  loop.run();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(got, "{\"a\":1}");
  EXPECT_EQ(loop.close(), 0);
}

TEST(Operations, ValidationAndErrors) {
  Loop loop;
  Operations ops(loop);
  auto h = [](std::string_view, Operations::Reply r) { r.error(CL_ENOENT, "no such thing"); };
  EXPECT_EQ(ops.add("Bad Name", h), CL_EINVAL);
  EXPECT_EQ(ops.add("t.x", h), CL_OK);
  EXPECT_EQ(ops.add("t.x", h), CL_EEXIST);
  EXPECT_EQ(ops.call("t.none", "{}", [](cl_status_t, std::string_view) {}), CL_ENOENT);
  EXPECT_EQ(ops.call("t.x", "[1]", [](cl_status_t, std::string_view) {}), CL_EINVAL);  // args must be an object
  EXPECT_EQ(ops.call("t.x", "{bad", [](cl_status_t, std::string_view) {}), CL_EINVAL);
  std::string got;
  cl_status_t status = CL_OK;
  ops.call("t.x", "{}", [&](cl_status_t st, std::string_view r) {
    status = st;
    got = r;
  });
  loop.run();
  EXPECT_EQ(status, CL_ENOENT);
  EXPECT_EQ(got, "{\"error\":\"no such thing\"}");
  EXPECT_EQ(loop.close(), 0);
}

TEST(Operations, DroppedReplyAnswersAnError) {
  Loop loop;
  Operations ops(loop);
  ops.add("t.forget", [](std::string_view, Operations::Reply) {});  // never replies
  cl_status_t status = CL_OK;
  ops.call("t.forget", "{}", [&](cl_status_t st, std::string_view) { status = st; });
  loop.run();
  EXPECT_EQ(status, CL_EIO);
  EXPECT_EQ(loop.close(), 0);
}

TEST(Operations, ReplyLaterAndTwiceIsIgnored) {
  Loop loop;
  Operations ops(loop);
  Operations::Reply saved;
  ops.add("t.later", [&](std::string_view, Operations::Reply r) { saved = r; });
  int calls = 0;
  ops.call("t.later", "{}", [&](cl_status_t, std::string_view) { calls++; });
  loop.timer_start(5, 0, [&] {
    saved(CL_OK, "{}");
    saved(CL_OK, "{}");
  });
  loop.run();
  EXPECT_EQ(calls, 1);
  saved = Operations::Reply();
  EXPECT_EQ(loop.close(), 0);
}

TEST(Operations, ThrowingHandlerBecomesAnError) {
  Loop loop;
  Operations ops(loop);
  ops.add("t.throw", [](std::string_view, Operations::Reply) { throw std::runtime_error("boom"); });
  cl_status_t status = CL_OK;
  ops.call("t.throw", "{}", [&](cl_status_t st, std::string_view) { status = st; });
  loop.run();
  EXPECT_EQ(status, CL_EIO);
  EXPECT_EQ(loop.close(), 0);
}

TEST(Operations, RemoveOwner) {
  Loop loop;
  Operations ops(loop);
  int owner;
  ops.add("p.a", [](std::string_view, Operations::Reply r) { r(CL_OK, "{}"); }, &owner);
  ops.add("core.b", [](std::string_view, Operations::Reply r) { r(CL_OK, "{}"); });
  ops.remove_owner(&owner);
  EXPECT_FALSE(ops.exists("p.a"));
  EXPECT_TRUE(ops.exists("core.b"));
  EXPECT_EQ(loop.close(), 0);
}

// Callers travel with the call (handlers read them from their Reply); privileged operations refuse plugins
// without a grant, synchronously, and never refuse the core.
TEST(Operations, CallersAndPrivileges) {
  Loop loop;
  Operations ops(loop);
  std::vector<Caller> seen;
  auto record = [&](std::string_view, Operations::Reply r) {
    seen.push_back(r.caller());
    r(CL_OK, "{}");
  };
  EXPECT_EQ(ops.add("t.flags", record, nullptr, 0x80u), CL_EINVAL);  // unknown flag
  EXPECT_FALSE(ops.exists("t.flags"));
  ASSERT_EQ(ops.add("t.secret", record, nullptr, CL_OP_F_PRIVILEGED), CL_OK);
  ASSERT_EQ(ops.add("t.open", record), CL_OK);
  EXPECT_TRUE(ops.privileged("t.secret"));
  EXPECT_FALSE(ops.privileged("t.open"));
  EXPECT_FALSE(ops.privileged("t.none"));

  Caller plugin;
  plugin.kind = CL_CALLER_PLUGIN;
  plugin.plugin = "p";
  int done = 0;
  auto count = [&](cl_status_t st, std::string_view) {
    EXPECT_EQ(st, CL_OK);
    done++;
  };
  EXPECT_EQ(ops.call_as(plugin, "t.secret", "{}", count), CL_EPERM);  // no grants at all
  plugin.grants = std::make_shared<const std::set<std::string>>(std::set<std::string>{"t.other"});
  EXPECT_EQ(ops.call_as(plugin, "t.secret", "{}", count), CL_EPERM);  // granted something else
  EXPECT_EQ(ops.call_as(plugin, "t.open", "{}", count), CL_OK);       // not privileged: anyone
  Caller agent = plugin;
  agent.kind = CL_CALLER_AGENT;
  agent.principal = "user:admin";
  agent.grants = std::make_shared<const std::set<std::string>>(std::set<std::string>{"t.secret"});
  EXPECT_EQ(ops.call_as(agent, "t.secret", "{}", count), CL_OK);  // granted
  EXPECT_EQ(ops.call("t.secret", "{}", count), CL_OK);            // the core needs no grant
  loop.run();
  EXPECT_EQ(done, 3);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].kind, CL_CALLER_PLUGIN);
  EXPECT_EQ(seen[0].plugin, "p");
  EXPECT_EQ(seen[0].principal, "");
  EXPECT_EQ(seen[1].kind, CL_CALLER_AGENT);
  EXPECT_EQ(seen[1].plugin, "p");
  EXPECT_EQ(seen[1].principal, "user:admin");
  EXPECT_EQ(seen[2].kind, CL_CALLER_CORE);
  EXPECT_EQ(seen[2].plugin, "");
  EXPECT_EQ(seen[2].principal, "");
  EXPECT_EQ(loop.close(), 0);
}
