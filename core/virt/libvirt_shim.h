// libvirt, loaded when first needed instead of at exec time.
//
// Linking libvirt maps about 48 shared libraries (GnuTLS, libxml2, GLib, ...) into the process at start-up:
// ~13 MiB of resident memory for a server that may never run a VM. So cloudletd does not link libvirt; it
// defines the libvirt functions it uses as forwarders (libvirt_shim.cc) that resolve the real ones from
// libvirt.so.0 with dlopen the first time. Call libvirt_load() on a worker before the first libvirt call on the
// loop: loading takes tens of milliseconds. A libvirt function not listed in libvirt_shim.cc is a link error,
// never a silent surprise.
#pragma once

#include <string>

#include "system/status.h"

namespace cloudlet::virt {

// Loads libvirt.so.0 (once; thread-safe). CL_EUNAVAIL when it is missing or lacks a needed function.
Status libvirt_load();
// True once loaded successfully.
bool libvirt_loaded();

}  // namespace cloudlet::virt
