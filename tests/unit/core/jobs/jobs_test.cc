#include "jobs/jobs.h"

#include <gtest/gtest.h>

#include "events/bus.h"
#include "loop/loop.h"
#include "ops/operations.h"

using namespace cloudlet;

TEST(Jobs, LifecycleEventsAndWaiters) {
  Loop loop;
  EventBus bus(loop);
  Operations ops(loop);
  Jobs jobs(loop, bus, ops);
  std::vector<std::string> topics;
  bus.subscribe("job.*", [&](std::string_view t, std::string_view) { topics.emplace_back(t); });
  std::string id = jobs.create("test.kind", "thing");
  EXPECT_EQ(jobs.running(), 1u);
  std::string result;
  ASSERT_TRUE(jobs.wait(id, [&](cl_status_t st, const std::string& r) {
    EXPECT_EQ(st, CL_OK);
    result = r;
  }));
  jobs.progress(id, 0.5, "half");
  jobs.finish(id, CL_OK, "{\"x\":1}");
  jobs.finish(id, CL_EIO, "{}");  // ignored
  loop.run();
  EXPECT_EQ(result, "{\"x\":1}");
  EXPECT_EQ(topics, (std::vector<std::string>{"job.progress", "job.progress", "job.done"}));
  std::string got;
  ops.call("job.get", "{\"job_id\":\"" + id + "\"}", [&](cl_status_t, std::string_view r) { got = r; });
  loop.run();
  EXPECT_NE(got.find("\"state\":\"done\""), std::string::npos) << got;
  EXPECT_EQ(loop.close(), 0);
}

TEST(Jobs, CancelAsksTheJobToStop) {
  Loop loop;
  EventBus bus(loop);
  Operations ops(loop);
  Jobs jobs(loop, bus, ops);
  std::string id;
  id = jobs.create("k", "s", [&] { jobs.finish(id, CL_ECANCELED, "{\"error\":\"stopped\"}"); });
  std::string plain = jobs.create("k", "s");
  EXPECT_EQ(jobs.cancel(plain), CL_ENOTSUP);
  EXPECT_EQ(jobs.cancel("job-999"), CL_ENOENT);
  EXPECT_EQ(jobs.cancel(id), CL_OK);
  loop.run();
  EXPECT_NE(jobs.describe(id).find("\"state\":\"canceled\""), std::string::npos);
  EXPECT_EQ(jobs.cancel(id), CL_ESTATE);
  jobs.finish(plain, CL_OK, "{}");
  EXPECT_EQ(loop.close(), 0);
}
