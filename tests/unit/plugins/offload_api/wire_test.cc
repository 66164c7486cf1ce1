// The JSON shapes the phones parse: names and types exactly as client-lib reads them, whatever types the
// operations use.
#include "wire.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

using namespace cloudlet::offload;

namespace {
rapidjson::Document parse(const std::string& s) {
  rapidjson::Document d;
  d.Parse(s.c_str());
  EXPECT_FALSE(d.HasParseError()) << s;
  return d;
}
}  // namespace

TEST(Wire, ServicesHaveStringIdsAndStringTags) {
  std::string out;
  ASSERT_TRUE(services_array(
      R"({"services":[{"service_id":"demo.httpd","description":"Demo","version":2,"tags":["a",7,null],"port":8080},
                      {"description":"no id: skipped"},
                      {"service_id":"x","tags":"not-an-array"}]})",
      &out));
  auto d = parse(out);
  ASSERT_TRUE(d.IsArray());
  ASSERT_EQ(d.Size(), 2u);
  const auto& s = d[0];
  EXPECT_STREQ(s["_id"].GetString(), "demo.httpd");
  EXPECT_STREQ(s["service_id"].GetString(), "demo.httpd");
  EXPECT_STREQ(s["description"].GetString(), "Demo");
  EXPECT_STREQ(s["version"].GetString(), "2");
  ASSERT_TRUE(s["tags"].IsArray());
  ASSERT_EQ(s["tags"].Size(), 2u);
  EXPECT_STREQ(s["tags"][1].GetString(), "7");
  EXPECT_FALSE(s.HasMember("port"));  // pycloud never exposed it
  EXPECT_EQ(s.MemberCount(), 5u);
  EXPECT_STREQ(d[1]["version"].GetString(), "");
  EXPECT_EQ(d[1]["tags"].Size(), 0u);
  EXPECT_FALSE(services_array("[]", &out));
  EXPECT_FALSE(services_array(R"({"services":3})", &out));
  EXPECT_FALSE(services_array("not json", &out));
}

TEST(Wire, StartReplyTypes) {
  std::string out, id;
  ASSERT_TRUE(start_body(R"({"id":"6f1c","service_id":"demo.httpd","name":"n","port":"20001","ssh_port":20002,
                            "ip_address":"10.0.0.9","vnc_address":null,"fqdn":null,"state":"running"})",
                         "192.168.1.5", &out, &id));
  EXPECT_EQ(id, "6f1c");
  auto d = parse(out);
  EXPECT_STREQ(d["_id"].GetString(), "6f1c");
  EXPECT_STREQ(d["service_id"].GetString(), "demo.httpd");
  ASSERT_TRUE(d["port"].IsInt());
  EXPECT_EQ(d["port"].GetInt(), 20001);
  EXPECT_EQ(d["ssh_port"].GetInt(), 20002);
  EXPECT_STREQ(d["ip_address"].GetString(), "192.168.1.5");  // the address this client used
  EXPECT_TRUE(d["fqdn"].IsNull());
  EXPECT_TRUE(d["vnc_address"].IsNull());
  EXPECT_TRUE(d["running"].GetBool());
  ASSERT_TRUE(start_body(R"({"id":"a","port":1,"state":"starting","fqdn":"svm.local","vnc_address":"127.0.0.1:5900"})",
                         "127.0.0.1", &out, &id));
  d = parse(out);
  EXPECT_FALSE(d["running"].GetBool());
  EXPECT_STREQ(d["fqdn"].GetString(), "svm.local");
  EXPECT_STREQ(d["vnc_address"].GetString(), "127.0.0.1:5900");
  EXPECT_FALSE(start_body(R"({"port":1})", "127.0.0.1", &out, &id));  // no id: nothing to give the phone
}

TEST(Wire, SystemNumbersAndOptionalArrays) {
  std::string out;
  std::string services = R"([{"_id":"a","service_id":"a","description":"","version":"","tags":[]}])";
  ASSERT_TRUE(system_body(R"({"cpu_info":{"max_cores":16,"usage":12.5,"speed":"2400.000","cache":512},
                             "memory_info":{"max_memory":17179869184,"free_memory":8589934592.0}})",
                          &services, nullptr, &out));
  auto d = parse(out);
  const auto& cpu = d["cpu_info"];
  EXPECT_TRUE(cpu["max_cores"].IsInt());
  EXPECT_EQ(cpu["max_cores"].GetInt(), 16);
  EXPECT_TRUE(cpu["usage"].IsDouble());
  EXPECT_DOUBLE_EQ(cpu["usage"].GetDouble(), 12.5);
  EXPECT_TRUE(cpu["speed"].IsNumber());
  EXPECT_DOUBLE_EQ(cpu["speed"].GetDouble(), 2400.0);
  EXPECT_EQ(cpu["cache"].GetInt(), 512);
  EXPECT_TRUE(d["memory_info"]["max_memory"].IsInt64());
  EXPECT_EQ(d["memory_info"]["max_memory"].GetInt64(), 17179869184LL);
  EXPECT_EQ(d["memory_info"]["free_memory"].GetInt64(), 8589934592LL);
  // client-lib's rankers: CpuBasedRanker, CpuPerformanceRanker, MemoryPerformanceRanker (mobile-clients.md 2.3).
  double cores = cpu["max_cores"].GetDouble(), usage = cpu["usage"].GetDouble(), speed = cpu["speed"].GetDouble();
  EXPECT_DOUBLE_EQ(100 * cores - usage, 1587.5);
  EXPECT_DOUBLE_EQ((100 * cores - usage) * speed / 100, 38100.0);
  EXPECT_DOUBLE_EQ(d["memory_info"]["free_memory"].GetDouble() / 1024 / 1024, 8192.0);
  ASSERT_TRUE(d["services"].IsArray());
  EXPECT_FALSE(d.HasMember("apps"));
  EXPECT_FALSE(system_body(R"({"cpu_info":{}})", nullptr, nullptr, &out));
}

// Numbers outside int64 saturate instead of converting out of range (undefined; found by the tunnel fuzzer).
TEST(Wire, HugeNumbersSaturate) {
  std::string out;
  ASSERT_TRUE(system_body(R"({"cpu_info":{"max_cores":8888888888888888888888888888,"cache":-1e300},
                             "memory_info":{"max_memory":18446744073709551615}})",
                          nullptr, nullptr, &out));
  auto d = parse(out);
  EXPECT_EQ(d["cpu_info"]["max_cores"].GetInt64(), INT64_MAX);
  EXPECT_EQ(d["cpu_info"]["cache"].GetInt64(), INT64_MIN);
  EXPECT_EQ(d["memory_info"]["max_memory"].GetInt64(), INT64_MAX);
}

TEST(Wire, AppsAndMessages) {
  std::string out;
  ASSERT_TRUE(apps_array(R"({"apps":[{"_id":"app-1","name":"Speech","package_name":"edu.speech","tags":["speech"],
                                      "min_android_version":6,"service_id":"s","app_version":"1.0",
                                      "description":"d","md5sum":null}, 5]})",
                         &out));
  auto d = parse(out);
  ASSERT_EQ(d.Size(), 1u);
  EXPECT_STREQ(d[0]["_id"].GetString(), "app-1");
  EXPECT_STREQ(d[0]["min_android_version"].GetString(), "6");
  EXPECT_TRUE(d[0]["md5sum"].IsNull());
  for (const char* f : {"name", "package_name", "service_id", "app_version", "description"}) {
    EXPECT_TRUE(d[0][f].IsString()) << f;
  }
  std::string path, name;
  EXPECT_TRUE(app_file(R"({"file_path":"/data/apps/app-1.apk","name":"Speech"})", &path, &name));
  EXPECT_EQ(path, "/data/apps/app-1.apk");
  EXPECT_EQ(name, "Speech.apk");
  EXPECT_FALSE(app_file(R"({"file_path":"relative.apk"})", &path, &name));

  ASSERT_TRUE(messages_body(R"({"messages":[{"message":"move-to-new-cloudlet-network",
                                             "params":{"cloudlet_port":9999,"cloudlet_encryption_enabled":true,
                                                       "ssid":"cloudlet-x"}}]})",
                            "dev-1", "svc", &out));
  d = parse(out);
  const auto& m = d["messages"][0];
  EXPECT_STREQ(m["message"].GetString(), "move-to-new-cloudlet-network");
  EXPECT_STREQ(m["params"]["cloudlet_port"].GetString(), "9999");
  EXPECT_STREQ(m["params"]["cloudlet_encryption_enabled"].GetString(), "true");
  EXPECT_STREQ(m["device_id"].GetString(), "dev-1");
  EXPECT_STREQ(m["service_id"].GetString(), "svc");
}

TEST(Wire, ErrorBodiesAndStatuses) {
  EXPECT_EQ(error_body(401, "Device with id x is not paired to this cloudlet"),
            "401 Unauthorized\n#Device with id x is not paired to this cloudlet");
  EXPECT_EQ(error_body(403, "a#b"), "403 Forbidden\n#a?b");
  EXPECT_EQ(error_body(400, "Must provide service id"), "Must provide service id");
  EXPECT_EQ(http_status(CL_EINVAL), 400u);
  EXPECT_EQ(http_status(CL_ENOENT), 404u);
  EXPECT_EQ(http_status(CL_EBUSY), 409u);
  EXPECT_EQ(http_status(CL_EUNAVAIL), 503u);
  EXPECT_EQ(http_status(CL_EIO), 500u);
  EXPECT_EQ(op_error_message(R"({"error":"no capacity"})", CL_EBUSY), "no capacity");
  EXPECT_FALSE(op_error_message("garbage", CL_EIO).empty());
}
