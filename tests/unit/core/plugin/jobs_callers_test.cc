// Jobs, callers and privileged operations (ABI 1.1) with the real core and a C plugin built from the header
// alone (tests/fixtures/jobs_callers.c): a plugin's job lives in the core's registry (job.get, events), job.cancel
// reaches the plugin's callback, unloading finishes an open job with CL_ECANCELED exactly once, and privileged
// operations (the core's device.* included) refuse plugins the configuration did not grant them.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "devices/devices.h"
#include "jobs/jobs.h"
#include "json/json.h"
#include "plugin_core.h"

using namespace cloudlet;

namespace {

std::string fixture() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/tests/fixtures/fixture_jobs_callers.so"; }

class JobsCallers : public ::testing::Test {
 protected:
  JobsCallers() : core_(::testing::UnitTest::GetInstance()->current_test_info()->name()) {
    core_.events.subscribe("job.*", [this](std::string_view topic, std::string_view payload) {
      json::Document d;
      if (!json::parse(payload, &d, nullptr)) return;
      auto id = json::get_string(d, "job_id");
      if (id) events_[std::string(topic) + " " + std::string(*id)]++;
    });
    // A core operation that reports who called it, privileged or not.
    auto whoami = [](std::string_view, Operations::Reply r) {
      const Caller& c = r.caller();
      std::string out = "{\"kind\":" + std::to_string(c.kind) + ",\"plugin\":";
      json::append_quoted(&out, c.plugin);
      out += ",\"principal\":";
      json::append_quoted(&out, c.principal);
      r(CL_OK, out + "}");
    };
    core_.ops.add("core.whoami", whoami);
    core_.ops.add("core.secret", whoami, nullptr, CL_OP_F_PRIVILEGED);
  }

  void load(std::vector<std::string> grants = {}) {
    std::string error;
    ASSERT_EQ(core_.load("jobs_callers", fixture(), {}, &error, std::move(grants)), CL_OK) << error;
  }

  std::pair<cl_status_t, std::string> call(const std::string& op, const std::string& args = "{}") {
    auto out = core_.call(op, args);
    EXPECT_NE(out.first, CL_ETIMEDOUT) << op;
    return out;
  }
  // A member of the JSON document text (as JSON text), "" when absent.
  static std::string member(const std::string& text, const char* key) {
    json::Document d;
    if (!json::parse(text, &d, nullptr) || !d.IsObject() || !d.HasMember(key)) return "";
    return json::stringify(d[key]);
  }
  std::string start_job(bool cancellable) {
    auto [st, out] = call("jobs_callers.start", cancellable ? "{\"cancellable\":true}" : "{}");
    EXPECT_EQ(st, CL_OK) << out;
    std::string id = member(out, "job_id");
    return id.size() > 2 ? id.substr(1, id.size() - 2) : "";
  }
  int events(const std::string& topic, const std::string& id) {
    core_.run_until([] { return false; }, 20);  // deliveries are asynchronous
    return events_[topic + " " + id];
  }

  std::map<std::string, int> events_;  // before core_: its close() may still deliver
  test::PluginCore core_;
};

TEST_F(JobsCallers, PluginJobIsTheCoresAndCancelReachesThePlugin) {
  load();
  std::string id = start_job(true);
  ASSERT_EQ(id.rfind("job-", 0), 0u) << id;
  std::string j = core_.jobs.describe(id);
  EXPECT_EQ(member(j, "state"), "\"running\"") << j;
  EXPECT_EQ(member(j, "kind"), "\"jc.task\"") << j;
  EXPECT_EQ(member(j, "subject"), "\"t\"") << j;

  EXPECT_EQ(call("jobs_callers.progress", "{\"fraction\":0.25}").second, "{\"status\":0}");
  j = core_.jobs.describe(id);
  EXPECT_EQ(member(j, "progress"), "0.25") << j;
  EXPECT_EQ(member(j, "message"), "\"step\"") << j;
  EXPECT_EQ(events("job.progress", id), 2);  // created, then one report

  auto [st, out] = call("job.cancel", "{\"job_id\":\"" + id + "\"}");
  EXPECT_EQ(st, CL_OK) << out;
  ASSERT_TRUE(core_.run_until([&] { return call("jobs_callers.stats").second.find("\"cancels\":1") != std::string::npos; }));
  EXPECT_EQ(call("jobs_callers.stats").second, "{\"cancels\":1,\"cancel_finish\":0}");
  j = core_.jobs.describe(id);
  EXPECT_EQ(member(j, "state"), "\"canceled\"") << j;
  EXPECT_EQ(member(j, "status"), std::to_string(CL_ECANCELED)) << j;
  EXPECT_EQ(member(j, "result"), "{\"error\":\"cancelled by request\"}") << j;
  EXPECT_EQ(events("job.done", id), 1);
  // Over: a second cancel is refused and never reaches the plugin.
  EXPECT_EQ(call("job.cancel", "{\"job_id\":\"" + id + "\"}").first, CL_ESTATE);
  core_.run_until([] { return false; }, 20);
  EXPECT_EQ(call("jobs_callers.stats").second, "{\"cancels\":1,\"cancel_finish\":0}");
  // A job without a cancel callback cannot be cancelled.
  std::string other = start_job(false);
  EXPECT_EQ(call("job.cancel", "{\"job_id\":\"" + other + "\"}").first, CL_ENOTSUP);
  EXPECT_EQ(core_.jobs.running(), 1u);
}

TEST_F(JobsCallers, UnloadFinishesAnOpenJobOnceWithCanceled) {
  load();
  std::string id = start_job(true);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(core_.jobs.running(), 1u);
  ASSERT_TRUE(core_.unload_all());
  std::string j = core_.jobs.describe(id);
  EXPECT_EQ(member(j, "state"), "\"canceled\"") << j;
  EXPECT_EQ(member(j, "status"), std::to_string(CL_ECANCELED)) << j;
  EXPECT_EQ(core_.jobs.running(), 0u);
  EXPECT_EQ(events("job.done", id), 1);
  // fini held a valid handle to a finished job (CL_ESTATE) and the cancel callback never ran.
  EXPECT_EQ(core_.log_lines_with("fini: cancels=0 finish=" + std::to_string(CL_ESTATE)), 1)
      << core_.log_line("fini:");
  EXPECT_EQ(call("job.cancel", "{\"job_id\":\"" + id + "\"}").first, CL_ESTATE);
  EXPECT_EQ(events("job.done", id), 1);
}

TEST_F(JobsCallers, CallersReachCoreOperations) {
  load();
  auto [st, out] = call("jobs_callers.call", "{\"op\":\"core.whoami\"}");
  ASSERT_EQ(st, CL_OK) << out;
  EXPECT_EQ(out, "{\"call\":0,\"status\":0,\"result\":{\"kind\":1,\"plugin\":\"jobs_callers\",\"principal\":\"\"}}");
  std::tie(st, out) = call("jobs_callers.call", "{\"op\":\"core.whoami\",\"principal\":\"device:phone-1\"}");
  EXPECT_EQ(out,
            "{\"call\":0,\"status\":0,\"result\":{\"kind\":2,\"plugin\":\"jobs_callers\",\"principal\":\"device:phone-1\"}}");
  // op_call_as checks the principal: not empty, at most 256 bytes.
  EXPECT_EQ(call("jobs_callers.call", "{\"op\":\"core.whoami\",\"principal\":\"\"}").second,
            "{\"call\":" + std::to_string(CL_EINVAL) + "}");
  EXPECT_EQ(call("jobs_callers.call", "{\"op\":\"core.whoami\",\"principal\":\"" + std::string(257, 'x') + "\"}").second,
            "{\"call\":" + std::to_string(CL_EINVAL) + "}");
  EXPECT_EQ(member(call("jobs_callers.call", "{\"op\":\"core.whoami\",\"principal\":\"" + std::string(256, 'x') + "\"}").second,
                   "status"),
            "0");
  // The core itself calls as the core.
  EXPECT_EQ(call("core.whoami").second, "{\"kind\":0,\"plugin\":\"\",\"principal\":\"\"}");
}

TEST_F(JobsCallers, PrivilegedOperationsRefuseUngrantedPlugins) {
  Devices devices(core_.loop, *core_.store, core_.ops, core_.events);
  devices.start();
  load();
  const std::string refused = "{\"call\":" + std::to_string(CL_EPERM) + "}";
  EXPECT_EQ(call("jobs_callers.call", "{\"op\":\"core.secret\"}").second, refused);
  EXPECT_EQ(call("jobs_callers.call", "{\"op\":\"core.secret\",\"principal\":\"user:admin\"}").second, refused);
  for (const char* op : {"device.pair", "device.auth", "device.revoke", "device.unpair"}) {
    EXPECT_TRUE(core_.ops.privileged(op)) << op;
    EXPECT_EQ(call("jobs_callers.call", std::string("{\"op\":\"") + op + "\"}").second, refused) << op;
  }
  EXPECT_GE(core_.log_lines_with("called the privileged operation 'core.secret' without a grant"), 2);
  EXPECT_FALSE(core_.ops.privileged("device.list"));
  EXPECT_EQ(member(call("jobs_callers.call", "{\"op\":\"device.list\"}").second, "status"), "0");
  // The core may: device.auth of an unpaired device is "not found", not "forbidden".
  EXPECT_EQ(call("device.auth", "{\"device_id\":\"nope\"}").first, CL_ENOENT);
  ASSERT_TRUE(core_.unload_all());
  devices.stop();
}

TEST_F(JobsCallers, GrantedPluginMayCallPrivilegedOperations) {
  Devices devices(core_.loop, *core_.store, core_.ops, core_.events);
  devices.start();
  load({"core.secret", "device.auth"});
  EXPECT_EQ(call("jobs_callers.call", "{\"op\":\"core.secret\"}").second,
            "{\"call\":0,\"status\":0,\"result\":{\"kind\":1,\"plugin\":\"jobs_callers\",\"principal\":\"\"}}");
  // Acting for a principal keeps the plugin's grants.
  EXPECT_EQ(member(call("jobs_callers.call", "{\"op\":\"core.secret\",\"principal\":\"user:admin\"}").second, "result"),
            "{\"kind\":2,\"plugin\":\"jobs_callers\",\"principal\":\"user:admin\"}");
  EXPECT_EQ(member(call("jobs_callers.call", "{\"op\":\"device.auth\"}").second, "status"), std::to_string(CL_ENOENT));
  // Granted device.auth, not device.pair.
  EXPECT_EQ(call("jobs_callers.call", "{\"op\":\"device.pair\"}").second, "{\"call\":" + std::to_string(CL_EPERM) + "}");
  ASSERT_TRUE(core_.unload_all());
  devices.stop();
}

}  // namespace
