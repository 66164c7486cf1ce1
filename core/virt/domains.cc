#include "virt/domains.h"

#include <libvirt/virterror.h>

#include <cstdlib>
#include <memory>

#include "virt/connection.h"
#include "virt/xml.h"

namespace cloudlet::virt {
namespace {

struct DomainFree {
  void operator()(virDomainPtr d) const {
    if (d) virDomainFree(d);
  }
};
using DomainRef = std::unique_ptr<virDomain, DomainFree>;

DomainRef lookup(virConnectPtr conn, const std::string& uuid) {
  return DomainRef(virDomainLookupByUUIDString(conn, uuid.c_str()));
}

bool no_domain_error() {
  virErrorPtr e = virGetLastError();
  return e && e->code == VIR_ERR_NO_DOMAIN;
}

// libvirt's last error on this thread, with the code its callers answer with.
Status libvirt_failure() {
  return Status::error(no_domain_error() ? CL_ENOENT : CL_EIO, libvirt_last_error());
}

}  // namespace

Status domains_list(virConnectPtr conn, std::vector<DomainInfo>* out) {
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) return libvirt_failure();
  out->clear();
  for (int i = 0; i < n; i++) {
    DomainInfo info;
    char uuid[VIR_UUID_STRING_BUFLEN] = {};
    if (virDomainGetUUIDString(doms[i], uuid) == 0) info.uuid = uuid;
    if (const char* name = virDomainGetName(doms[i])) info.name = name;
    int state = 0, reason = 0;
    if (virDomainGetState(doms[i], &state, &reason, 0) == 0) {
      info.active = state == VIR_DOMAIN_RUNNING || state == VIR_DOMAIN_PAUSED || state == VIR_DOMAIN_BLOCKED ||
                    state == VIR_DOMAIN_PMSUSPENDED;
      info.paused = state == VIR_DOMAIN_PAUSED;
    } else {
      info.active = virDomainIsActive(doms[i]) == 1;
    }
    out->push_back(std::move(info));
    virDomainFree(doms[i]);
  }
  free(doms);
  virResetLastError();
  return {};
}

Status domain_destroy(virConnectPtr conn, const std::string& uuid, bool* existed) {
  if (existed) *existed = false;
  DomainRef d = lookup(conn, uuid);
  if (!d) {
    if (no_domain_error()) {
      virResetLastError();
      return {};
    }
    return libvirt_failure();
  }
  if (virDomainIsActive(d.get()) != 1) {
    virResetLastError();
    return {};
  }
  if (existed) *existed = true;
  if (virDomainDestroy(d.get()) < 0) {
    // It may have stopped on its own meanwhile.
    if (virDomainIsActive(d.get()) == 0) {
      virResetLastError();
      return {};
    }
    return libvirt_failure();
  }
  return {};
}

Status domain_create(virConnectPtr conn, const std::string& xml) {
  DomainRef d(virDomainCreateXML(conn, xml.c_str(), 0));
  if (!d) return libvirt_failure();
  return {};
}

Status domain_save(virConnectPtr conn, const std::string& uuid, const std::string& path) {
  DomainRef d = lookup(conn, uuid);
  if (!d) return libvirt_failure();
  if (virDomainSave(d.get(), path.c_str()) < 0) return libvirt_failure();
  return {};
}

Status domain_suspend(virConnectPtr conn, const std::string& uuid) {
  DomainRef d = lookup(conn, uuid);
  if (!d) return libvirt_failure();
  if (virDomainSuspend(d.get()) < 0) return libvirt_failure();
  return {};
}

Status domain_resume(virConnectPtr conn, const std::string& uuid) {
  DomainRef d = lookup(conn, uuid);
  if (!d) return libvirt_failure();
  if (virDomainResume(d.get()) < 0) return libvirt_failure();
  return {};
}

int domain_vnc_port_from_xml(const std::string& text) {
  xml::Document doc;
  if (!xml::parse(text, &doc).ok()) return -1;
  xml::Node* devices = doc.root ? doc.root->child("devices") : nullptr;
  if (!devices) return -1;
  for (xml::Node* g : devices->children_named("graphics")) {
    const std::string* type = g->attr("type");
    const std::string* port = g->attr("port");
    if (!type || *type != "vnc" || !port) continue;
    int p = atoi(port->c_str());
    return p > 0 && p <= 65535 ? p : -1;
  }
  return -1;
}

int domain_vnc_port(virConnectPtr conn, const std::string& uuid) {
  DomainRef d = lookup(conn, uuid);
  if (!d) return -1;
  char* x = virDomainGetXMLDesc(d.get(), 0);
  if (!x) return -1;
  std::string text(x);
  free(x);
  return domain_vnc_port_from_xml(text);
}

}  // namespace cloudlet::virt
