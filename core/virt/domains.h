// Blocking libvirt calls on domains, for worker threads (through Connection::call). A failure carries libvirt's
// message, with CL_ENOENT when the domain does not exist and CL_EIO otherwise; domains are addressed by UUID and
// every libvirt object is freed before returning.
#pragma once

#include <libvirt/libvirt.h>

#include <string>
#include <vector>

#include "system/status.h"
#include "virt/reconcile.h"

namespace cloudlet::virt {

// Every domain of the connection (active and defined ones).
Status domains_list(virConnectPtr conn, std::vector<DomainInfo>* out);

// Destroys a running domain. A domain that does not exist or is not running is not an error (*existed tells).
Status domain_destroy(virConnectPtr conn, const std::string& uuid, bool* existed = nullptr);

// Starts a transient domain from xml (cold boot).
Status domain_create(virConnectPtr conn, const std::string& xml);

// Saves the domain's memory state to path (the domain stops).
Status domain_save(virConnectPtr conn, const std::string& uuid, const std::string& path);

Status domain_suspend(virConnectPtr conn, const std::string& uuid);
Status domain_resume(virConnectPtr conn, const std::string& uuid);

// The VNC port of a running domain (from its live XML); -1 when it has none.
int domain_vnc_port(virConnectPtr conn, const std::string& uuid);
// The same from a live domain XML text.
int domain_vnc_port_from_xml(const std::string& xml);

}  // namespace cloudlet::virt
