#include "virt/domain_xml.h"

#include <arpa/inet.h>
#include <sys/random.h>

#include <fmt/format.h>

#include <charconv>

#include "virt/xml.h"

namespace cloudlet::virt {
namespace {

constexpr const char* kQemuNs = "http://libvirt.org/schemas/domain/qemu/1.0";
constexpr const char* kNetdevId = "hn0";

bool valid_path(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.size() > 4096) return false;
  for (unsigned char c : p)
    if (c < 0x20 || c == 0x7f) return false;
  // A comma would end the path inside QEMU's option syntax.
  return p.find(',') == std::string::npos;
}

bool valid_ipv4(const std::string& a) {
  in_addr tmp;
  return inet_pton(AF_INET, a.c_str(), &tmp) == 1;
}

Status check_forwards(const std::vector<PortForward>& fwds) {
  if (fwds.size() > 32) return Status::invalid("too many port forwards");
  for (size_t i = 0; i < fwds.size(); i++) {
    auto& f = fwds[i];
    if (!valid_ipv4(f.host_address))
      return Status::invalid(fmt::format("forward host address '{}' is not numeric IPv4", f.host_address));
    if (f.host_port == 0 || f.guest_port == 0) return Status::invalid("forward ports must be 1-65535");
    for (size_t j = 0; j < i; j++)
      if (fwds[j].host_port == f.host_port && fwds[j].host_address == f.host_address)
        return Status::invalid(fmt::format("host port {} forwarded twice", f.host_port));
  }
  return Status();
}

std::string hostfwd(const PortForward& f) {
  return fmt::format("hostfwd=tcp:{}:{}-:{}", f.host_address, f.host_port, f.guest_port);
}

std::string netdev_value(const std::vector<PortForward>& fwds) {
  std::string v = fmt::format("user,id={}", kNetdevId);
  for (auto& f : fwds) v += "," + hostfwd(f);
  return v;
}

bool parse_port(std::string_view s, uint16_t* out) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0 || v > 65535) return false;
  *out = static_cast<uint16_t>(v);
  return true;
}

// "hostfwd=tcp:ADDR:HOST-:GUEST" (ADDR may be empty = all addresses in QEMU's terms).
bool parse_hostfwd(std::string_view opt, PortForward* out) {
  constexpr std::string_view prefix = "hostfwd=tcp:";
  if (opt.substr(0, prefix.size()) != prefix) return false;
  opt.remove_prefix(prefix.size());
  auto dash = opt.find("-:");
  if (dash == std::string_view::npos) return false;
  std::string_view host = opt.substr(0, dash), guest = opt.substr(dash + 2);
  auto colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  PortForward f;
  f.host_address = std::string(host.substr(0, colon));
  if (!parse_port(host.substr(colon + 1), &f.host_port)) return false;
  // The guest side may carry an address ("GUESTADDR:PORT"); only the port matters here.
  auto gcolon = guest.rfind(':');
  if (gcolon != std::string_view::npos) guest.remove_prefix(gcolon + 1);
  if (!parse_port(guest, &f.guest_port)) return false;
  *out = std::move(f);
  return true;
}

std::vector<std::string_view> split_commas(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    auto c = s.find(',', start);
    out.push_back(s.substr(start, c == std::string_view::npos ? std::string_view::npos : c - start));
    if (c == std::string_view::npos) break;
    start = c + 1;
  }
  return out;
}

// The <qemu:arg> node holding the value of "-netdev user,..." (nullptr if none).
xml::Node* find_user_netdev(xml::Node& root) {
  std::string prefix = xml::prefix_for(root, kQemuNs);
  if (prefix.empty()) return nullptr;
  xml::Node* cmd = root.child(prefix + ":commandline");
  if (!cmd) return nullptr;
  auto args = cmd->children_named(prefix + ":arg");
  for (size_t i = 0; i + 1 < args.size(); i++) {
    const std::string* v = args[i]->attr("value");
    const std::string* next = args[i + 1]->attr("value");
    if (v && next && *v == "-netdev" && next->rfind("user,", 0) == 0) return args[i + 1];
  }
  return nullptr;
}

xml::Node* first_disk(xml::Node& root) {
  xml::Node* devices = root.child("devices");
  if (!devices) return nullptr;
  for (xml::Node* d : devices->children_named("disk")) {
    const std::string* dev = d->attr("device");
    if (!dev || *dev == "disk") return d;
  }
  return nullptr;
}

// Pretty printing for trees built here (parsed trees keep their own whitespace).
void indent_tree(xml::Node& n, int depth) {
  bool has_elements = false;
  for (auto& c : n.children)
    if (c->kind == xml::Node::Kind::element) has_elements = true;
  if (!has_elements) return;
  std::vector<std::unique_ptr<xml::Node>> kids;
  kids.swap(n.children);
  std::string pad(2 * (depth + 1), ' ');
  for (auto& c : kids) {
    n.append_text("\n" + pad);
    indent_tree(*c, depth + 1);
    n.children.push_back(std::move(c));
  }
  n.append_text("\n" + std::string(2 * depth, ' '));
}

}  // namespace

const char* domain_type_name(DomainType t) { return t == DomainType::kvm ? "kvm" : "qemu"; }

bool valid_domain_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok) return false;
  }
  return name[0] != '.' && name[0] != '-';
}

bool valid_uuid(const std::string& u) {
  if (u.size() != 36) return false;
  for (size_t i = 0; i < u.size(); i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (u[i] != '-') return false;
    } else if (!isxdigit(static_cast<unsigned char>(u[i]))) {
      return false;
    }
  }
  return true;
}

std::string uuid_generate() {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                     b[15]);
}

Status domain_xml_build(const DomainSpec& s, std::string* out) {
  auto fail = [](std::string msg) { return Status::invalid(std::move(msg)); };
  if (!valid_domain_name(s.name)) return fail(fmt::format("invalid domain name '{}'", s.name));
  if (!valid_uuid(s.uuid)) return fail(fmt::format("invalid uuid '{}'", s.uuid));
  if (s.memory_mib < 16 || s.memory_mib > (1u << 20)) return fail("memory must be 16 MiB - 1 TiB");
  if (s.vcpus < 1 || s.vcpus > 64) return fail("vcpus must be 1-64");
  if (s.kernel.empty() && s.disk_path.empty()) return fail("neither a kernel nor a disk to boot");
  for (auto* p : {&s.kernel, &s.initrd, &s.disk_path, &s.console_log, &s.emulator})
    if (!p->empty() && !valid_path(*p)) return fail(fmt::format("invalid path '{}' (absolute, no commas)", *p));
  if (s.kernel.empty() && (!s.initrd.empty() || !s.cmdline.empty())) return fail("initrd/cmdline without a kernel");
  if (s.cmdline.size() > 2048) return fail("kernel command line too long");
  if (s.disk_format != "qcow2" && s.disk_format != "raw") return fail("disk format must be qcow2 or raw");
  if (Status e = check_forwards(s.forwards); !e.ok()) return e;

  xml::Document doc;
  doc.root = std::make_unique<xml::Node>();
  xml::Node& d = *doc.root;
  d.name = "domain";
  d.set_attr("type", domain_type_name(s.type));
  d.set_attr("xmlns:qemu", kQemuNs);
  d.append_element("name")->set_text(s.name);
  d.append_element("uuid")->set_text(s.uuid);
  // A VM Generation ID (QEMU's vmgenid device). libvirt gives every restore of this domain's saved state a new
  // one (its "start with a new generation" path for restores), so guests that watch it reseed their RNG
  // instead of sharing one state; domain_xml_rewrite keeps the element for that.
  d.append_element("genid")->set_text(uuid_generate());
  auto* mem = d.append_element("memory");
  mem->set_attr("unit", "MiB");
  mem->set_text(std::to_string(s.memory_mib));
  d.append_element("vcpu")->set_text(std::to_string(s.vcpus));
  auto* os = d.append_element("os");
  auto* type = os->append_element("type");
  type->set_attr("arch", "x86_64");
  type->set_attr("machine", "pc");
  type->set_text("hvm");
  if (!s.kernel.empty()) {
    os->append_element("kernel")->set_text(s.kernel);
    if (!s.initrd.empty()) os->append_element("initrd")->set_text(s.initrd);
    if (!s.cmdline.empty()) os->append_element("cmdline")->set_text(s.cmdline);
  } else {
    os->append_element("boot")->set_attr("dev", "hd");
  }
  d.append_element("features")->append_element("acpi");
  // A guest that powers off or crashes is gone: the daemon decides what happens next.
  d.append_element("on_poweroff")->set_text("destroy");
  d.append_element("on_reboot")->set_text("restart");
  d.append_element("on_crash")->set_text("destroy");
  auto* dev = d.append_element("devices");
  if (!s.emulator.empty()) dev->append_element("emulator")->set_text(s.emulator);
  if (!s.disk_path.empty()) {
    auto* disk = dev->append_element("disk");
    disk->set_attr("type", "file");
    disk->set_attr("device", "disk");
    auto* drv = disk->append_element("driver");
    drv->set_attr("name", "qemu");
    drv->set_attr("type", s.disk_format);
    disk->append_element("source")->set_attr("file", s.disk_path);
    auto* tgt = disk->append_element("target");
    tgt->set_attr("dev", "vda");
    tgt->set_attr("bus", "virtio");
  }
  if (!s.console_log.empty()) {
    auto* serial = dev->append_element("serial");
    serial->set_attr("type", "file");
    serial->append_element("source")->set_attr("path", s.console_log);
    serial->append_element("target")->set_attr("port", "0");
  }
  if (s.vnc) {
    auto* g = dev->append_element("graphics");
    g->set_attr("type", "vnc");
    g->set_attr("port", "-1");
    g->set_attr("autoport", "yes");
    g->set_attr("listen", "127.0.0.1");
    auto* l = g->append_element("listen");
    l->set_attr("type", "address");
    l->set_attr("address", "127.0.0.1");
  }
  // Guest memory stays put: no balloon driver resizing a VM behind the daemon's back.
  dev->append_element("memballoon")->set_attr("model", "none");
  if (!s.forwards.empty()) {
    auto* cmd = d.append_element("qemu:commandline");
    cmd->append_element("qemu:arg")->set_attr("value", "-netdev");
    cmd->append_element("qemu:arg")->set_attr("value", netdev_value(s.forwards));
    cmd->append_element("qemu:arg")->set_attr("value", "-device");
    cmd->append_element("qemu:arg")->set_attr("value",
                                              fmt::format("virtio-net-pci,netdev={},bus=pci.0,addr=0x1f", kNetdevId));
  }
  indent_tree(d, 0);
  *out = xml::serialize(doc);
  return Status();
}

Status domain_xml_rewrite(const std::string& saved_xml, const InstanceIdentity& id, std::string* out) {
  auto fail = [](std::string msg) { return Status::invalid(std::move(msg)); };
  if (!valid_domain_name(id.name)) return fail(fmt::format("invalid domain name '{}'", id.name));
  if (!valid_uuid(id.uuid)) return fail(fmt::format("invalid uuid '{}'", id.uuid));
  if (!id.disk_path.empty() && !valid_path(id.disk_path)) return fail(fmt::format("invalid disk path '{}'", id.disk_path));
  if (!id.console_log.empty() && !valid_path(id.console_log))
    return fail(fmt::format("invalid console log path '{}'", id.console_log));
  if (Status e = check_forwards(id.forwards); !e.ok()) return e;

  xml::Document doc;
  if (Status e = xml::parse(saved_xml, &doc); !e.ok()) return e.prefixed("saved domain XML: ");
  xml::Node& root = *doc.root;
  if (root.name != "domain") return fail("saved XML is not a <domain>");
  xml::Node* name = root.child("name");
  xml::Node* uuid = root.child("uuid");
  if (!name || !uuid) return fail("saved XML has no <name> or <uuid>");
  name->set_text(id.name);
  uuid->set_text(id.uuid);

  if (xml::Node* disk = first_disk(root)) {
    if (id.disk_path.empty()) return fail("saved XML has a disk but no disk path was given for the instance");
    const std::string* type = disk->attr("type");
    if (type && *type != "file") return fail(fmt::format("saved disk is of type '{}', not 'file'", *type));
    xml::Node* src = disk->child("source");
    if (!src) src = disk->append_element("source");
    src->set_attr("file", id.disk_path);
    // The backing chain belongs to the old path; libvirt detects the new one.
    while (xml::Node* bs = disk->child("backingStore")) disk->remove_child(bs);
  } else if (!id.disk_path.empty()) {
    return fail("saved XML has no disk to point at the instance's overlay");
  }

  if (!id.console_log.empty()) {
    if (xml::Node* devices = root.child("devices")) {
      for (const char* kind : {"serial", "console"}) {
        for (xml::Node* c : devices->children_named(kind)) {
          const std::string* type = c->attr("type");
          if (!type || *type != "file") continue;
          if (xml::Node* src = c->child("source")) src->set_attr("path", id.console_log);
        }
      }
    }
  }

  xml::Node* netdev = find_user_netdev(root);
  if (netdev) {
    if (id.forwards.empty()) return fail("saved XML forwards ports but the instance was given none");
    std::string value = "user";
    auto opts = split_commas(*netdev->attr("value"));
    for (size_t i = 1; i < opts.size(); i++) {
      if (opts[i].substr(0, 8) == "hostfwd=" || opts[i].empty()) continue;
      value += ",";
      value += opts[i];
    }
    for (auto& f : id.forwards) value += "," + hostfwd(f);
    netdev->set_attr("value", value);
  } else if (!id.forwards.empty()) {
    return fail("saved XML has no user network (-netdev user) to forward ports through");
  }
  *out = xml::serialize(doc);
  return Status();
}

Status domain_xml_summary(const std::string& text, DomainSummary* out) {
  xml::Document doc;
  if (Status e = xml::parse(text, &doc); !e.ok()) return e;
  xml::Node& root = *doc.root;
  if (root.name != "domain") return Status::invalid("not a <domain>");
  DomainSummary s;
  if (auto* t = root.attr("type")) s.type = *t;
  if (auto* n = root.child("name")) s.name = n->text_content();
  if (auto* u = root.child("uuid")) s.uuid = u->text_content();
  if (auto* disk = first_disk(root))
    if (auto* src = disk->child("source"))
      if (auto* f = src->attr("file")) s.disk_path = *f;
  if (auto* devices = root.child("devices"))
    for (auto* serial : devices->children_named("serial"))
      if (auto* src = serial->child("source"))
        if (auto* p = src->attr("path")) {
          s.console_log = *p;
          break;
        }
  if (auto* nd = find_user_netdev(root)) {
    for (auto opt : split_commas(*nd->attr("value"))) {
      PortForward f;
      if (parse_hostfwd(opt, &f)) s.forwards.push_back(std::move(f));
    }
  }
  *out = std::move(s);
  return Status();
}

}  // namespace cloudlet::virt
