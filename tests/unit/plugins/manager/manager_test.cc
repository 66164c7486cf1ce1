// The manager plugin against the fake host: its routes, what each one asks of the core's operations, how
// answers and errors come back, the event stream's cap and endings, and the OpenAPI document against the
// routes actually registered.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "fakehost.h"
#include "json/json.h"
#include "manager_host.h"

using cloudlet::test::FakeHost;
using manager_test::configure;
using manager_test::plugin_path;

namespace {

const std::vector<std::pair<std::string, std::string>> kJson = {{"Content-Type", "application/json"}};

// An API token for tests that exercise what lies behind the guard (manager.token.create, as the command line).
std::string new_token(FakeHost& fh, const std::string& name = "tests") {
  auto [st, result] = fh.call("manager.token.create", "{\"name\":\"" + name + "\"}");
  EXPECT_EQ(st, CL_OK) << result;
  cloudlet::json::Document d;
  if (!cloudlet::json::parse(result, &d, nullptr) || !d.HasMember("token")) return "";
  return d["token"].GetString();
}

// Loads the manager and makes every later request carry an API token.
cl_status_t load_with_token(FakeHost& fh, const std::string& config = "") {
  cl_status_t st = config.empty() ? fh.load(plugin_path()) : fh.load(plugin_path(), config);
  if (st == CL_OK) fh.default_headers = {{"Authorization", "Bearer " + new_token(fh)}};
  return st;
}

// Provides every operation the manager calls, recording the arguments each got; "service.get" answers
// CL_ENOENT as the core does for an unknown service.
struct Core {
  std::vector<std::pair<std::string, std::string>> calls;  // operation, arguments
  void provide(FakeHost& fh) {
    for (const char* op : {"server.info", "system.info", "peer.list", "service.list", "service.create", "service.update", "service.refresh",
                           "service.delete", "instance.list", "instance.start", "instance.get", "instance.stop",
                           "instance.pause", "instance.resume", "job.list", "job.get", "job.cancel", "device.list",
                           "device.pair", "device.get", "device.revoke", "device.unpair"}) {
      std::string name = op;
      fh.provide(name, [this, name](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
        calls.emplace_back(name, args);
        reply(CL_OK, "{\"op\":\"" + name + "\"}");
      });
    }
    fh.provide("service.get", [this](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
      calls.emplace_back("service.get", args);
      reply(CL_ENOENT, "{\"error\":\"no service 'x'\"}");
    });
  }
};

}  // namespace

TEST(Manager, RegistersTheJsonApiAndTheEventStreamOnTheManagerListener) {
  FakeHost fh;
  configure(fh);
  ASSERT_EQ(load_with_token(fh), CL_OK);
  std::map<std::string, int> seen;
  for (const auto& r : fh.routes) {
    EXPECT_EQ(r.listener, "manager");
    // The JSON API, and the login page with its script.
    EXPECT_TRUE(r.pattern.rfind("/manager/api/", 0) == 0 || r.pattern == "/manager/login" ||
                r.pattern == "/manager/login.js" || r.pattern == "/manager/login.css" || r.pattern == "/manager/{*path}")
        << r.pattern;
    seen[r.method + " " + r.pattern]++;
  }
  EXPECT_EQ(fh.routes.size(), 37u);
  for (const char* route : {"GET /manager/api/info", "GET /manager/api/events", "GET /manager/api/openapi.json", "DELETE /manager/api/instances/{id}",
                            "POST /manager/api/devices", "POST /manager/api/jobs/{id}/cancel"}) {
    EXPECT_EQ(seen[route], 1) << route;
  }
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Manager, EachRouteCallsItsOperationWithThePathsIdAndTheBody) {
  FakeHost fh;
  configure(fh);
  Core core;
  core.provide(fh);
  ASSERT_EQ(load_with_token(fh), CL_OK);
  struct Case {
    const char* method;
    const char* target;
    const char* body;
    const char* op;
    const char* args;
    uint32_t status;
  };
  const Case cases[] = {
      {"GET", "/manager/api/info", "", "server.info", "{}", 200},
      {"GET", "/manager/api/services", "", "service.list", "{}", 200},
      {"POST", "/manager/api/services", "{\"service_id\":\"a.b\",\"port\":80}", "service.create",
       "{\"service_id\":\"a.b\",\"port\":80}", 200},
      // The path's id wins over the body's.
      {"POST", "/manager/api/services/a.b", "{\"service_id\":\"other\",\"num_users\":2}", "service.update",
       "{\"num_users\":2,\"service_id\":\"a.b\"}", 200},
      {"POST", "/manager/api/services/a.b/refresh", "", "service.refresh", "{\"service_id\":\"a.b\"}", 200},
      {"DELETE", "/manager/api/services/a.b", "", "service.delete", "{\"service_id\":\"a.b\"}", 200},
      {"POST", "/manager/api/instances", "{\"service_id\":\"a.b\"}", "instance.start", "{\"service_id\":\"a.b\"}", 200},
      {"GET", "/manager/api/instances/i-1", "", "instance.get", "{\"id\":\"i-1\"}", 200},
      {"POST", "/manager/api/instances/i-1/stop", "", "instance.stop", "{\"id\":\"i-1\"}", 200},
      {"POST", "/manager/api/instances/i-1/pause", "", "instance.pause", "{\"id\":\"i-1\"}", 200},
      {"POST", "/manager/api/instances/i-1/resume", "", "instance.resume", "{\"id\":\"i-1\"}", 200},
      // The operator's DELETE ends the instance for every device sharing it.
      {"DELETE", "/manager/api/instances/i-1", "", "instance.stop", "{\"id\":\"i-1\",\"force\":true}", 200},
      {"GET", "/manager/api/jobs/job-3", "", "job.get", "{\"job_id\":\"job-3\"}", 200},
      {"POST", "/manager/api/jobs/job-3/cancel", "", "job.cancel", "{\"job_id\":\"job-3\"}", 200},
      {"POST", "/manager/api/devices", "{\"device_id\":\"d1\"}", "device.pair", "{\"device_id\":\"d1\"}", 201},
      {"POST", "/manager/api/devices/d1/revoke", "", "device.revoke", "{\"device_id\":\"d1\"}", 200},
      {"DELETE", "/manager/api/devices/d%201", "", "device.unpair", "{\"device_id\":\"d 1\"}", 200},
  };
  for (const Case& c : cases) {
    core.calls.clear();
    auto r = fh.request("manager", c.method, c.target, c.body, kJson);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.target << ": " << r.body;
    EXPECT_EQ(r.body, std::string("{\"op\":\"") + c.op + "\"}") << c.target;
    EXPECT_EQ(r.header("Content-Type"), "application/json");
    ASSERT_EQ(core.calls.size(), 1u) << c.target;
    EXPECT_EQ(core.calls[0].first, c.op);
    EXPECT_EQ(core.calls[0].second, c.args) << c.method << " " << c.target;
  }
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Manager, ErrorsComeBackWithTheirHttpStatus) {
  FakeHost fh;
  configure(fh);
  Core core;
  core.provide(fh);
  ASSERT_EQ(load_with_token(fh), CL_OK);
  // The operation's own error, with its status.
  auto r = fh.request("manager", "GET", "/manager/api/services/x");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "{\"error\":\"no service 'x'\"}");
  core.calls.clear();
  // Bodies must be JSON objects, sent as JSON.
  r = fh.request("manager", "POST", "/manager/api/instances", "[1,2]", kJson);
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("the body must be a JSON object"), std::string::npos) << r.body;
  r = fh.request("manager", "POST", "/manager/api/instances", "{\"service_id\":", kJson);
  EXPECT_EQ(r.status, 400u);
  r = fh.request("manager", "POST", "/manager/api/instances", "{\"service_id\":\"a\"}", {{"Content-Type", "text/plain"}});
  EXPECT_EQ(r.status, 415u);
  EXPECT_TRUE(core.calls.empty());
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Manager, AnOperationNobodyProvidesAnswers503) {
  FakeHost fh;
  configure(fh);
  ASSERT_EQ(load_with_token(fh), CL_OK);
  auto r = fh.request("manager", "GET", "/manager/api/instances");
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(r.body, "{\"error\":\"operation instance.list is not available\"}");
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Manager, EventStreamsAreCappedAndEndWhenTheServerStops) {
  FakeHost fh;
  configure(fh);
  ASSERT_EQ(load_with_token(fh, "{\"max_event_streams\": 1}"), CL_OK);
  auto first = fh.request("manager", "GET", "/manager/api/events?topics=instance.*,job.done", "", {}, 100);
  EXPECT_EQ(first.status, 200u);
  EXPECT_FALSE(first.complete);  // a stream: it stays open
  EXPECT_EQ(first.header("Content-Type"), "text/event-stream");
  EXPECT_EQ(first.body, "event: hello\ndata: {}\n\n");
  auto second = fh.request("manager", "GET", "/manager/api/events", "", {}, 100);
  EXPECT_EQ(second.status, 503u);
  EXPECT_EQ(second.header("Retry-After"), "5");
  // The core announces a shutdown: the stream ends, so the drain does not wait for it.
  fh.publish("server.stopping", "{}");
  fh.run_for(20);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/events?topics=job.*,a%20b", "", {}, 100).status, 400u);
  auto third = fh.request("manager", "GET", "/manager/api/events", "", {}, 100);
  EXPECT_EQ(third.status, 200u);
  EXPECT_EQ(fh.unload(), 0u);  // fini ended the open stream
}

TEST(Manager, RefusesABadConfiguration) {
  for (const char* config : {"{\"max_event_streams\": 0}", "{\"max_event_streams\": \"many\"}", "[1]"}) {
    FakeHost fh;
    configure(fh);
    EXPECT_EQ(fh.load(plugin_path(), config), CL_EINVAL) << config;
  }
}

namespace {

std::string openapi_file() {
  std::ifstream f(CLOUDLET_MANAGER_OPENAPI, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// "METHOD /path" of every operation the document describes (route patterns and OpenAPI paths both write
// the path parameter as {id}).
std::map<std::string, const cloudlet::json::Value*> documented_operations(const cloudlet::json::Document& doc) {
  std::map<std::string, const cloudlet::json::Value*> out;
  for (const auto& path : doc["paths"].GetObject()) {
    for (const auto& m : path.value.GetObject()) {
      std::string method = m.name.GetString();
      if (method == "parameters" || method == "summary" || method == "description" || method == "servers") continue;
      for (char& c : method) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
      out[method + " " + path.name.GetString()] = &m.value;
    }
  }
  return out;
}

}  // namespace

// Both directions: a route added without documenting it, or a documented route that is not registered, fails.
// The plugin serves the same document.
TEST(Manager, TheOpenApiDocumentDescribesExactlyTheRegisteredRoutesAndIsServed) {
  std::string text = openapi_file();
  cloudlet::json::Document doc;
  std::string error;
  ASSERT_TRUE(cloudlet::json::parse(text, &doc, &error)) << CLOUDLET_MANAGER_OPENAPI << ": " << error;
  ASSERT_TRUE(doc.IsObject());
  ASSERT_TRUE(doc.HasMember("openapi") && doc["openapi"].IsString());
  EXPECT_EQ(std::string(doc["openapi"].GetString()).rfind("3.", 0), 0u);
  ASSERT_TRUE(doc.HasMember("info") && doc["info"].HasMember("version"));
  ASSERT_TRUE(doc.HasMember("paths") && doc["paths"].IsObject());
  auto documented = documented_operations(doc);

  FakeHost fh;
  configure(fh);
  ASSERT_EQ(load_with_token(fh), CL_OK);
  std::set<std::string> registered;
  for (const auto& r : fh.routes) {
    if (r.pattern.rfind("/manager/api/", 0) == 0) registered.insert(r.method + " " + r.pattern);  // not the pages
  }
  for (const auto& r : registered) EXPECT_TRUE(documented.count(r)) << r << " is registered but not documented";
  for (const auto& [r, op] : documented) EXPECT_TRUE(registered.count(r)) << r << " is documented but not registered";
  for (const auto& [r, op] : documented) {
    EXPECT_TRUE(op->HasMember("operationId")) << r;
    EXPECT_TRUE(op->HasMember("responses")) << r;
  }
  // And the plugin serves this file (embedded when the plugin is built).
  auto r = fh.request("manager", "GET", "/manager/api/openapi.json");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  // Not EXPECT_EQ: a mismatch would print both documents.
  EXPECT_TRUE(r.body == text) << "the served document is not " CLOUDLET_MANAGER_OPENAPI " (rebuild manager)";
  EXPECT_EQ(fh.unload(), 0u);
}

// Each documented route calls the operation its operationId names (x-cloudlet-operation when the route calls
// it with fixed arguments, as the DELETE of an instance does) and answers the documented success status.
TEST(Manager, EachDocumentedOperationIsTheOneTheRouteCalls) {
  cloudlet::json::Document doc;
  ASSERT_TRUE(cloudlet::json::parse(openapi_file(), &doc, nullptr));
  FakeHost fh;
  configure(fh);
  Core core;
  core.provide(fh);
  fh.provide("service.get", [&core](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
    core.calls.emplace_back("service.get", args);
    reply(CL_OK, "{\"op\":\"service.get\"}");
  });
  ASSERT_EQ(load_with_token(fh), CL_OK);
  size_t checked = 0;
  for (const auto& [route, op] : documented_operations(doc)) {
    std::string method = route.substr(0, route.find(' '));
    std::string path = route.substr(route.find(' ') + 1);
    if (path == "/manager/api/events" || path == "/manager/api/openapi.json") continue;  // no operation
    if (op->HasMember("x-cloudlet-no-operation")) continue;  // login, sessions and tokens: the plugin's own
    std::string target = path;
    if (size_t at = target.find("{id}"); at != std::string::npos) target.replace(at, 4, "x1");
    std::string want = (*op)["operationId"].GetString();
    if (op->HasMember("x-cloudlet-operation")) want = (*op)["x-cloudlet-operation"].GetString();
    std::string success;
    for (const auto& r : (*op)["responses"].GetObject()) {
      if (r.name.GetString()[0] == '2') success = r.name.GetString();
    }
    core.calls.clear();
    auto r = fh.request("manager", method, target, method == "POST" ? "{}" : "", kJson);
    ASSERT_EQ(core.calls.size(), 1u) << route;
    EXPECT_EQ(core.calls[0].first, want) << route;
    EXPECT_EQ(std::to_string(r.status), success) << route;
    checked++;
  }
  EXPECT_EQ(checked, 24u);
  EXPECT_EQ(fh.unload(), 0u);
}
