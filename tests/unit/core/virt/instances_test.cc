// Services and instances through their operations, on libvirt's test driver (test:///default): no QEMU, so every
// start is a cold boot of the saved domain XML ("memory_restored": false) and no guest answers on a port; what is
// checked here is the bookkeeping: ports, names, overlays, records, events, sharing, concurrency, failures that
// leave nothing behind, reconciliation after a restart, and an unavailable hypervisor. Real restores from saved
// memory are tested on QEMU in tests/integration/virt.
#include <gtest/gtest.h>
#include <libvirt/libvirt.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "events/bus.h"
#include "jobs/jobs.h"
#include "json/json.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "store/store.h"
#include "test_util.h"
#include "virt/domain_xml.h"
#include "virt/event_impl.h"
#include "virt/files.h"
#include "virt/process.h"
#include "virt/qemu_img.h"
#include "virt/service_def.h"
#include "virt/virt.h"

using namespace cloudlet;
using namespace cloudlet::virt;

namespace {

struct Result {
  cl_status_t status = CL_EIO;
  json::Document doc;
  std::string text;
};

// A domain XML like a saved state's, for the test driver.
std::string test_domain_xml(const std::string& dir) {
  return "<domain type='test' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
         "  <name>cloudlet-saved</name>\n"
         "  <uuid>11111111-2222-4333-8444-555555555555</uuid>\n"
         "  <memory unit='MiB'>64</memory>\n"
         "  <vcpu>1</vcpu>\n"
         "  <os><type arch='x86_64'>hvm</type></os>\n"
         "  <devices>\n"
         "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" + dir +
         "/disk.qcow2'/><target dev='vda' bus='virtio'/></disk>\n"
         "    <serial type='file'><source path='" + dir + "/console.log'/><target port='0'/></serial>\n"
         "    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>\n"
         "  </devices>\n"
         "  <qemu:commandline>\n"
         "    <qemu:arg value='-netdev'/>\n"
         "    <qemu:arg value='user,id=hn0,hostfwd=tcp:127.0.0.1:1-:8080'/>\n"
         "  </qemu:commandline>\n"
         "</domain>\n";
}

class VirtOnTestDriver : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = vt::make_temp_dir("cl-virt-unit");
    ASSERT_FALSE(dir_.empty());
    data_ = dir_ + "/data";
    ASSERT_TRUE(vt::ok(files_make_dirs(data_ + "/tmp")));
    loop_ = std::make_unique<Loop>();
    ASSERT_TRUE(event_impl_register(*loop_));
    // Keeps the test driver's state (its domains) alive while the Virt under test closes and re-opens.
    keep_ = virConnectOpen("test:///default");
    ASSERT_NE(keep_, nullptr);
    Store::Options so;
    so.dir = data_ + "/db";
    std::string err;
    store_ = Store::open(*loop_, so, &err);
    ASSERT_TRUE(store_) << err;
    ops_ = std::make_unique<Operations>(*loop_);
    events_ = std::make_unique<EventBus>(*loop_);
    jobs_ = std::make_unique<Jobs>(*loop_, *events_, *ops_);
    events_->subscribe("instance.state", [this](std::string_view, std::string_view p) { states_.emplace_back(p); });
    events_->subscribe("service.changed", [this](std::string_view, std::string_view p) { changes_.emplace_back(p); });
  }

  void TearDown() override {
    stop_virt();
    if (keep_) {
      // Whatever a test left in the driver goes with the last connection.
      virConnectClose(keep_);
      keep_ = nullptr;
    }
    if (loop_) {
      event_impl_shutdown();
      if (store_) store_->close();
      EXPECT_EQ(loop_->close(), 0);
    }
    jobs_.reset();
    events_.reset();
    ops_.reset();
    store_.reset();
    loop_.reset();
    if (!dir_.empty()) {
      EXPECT_TRUE(vt::ok(files_remove_tree(dir_)));
    }
  }

  // A stored service whose image has a disk and a saved domain XML but no saved state (the test driver cannot
  // restore QEMU's): starts cold boot.
  void add_service(const std::string& id, int num_users, bool with_disk = true, bool good_xml = true) {
    std::string img = data_ + "/services/" + id + "/image-1";
    ASSERT_TRUE(vt::ok(files_make_dirs(img, 0755)));
    if (with_disk) {
      ASSERT_TRUE(vt::ok(qemu_img::create_sync(img + "/disk.qcow2", "qcow2", 16 << 20)));
    }
    ASSERT_TRUE(vt::ok(files_write(img + "/domain.xml", good_xml ? test_domain_xml(img) : "<domain><broken", 0444)));
    ServiceDef d;
    d.service_id = id;
    d.port = 8080;
    d.num_users = num_users;
    d.image = "image-1";
    auto txn = store_->begin();
    ASSERT_EQ(txn->put("services", id, service_record(d)), CL_OK);
    bool durable = false;
    ASSERT_EQ(store_->commit(std::move(txn), [&](cl_status_t) { durable = true; }), CL_OK);
    ASSERT_TRUE(vt::run_until(*loop_, [&] { return durable; }, 5000));
  }

  void start_virt(const std::string& uri = "test:///default", uint16_t port_min = 0, uint16_t port_max = 0) {
    VirtOptions o;
    o.data_dir = data_;
    o.config.uri = uri;
    o.config.domain_type = "qemu";
    o.config.forward_address = "127.0.0.1";
    o.config.port_min = port_min ? port_min : base_port_;
    o.config.port_max = port_max ? port_max : static_cast<uint16_t>(base_port_ + 99);
    o.config.ready_timeout_ms = 2000;
    o.config.boot_timeout_ms = 1500;  // no guest ever answers here
    virt_ = std::make_unique<Virt>(*loop_, *store_, *ops_, *events_, *jobs_, o);
    virt_->start();
  }

  void stop_virt() {
    if (!virt_) return;
    bool done = false;
    virt_->stop([&] { done = true; });
    EXPECT_TRUE(vt::run_until(*loop_, [&] { return done; }, 30000));
    virt_.reset();
    // A new Operations table for the next Virt (names are registered once per table).
    jobs_.reset();
    ops_ = std::make_unique<Operations>(*loop_);
    jobs_ = std::make_unique<Jobs>(*loop_, *events_, *ops_);
  }

  Result call(const std::string& op, const std::string& args = "{}", int64_t timeout_ms = 30000) {
    Result r;
    bool done = false;
    cl_status_t st = ops_->call(op, args, [&](cl_status_t s, std::string_view result) {
      r.status = s;
      r.text = std::string(result);
      done = true;
    });
    EXPECT_EQ(st, CL_OK) << op;
    if (st != CL_OK) return r;
    EXPECT_TRUE(vt::run_until(*loop_, [&] { return done; }, timeout_ms)) << op << " timed out";
    json::parse(r.text, &r.doc, nullptr);
    return r;
  }

  Result start(const std::string& svc, const std::string& extra = "") {
    return call("instance.start", "{\"service_id\":\"" + svc + "\"" + extra + "}");
  }
  Result stop(const std::string& id, const std::string& extra = "") {
    return call("instance.stop", "{\"id\":\"" + id + "\"" + extra + "}");
  }

  std::vector<std::string> domain_names() {
    std::vector<std::string> out;
    virDomainPtr* doms = nullptr;
    int n = virConnectListAllDomains(keep_, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
    for (int i = 0; i < n; i++) {
      out.emplace_back(virDomainGetName(doms[i]));
      virDomainFree(doms[i]);
    }
    free(doms);
    std::sort(out.begin(), out.end());
    return out;
  }
  size_t our_domains() {
    size_t n = 0;
    for (auto& d : domain_names()) n += d.rfind("cloudlet-", 0) == 0;
    return n;
  }
  size_t records() {
    size_t n = 0;
    store_->scan("instances", "", [&](std::string_view, std::string_view) { return ++n, true; });
    return n;
  }
  std::vector<std::string> instance_dirs() { return files_list(data_ + "/instances"); }
  std::string prefix() {
    std::string tag;
    store_->get("virt", "tag", &tag);
    return "cloudlet-" + tag + "-";
  }

  std::string dir_, data_;
  uint16_t base_port_ = 43100;
  std::unique_ptr<Loop> loop_;
  virConnectPtr keep_ = nullptr;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Operations> ops_;
  std::unique_ptr<EventBus> events_;
  std::unique_ptr<Jobs> jobs_;
  std::unique_ptr<Virt> virt_;
  std::vector<std::string> states_, changes_;
};

TEST_F(VirtOnTestDriver, StartAndStopLeaveNothingBehind) {
  add_service("svc", 0);
  start_virt();
  Result r = start("svc", ",\"ip_address\":\"192.168.7.7\"");
  ASSERT_EQ(r.status, CL_OK) << r.text;
  std::string id = r.doc["id"].GetString();
  EXPECT_TRUE(valid_uuid(id));
  EXPECT_EQ(std::string(r.doc["name"].GetString()), prefix() + id);
  EXPECT_STREQ(r.doc["state"].GetString(), "running");
  EXPECT_FALSE(r.doc["memory_restored"].GetBool()) << "no saved state here: a cold boot, and the result says so";
  EXPECT_EQ(r.doc["users"].GetInt(), 1);
  EXPECT_FALSE(r.doc["shared"].GetBool());
  EXPECT_TRUE(r.doc["fqdn"].IsNull());
  EXPECT_STREQ(r.doc["ip_address"].GetString(), "127.0.0.1");  // forward_address is not a wildcard
  int port = r.doc["port"].GetInt(), ssh = r.doc["ssh_port"].GetInt();
  EXPECT_NE(port, ssh);
  EXPECT_GE(std::min(port, ssh), base_port_);
  EXPECT_LE(std::max(port, ssh), base_port_ + 99);
  // The overlay on the service's disk, backing format recorded.
  qemu_img::Info info;
  ASSERT_TRUE(vt::ok(qemu_img::info_sync(data_ + "/instances/" + id + "/disk.qcow2", &info)));
  EXPECT_EQ(info.backing_file, data_ + "/services/svc/image-1/disk.qcow2");
  EXPECT_EQ(info.backing_format, "qcow2");
  EXPECT_EQ(records(), 1u);
  EXPECT_EQ(our_domains(), 1u);
  Result g = call("instance.get", "{\"id\":\"" + id + "\"}");
  ASSERT_EQ(g.status, CL_OK);
  EXPECT_EQ(g.doc["port"].GetInt(), port);
  Result l = call("instance.list");
  ASSERT_EQ(l.doc["instances"].Size(), 1u);
  Result svc = call("service.get", "{\"service_id\":\"svc\"}");
  EXPECT_EQ(svc.doc["instances"].GetInt(), 1);
  EXPECT_TRUE(svc.doc["state_saved"].GetBool());

  Result s = stop(id);
  ASSERT_EQ(s.status, CL_OK) << s.text;
  EXPECT_TRUE(s.doc["stopped"].GetBool());
  EXPECT_EQ(s.doc["users"].GetInt(), 0);
  EXPECT_EQ(records(), 0u);
  EXPECT_EQ(our_domains(), 0u);
  EXPECT_TRUE(instance_dirs().empty());
  EXPECT_EQ(call("instance.get", "{\"id\":\"" + id + "\"}").status, CL_ENOENT);
  EXPECT_EQ(stop(id).status, CL_ENOENT);
  vt::pump(*loop_, 20);
  ASSERT_EQ(states_.size(), 2u);
  EXPECT_NE(states_[0].find("\"state\":\"running\""), std::string::npos) << states_[0];
  EXPECT_NE(states_[1].find("\"state\":\"stopped\""), std::string::npos) << states_[1];
  EXPECT_NE(states_[1].find("\"service_id\":\"svc\""), std::string::npos) << states_[1];
}

TEST_F(VirtOnTestDriver, PortsRunOutAndComeBack) {
  add_service("svc", 0);
  start_virt("test:///default", base_port_, static_cast<uint16_t>(base_port_ + 3));  // two instances' worth
  Result a = start("svc"), b = start("svc");
  ASSERT_EQ(a.status, CL_OK) << a.text;
  ASSERT_EQ(b.status, CL_OK) << b.text;
  std::set<int> ports{a.doc["port"].GetInt(), a.doc["ssh_port"].GetInt(), b.doc["port"].GetInt(),
                      b.doc["ssh_port"].GetInt()};
  EXPECT_EQ(ports.size(), 4u);
  EXPECT_NE(std::string(a.doc["name"].GetString()), b.doc["name"].GetString());
  Result c = start("svc");
  EXPECT_EQ(c.status, CL_EBUSY) << c.text;
  EXPECT_NE(c.text.find("no free port"), std::string::npos) << c.text;
  EXPECT_EQ(records(), 2u);
  EXPECT_EQ(our_domains(), 2u);
  EXPECT_EQ(instance_dirs().size(), 2u);
  ASSERT_EQ(stop(a.doc["id"].GetString()).status, CL_OK);
  Result d = start("svc");
  ASSERT_EQ(d.status, CL_OK) << d.text;  // a's ports went back to the pool
  stop(b.doc["id"].GetString());
  stop(d.doc["id"].GetString());
  EXPECT_EQ(records(), 0u);
}

TEST_F(VirtOnTestDriver, JoinRespectsCapacity) {
  add_service("shared", 2);
  start_virt();
  Result a = start("shared", ",\"join\":true"), b = start("shared", ",\"join\":true");
  Result c = start("shared", ",\"join\":true"), p = start("shared");  // p: join not asked, a private instance
  for (auto* r : {&a, &b, &c, &p}) ASSERT_EQ(r->status, CL_OK) << r->text;
  EXPECT_EQ(std::string(a.doc["id"].GetString()), b.doc["id"].GetString());
  EXPECT_EQ(b.doc["users"].GetInt(), 2);
  EXPECT_TRUE(b.doc["shared"].GetBool());
  EXPECT_NE(std::string(c.doc["id"].GetString()), a.doc["id"].GetString()) << "a full instance is not joined";
  EXPECT_FALSE(p.doc["shared"].GetBool());
  Result j = start("shared", ",\"join\":true");  // joins c, not the private p
  EXPECT_EQ(std::string(j.doc["id"].GetString()), c.doc["id"].GetString());
  EXPECT_EQ(our_domains(), 3u);
  // The first stop leaves the shared instance running for the other user.
  Result s1 = stop(a.doc["id"].GetString());
  EXPECT_FALSE(s1.doc["stopped"].GetBool());
  EXPECT_EQ(s1.doc["users"].GetInt(), 1);
  Result s2 = stop(a.doc["id"].GetString());
  EXPECT_TRUE(s2.doc["stopped"].GetBool());
  // force ends it for everyone.
  Result f = stop(c.doc["id"].GetString(), ",\"force\":true");
  EXPECT_TRUE(f.doc["stopped"].GetBool()) << f.text;
  stop(p.doc["id"].GetString());
  EXPECT_EQ(our_domains(), 0u);
  EXPECT_EQ(records(), 0u);
}

TEST_F(VirtOnTestDriver, DevicesLeaveOnlyTheirOwnShare) {
  add_service("shared", 4);
  start_virt();
  Result a = start("shared", ",\"join\":true,\"device_id\":\"phone-a\"");
  Result b = start("shared", ",\"join\":true,\"device_id\":\"phone-b\"");
  ASSERT_EQ(a.status, CL_OK);
  std::string id = a.doc["id"].GetString();
  ASSERT_EQ(id, b.doc["id"].GetString());
  Result other = stop(id, ",\"device_id\":\"phone-c\"");
  EXPECT_EQ(other.status, CL_EPERM) << other.text;
  Result sa = stop(id, ",\"device_id\":\"phone-a\"");
  EXPECT_EQ(sa.doc["users"].GetInt(), 1);
  EXPECT_EQ(stop(id, ",\"device_id\":\"phone-a\"").status, CL_EPERM);  // it has no share left
  // The record holds the remaining share: a restart keeps it.
  std::string rec;
  ASSERT_EQ(store_->get("instances", id, &rec), CL_OK);
  EXPECT_NE(rec.find("phone-b"), std::string::npos);
  EXPECT_EQ(rec.find("phone-a"), std::string::npos);
  EXPECT_TRUE(stop(id, ",\"device_id\":\"phone-b\"").doc["stopped"].GetBool());
}

TEST_F(VirtOnTestDriver, ConcurrentStartsAndStopsKeepCountsRight) {
  add_service("shared", 3);
  start_virt();
  constexpr int kStarts = 10;
  std::vector<Result> results(kStarts);
  int done = 0;
  // All issued in the same loop turn.
  for (int i = 0; i < kStarts; i++) {
    ops_->call("instance.start", "{\"service_id\":\"shared\",\"join\":true}", [&, i](cl_status_t st, std::string_view r) {
      results[i].status = st;
      results[i].text = std::string(r);
      json::parse(results[i].text, &results[i].doc, nullptr);
      done++;
    });
  }
  ASSERT_TRUE(vt::run_until(*loop_, [&] { return done == kStarts; }, 60000));
  std::map<std::string, int> shares;
  for (auto& r : results) {
    ASSERT_EQ(r.status, CL_OK) << r.text;
    shares[r.doc["id"].GetString()]++;
  }
  EXPECT_EQ(shares.size(), 4u);  // ceil(10 / 3)
  for (auto& [id, n] : shares) EXPECT_LE(n, 3) << id;
  Result l = call("instance.list");
  int total = 0;
  for (auto& i : l.doc["instances"].GetArray()) total += i["users"].GetInt();
  EXPECT_EQ(total, kStarts);
  EXPECT_EQ(our_domains(), 4u);
  // Every user leaves at once.
  done = 0;
  int stopped = 0;
  for (auto& r : results) {
    ops_->call("instance.stop", "{\"id\":\"" + std::string(r.doc["id"].GetString()) + "\"}",
               [&](cl_status_t st, std::string_view res) {
                 EXPECT_EQ(st, CL_OK) << res;
                 json::Document d;
                 json::parse(res, &d, nullptr);
                 if (st == CL_OK && d["stopped"].GetBool()) stopped++;
                 done++;
               });
  }
  ASSERT_TRUE(vt::run_until(*loop_, [&] { return done == kStarts; }, 60000));
  EXPECT_EQ(stopped, 4);
  EXPECT_EQ(our_domains(), 0u);
  EXPECT_EQ(records(), 0u);
  EXPECT_TRUE(instance_dirs().empty());
  EXPECT_EQ(call("instance.list").doc["instances"].Size(), 0u);
}

TEST_F(VirtOnTestDriver, AVmThatStopsOnItsOwnIsReaped) {
  add_service("svc", 0);
  start_virt();
  Result r = start("svc");
  ASSERT_EQ(r.status, CL_OK);
  std::string id = r.doc["id"].GetString();
  virDomainPtr d = virDomainLookupByUUIDString(keep_, id.c_str());
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(virDomainDestroy(d), 0);
  virDomainFree(d);
  ASSERT_TRUE(vt::run_until(*loop_, [&] {
    return !states_.empty() && states_.back().find("\"stopped\"") != std::string::npos;
  }, 10000));
  EXPECT_EQ(records(), 0u);
  EXPECT_TRUE(instance_dirs().empty());
  EXPECT_EQ(call("instance.get", "{\"id\":\"" + id + "\"}").status, CL_ENOENT);
}

TEST_F(VirtOnTestDriver, PauseAndResume) {
  add_service("svc", 0);
  start_virt();
  Result r = start("svc");
  std::string id = r.doc["id"].GetString();
  std::string args = "{\"id\":\"" + id + "\"}";
  Result p = call("instance.pause", args);
  ASSERT_EQ(p.status, CL_OK) << p.text;
  EXPECT_STREQ(p.doc["state"].GetString(), "paused");
  EXPECT_EQ(call("instance.pause", args).status, CL_ESTATE);
  Result q = call("instance.resume", args);
  ASSERT_EQ(q.status, CL_OK) << q.text;
  EXPECT_STREQ(q.doc["state"].GetString(), "running");
  EXPECT_EQ(call("instance.resume", args).status, CL_ESTATE);
  stop(id);
}

TEST_F(VirtOnTestDriver, BadInputsGiveClearErrorsAndLeaveNothing) {
  add_service("svc", 0);
  add_service("nodisk", 0, false);
  add_service("badxml", 0, true, false);
  start_virt();
  EXPECT_EQ(start("no.such").status, CL_ENOENT);
  EXPECT_EQ(call("instance.start", "{\"service_id\":\"../etc\"}").status, CL_EINVAL);
  EXPECT_EQ(call("instance.start", "{}").status, CL_EINVAL);
  EXPECT_EQ(start("svc", ",\"ip_address\":\"not-an-ip\"").status, CL_EINVAL);
  EXPECT_EQ(start("svc", ",\"device_id\":\"a b\"").status, CL_EINVAL);
  EXPECT_EQ(start("svc", ",\"join\":\"yes\"").status, CL_EINVAL);
  EXPECT_EQ(call("instance.stop", "{\"id\":\"x\"}").status, CL_EINVAL);
  EXPECT_EQ(call("instance.stop", "{\"id\":\"6f1c1d5e-1111-4222-8333-444455556666\"}").status, CL_ENOENT);
  // A forced stop (every device's share) is the operator's: a plugin needs the grant "instance.stop.force".
  const std::string forced = "{\"id\":\"6f1c1d5e-1111-4222-8333-444455556666\",\"force\":true}";
  auto call_as = [&](const Caller& caller) {
    cl_status_t got = CL_OK;
    bool done = false;
    EXPECT_EQ(ops_->call_as(caller, "instance.stop", forced, [&](cl_status_t s, std::string_view) {
      got = s;
      done = true;
    }), CL_OK);
    EXPECT_TRUE(vt::run_until(*loop_, [&] { return done; }, 5000));
    return got;
  };
  Caller plugin;
  plugin.kind = CL_CALLER_PLUGIN;
  plugin.plugin = "offload_api";
  plugin.grants = std::make_shared<std::set<std::string>>(std::set<std::string>{"device.auth"});
  EXPECT_EQ(call_as(plugin), CL_EPERM);
  plugin.grants = std::make_shared<std::set<std::string>>(std::set<std::string>{"instance.stop.force"});
  EXPECT_EQ(call_as(plugin), CL_ENOENT);  // let through: there is no such instance
  EXPECT_EQ(call("instance.stop", forced).status, CL_ENOENT);  // the core always may
  Result m = start("nodisk");
  EXPECT_EQ(m.status, CL_EIO);
  EXPECT_NE(m.text.find("disk"), std::string::npos) << m.text;
  Result x = start("badxml");
  EXPECT_EQ(x.status, CL_EIO);
  EXPECT_NE(x.text.find("cold boot"), std::string::npos) << x.text;
  EXPECT_EQ(records(), 0u);
  EXPECT_EQ(our_domains(), 0u);
  EXPECT_TRUE(instance_dirs().empty());
  EXPECT_EQ(call("instance.list").doc["instances"].Size(), 0u);
  // The failed starts gave their ports back: the whole range is usable again.
  stop_virt();
  start_virt("test:///default", base_port_, static_cast<uint16_t>(base_port_ + 1));
  Result ok = start("svc");
  ASSERT_EQ(ok.status, CL_OK) << ok.text;
  stop(ok.doc["id"].GetString());
}

TEST_F(VirtOnTestDriver, WaitFalseAnswersAJob) {
  add_service("svc", 0);
  start_virt();
  Result r = start("svc", ",\"wait\":false");
  ASSERT_EQ(r.status, CL_OK) << r.text;
  std::string job = r.doc["job_id"].GetString();
  Result j;
  ASSERT_TRUE(vt::run_until(*loop_, [&] {
    j = call("job.get", "{\"job_id\":\"" + job + "\"}");
    return std::string(j.doc["state"].GetString()) != "running";
  }, 20000));
  EXPECT_STREQ(j.doc["state"].GetString(), "done") << j.text;
  EXPECT_STREQ(j.doc["kind"].GetString(), "instance.start");
  std::string id = j.doc["result"]["id"].GetString();
  EXPECT_EQ(stop(id).status, CL_OK);
}

// No guest answers on the test driver: a readiness wait times out, and a cancelled one ends at once; both leave
// nothing behind.
TEST_F(VirtOnTestDriver, ReadinessTimeoutAndCancelLeaveNothing) {
  add_service("svc", 0);
  start_virt();
  int64_t t0 = vt::mono_ms();
  Result r = start("svc", ",\"wait_ready\":true");
  EXPECT_EQ(r.status, CL_ETIMEDOUT) << r.text;
  EXPECT_GE(vt::mono_ms() - t0, 1900);  // virt.ready_timeout_ms here
  EXPECT_NE(r.text.find("did not answer"), std::string::npos) << r.text;
  vt::pump(*loop_, 50);
  EXPECT_EQ(records(), 0u);
  EXPECT_EQ(our_domains(), 0u);
  EXPECT_TRUE(instance_dirs().empty());
  Result j = start("svc", ",\"wait_ready\":true,\"wait\":false");
  ASSERT_EQ(j.status, CL_OK) << j.text;
  std::string job = j.doc["job_id"].GetString();
  vt::pump(*loop_, 300);  // running, waiting for the guest
  EXPECT_EQ(our_domains(), 1u);
  EXPECT_EQ(call("job.cancel", "{\"job_id\":\"" + job + "\"}").status, CL_OK);
  Result g;
  ASSERT_TRUE(vt::run_until(*loop_, [&] {
    g = call("job.get", "{\"job_id\":\"" + job + "\"}");
    return std::string(g.doc["state"].GetString()) != "running";
  }, 5000));
  EXPECT_STREQ(g.doc["state"].GetString(), "canceled") << g.text;
  ASSERT_TRUE(vt::run_until(*loop_, [&] { return our_domains() == 0 && records() == 0; }, 5000));
  EXPECT_TRUE(instance_dirs().empty());
  EXPECT_EQ(call("instance.list").doc["instances"].Size(), 0u);
}

TEST_F(VirtOnTestDriver, LifecycleEventsArePublished) {
  add_service("svc", 0);
  std::vector<std::string> raw;
  events_->subscribe("vm.lifecycle", [&](std::string_view, std::string_view p) { raw.emplace_back(p); });
  start_virt();
  Result r = start("svc");
  ASSERT_EQ(r.status, CL_OK);
  std::string id = r.doc["id"].GetString();
  stop(id);
  ASSERT_TRUE(vt::run_until(*loop_, [&] { return raw.size() >= 2; }, 5000));
  json::Document first, last;
  ASSERT_TRUE(json::parse(raw.front(), &first, nullptr));
  ASSERT_TRUE(json::parse(raw.back(), &last, nullptr));
  EXPECT_EQ(std::string(first["uuid"].GetString()), id);
  EXPECT_STREQ(first["event"].GetString(), "started");
  EXPECT_STREQ(last["event"].GetString(), "stopped");
  EXPECT_STREQ(last["detail"].GetString(), "destroyed");
}

TEST_F(VirtOnTestDriver, ServiceUpdateAndDelete) {
  add_service("svc", 0);
  start_virt();
  Result u = call("service.update", R"({"service_id":"svc","description":"new","num_users":5,"tags":["a"]})");
  ASSERT_EQ(u.status, CL_OK) << u.text;
  EXPECT_STREQ(u.doc["description"].GetString(), "new");
  EXPECT_EQ(u.doc["num_users"].GetInt(), 5);
  EXPECT_EQ(call("service.update", R"({"service_id":"svc","port":1})").status, CL_EINVAL);
  EXPECT_EQ(call("service.update", R"({"service_id":"nope"})").status, CL_ENOENT);
  std::string rec;
  ASSERT_EQ(store_->get("services", "svc", &rec), CL_OK);
  EXPECT_NE(rec.find("\"new\""), std::string::npos);
  Result r = start("svc");
  Result busy = call("service.delete", R"({"service_id":"svc"})");
  EXPECT_EQ(busy.status, CL_EBUSY) << busy.text;
  EXPECT_EQ(call("service.refresh", R"({"service_id":"svc"})").status, CL_EBUSY);
  stop(r.doc["id"].GetString());
  Result del = call("service.delete", R"({"service_id":"svc"})");
  ASSERT_EQ(del.status, CL_OK) << del.text;
  EXPECT_FALSE(files_exists(data_ + "/services/svc"));
  EXPECT_EQ(store_->get("services", "svc", &rec), CL_ENOENT);
  EXPECT_EQ(call("service.get", R"({"service_id":"svc"})").status, CL_ENOENT);
  EXPECT_EQ(start("svc").status, CL_ENOENT);
  vt::pump(*loop_, 20);
  EXPECT_EQ(changes_.size(), 2u);  // update, delete
}

// An update rewrites service.json on a worker; a delete sent right behind it (without waiting) must not race
// that write: the directory is gone once both answered, every time (the CI's it_virt once kept it).
TEST_F(VirtOnTestDriver, DeleteRightAfterAnUpdateLeavesNoDirectory) {
  for (int round = 0; round < 20; round++) {
    std::string sid = "race" + std::to_string(round);
    add_service(sid, 0);
  }
  start_virt();
  for (int round = 0; round < 20; round++) {
    std::string sid = "race" + std::to_string(round);
    int answered = 0;
    cl_status_t update_st = 1, delete_st = 1;
    ASSERT_EQ(ops_->call("service.update", "{\"service_id\":\"" + sid + "\",\"description\":\"d\"}",
                         [&](cl_status_t s, std::string_view) { update_st = s, answered++; }),
              CL_OK);
    ASSERT_EQ(ops_->call("service.delete", "{\"service_id\":\"" + sid + "\"}",
                         [&](cl_status_t s, std::string_view) { delete_st = s, answered++; }),
              CL_OK);
    ASSERT_TRUE(vt::run_until(*loop_, [&] { return answered == 2; }, 10000));
    EXPECT_EQ(update_st, CL_OK) << sid;
    EXPECT_EQ(delete_st, CL_OK) << sid;
    EXPECT_FALSE(files_exists(data_ + "/services/" + sid)) << sid;
  }
}

TEST_F(VirtOnTestDriver, FailedCreatesLeaveNothing) {
  start_virt();
  std::string outside = dir_ + "/outside.qcow2";
  ASSERT_TRUE(vt::ok(qemu_img::create_sync(outside, "qcow2", 1 << 20)));
  Result r = call("service.create", R"({"service_id":"new","port":80,"disk_image":")" + outside + "\"}");
  EXPECT_EQ(r.status, CL_EINVAL) << r.text;
  EXPECT_NE(r.text.find("outside the data directory"), std::string::npos) << r.text;
  EXPECT_EQ(call("service.create", R"({"service_id":"new","port":80,"kernel":"/etc/passwd"})").status, CL_EINVAL);
  // A real image inside the data directory: it "boots" on the test driver, but nothing ever answers on its port.
  std::string inside = data_ + "/tmp/upload.qcow2";
  ASSERT_TRUE(vt::ok(qemu_img::create_sync(inside, "qcow2", 1 << 20)));
  Result b = call("service.create", R"({"service_id":"new","port":80,"disk_image":")" + inside + "\"}");
  EXPECT_EQ(b.status, CL_ETIMEDOUT) << b.text;
  EXPECT_NE(b.text.find("did not answer"), std::string::npos) << b.text;
  // An image with a backing file would read another file of the server.
  std::string chained = data_ + "/tmp/chained.qcow2";
  ASSERT_TRUE(vt::ok(qemu_img::create_overlay_sync(outside, "qcow2", chained)));
  Result c = call("service.create", R"({"service_id":"new","port":80,"disk_image":")" + chained + "\"}");
  EXPECT_EQ(c.status, CL_EINVAL) << c.text;
  // Cancelled while waiting for the guest: nothing left either.
  Result w = call("service.create", R"({"service_id":"new","port":80,"wait":false,"disk_image":")" + inside + "\"}");
  ASSERT_EQ(w.status, CL_OK) << w.text;
  std::string job = w.doc["job_id"].GetString();
  ASSERT_TRUE(vt::run_until(*loop_, [&] { return our_domains() == 1; }, 5000));
  EXPECT_EQ(call("service.create", R"({"service_id":"new","port":80,"kernel":"x"})").status, CL_EEXIST);
  EXPECT_EQ(call("service.get", R"({"service_id":"new"})").status, CL_ENOENT) << "not a service before its state is saved";
  EXPECT_EQ(call("job.cancel", "{\"job_id\":\"" + job + "\"}").status, CL_OK);
  Result g;
  ASSERT_TRUE(vt::run_until(*loop_, [&] {
    g = call("job.get", "{\"job_id\":\"" + job + "\"}");
    return std::string(g.doc["state"].GetString()) != "running";
  }, 5000));
  EXPECT_STREQ(g.doc["state"].GetString(), "canceled") << g.text;
  EXPECT_EQ(call("service.create", R"({"service_id":"new","disk_image":"x"})").status, CL_EINVAL);  // no port
  EXPECT_EQ(call("service.create", R"({"service_id":"new","port":80})").status, CL_EINVAL);        // no image
  EXPECT_EQ(call("service.get", R"({"service_id":"new"})").status, CL_ENOENT);
  EXPECT_FALSE(files_exists(data_ + "/services/new"));
  size_t n = 0;
  store_->scan("services", "", [&](std::string_view, std::string_view) { return ++n, true; });
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(our_domains(), 0u);
  EXPECT_TRUE(files_exists(inside)) << "the source image is left alone";
}

TEST_F(VirtOnTestDriver, RestartReattachesReapsAndRemovesStrays) {
  add_service("svc", 0);
  start_virt();
  Result keep = start("svc"), gone = start("svc");
  ASSERT_EQ(keep.status, CL_OK);
  ASSERT_EQ(gone.status, CL_OK);
  std::string keep_id = keep.doc["id"].GetString(), gone_id = gone.doc["id"].GetString();
  std::string pfx = prefix();
  stop_virt();  // instances keep running
  ASSERT_EQ(our_domains(), 2u);
  // While the server is down: one VM dies, a stray domain of ours appears (a start that died with the process),
  // one of someone else, and a stray instance directory.
  virDomainPtr d = virDomainLookupByUUIDString(keep_, gone_id.c_str());
  ASSERT_EQ(virDomainDestroy(d), 0);
  virDomainFree(d);
  std::string stray_uuid = uuid_generate();
  std::string xml = test_domain_xml(data_ + "/services/svc/image-1");
  auto with = [&](std::string x, const std::string& name, const std::string& uuid) {
    x.replace(x.find("cloudlet-saved"), 14, name);
    x.replace(x.find("11111111-2222-4333-8444-555555555555"), 36, uuid);
    return x;
  };
  virDomainPtr s1 = virDomainCreateXML(keep_, with(xml, pfx + stray_uuid, stray_uuid).c_str(), 0);
  ASSERT_NE(s1, nullptr);
  virDomainFree(s1);
  virDomainPtr s2 = virDomainCreateXML(keep_, with(xml, "someone-elses-vm", uuid_generate()).c_str(), 0);
  ASSERT_NE(s2, nullptr);
  virDomainFree(s2);
  ASSERT_TRUE(vt::ok(files_make_dirs(data_ + "/instances/" + uuid_generate())));

  start_virt();
  ASSERT_TRUE(vt::run_until(*loop_, [&] {
    auto names = domain_names();
    return our_domains() == 1 && records() == 1 && instance_dirs().size() == 1;
  }, 10000)) << "domains " << our_domains() << " records " << records() << " dirs " << instance_dirs().size();
  auto names = domain_names();
  EXPECT_TRUE(std::find(names.begin(), names.end(), "someone-elses-vm") != names.end()) << "never touch others";
  EXPECT_TRUE(std::find(names.begin(), names.end(), pfx + keep_id) != names.end());
  Result l = call("instance.list");
  ASSERT_EQ(l.doc["instances"].Size(), 1u);
  EXPECT_EQ(std::string(l.doc["instances"][0]["id"].GetString()), keep_id);
  EXPECT_EQ(instance_dirs(), std::vector<std::string>{keep_id});
  // Its ports are still taken: a new instance gets others.
  Result n = start("svc");
  ASSERT_EQ(n.status, CL_OK);
  EXPECT_NE(n.doc["port"].GetInt(), keep.doc["port"].GetInt());
  EXPECT_NE(n.doc["port"].GetInt(), keep.doc["ssh_port"].GetInt());
  // And it stops normally.
  EXPECT_TRUE(stop(keep_id).doc["stopped"].GetBool());
  stop(n.doc["id"].GetString());
  EXPECT_EQ(records(), 0u);
}

TEST_F(VirtOnTestDriver, UnavailableHypervisorAnswersUnavailable) {
  add_service("svc", 0);
  start_virt("test:///" + dir_ + "/no-such-driver-file.xml");
  vt::pump(*loop_, 200);
  Result r = start("svc");
  EXPECT_EQ(r.status, CL_EUNAVAIL) << r.text;
  EXPECT_NE(r.text.find("not available"), std::string::npos) << r.text;
  Result l = call("service.list");
  ASSERT_EQ(l.status, CL_OK);
  EXPECT_EQ(l.doc["services"].Size(), 1u);  // services are served from the store
  EXPECT_EQ(call("instance.list").status, CL_OK);
  EXPECT_EQ(records(), 0u);
}

}  // namespace
