#include "virt/domain_xml.h"

#include <gtest/gtest.h>

#include <set>

#include "test_util.h"
#include "virt/xml.h"

using namespace cloudlet::virt;

namespace {

DomainSpec demo_spec() {
  DomainSpec s;
  s.name = "svc-demo.1";
  s.uuid = "11111111-2222-4333-8444-555555555555";
  s.kernel = "/data/services/demo/vmlinuz";
  s.initrd = "/data/services/demo/initrd.img";
  s.cmdline = "console=ttyS0 panic=-1 quiet";
  s.disk_path = "/data/instances/x/disk.qcow2";
  s.console_log = "/data/instances/x/console.log";
  s.forwards = {{"127.0.0.1", 41000, 8080}, {"127.0.0.1", 41001, 22}};
  return s;
}

// A saved image's XML the way libvirt writes it, plus traps: a nested <name>/<uuid> in metadata and text that
// looks like markup in the description. Only the domain's own identity may change.
const char* kSaved = R"(<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>svc</name>
  <uuid>aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee</uuid>
  <description>not &lt;name&gt;svc&lt;/name&gt; here</description>
  <metadata>
    <app:info xmlns:app='http://example.invalid/app'><name>svc</name><uuid>aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee</uuid></app:info>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/data/services/svc/vmlinuz</kernel>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='cdrom'>
      <source file='/data/iso/x.iso'/>
      <target dev='hdc' bus='ide'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/data/services/svc/disk.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/data/base.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </disk>
    <serial type='file'>
      <source path='/data/services/svc/console.log'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='file'>
      <source path='/data/services/svc/console.log'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=hn0,hostfwd=tcp:127.0.0.1:41000-:8080,hostfwd=tcp:127.0.0.1:41001-:22,ipv6=off'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=hn0,bus=pci.0,addr=0x1f'/>
  </qemu:commandline>
</domain>
)";

}  // namespace

TEST(DomainXml, BuildsADirectKernelGuest) {
  std::string x;
  ASSERT_TRUE(vt::ok(domain_xml_build(demo_spec(), &x)));
  DomainSummary s;
  ASSERT_TRUE(vt::ok(domain_xml_summary(x, &s)));
  EXPECT_EQ(s.type, "qemu");
  EXPECT_EQ(s.name, "svc-demo.1");
  EXPECT_EQ(s.uuid, "11111111-2222-4333-8444-555555555555");
  EXPECT_EQ(s.disk_path, "/data/instances/x/disk.qcow2");
  EXPECT_EQ(s.console_log, "/data/instances/x/console.log");
  ASSERT_EQ(s.forwards.size(), 2u);
  EXPECT_EQ(s.forwards[1].host_port, 41001);
  EXPECT_EQ(s.forwards[1].guest_port, 22);
  EXPECT_NE(x.find("<kernel>/data/services/demo/vmlinuz</kernel>"), std::string::npos) << x;
  EXPECT_NE(x.find("value='user,id=hn0,hostfwd=tcp:127.0.0.1:41000-:8080,hostfwd=tcp:127.0.0.1:41001-:22'"),
            std::string::npos) << x;
  EXPECT_NE(x.find("virtio-net-pci,netdev=hn0,bus=pci.0,addr=0x1f"), std::string::npos);
  EXPECT_NE(x.find("<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>"), std::string::npos) << x;
  EXPECT_NE(x.find("<driver name='qemu' type='qcow2'/>"), std::string::npos);
  auto spec = demo_spec();
  spec.type = DomainType::kvm;
  spec.kernel.clear();
  spec.initrd.clear();
  spec.cmdline.clear();
  ASSERT_TRUE(vt::ok(domain_xml_build(spec, &x)));
  EXPECT_NE(x.find("<domain type='kvm'"), std::string::npos);
  EXPECT_NE(x.find("<boot dev='hd'/>"), std::string::npos);
}

TEST(DomainXml, EscapesTheCommandLine) {
  auto spec = demo_spec();
  spec.cmdline = "console=ttyS0 msg=\"a<b&c\" x='y'";
  std::string x;
  ASSERT_TRUE(vt::ok(domain_xml_build(spec, &x)));
  xml::Document doc;
  ASSERT_TRUE(vt::ok(xml::parse(x, &doc)));
  EXPECT_EQ(doc.root->child("os")->child("cmdline")->text_content(), spec.cmdline);
}

TEST(DomainXml, RejectsBadSpecs) {
  auto bad = [&](auto mutate) {
    auto s = demo_spec();
    mutate(s);
    std::string x;
    return vt::fails(domain_xml_build(s, &x), CL_EINVAL) && x.empty();
  };
  EXPECT_TRUE(bad([](DomainSpec& s) { s.name = "bad name"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.name = "x<y"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.name = std::string(65, 'a'); }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.uuid = "not-a-uuid"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.disk_path = "relative/disk.qcow2"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.disk_path = "/a,b.qcow2"; }));  // would split QEMU's option
  EXPECT_TRUE(bad([](DomainSpec& s) { s.console_log = "/x\n"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.forwards[0].host_address = "localhost"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.forwards[0].host_address = "127.0.0.1,hostfwd=tcp::1-:2"; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.forwards[0].host_port = 0; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.forwards[1].host_port = s.forwards[0].host_port; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.memory_mib = 1; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.vcpus = 0; }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.kernel.clear(); s.disk_path.clear(); }));
  EXPECT_TRUE(bad([](DomainSpec& s) { s.disk_format = "vmdk"; }));
}

TEST(DomainXml, RewriteChangesOnlyTheIdentity) {
  InstanceIdentity id;
  id.name = "VM-0f0f0f0f-1111-4222-8333-444444444444";
  id.uuid = "0f0f0f0f-1111-4222-8333-444444444444";
  id.disk_path = "/data/instances/0f0f/disk.qcow2";
  id.console_log = "/data/instances/0f0f/console.log";
  id.forwards = {{"127.0.0.1", 42000, 8080}, {"127.0.0.1", 42001, 22}};
  std::string out;
  ASSERT_TRUE(vt::ok(domain_xml_rewrite(kSaved, id, &out)));
  DomainSummary s;
  ASSERT_TRUE(vt::ok(domain_xml_summary(out, &s)));
  EXPECT_EQ(s.name, id.name);  // longer than the saved name: no truncation
  EXPECT_EQ(s.uuid, id.uuid);
  EXPECT_EQ(s.disk_path, id.disk_path);
  EXPECT_EQ(s.console_log, id.console_log);
  ASSERT_EQ(s.forwards.size(), 2u);
  EXPECT_EQ(s.forwards[0].host_port, 42000);
  EXPECT_EQ(s.forwards[1].host_port, 42001);
  // Untouched: metadata's own name/uuid, the description, the cdrom, other netdev options, the backing chain is
  // left for libvirt to detect anew.
  EXPECT_NE(out.find("<app:info xmlns:app='http://example.invalid/app'><name>svc</name><uuid>aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee</uuid></app:info>"),
            std::string::npos) << out;
  EXPECT_NE(out.find("not &lt;name&gt;svc&lt;/name&gt; here"), std::string::npos);
  EXPECT_NE(out.find("/data/iso/x.iso"), std::string::npos);
  EXPECT_NE(out.find("user,id=hn0,ipv6=off,hostfwd=tcp:127.0.0.1:42000-:8080,hostfwd=tcp:127.0.0.1:42001-:22"),
            std::string::npos) << out;
  EXPECT_EQ(out.find("backingStore"), std::string::npos);
  EXPECT_EQ(out.find("41000"), std::string::npos);
  EXPECT_NE(out.find("<address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>"), std::string::npos);
  EXPECT_NE(out.find("<target type='isa-serial' port='0'/>"), std::string::npos);
}

// Several instances from one saved XML: each gets its own, none leaks into another.
TEST(DomainXml, RewriteManyInstancesFromOneState) {
  std::set<std::string> names, uuids, outputs;
  for (int i = 0; i < 20; i++) {
    InstanceIdentity id;
    id.uuid = uuid_generate();
    id.name = "inst-" + id.uuid.substr(0, 8);
    id.disk_path = "/data/instances/" + id.uuid + "/disk.qcow2";
    id.forwards = {{"127.0.0.1", static_cast<uint16_t>(43000 + i), 8080}};
    std::string out;
    ASSERT_TRUE(vt::ok(domain_xml_rewrite(kSaved, id, &out)));
    DomainSummary s;
    ASSERT_TRUE(vt::ok(domain_xml_summary(out, &s)));
    EXPECT_TRUE(names.insert(s.name).second);
    EXPECT_TRUE(uuids.insert(s.uuid).second);
    EXPECT_TRUE(outputs.insert(out).second);
    EXPECT_EQ(s.console_log, "/data/services/svc/console.log");  // kept when not given
  }
}

// Every domain built carries a VM Generation ID; the instance XML keeps the element, and libvirt gives each
// restore a new value (checked with real QEMU in test_virt_qemu). A saved XML without one (saved before genids
// existed) gets none: a device added now would not match the saved machine.
TEST(DomainXml, TheGenerationIdIsKeptForLibvirtToRenew) {
  std::string built;
  ASSERT_TRUE(vt::ok(domain_xml_build(demo_spec(), &built)));
  xml::Document doc;
  ASSERT_TRUE(vt::ok(xml::parse(built, &doc)));
  ASSERT_NE(doc.root->child("genid"), nullptr);
  EXPECT_TRUE(valid_uuid(doc.root->child("genid")->text_content()));
  InstanceIdentity id;
  id.uuid = uuid_generate();
  id.name = "inst-" + id.uuid.substr(0, 8);
  id.disk_path = "/data/instances/" + id.uuid + "/disk.qcow2";
  id.forwards = {{"127.0.0.1", 43100, 8080}, {"127.0.0.1", 43101, 22}};
  std::string out;
  ASSERT_TRUE(vt::ok(domain_xml_rewrite(built, id, &out)));
  xml::Document inst;
  ASSERT_TRUE(vt::ok(xml::parse(out, &inst)));
  EXPECT_NE(inst.root->child("genid"), nullptr);
  id.name = "old-state";
  ASSERT_TRUE(vt::ok(domain_xml_rewrite(kSaved, id, &out)));
  EXPECT_EQ(out.find("genid"), std::string::npos);
}

TEST(DomainXml, RewriteRefusesWhatItCannotDoSafely) {
  InstanceIdentity id;
  id.name = "ok";
  id.uuid = "0f0f0f0f-1111-4222-8333-444444444444";
  id.disk_path = "/d.qcow2";
  id.forwards = {{"127.0.0.1", 42000, 8080}};
  std::string out;
  EXPECT_TRUE(vt::fails(domain_xml_rewrite("<domain><name>x</name></domain>", id, &out), CL_EINVAL));  // no uuid
  EXPECT_TRUE(vt::fails(domain_xml_rewrite("<notdomain/>", id, &out), CL_EINVAL));
  EXPECT_TRUE(vt::fails(domain_xml_rewrite("<domain><name>x</name>", id, &out), CL_EINVAL));
  auto no_disk = id;
  no_disk.disk_path.clear();
  EXPECT_TRUE(vt::fails(domain_xml_rewrite(kSaved, no_disk, &out), CL_EINVAL, "disk"));
  auto no_ports = id;
  no_ports.forwards.clear();
  EXPECT_TRUE(vt::fails(domain_xml_rewrite(kSaved, no_ports, &out), CL_EINVAL));
  auto bad_name = id;
  bad_name.name = "a/b";
  EXPECT_TRUE(vt::fails(domain_xml_rewrite(kSaved, bad_name, &out), CL_EINVAL));
  // No user netdev in the saved XML, but forwards asked for.
  EXPECT_TRUE(
      vt::fails(domain_xml_rewrite("<domain><name>x</name><uuid>0f0f0f0f-1111-4222-8333-444444444444</uuid></domain>",
                                   InstanceIdentity{"n", id.uuid, "", "", id.forwards}, &out),
                CL_EINVAL, "-netdev user"));
  EXPECT_TRUE(out.empty());  // nothing written on failure
  DomainSummary sum;
  EXPECT_TRUE(vt::fails(domain_xml_summary("<notdomain/>", &sum), CL_EINVAL, "not a <domain>"));
}

TEST(DomainXml, UuidsAndNames) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; i++) {
    auto u = uuid_generate();
    EXPECT_TRUE(valid_uuid(u)) << u;
    EXPECT_EQ(u[14], '4');
    EXPECT_TRUE(seen.insert(u).second);
  }
  EXPECT_FALSE(valid_uuid("0f0f0f0f-1111-4222-8333-44444444444g"));
  EXPECT_TRUE(valid_domain_name("demo.httpd-1_x"));
  EXPECT_FALSE(valid_domain_name("-x"));
  EXPECT_FALSE(valid_domain_name(""));
}
