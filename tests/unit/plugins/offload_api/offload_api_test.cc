// The offload_api plugin against the fake host: every route in open and encrypted mode, with the core
// operations it calls faked (and their arguments checked). The plugin sees only the ABI.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "fakehost.h"
#include "tunnel.h"

using cloudlet::test::FakeHost;
using namespace cloudlet::offload;

namespace {

std::string plugin_path() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/plugins/offload_api.so"; }

rapidjson::Document parse(const std::string& s) {
  rapidjson::Document d;
  d.Parse(s.c_str());
  EXPECT_FALSE(d.HasParseError()) << "not JSON: " << s;
  return d;
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

const char* kKatPassword = "c93e781ffd96d3794d5e02c71a23dc824cad730b1e09d7f8c87dadc141f14632";
const char* kKatWire =
    "AAECAwQFBgcICQoLDA0OD9PpLIvFAm19+jOVwFyBVFMIAOmpZvYVbPaq67RPmeQR2EKQBe2JZ9vvvnp0DkUF4m1ROP6bqPJYIDbytvyRmBYVmAy"
    "ZxoaKt7ogFQ3Xlc3S";

// Fakes of the core operations the plugin calls, recording every call.
struct FakeCore {
  std::vector<std::pair<std::string, std::string>> calls;  // name, args
  std::map<std::string, std::string> devices;              // device_id -> state ("ok", "revoked", "expired")
  std::map<std::string, std::string> passwords;            // device_id -> api_password
  std::string auth_after_attach;                           // if set: the state device.auth reports after attach
  bool attached = false;
  bool attach_fails = false;
  cl_status_t start_status = CL_OK;
  std::string start_error = "{}";
  std::string instance_ip = "10.9.9.9";  // what instance.start reports back (the plugin must not use it)

  size_t count(const std::string& name) const {
    size_t n = 0;
    for (auto& c : calls) n += c.first == name;
    return n;
  }
  std::string last(const std::string& name) const {
    for (auto it = calls.rbegin(); it != calls.rend(); ++it) {
      if (it->first == name) return it->second;
    }
    return "";
  }

  void install(FakeHost& fh, bool apps = false) {
    auto rec = [this](const std::string& name) {
      return [this, name](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
        calls.emplace_back(name, args);
        handle(name, args, reply);
      };
    };
    for (const char* op : {"service.list", "service.get", "instance.start", "instance.stop", "system.info",
                           "device.auth", "device.attach", "message.fetch"}) {
      // As in the core, device.auth (it returns a device's API password) is privileged.
      fh.provide(op, rec(op), std::string(op) == "device.auth" ? CL_OP_F_PRIVILEGED : 0u);
    }
    if (apps) {
      fh.provide("app.list", rec("app.list"));
      fh.provide("app.get", rec("app.get"));
    }
  }

  std::string apk_path;

  void handle(const std::string& name, const std::string& args,
              const std::function<void(cl_status_t, std::string)>& reply) {
    auto a = parse(args);
    auto str = [&](const char* k) { return a.HasMember(k) && a[k].IsString() ? std::string(a[k].GetString()) : ""; };
    if (name == "service.list") {
      return reply(CL_OK, R"({"services":[{"service_id":"demo.httpd","description":"Demo web server","version":"1.0",
                     "tags":["demo","http"],"port":8080,"num_users":2,"instances":0},
                    {"service_id":"edu.cmu.sei.ams.speech_rec_service","description":"Speech","version":1,
                     "tags":[],"port":10101}]})");
    }
    if (name == "service.get") {
      if (str("service_id") == "demo.httpd") {
        return reply(CL_OK, R"({"service_id":"demo.httpd","description":"Demo web server","version":"1.0",
                                "tags":["demo"],"port":8080})");
      }
      return reply(CL_ENOENT, R"({"error":"no such service"})");
    }
    if (name == "instance.start") {
      if (start_status != CL_OK) return reply(start_status, start_error);
      if (str("service_id") != "demo.httpd" && str("service_id") != "edu.cmu.sei.ams.speech_rec_service") {
        return reply(CL_ENOENT, R"({"error":"unknown service"})");
      }
      return reply(CL_OK, R"({"id":"inst-1","service_id":")" + str("service_id") +
                              R"(","name":"svm-1","port":20001,"ssh_port":20002,"ip_address":")" + instance_ip +
                              R"(","vnc_address":null,"fqdn":null,"state":"running","users":1})");
    }
    if (name == "instance.stop") {
      if (str("id") == "inst-1") return reply(CL_OK, R"({"id":"inst-1","stopped":true,"users":0})");
      return reply(CL_ENOENT, R"({"error":"no such instance"})");
    }
    if (name == "system.info") {
      return reply(CL_OK, R"({"cpu_info":{"max_cores":2,"usage":37.5,"speed":2400.0,"cache":512},
                              "memory_info":{"max_memory":4294967296,"free_memory":2147483648}})");
    }
    if (name == "device.auth") {
      std::string id = str("device_id");
      auto it = devices.find(id);
      if (it == devices.end()) return reply(CL_ENOENT, R"({"error":"device is not paired to this cloudlet"})");
      std::string state = attached && !auth_after_attach.empty() ? auth_after_attach : it->second;
      return reply(CL_OK, R"({"device_id":")" + id + R"(","state":")" + state + R"(","api_password":")" +
                              passwords[id] + R"(","type":"mobile"})");
    }
    if (name == "device.attach") {
      attached = true;
      if (attach_fails || !devices.count(str("device_id"))) return reply(CL_ENOENT, R"({"error":"not paired"})");
      return reply(CL_OK, "{}");
    }
    if (name == "message.fetch") {
      if (str("service_id") == "bad!") return reply(CL_EINVAL, R"({"error":"service_id must be [A-Za-z0-9._-]"})");
      return reply(CL_OK, R"({"messages":[{"message":"move-to-new-cloudlet-network",
                              "params":{"cloudlet_name":"c2","cloudlet_port":9999,"cloudlet_encryption_enabled":false}}]})");
    }
    if (name == "app.list") {
      return reply(CL_OK, R"({"apps":[{"_id":"app-1","name":"Speech","package_name":"edu.cmu.speech","tags":["speech"],
                              "md5sum":"0123","min_android_version":"6.0","service_id":"edu.cmu.sei.ams.speech_rec_service",
                              "app_version":"1.2","description":"Speech client"}]})");
    }
    if (name == "app.get") {
      if (str("app_id") == "app-1") {
        return reply(CL_OK,
                     R"({"_id":"app-1","name":"Speech","file_path":")" + apk_path + R"(","file_name":"speech.apk"})");
      }
      if (str("app_id") == "app-gone") return reply(CL_OK, R"({"_id":"app-gone","file_path":"/nonexistent/x.apk"})");
      return reply(CL_ENOENT, R"({"error":"no such app"})");
    }
    reply(CL_EIO, R"({"error":"unexpected"})");
  }
};

// An APK file in a private temporary directory, removed when the test ends (also when it fails).
struct TempApk {
  std::string dir, path;
  explicit TempApk(const std::string& bytes) {
    char tmpl[] = "/tmp/offload-apk-XXXXXX";
    if (mkdtemp(tmpl)) dir = tmpl;
    path = dir + "/app-1.apk";
    std::ofstream(path, std::ios::binary) << bytes;
  }
  ~TempApk() {
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
};

class OffloadTest : public ::testing::Test {
 protected:
  FakeHost fh{"offload_api"};
  FakeCore core;

  void load(const char* mode, bool apps = false) {
    fh.facts["api_mode"] = mode;
    fh.local_ip = "192.168.7.2";  // a phone on the LAN reached us here
    core.install(fh, apps);
    fh.grants = {"device.auth"};  // as config/cloudletd.json grants it
    std::string error;
    ASSERT_EQ(fh.load(plugin_path(), "{}", &error), CL_OK) << error;
  }

  FakeHost::Response get(const std::string& target, const std::string& device = "") {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!device.empty()) headers.emplace_back("X-Device-ID", device);
    auto r = fh.request("api", "GET", target, "", headers);
    EXPECT_TRUE(r.complete);
    EXPECT_FALSE(r.header("Content-Length").empty());
    EXPECT_NE(r.status, 500u) << target << ": " << r.body;
    return r;
  }

  // A paired device and a command sent through the tunnel like client-lib does.
  std::string pair(const std::string& id, const std::string& password, const std::string& state = "ok") {
    core.devices[id] = state;
    core.passwords[id] = password;
    return password;
  }
  FakeHost::Response command(const std::string& device, const std::string& password, const std::string& plaintext) {
    TunnelIv iv;
    EXPECT_TRUE(tunnel_random_iv(&iv));
    std::string wire = tunnel_seal(plaintext, tunnel_key(password), iv);
    return raw_command(device, "command=" + url_encode(wire));
  }
  FakeHost::Response raw_command(const std::string& device, const std::string& body, const std::string& query = "") {
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/x-www-form-urlencoded; charset=ISO-8859-1"}};
    if (!device.empty()) headers.emplace_back("X-Device-ID", device);
    auto r = fh.request("api", "POST", "/api/command" + query, body, headers);
    EXPECT_TRUE(r.complete);
    EXPECT_FALSE(r.header("Content-Length").empty());
    EXPECT_NE(r.status, 500u) << r.body;
    return r;
  }
  std::string open(const FakeHost::Response& r, const std::string& password) {
    EXPECT_EQ(r.status, 200u) << r.body;
    std::string plain;
    EXPECT_EQ(tunnel_open(r.body, tunnel_key(password), &plain), OpenError::none) << r.body;
    return plain;
  }

  void TearDown() override { EXPECT_EQ(fh.unload(), 0u); }
};

// ---- registration and modes ----------------------------------------------------------------------------

TEST_F(OffloadTest, OpenModeRegistersTheGetRoutesOnly) {
  load("open");
  std::vector<std::string> patterns;
  for (auto& r : fh.routes) {
    EXPECT_EQ(r.listener, "api");
    EXPECT_EQ(r.method, "GET");
    patterns.push_back(r.pattern);
  }
  EXPECT_EQ(patterns, (std::vector<std::string>{"/api/services", "/api/services/get", "/api/servicevm/start",
                                                "/api/servicevm/stop", "/api/apps", "/api/apps/get", "/api/system",
                                                "/api/system/get_messages"}));
  EXPECT_EQ(fh.request("api", "POST", "/api/command", "command=x").status, 404u);
}

TEST_F(OffloadTest, EncryptedModeRegistersOnlyTheTunnel) {
  load("encrypted");
  ASSERT_EQ(fh.routes.size(), 1u);
  EXPECT_EQ(fh.routes[0].method, "POST");
  EXPECT_EQ(fh.routes[0].pattern, "/api/command");
  EXPECT_EQ(fh.request("api", "GET", "/api/services").status, 404u);
}

TEST_F(OffloadTest, BothModeServesBoth) {
  load("both");
  EXPECT_EQ(fh.routes.size(), 9u);
  EXPECT_EQ(get("/api/services").status, 200u);
  pair("phone-1", "pw");
  EXPECT_EQ(parse(open(command("phone-1", "pw", "/services"), "pw"))["services"].Size(), 2u);
}

TEST(OffloadModes, UnknownModeFailsInit) {
  FakeHost fh;
  fh.facts["api_mode"] = "sideways";
  EXPECT_EQ(fh.load(plugin_path()), CL_EINVAL);
}

// ---- open mode -------------------------------------------------------------------------------------------

TEST_F(OffloadTest, ServicesListWithClientTypes) {
  load("open");
  auto r = get("/api/services");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.header("Content-Length"), std::to_string(r.body.size()));
  auto d = parse(r.body);
  ASSERT_TRUE(d["services"].IsArray());
  ASSERT_EQ(d["services"].Size(), 2u);
  for (const auto& s : d["services"].GetArray()) {
    for (const char* f : {"_id", "service_id", "description", "version"}) EXPECT_TRUE(s[f].IsString()) << f;
    ASSERT_TRUE(s["tags"].IsArray());
    for (const auto& t : s["tags"].GetArray()) EXPECT_TRUE(t.IsString());
    EXPECT_STREQ(s["_id"].GetString(), s["service_id"].GetString());
  }
  EXPECT_STREQ(d["services"][1]["version"].GetString(), "1");  // a number became the string phones read
}

TEST_F(OffloadTest, ServicesListIsCachedUntilServiceChanged) {
  load("open");
  std::string first = get("/api/services").body;
  EXPECT_EQ(get("/api/services").body, first);
  EXPECT_EQ(core.count("service.list"), 1u);
  fh.publish("service.changed", R"({"service_id":"demo.httpd"})");
  fh.run_for(5);
  EXPECT_EQ(get("/api/services").body, first);
  EXPECT_EQ(core.count("service.list"), 2u);
  fh.run_for(1100);  // and never older than a second, in case an event is missed
  get("/api/services");
  EXPECT_EQ(core.count("service.list"), 3u);
}

TEST_F(OffloadTest, ServicesUnavailableWithoutTheOperationIsA503) {
  fh.facts["api_mode"] = "open";
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);  // no fakes installed: nothing provides service.list
  auto r = get("/api/services");
  EXPECT_EQ(r.status, 503u);
  EXPECT_NE(r.body.find("service.list"), std::string::npos);
}

TEST_F(OffloadTest, ServiceGet) {
  load("open");
  auto r = get("/api/services/get?serviceId=demo.httpd");
  EXPECT_EQ(r.status, 200u);
  auto d = parse(r.body);
  EXPECT_STREQ(d["_id"].GetString(), "demo.httpd");
  EXPECT_EQ(d.MemberCount(), 5u);
  EXPECT_EQ(core.last("service.get"), R"({"service_id":"demo.httpd"})");
  r = get("/api/services/get?serviceId=nope");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "Service for nope not found");
  r = get("/api/services/get");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide service id");
  r = get("/api/services/get?serviceId=%3Cscript%3E");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("Invalid serviceId"), std::string::npos);
}

TEST_F(OffloadTest, StartPassesTheLocalAddressAndAnswersClientFields) {
  load("open");
  // Parameters in any order, URL-encoded; X-Device-ID is not trusted in open mode.
  auto r = get("/api/servicevm/start?join=true&serviceId=demo%2Ehttpd", "phone-9");
  ASSERT_EQ(r.status, 200u) << r.body;
  auto args = parse(core.last("instance.start"));
  EXPECT_STREQ(args["service_id"].GetString(), "demo.httpd");
  EXPECT_TRUE(args["join"].GetBool());
  EXPECT_STREQ(args["ip_address"].GetString(), "192.168.7.2");
  EXPECT_TRUE(args["wait_ready"].GetBool());
  EXPECT_FALSE(args.HasMember("device_id"));
  EXPECT_EQ(core.count("device.attach"), 0u);
  auto d = parse(r.body);
  EXPECT_STREQ(d["_id"].GetString(), "inst-1");
  EXPECT_STREQ(d["service_id"].GetString(), "demo.httpd");
  EXPECT_TRUE(d["port"].IsInt());
  EXPECT_EQ(d["port"].GetInt(), 20001);
  EXPECT_EQ(d["ssh_port"].GetInt(), 20002);
  EXPECT_STREQ(d["ip_address"].GetString(), "192.168.7.2");  // not the 10.9.9.9 a joined instance remembered
  EXPECT_TRUE(d["fqdn"].IsNull());
  EXPECT_TRUE(d["vnc_address"].IsNull());
  EXPECT_TRUE(d["running"].GetBool());
}

TEST_F(OffloadTest, JoinFollowsPycloudsTruthyValues) {
  load("open");
  std::map<std::string, bool> cases = {{"T", true},      {"true", true}, {"TRUE", true}, {"y", true}, {"Yes", true},
                                       {"false", false}, {"1", false},   {"no", false},  {"", false}};
  for (auto& [value, expected] : cases) {
    get("/api/servicevm/start?serviceId=demo.httpd&join=" + value);
    EXPECT_EQ(parse(core.last("instance.start"))["join"].GetBool(), expected) << value;
  }
  get("/api/servicevm/start?serviceId=demo.httpd");
  EXPECT_FALSE(parse(core.last("instance.start"))["join"].GetBool());
}

TEST_F(OffloadTest, StartErrorsUsePycloudsCodes) {
  load("open");
  auto r = get("/api/servicevm/start?serviceId=unknown.service");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Service vm for unknown.service not found");
  r = get("/api/servicevm/start");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide service id");
  r = get("/api/servicevm/start?serviceId=");
  EXPECT_EQ(r.status, 400u);
  core.start_status = CL_EBUSY;
  core.start_error = R"({"error":"demo.httpd has no free capacity"})";
  r = get("/api/servicevm/start?serviceId=demo.httpd&join=true");
  EXPECT_EQ(r.status, 409u);
  EXPECT_EQ(r.body, "demo.httpd has no free capacity");
}

TEST_F(OffloadTest, StartWithoutVirtIsA503) {
  fh.facts["api_mode"] = "open";
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  auto r = get("/api/servicevm/start?serviceId=demo.httpd");
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(r.body, "instance.start is not available on this cloudlet");
}

TEST_F(OffloadTest, Stop) {
  load("open");
  auto r = get("/api/servicevm/stop?instanceId=inst-1", "phone-9");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, "{}");
  EXPECT_EQ(core.last("instance.stop"), R"({"id":"inst-1"})");
  r = get("/api/servicevm/stop?instanceId=inst-404");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "Service vm for inst-404 not found");
  r = get("/api/servicevm/stop");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide instance id");
  r = get("/api/servicevm/stop?instanceId=a%2F..%2Fb");
  EXPECT_EQ(r.status, 400u);
}

TEST_F(OffloadTest, HeadNeverStartsOrStopsAnything) {
  load("open");
  auto r = fh.request("api", "HEAD", "/api/servicevm/start?serviceId=svc.one&join=true");
  EXPECT_EQ(r.status, 405u);
  r = fh.request("api", "HEAD", "/api/servicevm/stop?instanceId=inst-1");
  EXPECT_EQ(r.status, 405u);
  EXPECT_EQ(core.last("instance.start"), "");
  EXPECT_EQ(core.last("instance.stop"), "");
}

TEST_F(OffloadTest, AppsWithoutAnAppStore) {
  load("open");
  auto r = get("/api/apps?osName=Android&osVersion=6.0&tags=speech%2Ctest");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, R"({"apps":[]})");
  r = get("/api/apps/get?appId=app-1");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "App app-1 not found");
  r = get("/api/apps/get");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide app id");
}

TEST_F(OffloadTest, AppsWithAnAppStore) {
  std::string apk = "PK\x03\x04 fake apk bytes";
  TempApk file(apk);
  core.apk_path = file.path;
  load("open", true);
  auto r = get("/api/apps?osVersion=6.0&osName=Android&tags=speech%2Ctest");
  EXPECT_EQ(r.status, 200u);
  auto args = parse(core.last("app.list"));
  EXPECT_STREQ(args["os_name"].GetString(), "Android");
  EXPECT_STREQ(args["os_version"].GetString(), "6.0");
  ASSERT_EQ(args["tags"].Size(), 2u);
  EXPECT_STREQ(args["tags"][1].GetString(), "test");
  auto d = parse(r.body);
  ASSERT_EQ(d["apps"].Size(), 1u);
  EXPECT_STREQ(d["apps"][0]["_id"].GetString(), "app-1");
  EXPECT_STREQ(d["apps"][0]["md5sum"].GetString(), "0123");
  get("/api/apps");
  EXPECT_EQ(core.last("app.list"), "{}");

  r = get("/api/apps/get?appId=app-1");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, apk);
  EXPECT_EQ(r.header("Content-Type"), "application/vnd.android.package-archive");
  EXPECT_EQ(r.header("Content-Disposition"), "attachment; filename=\"speech.apk\"");
  r = get("/api/apps/get?appId=app-nope");
  EXPECT_EQ(r.status, 404u);
  r = get("/api/apps/get?appId=app-gone");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "The package file of this app is missing");
}

TEST_F(OffloadTest, SystemInfoWithRankableFigures) {
  load("open");
  auto r = get("/api/system");
  EXPECT_EQ(r.status, 200u);
  auto d = parse(r.body);
  EXPECT_TRUE(d["cpu_info"]["max_cores"].IsInt());
  EXPECT_TRUE(d["cpu_info"]["usage"].IsDouble());
  EXPECT_TRUE(d["cpu_info"]["speed"].IsNumber());
  EXPECT_TRUE(d["cpu_info"]["cache"].IsInt());
  EXPECT_TRUE(d["memory_info"]["max_memory"].IsInt64());
  EXPECT_TRUE(d["memory_info"]["free_memory"].IsInt64());
  EXPECT_FALSE(d.HasMember("services"));
  EXPECT_FALSE(d.HasMember("apps"));
  double cpu = 100 * d["cpu_info"]["max_cores"].GetDouble() - d["cpu_info"]["usage"].GetDouble();
  EXPECT_GT(cpu, 0);
  EXPECT_GT(cpu * d["cpu_info"]["speed"].GetDouble() / 100, 0);
  EXPECT_GT(d["memory_info"]["free_memory"].GetDouble() / 1024 / 1024, 0);

  d = parse(get("/api/system?services=Y&apps=true").body);
  ASSERT_TRUE(d["services"].IsArray());
  EXPECT_EQ(d["services"].Size(), 2u);
  EXPECT_STREQ(d["services"][0]["_id"].GetString(), "demo.httpd");
  ASSERT_TRUE(d["apps"].IsArray());  // no app store: empty
  EXPECT_EQ(d["apps"].Size(), 0u);
  d = parse(get("/api/system?services=no&apps=0").body);
  EXPECT_FALSE(d.HasMember("services"));
  EXPECT_FALSE(d.HasMember("apps"));
}

TEST_F(OffloadTest, GetMessages) {
  load("open");
  auto r = get("/api/system/get_messages?serviceId=demo.httpd", "phone-1");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(core.last("message.fetch"), R"({"device_id":"phone-1","service_id":"demo.httpd","secure":false})");
  auto d = parse(r.body);
  const auto& m = d["messages"][0];
  EXPECT_STREQ(m["message"].GetString(), "move-to-new-cloudlet-network");
  EXPECT_STREQ(m["params"]["cloudlet_port"].GetString(), "9999");
  EXPECT_STREQ(m["params"]["cloudlet_encryption_enabled"].GetString(), "false");
  r = get("/api/system/get_messages?serviceId=demo.httpd");
  EXPECT_EQ(r.status, 400u);  // pycloud crashed with a 500 here
  EXPECT_EQ(r.body, "Must provide the X-Device-ID header");
  r = get("/api/system/get_messages", "phone-1");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide service id");
  r = get("/api/system/get_messages?serviceId=demo.httpd", "bad device");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(core.count("message.fetch"), 1u);
}

TEST_F(OffloadTest, GarbageQueriesNeverGiveA500) {
  load("open");
  for (const char* t : {"/api/services?%%%", "/api/services/get?serviceId=%00", "/api/servicevm/start?serviceId=%FF%FE",
                        "/api/servicevm/start?serviceId=a&serviceId=", "/api/servicevm/stop?instanceId=%0d%0a",
                        "/api/apps?tags=,,,&osName=", "/api/apps/get?appId=../../etc/passwd",
                        "/api/system?services=%ZZ", "/api/system/get_messages?serviceId=&&&="}) {
    auto r = get(t, "phone-1");
    EXPECT_TRUE(r.status == 200u || r.status == 400u || r.status == 404u) << t << " -> " << r.status;
  }
}

// ---- encrypted mode ------------------------------------------------------------------------------------

TEST_F(OffloadTest, KnownAnswerVectorThroughThePlugin) {
  load("encrypted");
  pair("kat-device", kKatPassword);
  // The exact bytes client-lib sends for start(speech_rec_service, join=true) with IV 00..0f.
  auto r = raw_command("kat-device", "command=" + url_encode(kKatWire));
  ASSERT_EQ(r.status, 200u) << r.body;
  auto args = parse(core.last("instance.start"));
  EXPECT_STREQ(args["service_id"].GetString(), "edu.cmu.sei.ams.speech_rec_service");
  EXPECT_TRUE(args["join"].GetBool());
  EXPECT_STREQ(args["device_id"].GetString(), "kat-device");
  EXPECT_EQ(core.last("device.attach"), R"({"device_id":"kat-device","instance_id":"inst-1"})");
  // The reply is the same scheme with the same key (and a fresh IV).
  auto d = parse(open(r, kKatPassword));
  EXPECT_STREQ(d["_id"].GetString(), "inst-1");
  EXPECT_EQ(d["port"].GetInt(), 20001);
  EXPECT_STREQ(d["ip_address"].GetString(), "192.168.7.2");
  EXPECT_NE(r.body.substr(0, 22), std::string(kKatWire).substr(0, 22));
}

TEST_F(OffloadTest, EveryCommandRoundTripsAndMatchesTheOpenReply) {
  std::string apk(100000, 'a');
  for (size_t i = 0; i < apk.size(); i++) apk[i] = static_cast<char>(i * 31);
  TempApk file(apk);
  core.apk_path = file.path;
  load("both", true);
  std::string pw = pair("phone-1", "3d1a6f0e2b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6");
  std::vector<std::pair<std::string, std::string>> cases = {
      {"/services", "/api/services"},
      {"/services/get&serviceId=demo.httpd", "/api/services/get?serviceId=demo.httpd"},
      {"/servicevm/stop&instanceId=inst-1", "/api/servicevm/stop?instanceId=inst-1"},
      {"/apps&osVersion=6.0&osName=Android&tags=speech,test",
       "/api/apps?osVersion=6.0&osName=Android&tags=speech,test"},
      {"/system&services=true", "/api/system?services=true"},
      {"/system/get_messages&serviceId=demo.httpd", "/api/system/get_messages?serviceId=demo.httpd"},
      {"/apps/get&appId=app-1", "/api/apps/get?appId=app-1"},
  };
  for (auto& [plain, route] : cases) {
    std::string sealed = open(command("phone-1", pw, plain), pw);
    auto clear = get(route, "phone-1");
    ASSERT_EQ(clear.status, 200u) << route;
    EXPECT_EQ(sealed, clear.body) << plain;
  }
  // start through the tunnel: tied to the device.
  auto d = parse(open(command("phone-1", pw, "/servicevm/start&serviceId=demo.httpd&join=false"), pw));
  EXPECT_STREQ(d["_id"].GetString(), "inst-1");
  EXPECT_FALSE(parse(core.last("instance.start"))["join"].GetBool());
  EXPECT_EQ(core.last("device.attach"), R"({"device_id":"phone-1","instance_id":"inst-1"})");
  // stop through the tunnel names the device, so the core can count it out of a shared instance.
  open(command("phone-1", pw, "/servicevm/stop&instanceId=inst-1"), pw);
  EXPECT_EQ(core.last("instance.stop"), R"({"id":"inst-1","device_id":"phone-1"})");
}

TEST_F(OffloadTest, RepliesUseFreshIvs) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw1");
  auto a = command("phone-1", pw, "/services");
  auto b = command("phone-1", pw, "/services");
  EXPECT_EQ(open(a, pw), open(b, pw));
  EXPECT_NE(a.body.substr(0, 22), b.body.substr(0, 22));
}

TEST_F(OffloadTest, DeviceErrorsInClearWithHashMessages) {
  load("encrypted");
  pair("revoked-dev", "pw", "revoked");
  pair("expired-dev", "pw", "expired");
  auto r = command("unknown-dev", "pw", "/services");
  EXPECT_EQ(r.status, 401u);
  EXPECT_EQ(r.body, "401 Unauthorized\n#Device with id unknown-dev is not paired to this cloudlet");
  r = command("revoked-dev", "pw", "/services");
  EXPECT_EQ(r.status, 403u);
  EXPECT_EQ(r.body, "403 Forbidden\n#Authorization has been revoked for device with id revoked-dev");
  r = command("expired-dev", "pw", "/services");
  EXPECT_EQ(r.status, 403u);
  EXPECT_EQ(r.body, "403 Forbidden\n#Authorization has expired for device with id expired-dev");
  r = command("evil#dev\x01", "pw", "/services");
  EXPECT_EQ(r.status, 401u);
  EXPECT_EQ(r.body, "401 Unauthorized\n#Device with id evil?dev? is not paired to this cloudlet");
  EXPECT_EQ(core.count("service.list"), 0u);
}

TEST_F(OffloadTest, BadCommandsAreClearErrors) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  auto r = raw_command("", "command=AAAA");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide the X-Device-ID header");
  r = raw_command("phone-1", "");
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("command parameter"), std::string::npos);
  r = raw_command("phone-1", "other=1");
  EXPECT_EQ(r.status, 400u);
  r = raw_command("phone-1", "command=%%%not-base64!!");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "The command is not valid Base64");
  r = raw_command("phone-1", "command=" + url_encode(base64_encode(std::string(20, 'x'))));  // not whole blocks
  EXPECT_EQ(r.status, 400u);
  EXPECT_NE(r.body.find("wrong length"), std::string::npos);
  r = raw_command("phone-1", "command=" + url_encode(base64_encode(std::string(16, 'x'))));  // IV only
  EXPECT_EQ(r.status, 400u);
  // Wrong key: the padding check fails (or, rarely, the text is no command): never a 500, no echo.
  for (int i = 0; i < 10; i++) {
    r = command("phone-1", "not-the-password", "/services");
    EXPECT_TRUE(r.status == 400u || r.status == 404u) << r.status;
    EXPECT_EQ(r.body.find("services"), std::string::npos);
  }
  r = raw_command("phone-1", "command=" + std::string(64 * 1024 + 4, 'A'));  // over the 64 KiB bound
  EXPECT_EQ(r.status, 413u);
  EXPECT_EQ(core.count("service.list"), 0u);
}

TEST_F(OffloadTest, UnknownCommandsAre404WithoutEchoingPlaintext) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  for (const char* plain : {"/secret/words", "/servicevm/migration_svm_metadata&svm_json_string={}", "services",
                            "/services/get/extra/words", "", "/system/nope"}) {
    auto r = command("phone-1", pw, plain);
    EXPECT_EQ(r.status, 404u) << plain;
    EXPECT_EQ(r.body, "Command not found");
  }
  auto r = command("phone-1", pw, "/services/get&serviceId");  // a parameter without '='
  EXPECT_EQ(r.status, 400u);
  r = command("phone-1", pw, "api/services");  // word 0 is ignored, as in pycloud
  EXPECT_EQ(r.status, 200u);
}

TEST_F(OffloadTest, CommandInTheQueryStringAndParametersVerbatim) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  TunnelIv iv;
  ASSERT_TRUE(tunnel_random_iv(&iv));
  std::string wire = tunnel_seal("/services/get&serviceId=demo.httpd", tunnel_key(pw), iv);
  auto r = raw_command("phone-1", "", "?command=" + url_encode(wire));
  EXPECT_STREQ(parse(open(r, pw))["service_id"].GetString(), "demo.httpd");
  // Values are not URL-decoded inside the tunnel (clients do not encode them).
  r = command("phone-1", pw, "/services/get&serviceId=demo%2Ehttpd");
  EXPECT_EQ(r.status, 400u);
}

TEST_F(OffloadTest, MissingParametersThroughTheTunnel) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  auto r = command("phone-1", pw, "/servicevm/start");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "Must provide service id");  // errors are never encrypted
  r = command("phone-1", pw, "/servicevm/start&serviceId=nope.service");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, "The command has a missing or invalid parameter");  // the open route names the service
  r = command("phone-1", pw, "/servicevm/stop&instanceId=gone");
  EXPECT_EQ(r.status, 404u);
  r = command("phone-1", pw, "/apps/get&appId=x");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(parse(open(command("phone-1", pw, "/apps"), pw))["apps"].Size(), 0u);
}

TEST_F(OffloadTest, StartWhileTheWindowEndsStopsTheInstance) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  core.auth_after_attach = "expired";
  auto r = command("phone-1", pw, "/servicevm/start&serviceId=demo.httpd");
  EXPECT_EQ(r.status, 403u);
  EXPECT_EQ(r.body, "403 Forbidden\n#Authorization has expired for device with id phone-1");
  EXPECT_EQ(core.last("instance.stop"), R"({"id":"inst-1","device_id":"phone-1"})");
}

TEST_F(OffloadTest, StartForADeviceUnpairedMeanwhileStopsTheInstance) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  core.attach_fails = true;  // unpaired between the authorization check and the attach
  auto r = command("phone-1", pw, "/servicevm/start&serviceId=demo.httpd");
  EXPECT_EQ(r.status, 401u);
  EXPECT_EQ(r.body, "401 Unauthorized\n#Device with id phone-1 is not paired to this cloudlet");
  EXPECT_EQ(core.last("instance.stop"), R"({"id":"inst-1","device_id":"phone-1"})");
}

// Rewrites the first plaintext block of a captured command through its IV (CBC without a MAC): `was` is what
// the block said, `want` what it will say. The rest of the plaintext is unchanged.
std::string flip_first_block(const std::string& wire, std::string_view was, std::string_view want) {
  std::string raw;
  EXPECT_TRUE(base64_decode(wire, &raw));
  for (size_t i = 0; i < kIvBytes; i++) raw[i] = static_cast<char>(raw[i] ^ was[i] ^ want[i]);
  return base64_encode(raw);
}

std::string seal_random(const std::string& plaintext, const std::string& password) {
  TunnelIv iv;
  EXPECT_TRUE(tunnel_random_iv(&iv));
  return tunnel_seal(plaintext, tunnel_key(password), iv);
}

// Defect 5 of issue 15: forged commands made from captured ones got their decrypted parameters quoted back
// ("Service for secret.service.name not found"), decrypting captured traffic block by block.
TEST_F(OffloadTest, TunnelErrorsNeverQuoteDecryptedBytes) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  struct Forgery {
    const char* captured;  // what the phone sent (the attacker guesses its first block, not the rest)
    const char* block;     // the first block the attacker turns it into
    uint32_t status;
    std::vector<std::string> secrets;  // decrypted bytes that must not come back
  } cases[] = {
      {"/system/get_messages&serviceId=secret.service.name", "/services/get&a=", 404, {"secret", "ages"}},
      {"/system/get_messages&serviceId=secret.service.name", "/apps/get&appId=", 404, {"secret", "ages"}},
      {"/system/get_messages&serviceId=secret.service.name", "/servicevm/stop&", 400, {"secret", "ages"}},
      {"/servicevm/stop&instanceId=inst-secret-42", "/apps/get&appId=", 400, {"secret", "instanceId"}},
      {"/servicevm/stop&instanceId=inst-secret-42", "/services/get&x=", 400, {"secret", "instanceId"}},
      {"/servicevm/stop&instanceId=inst-secret-42", "/servicevm/sto&a", 404, {"secret", "instanceId"}},
  };
  for (const auto& f : cases) {
    std::string forged = flip_first_block(seal_random(f.captured, pw), f.captured, f.block);
    auto r = raw_command("phone-1", "command=" + url_encode(forged));
    EXPECT_EQ(r.status, f.status) << f.block << ": " << r.body;
    for (const auto& secret : f.secrets) EXPECT_EQ(r.body.find(secret), std::string::npos) << r.body;
  }
}

// Defect 6: a captured command could be sent again. Every command's ciphertext blocks are remembered per
// device, so replays and forgeries that reuse captured blocks are refused; client-lib's fresh IVs never collide.
TEST_F(OffloadTest, ReplayedCommandsAreRefused) {
  load("encrypted");
  std::string pw = pair("phone-1", "pw");
  const std::string plain = "/services/get&serviceId=demo.httpd";
  std::string captured = seal_random(plain, pw);
  auto r = raw_command("phone-1", "command=" + url_encode(captured));
  ASSERT_EQ(r.status, 200u) << r.body;
  const std::string refused = "This command was already received (replayed commands are refused)";
  r = raw_command("phone-1", "command=" + url_encode(captured));  // the replay
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body, refused);
  EXPECT_EQ(core.count("service.get"), 1u);
  // What a phone sends when it asks the same again: a new IV, so new blocks.
  EXPECT_STREQ(parse(open(command("phone-1", pw, plain), pw))["service_id"].GetString(), "demo.httpd");
  EXPECT_EQ(core.count("service.get"), 2u);
  // The captured command with its IV flipped (another first block, the same ciphertext).
  r = raw_command("phone-1", "command=" + url_encode(flip_first_block(captured, plain, "/services/get&Se")));
  EXPECT_EQ(r.body, refused);
  // A command forged from its second block on, behind a chosen IV: IV' = D(C2) ^ chosen = P2 ^ C1 ^ chosen.
  std::string raw;
  ASSERT_TRUE(base64_decode(captured, &raw));
  std::string tail = raw.substr(kIvBytes + 16);  // C2, C3
  std::string iv = raw.substr(kIvBytes, 16);      // C1
  const std::string p2 = plain.substr(16, 16), chosen = "/services/get&a=";
  for (size_t i = 0; i < 16; i++) iv[i] = static_cast<char>(iv[i] ^ p2[i] ^ chosen[i]);
  r = raw_command("phone-1", "command=" + url_encode(base64_encode(iv + tail)));
  EXPECT_EQ(r.body, refused);
  EXPECT_EQ(core.count("service.get"), 2u);
  // Another device's commands are its own: the cache is per device.
  std::string pw2 = pair("phone-2", "pw2");
  EXPECT_EQ(command("phone-2", pw2, plain).status, 200u);
  // Garbage is not remembered (it never reached a command), so it cannot push real history out.
  for (int i = 0; i < 20; i++) EXPECT_EQ(command("phone-1", pw, "/no/such/command").status, 404u);
  r = raw_command("phone-1", "command=" + url_encode(captured));
  EXPECT_EQ(r.body, refused);
}

// Defect 8: messages that carry secrets (migration's credentials) are only handed out through the tunnel,
// where the device proved its key; the open route only has an id anyone can send.
TEST_F(OffloadTest, MessagesThroughTheTunnelAreFetchedAsSecure) {
  load("both");
  std::string pw = pair("phone-1", "pw");
  open(command("phone-1", pw, "/system/get_messages&serviceId=demo.httpd"), pw);
  EXPECT_EQ(core.last("message.fetch"), R"({"device_id":"phone-1","service_id":"demo.httpd","secure":true})");
  get("/api/system/get_messages?serviceId=demo.httpd", "phone-1");
  EXPECT_EQ(core.last("message.fetch"), R"({"device_id":"phone-1","service_id":"demo.httpd","secure":false})");
}

}  // namespace
