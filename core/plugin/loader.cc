// Loading and unloading plugins (rules L1-L4 of abi/README.md).
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "events/bus.h"
#include "http/server.h"
#include "log/log.h"
#include "loop/loop.h"
#include "plugin/host.h"

namespace cloudlet {

namespace {
bool valid_plugin_name(std::string_view n) {
  if (n.empty() || n.size() > 32) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}
}  // namespace

PluginManager::~PluginManager() {
  if (!hosts_.empty()) unload_all(false);
}

cl_status_t PluginManager::load(const PluginSpec& spec, std::string* error) {
  auto refuse = [&](cl_status_t st, std::string why) {
    *error = why;
    log::error("plugin", "plugin '{}' ({}) refused: {}", spec.name, spec.path, why);
    return st;
  };
  if (!valid_plugin_name(spec.name)) return refuse(CL_EINVAL, "invalid plugin name (want [a-z0-9_]{1,32})");
  for (const auto& h : hosts_) {
    if (h->name() == spec.name) return refuse(CL_EEXIST, "a plugin named '" + spec.name + "' is already loaded");
  }
  struct stat st;
  if (stat(spec.path.c_str(), &st) != 0) return refuse(CL_ENOENT, std::string("cannot stat: ") + strerror(errno));
  if (!S_ISREG(st.st_mode)) return refuse(CL_EINVAL, "not a regular file");
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return refuse(CL_EPERM, "the file is group- or world-writable (anyone could replace the code we run)");
  }
  if (st.st_uid != 0 && st.st_uid != geteuid()) {
    return refuse(CL_EPERM, "the file belongs to another user (uid " + std::to_string(st.st_uid) + ")");
  }
  if (void* probe = dlopen(spec.path.c_str(), RTLD_NOW | RTLD_NOLOAD)) {
    dlclose(probe);
    return refuse(CL_EEXIST, "this file is already loaded (under another plugin name, or by the server itself)");
  }
  void* dl = dlopen(spec.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!dl) return refuse(CL_EIO, std::string("dlopen failed: ") + dlerror());
  auto fail = [&](cl_status_t code, std::string why) {
    dlclose(dl);
    return refuse(code, std::move(why));
  };
  auto entry = reinterpret_cast<cl_plugin_entry_v1_fn>(dlsym(dl, CL_PLUGIN_ENTRY_V1));
  if (!entry) return fail(CL_EINVAL, "no '" CL_PLUGIN_ENTRY_V1 "' symbol: not a cloudletd plugin of ABI major 1");
  const cl_plugin_desc_t* desc = entry();
  if (!desc) return fail(CL_EINVAL, CL_PLUGIN_ENTRY_V1 "() returned no descriptor");
  if (desc->struct_size < offsetof(cl_plugin_desc_t, reserved)) {
    return fail(CL_EINVAL, "descriptor too small (struct_size " + std::to_string(desc->struct_size) + ")");
  }
  if (desc->abi_major != CL_ABI_MAJOR) {
    return fail(CL_ENOTSUP, fmt::format("built for plugin ABI {}.{}, this server provides {}.{} (major must match)",
                                        desc->abi_major, desc->abi_minor, CL_ABI_MAJOR, CL_ABI_MINOR));
  }
  if (desc->abi_minor > CL_ABI_MINOR) {
    return fail(CL_ENOTSUP, fmt::format("needs plugin ABI {}.{}, this server provides {}.{}", desc->abi_major,
                                        desc->abi_minor, CL_ABI_MAJOR, CL_ABI_MINOR));
  }
  if (!desc->name || spec.name != desc->name) {
    return fail(CL_EINVAL, fmt::format("the file declares the name '{}', the configuration expects '{}'",
                                       desc->name ? desc->name : "(null)", spec.name));
  }
  if (!desc->init) return fail(CL_EINVAL, "descriptor has no init function");
  if (desc->struct_size >= sizeof(cl_plugin_desc_t)) {
    for (void* r : desc->reserved) {
      if (r) return fail(CL_EINVAL, "descriptor's reserved fields are not NULL");
    }
  }

  auto host = std::make_unique<cl_host_s>();
  cl_host_s* h = host.get();
  h->svc = &svc_;
  h->spec = spec;
  if (h->spec.prefixes.empty()) h->spec.prefixes.push_back("/plugins/" + spec.name + "/");
  h->desc = desc;
  h->dl = dl;
  h->initializing = true;
  cl_str_t config{spec.config_json.data(), spec.config_json.size()};
  cl_status_t rc = CL_EIO;
  bool returned = guard(h, "init", [&] { rc = desc->init(h, host_api_table(), config, &h->state); });
  h->initializing = false;
  if (!returned || rc != CL_OK) {
    // Undo everything init registered before failing (rule L4), then unmap the code.
    h->alive->store(false);
    h->release_all();
    return fail(returned ? rc : CL_EIO, returned ? fmt::format("init failed: {} ({})", rc, [rc] {
      const char* s = host_api_table()->strerror(rc);
      return s;
    }())
                                                 : std::string("init threw an exception"));
  }
  h->active = true;
  log::info("plugin", "loaded '{}' {} from {} (ABI {}.{})", spec.name, desc->version ? desc->version : "?", spec.path,
            desc->abi_major, desc->abi_minor);
  hosts_.push_back(std::move(host));
  return CL_OK;
}

void PluginManager::unload_all(bool dlclose_plugins) {
  while (!hosts_.empty()) {
    std::unique_ptr<cl_host_s> host = std::move(hosts_.back());
    hosts_.pop_back();
    cl_host_s* h = host.get();
    if (h->desc->fini) guard(h, "fini", [&] { h->desc->fini(h, h->state); });
    h->alive->store(false);
    h->active = false;
    h->release_all();
    bool unload = dlclose_plugins && !(h->desc->flags & CL_PLUGIN_F_NO_UNLOAD);
    if (!h->work.empty()) {
      // Work functions run plugin code on worker threads: wait for them before unmapping anything.
      log::info(h->name(), "waiting for {} work item(s) to finish", h->work.size());
      uint64_t start = uv_hrtime();
      while (svc_.loop.pending_work() > 0 && uv_hrtime() - start < 30ull * 1000000000) {
        uv_run(svc_.loop.uv(), UV_RUN_ONCE);
      }
    }
    log::info("plugin", "unloaded '{}'", h->name());
    if (unload) dlclose(h->dl);
  }
}

std::vector<const cl_host_s*> PluginManager::plugins() const {
  std::vector<const cl_host_s*> out;
  for (const auto& h : hosts_) out.push_back(h.get());
  return out;
}

}  // namespace cloudlet
