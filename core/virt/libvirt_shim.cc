// Forwarders for the libvirt functions cloudletd uses (see libvirt_shim.h). Each resolves its target once;
// when libvirt cannot be loaded they fail the way libvirt itself reports failure (NULL or -1).
#include "virt/libvirt_shim.h"

#include <dlfcn.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <mutex>

namespace cloudlet::virt {

namespace {
std::once_flag g_once;
void* g_lib = nullptr;
std::string g_error;

void* lib() {
  std::call_once(g_once, [] {
    // RTLD_GLOBAL: libvirt's driver modules (loaded by libvirt itself) resolve against it.
    g_lib = dlopen("libvirt.so.0", RTLD_NOW | RTLD_GLOBAL);
    if (!g_lib) {
      const char* e = dlerror();
      g_error = std::string("cannot load libvirt.so.0: ") + (e ? e : "unknown error");
    }
  });
  return g_lib;
}

template <typename F>
F resolve(const char* name) {
  void* l = lib();
  return l ? reinterpret_cast<F>(dlsym(l, name)) : nullptr;
}
}  // namespace

Status libvirt_load() {
  if (!lib()) return Status::error(CL_EUNAVAIL, g_error);
  // The one call every use starts with: if it is missing, the library is not the libvirt we know.
  if (!dlsym(g_lib, "virConnectOpen")) return Status::error(CL_EUNAVAIL, "libvirt.so.0 has no virConnectOpen");
  return Status();
}

bool libvirt_loaded() { return g_lib != nullptr; }

}  // namespace cloudlet::virt

using cloudlet::virt::resolve;

// FORWARD(return type, name, (parameters), (arguments), value on failure)
#define FORWARD(ret, name, params, args, fail)                                  \
  extern "C" ret name params {                                                  \
    static const auto fn = resolve<ret(*) params>(#name);                      \
    if (!fn) return fail;                                                       \
    return fn args;                                                             \
  }
#define FORWARD_VOID(name, params, args)                                        \
  extern "C" void name params {                                                 \
    static const auto fn = resolve<void(*) params>(#name);                     \
    if (fn) fn args;                                                            \
  }

FORWARD(int, virInitialize, (void), (), -1)
FORWARD(virErrorPtr, virGetLastError, (void), (), nullptr)
FORWARD_VOID(virResetLastError, (void), ())
FORWARD_VOID(virSetErrorFunc, (void* userData, virErrorFunc handler), (userData, handler))
FORWARD_VOID(virEventRegisterImpl,
             (virEventAddHandleFunc a, virEventUpdateHandleFunc b, virEventRemoveHandleFunc c,
              virEventAddTimeoutFunc d, virEventUpdateTimeoutFunc e, virEventRemoveTimeoutFunc f),
             (a, b, c, d, e, f))
FORWARD(int, virEventAddHandle, (int fd, int events, virEventHandleCallback cb, void* opaque, virFreeCallback ff),
        (fd, events, cb, opaque, ff), -1)
FORWARD_VOID(virEventUpdateHandle, (int watch, int events), (watch, events))
FORWARD(int, virEventRemoveHandle, (int watch), (watch), -1)
FORWARD(int, virEventAddTimeout, (int frequency, virEventTimeoutCallback cb, void* opaque, virFreeCallback ff),
        (frequency, cb, opaque, ff), -1)
FORWARD_VOID(virEventUpdateTimeout, (int timer, int frequency), (timer, frequency))
FORWARD(int, virEventRemoveTimeout, (int timer), (timer), -1)

FORWARD(virConnectPtr, virConnectOpen, (const char* name), (name), nullptr)
FORWARD(int, virConnectClose, (virConnectPtr conn), (conn), -1)
FORWARD(int, virConnectRef, (virConnectPtr conn), (conn), -1)
FORWARD(int, virConnectSetKeepAlive, (virConnectPtr conn, int interval, unsigned int count), (conn, interval, count), -1)
FORWARD(int, virConnectRegisterCloseCallback,
        (virConnectPtr conn, virConnectCloseFunc cb, void* opaque, virFreeCallback freecb), (conn, cb, opaque, freecb), -1)
FORWARD(int, virConnectUnregisterCloseCallback, (virConnectPtr conn, virConnectCloseFunc cb), (conn, cb), -1)
FORWARD(int, virConnectDomainEventRegisterAny,
        (virConnectPtr conn, virDomainPtr dom, int eventID, virConnectDomainEventGenericCallback cb, void* opaque,
         virFreeCallback freecb),
        (conn, dom, eventID, cb, opaque, freecb), -1)
FORWARD(int, virConnectDomainEventDeregisterAny, (virConnectPtr conn, int callbackID), (conn, callbackID), -1)
FORWARD(char*, virConnectGetDomainCapabilities,
        (virConnectPtr conn, const char* emulatorbin, const char* arch, const char* machine, const char* virttype,
         unsigned int flags),
        (conn, emulatorbin, arch, machine, virttype, flags), nullptr)
FORWARD(int, virConnectListAllDomains, (virConnectPtr conn, virDomainPtr** domains, unsigned int flags),
        (conn, domains, flags), -1)
FORWARD(int, virConnectNumOfDomains, (virConnectPtr conn), (conn), -1)

FORWARD(virDomainPtr, virDomainCreateXML, (virConnectPtr conn, const char* xmlDesc, unsigned int flags),
        (conn, xmlDesc, flags), nullptr)
FORWARD(virDomainPtr, virDomainLookupByName, (virConnectPtr conn, const char* name), (conn, name), nullptr)
FORWARD(virDomainPtr, virDomainLookupByUUIDString, (virConnectPtr conn, const char* uuid), (conn, uuid), nullptr)
FORWARD(int, virDomainDestroy, (virDomainPtr domain), (domain), -1)
FORWARD(int, virDomainFree, (virDomainPtr domain), (domain), -1)
FORWARD(const char*, virDomainGetName, (virDomainPtr domain), (domain), nullptr)
FORWARD(int, virDomainGetState, (virDomainPtr domain, int* state, int* reason, unsigned int flags),
        (domain, state, reason, flags), -1)
FORWARD(int, virDomainGetUUIDString, (virDomainPtr domain, char* buf), (domain, buf), -1)
FORWARD(char*, virDomainGetXMLDesc, (virDomainPtr domain, unsigned int flags), (domain, flags), nullptr)
FORWARD(int, virDomainIsActive, (virDomainPtr dom), (dom), -1)
FORWARD(int, virDomainRestoreFlags, (virConnectPtr conn, const char* from, const char* dxml, unsigned int flags),
        (conn, from, dxml, flags), -1)
FORWARD(int, virDomainResume, (virDomainPtr domain), (domain), -1)
FORWARD(int, virDomainSave, (virDomainPtr domain, const char* to), (domain, to), -1)
FORWARD(char*, virDomainSaveImageGetXMLDesc, (virConnectPtr conn, const char* file, unsigned int flags),
        (conn, file, flags), nullptr)
FORWARD(int, virDomainSuspend, (virDomainPtr domain), (domain), -1)
