// The pure parts of Service VMs: service metadata validation and records, instance users and records, the
// reconciliation plan, and path confinement.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "json/json.h"
#include "test_util.h"
#include "virt/files.h"
#include "virt/instance_def.h"
#include "virt/reconcile.h"
#include "virt/service_def.h"

using namespace cloudlet;
using namespace cloudlet::virt;

namespace {

Status apply(const std::string& args, ServiceDef* def, bool allow_port = true) {
  json::Document d;
  EXPECT_TRUE(json::parse(args, &d, nullptr)) << args;
  return service_apply_metadata(d, def, allow_port);
}

TEST(ServiceDef, Ids) {
  EXPECT_TRUE(service_id_valid("demo.httpd"));
  EXPECT_TRUE(service_id_valid("A-b_c.9"));
  EXPECT_TRUE(service_id_valid(std::string(128, 'x')));
  EXPECT_FALSE(service_id_valid(std::string(129, 'x')));
  for (const char* bad : {"", ".", "..", "a/b", "a b", "a\\b", "ä", "x\n"}) EXPECT_FALSE(service_id_valid(bad)) << bad;
}

TEST(ServiceDef, MetadataIsValidatedAndNothingChangesOnError) {
  ServiceDef d;
  EXPECT_TRUE(vt::ok(apply(R"({"description":" a speech recognizer ","version":"2","tags":["x"," y ","x",""],
                             "port":"8080","num_users":3,"min_memory":128,"ideal_memory":"512"})", &d)));
  EXPECT_EQ(d.description, "a speech recognizer");
  EXPECT_EQ(d.tags, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(d.port, 8080);
  EXPECT_EQ(d.num_users, 3);
  EXPECT_EQ(d.ideal_memory, 512);
  EXPECT_EQ(service_memory_mib(d), 512);
  ServiceDef before = d;
  for (const char* bad : {R"({"port":0})", R"({"port":65536})", R"({"port":"80a"})", R"({"port":1.5})",
                          R"({"num_users":-1})", R"({"min_memory":8})", R"({"min_memory":512,"ideal_memory":256})",
                          R"({"tags":[1]})", R"({"tags":{}})", R"({"description":"a\nb"})", R"({"version":5})"}) {
    EXPECT_TRUE(vt::fails(apply(bad, &d), CL_EINVAL)) << bad;
    EXPECT_EQ(service_record(d), service_record(before)) << bad;
  }
  EXPECT_TRUE(vt::fails(apply(R"({"port":80})", &d, false), CL_EINVAL, "port cannot change"));
  EXPECT_TRUE(vt::ok(apply(R"({"tags":"a, b ,,c"})", &d, false)));
  EXPECT_EQ(d.tags, (std::vector<std::string>{"a", "b", "c"}));
  ServiceDef none;
  EXPECT_EQ(service_memory_mib(none), kDefaultMemoryMib);
}

TEST(ServiceDef, RecordRoundTripAndJson) {
  ServiceDef d;
  d.service_id = "svc.1";
  ASSERT_TRUE(vt::ok(apply(R"({"description":"d","version":"v","tags":["t"],"port":22,"num_users":2})", &d)));
  d.image = "image-3";
  d.kernel_boot = true;
  d.has_initrd = true;
  d.cmdline = "console=ttyS0";
  d.created_ms = 5;
  ServiceDef back;
  ASSERT_TRUE(vt::ok(service_parse_record(service_record(d), &back)));
  EXPECT_EQ(service_record(back), service_record(d));
  json::Document j;
  ASSERT_TRUE(json::parse(service_json(d, true, 4), &j, nullptr));
  for (const char* k : {"service_id", "description", "version", "tags", "port", "num_users", "min_memory",
                        "ideal_memory", "state_saved", "instances"}) {
    EXPECT_TRUE(j.HasMember(k)) << k;
  }
  EXPECT_EQ(j["instances"].GetInt(), 4);
  EXPECT_TRUE(j["state_saved"].GetBool());
  EXPECT_FALSE(j.HasMember("image"));  // internal
  EXPECT_TRUE(vt::fails(service_parse_record(R"({"service_id":"../x","port":1})", &back), CL_EINVAL, "service_id"));
  EXPECT_TRUE(vt::fails(service_parse_record(R"({"service_id":"x","port":1,"image":"../../etc"})", &back), CL_EINVAL,
                        "bad image"));
  EXPECT_TRUE(vt::fails(service_parse_record("[1]", &back), CL_EINVAL, "not a JSON object"));
}

InstanceDef inst_with(std::vector<std::string> devices) {
  InstanceDef i;
  i.id = "6f1c1d5e-1111-4222-8333-444455556666";
  i.service_id = "s";
  i.name = "cloudlet-abcdef01-" + i.id;
  i.port = 20000;
  i.ssh_port = 20001;
  i.shared = true;
  for (auto& d : devices) i.users.push_back({d, 1});
  return i;
}

std::vector<std::string> devices_of(const InstanceDef& i) {
  std::vector<std::string> out;
  for (auto& u : i.users) out.push_back(u.device_id);
  return out;
}

TEST(InstanceDef, AUserLeavesWithItsOwnShare) {
  InstanceDef i = inst_with({"phone-a", "", "phone-b", ""});
  EXPECT_TRUE(instance_remove_user(&i, "phone-b"));  // its own share
  EXPECT_EQ(devices_of(i), (std::vector<std::string>{"phone-a", "", ""}));
  EXPECT_TRUE(instance_remove_user(&i, "phone-c"));  // no share of its own: an anonymous one
  EXPECT_EQ(devices_of(i), (std::vector<std::string>{"phone-a", ""}));
  EXPECT_TRUE(instance_remove_user(&i, ""));  // anonymous caller: an anonymous share first
  EXPECT_EQ(devices_of(i), (std::vector<std::string>{"phone-a"}));
  EXPECT_FALSE(instance_remove_user(&i, "phone-c"));  // cannot end phone-a's use
  EXPECT_EQ(devices_of(i), (std::vector<std::string>{"phone-a"}));
  EXPECT_TRUE(instance_remove_user(&i, ""));  // the plain API may (it has no identities)
  EXPECT_TRUE(i.users.empty());
}

TEST(InstanceDef, Room) {
  InstanceDef i = inst_with({"a", "b"});
  EXPECT_TRUE(instance_has_room(i, 3));
  EXPECT_FALSE(instance_has_room(i, 2));
  EXPECT_FALSE(instance_has_room(i, 0));
  i.shared = false;
  EXPECT_FALSE(instance_has_room(i, 10));  // a private instance is never joined
}

TEST(InstanceDef, RecordAndJson) {
  InstanceDef i = inst_with({"a", ""});
  i.state = "paused";
  i.vnc_port = 5901;
  i.memory_restored = true;
  i.ip_address = "192.168.1.5";
  InstanceDef back;
  ASSERT_EQ(instance_parse_record(instance_record(i), &back), "");
  EXPECT_EQ(instance_record(back), instance_record(i));
  json::Document j;
  ASSERT_TRUE(json::parse(instance_json(i, "10.0.0.1"), &j, nullptr));
  for (const char* k : {"id", "service_id", "name", "port", "ssh_port", "ip_address", "vnc_address", "fqdn", "state",
                        "memory_restored", "users", "shared", "started_ms"}) {
    EXPECT_TRUE(j.HasMember(k)) << k;
  }
  EXPECT_STREQ(j["ip_address"].GetString(), "10.0.0.1");
  EXPECT_STREQ(j["vnc_address"].GetString(), "127.0.0.1:5901");
  EXPECT_TRUE(j["fqdn"].IsNull());
  EXPECT_EQ(j["users"].GetInt(), 2);
  i.vnc_port = -1;
  ASSERT_TRUE(json::parse(instance_json(i), &j, nullptr));
  EXPECT_TRUE(j["vnc_address"].IsNull());
  EXPECT_STREQ(j["ip_address"].GetString(), "192.168.1.5");
  EXPECT_NE(instance_parse_record(R"({"id":"x","service_id":"s","name":"n","port":1,"ssh_port":2})", &back), "");
}

TEST(Reconcile, KeepsReapsAndDestroysOnlyOurStrays) {
  const std::string prefix = "cloudlet-abcdef01-";
  auto rec = [&](const std::string& id) {
    InstanceDef i = inst_with({""});
    i.id = id;
    i.name = prefix + id;
    return i;
  };
  ReconcileInput in;
  in.prefix = prefix;
  in.records = {rec("a-running"), rec("b-paused"), rec("c-gone"), rec("d-shutoff")};
  in.in_flight = {"e-starting"};
  in.busy_domains = {"f-service-boot"};
  in.domains = {
      {"a-running", prefix + "a-running", true, false},
      {"b-paused", prefix + "b-paused", true, true},
      {"d-shutoff", prefix + "d-shutoff", false, false},
      {"e-starting", prefix + "e-starting", true, false},
      {"f-service-boot", prefix + "f-service-boot", true, false},
      {"g-stray", prefix + "g-stray", true, false},
      {"h-other", "someone-elses-vm", true, false},
      {"i-other-cloudlet", "cloudlet-99999999-x", true, false},
      {"j-probe-dead", "cloudlet-kvm-probe-4242", true, false},
      {"k-probe-alive", "cloudlet-kvm-probe-77", true, false},
      {"l-stray-shutoff", prefix + "l-stray-shutoff", false, false},
  };
  in.instance_dirs = {"a-running", "c-gone", "e-starting", "z-stray-dir"};
  in.pid_alive = [](int pid) { return pid == 77; };
  ReconcilePlan p = reconcile_plan(in);
  ASSERT_EQ(p.keep.size(), 2u);
  EXPECT_EQ(p.keep[0].id, "a-running");
  EXPECT_FALSE(p.keep[0].paused);
  EXPECT_EQ(p.keep[1].id, "b-paused");
  EXPECT_TRUE(p.keep[1].paused);
  EXPECT_EQ(p.reap, (std::vector<std::string>{"c-gone", "d-shutoff"}));
  std::vector<std::string> destroyed;
  for (auto& d : p.destroy) destroyed.push_back(d.uuid);
  EXPECT_EQ(destroyed, (std::vector<std::string>{"g-stray", "j-probe-dead"}));
  EXPECT_EQ(p.remove_dirs, (std::vector<std::string>{"z-stray-dir"}));
}

TEST(Reconcile, NothingKnownNothingTouched) {
  ReconcileInput in;
  in.prefix = "cloudlet-abcdef01-";
  in.domains = {{"u1", "vm-of-someone", true, false}};
  ReconcilePlan p = reconcile_plan(in);
  EXPECT_TRUE(p.keep.empty() && p.reap.empty() && p.destroy.empty() && p.remove_dirs.empty());
}

TEST(Files, ConfineKeepsClientPathsInsideTheDataDirectory) {
  std::string root = vt::make_temp_dir("cl-files");
  ASSERT_FALSE(root.empty());
  std::string data = root + "/data";
  ASSERT_TRUE(vt::ok(files_make_dirs(data + "/uploads")));
  std::ofstream(data + "/uploads/disk.qcow2") << "x";
  std::ofstream(root + "/secret") << "s";
  ASSERT_EQ(symlink((root + "/secret").c_str(), (data + "/uploads/link").c_str()), 0);
  std::string real;
  EXPECT_TRUE(vt::ok(files_confine(data, data + "/uploads/disk.qcow2", &real)));
  EXPECT_EQ(real, data + "/uploads/disk.qcow2");
  EXPECT_TRUE(vt::ok(files_confine(data, "uploads/disk.qcow2", &real)));  // relative to the data directory
  // Whatever is wrong with a client's path is the client's mistake.
  EXPECT_TRUE(vt::fails(files_confine(data, root + "/secret", &real), CL_EINVAL, "outside the data directory"));
  EXPECT_TRUE(vt::fails(files_confine(data, data + "/uploads/../../secret", &real), CL_EINVAL));
  EXPECT_TRUE(vt::fails(files_confine(data, data + "/uploads/link", &real), CL_EINVAL));  // a symlink pointing out
  EXPECT_TRUE(vt::fails(files_confine(data, "/etc/passwd", &real), CL_EINVAL));
  EXPECT_TRUE(vt::fails(files_confine(data, data + "/uploads", &real), CL_EINVAL));  // a directory
  EXPECT_TRUE(vt::fails(files_confine(data, data + "/missing", &real), CL_EINVAL));
  EXPECT_FALSE(files_confine(data + "x", data + "x/../data/uploads/disk.qcow2", &real).ok());  // a prefix is not inside

  ASSERT_TRUE(vt::ok(files_write(data + "/f.json", "{}", 0444)));
  struct stat st;
  ASSERT_EQ(stat((data + "/f.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_TRUE(vt::ok(files_write(data + "/f.json", "{\"a\":1}", 0444)));  // replaced although read-only
  std::string text;
  EXPECT_TRUE(vt::ok(files_read(data + "/f.json", &text)));
  EXPECT_EQ(text, "{\"a\":1}");
  EXPECT_TRUE(vt::fails(files_read(data + "/f.json", &text, 3), CL_ETOOBIG, "larger than 3 bytes"));
  EXPECT_TRUE(vt::fails(files_read(data + "/none.json", &text), CL_ENOENT, "none.json"));
  EXPECT_TRUE(vt::fails(files_copy(data + "/f.json", data + "/f.json", 0444), CL_EEXIST));  // never over a file
  EXPECT_TRUE(vt::ok(files_sync_dir(data)));
  EXPECT_TRUE(vt::fails(files_sync_dir(data + "/none"), CL_EIO, "none"));
  EXPECT_TRUE(vt::fails(files_remove_tree("relative"), CL_EINVAL));
  EXPECT_TRUE(vt::fails(files_remove_tree("/"), CL_EINVAL));
  EXPECT_TRUE(vt::ok(files_remove_tree(root)));
  EXPECT_FALSE(files_exists(root));
}

}  // namespace
