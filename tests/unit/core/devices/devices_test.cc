// Devices and the mailbox through their operations, on a real store: pairing, authorization, revocation,
// expiry leaving the device's instances, unpairing and messages.
#include "devices/devices.h"

#include <gtest/gtest.h>

#include "events/bus.h"
#include "json/json.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "store/store.h"
#include "system/digest.h"
#include "store_test_util.h"

using namespace cloudlet;

namespace {

// Runs the loop until pred() holds or timeout_ms passes. (test::run_until runs the loop to completion, which never
// comes while a device's authorization timer is armed.)
bool wait_for(Loop& loop, const std::function<bool()>& pred, int64_t timeout_ms) {
  int64_t deadline = monotonic_ms() + timeout_ms;
  while (!pred()) {
    if (monotonic_ms() > deadline) return false;
    test::pump(loop, 10);
  }
  return true;
}

class DevicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Store::Options o;
    o.dir = dir_.sub("store");
    std::string err;
    store_ = Store::open(loop_, o, &err);
    ASSERT_TRUE(store_) << err;
    // A stand-in for core/virt's instance.stop: records who left which instance.
    ops_.add("instance.stop", [this](std::string_view args, Operations::Reply reply) {
      stops_.emplace_back(args);
      reply(CL_OK, "{}");
    });
    bus_.subscribe("device.changed", [this](std::string_view, std::string_view p) { changes_.emplace_back(p); });
    devices_ = std::make_unique<Devices>(loop_, *store_, ops_, bus_);
    devices_->start();
  }
  void TearDown() override {
    devices_->stop();
    devices_.reset();
    store_.reset();
  }

  // Calls an operation and runs the loop until it answers (and its writes are durable).
  cl_status_t call(const std::string& name, const std::string& args, json::Document* out = nullptr) {
    bool done = false;
    cl_status_t status = CL_EIO;
    std::string result;
    EXPECT_EQ(ops_.call(name, args,
                        [&](cl_status_t st, std::string_view r) {
                          done = true;
                          status = st;
                          result = r;
                        }),
              CL_OK);
    EXPECT_TRUE(wait_for(loop_, [&] { return done; }, 10000)) << name;
    if (out) {
      EXPECT_TRUE(json::parse(result, out, nullptr)) << result;
    }
    return status;
  }

  test::TempDir dir_;
  Loop loop_;
  EventBus bus_{loop_};
  Operations ops_{loop_};
  std::unique_ptr<Store> store_;
  std::unique_ptr<Devices> devices_;
  std::vector<std::string> stops_, changes_;
};

TEST_F(DevicesTest, PairGivesAKeyOnceAndKeepsOnlyItsHash) {
  json::Document d;
  ASSERT_EQ(call("device.pair", R"({"device_id":"phone-1","duration_s":3600})", &d), CL_OK);
  std::string key(json::get_string(d, "device_key").value_or(""));
  ASSERT_EQ(key.size(), 64u);
  EXPECT_EQ(json::get_string(d, "api_password").value_or(""), sha256_hex(key));
  EXPECT_EQ(json::get_string(d, "state").value_or(""), "ok");
  EXPECT_EQ(call("device.pair", R"({"device_id":"phone-1","duration_s":3600})"), CL_EEXIST);

  json::Document got;
  ASSERT_EQ(call("device.get", R"({"device_id":"phone-1"})", &got), CL_OK);
  EXPECT_FALSE(got.HasMember("device_key"));
  EXPECT_FALSE(got.HasMember("api_password"));  // only device.auth hands it out
  json::Document auth;
  ASSERT_EQ(call("device.auth", R"({"device_id":"phone-1"})", &auth), CL_OK);
  EXPECT_EQ(json::get_string(auth, "api_password").value_or(""), sha256_hex(key));
  EXPECT_EQ(json::get_string(auth, "state").value_or(""), "ok");
  // Nothing on disk holds the key itself.
  std::string stored;
  ASSERT_EQ(store_->get("devices", "phone-1", &stored), CL_OK);
  EXPECT_EQ(stored.find(key), std::string::npos);
  ASSERT_EQ(changes_.size(), 1u);
}

TEST_F(DevicesTest, PairRefusesBadArguments) {
  EXPECT_EQ(call("device.pair", R"({"device_id":"a b","duration_s":10})"), CL_EINVAL);
  EXPECT_EQ(call("device.pair", R"({"device_id":"p","duration_s":0})"), CL_EINVAL);
  EXPECT_EQ(call("device.pair", R"({"device_id":"p","duration_s":999999999999})"), CL_EINVAL);
  EXPECT_EQ(call("device.pair", R"({"device_id":"p","duration_s":10,"type":"toaster"})"), CL_EINVAL);
  EXPECT_EQ(call("device.pair", R"({"device_id":"p","duration_s":10,"connection_id":"a\u0001"})"), CL_EINVAL);
  EXPECT_EQ(call("device.auth", R"({"device_id":"nobody"})"), CL_ENOENT);
  json::Document list;
  ASSERT_EQ(call("device.list", "{}", &list), CL_OK);
  EXPECT_EQ(list["devices"].Size(), 0u);  // nothing half-written
}

TEST_F(DevicesTest, RevokeLeavesTheDevicesInstances) {
  ASSERT_EQ(call("device.pair", R"({"device_id":"phone-2","duration_s":3600})"), CL_OK);
  ASSERT_EQ(call("device.attach", R"({"device_id":"phone-2","instance_id":"inst-a"})"), CL_OK);
  ASSERT_EQ(call("device.attach", R"({"device_id":"phone-2","instance_id":"inst-a"})"), CL_OK);  // idempotent
  json::Document d;
  ASSERT_EQ(call("device.revoke", R"({"device_id":"phone-2"})", &d), CL_OK);
  EXPECT_EQ(json::get_string(d, "state").value_or(""), "revoked");
  ASSERT_TRUE(wait_for(loop_, [&] { return !stops_.empty(); }, 5000));
  ASSERT_EQ(stops_.size(), 1u);
  EXPECT_NE(stops_[0].find("\"id\":\"inst-a\""), std::string::npos) << stops_[0];
  EXPECT_NE(stops_[0].find("\"device_id\":\"phone-2\""), std::string::npos) << stops_[0];
  json::Document auth;
  ASSERT_EQ(call("device.auth", R"({"device_id":"phone-2"})", &auth), CL_OK);
  EXPECT_EQ(json::get_string(auth, "state").value_or(""), "revoked");
}

TEST_F(DevicesTest, AnEndedWindowExpiresAndLeavesInstances) {
  ASSERT_EQ(call("device.pair", R"({"device_id":"phone-3","duration_s":1})"), CL_OK);
  ASSERT_EQ(call("device.attach", R"({"device_id":"phone-3","instance_id":"inst-b"})"), CL_OK);
  ASSERT_TRUE(wait_for(loop_, [&] { return !stops_.empty(); }, 5000));
  EXPECT_NE(stops_[0].find("inst-b"), std::string::npos);
  json::Document auth;
  ASSERT_EQ(call("device.auth", R"({"device_id":"phone-3"})", &auth), CL_OK);
  EXPECT_EQ(json::get_string(auth, "state").value_or(""), "expired");
  ASSERT_FALSE(changes_.empty());
  EXPECT_NE(changes_.back().find("expired"), std::string::npos);
}

TEST_F(DevicesTest, MessagesArriveInOrderOnceAndSecretsOnlyWhenSecure) {
  ASSERT_EQ(call("device.pair", R"({"device_id":"phone-4","duration_s":3600})"), CL_OK);
  ASSERT_EQ(call("message.post", R"({"device_id":"phone-4","service_id":"svc","message":"first"})"), CL_OK);
  ASSERT_EQ(call("message.post", R"({"device_id":"phone-4","service_id":"svc","message":"second",
                                     "params":{"k":"v"}})"),
            CL_OK);
  ASSERT_EQ(call("message.post", R"({"device_id":"phone-4","service_id":"svc","message":"creds","secret":true})"),
            CL_OK);
  EXPECT_EQ(call("message.post", R"({"device_id":"phone-4","service_id":"svc","message":"x","params":{"n":1}})"),
            CL_EINVAL);
  EXPECT_EQ(call("message.post", R"({"device_id":"phone-4","service_id":"s v","message":"x"})"), CL_EINVAL);

  json::Document open;
  ASSERT_EQ(call("message.fetch", R"({"device_id":"phone-4","service_id":"svc"})", &open), CL_OK);
  ASSERT_EQ(open["messages"].Size(), 2u);
  EXPECT_STREQ(open["messages"][0]["message"].GetString(), "first");
  EXPECT_STREQ(open["messages"][1]["message"].GetString(), "second");
  EXPECT_STREQ(open["messages"][1]["params"]["k"].GetString(), "v");
  json::Document secure;
  ASSERT_EQ(call("message.fetch", R"({"device_id":"phone-4","service_id":"svc","secure":true})", &secure), CL_OK);
  ASSERT_EQ(secure["messages"].Size(), 1u);  // the others were read already
  EXPECT_STREQ(secure["messages"][0]["message"].GetString(), "creds");
  json::Document again;
  ASSERT_EQ(call("message.fetch", R"({"device_id":"phone-4","service_id":"svc","secure":true})", &again), CL_OK);
  EXPECT_EQ(again["messages"].Size(), 0u);
}

TEST_F(DevicesTest, UnpairDeletesTheDeviceAndItsMessages) {
  ASSERT_EQ(call("device.pair", R"({"device_id":"phone-5","duration_s":3600})"), CL_OK);
  ASSERT_EQ(call("device.pair", R"({"device_id":"phone-6","duration_s":3600})"), CL_OK);
  ASSERT_EQ(call("message.post", R"({"device_id":"phone-5","service_id":"svc","message":"m"})"), CL_OK);
  ASSERT_EQ(call("message.post", R"({"device_id":"phone-6","service_id":"svc","message":"m"})"), CL_OK);
  ASSERT_EQ(call("device.unpair", R"({"device_id":"phone-5"})"), CL_OK);
  EXPECT_EQ(call("device.get", R"({"device_id":"phone-5"})"), CL_ENOENT);
  size_t left = 0;
  store_->scan("messages", "", [&](std::string_view key, std::string_view) {
    EXPECT_EQ(key.substr(0, 8), "phone-6/");
    left++;
    return true;
  });
  EXPECT_EQ(left, 1u);
  EXPECT_EQ(call("device.unpair", R"({"device_id":"phone-5"})"), CL_ENOENT);
}

}  // namespace
