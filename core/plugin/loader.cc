// Loading and unloading plugins (rules L1-L4 of abi/README.md).
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
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

std::string default_plugin_files_dir(const std::string& name) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string build = std::string(CLOUDLET_BUILD_DIR) + "/";
  if (n > 0 && std::string_view(exe, static_cast<size_t>(n)).substr(0, build.size()) == build) {
    return std::string(CLOUDLET_SOURCE_DIR) + "/plugins/" + name;
  }
  return "/usr/share/cloudletd/plugins/" + name;
}

PluginManager::~PluginManager() {
  if (progress_timer_) svc_.loop.timer_stop(progress_timer_);
  if (hosts_.empty() && retiring_.empty()) return;
  // Nothing may run the loop here: release without waiting, and keep the code mapped (work may still run).
  log::warn("plugin", "plugin manager destroyed with {} plugin(s) loaded: abandoning them", hosts_.size() + retiring_.size());
  for (auto it = hosts_.rbegin(); it != hosts_.rend(); ++it) (*it)->abandon();
  for (auto& h : retiring_) h->abandon();
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
  if (h->spec.files_dir.empty()) h->spec.files_dir = default_plugin_files_dir(spec.name);
  h->desc = desc;
  h->dl = dl;
  h->caller.kind = CL_CALLER_PLUGIN;
  h->caller.plugin = spec.name;
  h->caller.grants = std::make_shared<const std::set<std::string>>(spec.grants.begin(), spec.grants.end());
  cl_str_t config{spec.config_json.data(), spec.config_json.size()};
  cl_status_t rc = CL_EIO;
  bool returned = guard(h, "init", [&] { rc = desc->init(h, host_api_table(), config, &h->state); });
  if (!returned || rc != CL_OK) {
    *error = returned ? fmt::format("init failed: {} ({})", rc, host_api_table()->strerror(rc))
                      : std::string("init threw an exception");
    log::error("plugin", "plugin '{}' ({}) refused: {}", spec.name, spec.path, *error);
    // Undo everything init registered (rule L4); what it started still completes before the code is unmapped.
    retire(std::move(host), !(desc->flags & CL_PLUGIN_F_NO_UNLOAD), nullptr);
    return returned ? rc : CL_EIO;
  }
  h->init_succeeded = true;
  h->life->phase = cl_host_s::running;
  log::info("plugin", "loaded '{}' {} from {} (ABI {}.{})", spec.name, desc->version ? desc->version : "?", spec.path,
            desc->abi_major, desc->abi_minor);
  hosts_.push_back(std::move(host));
  return CL_OK;
}

void PluginManager::retire(std::unique_ptr<cl_host_s> host, bool unmap, std::function<void()> then) {
  cl_host_s* h = host.get();
  retiring_.push_back(std::move(host));
  h->on_quiet = [this, h, unmap, then = std::move(then)] {
    h->finish();
    void* dl = h->dl;
    std::string name = h->name();
    for (auto it = retiring_.begin(); it != retiring_.end(); ++it) {
      if (it->get() == h) {
        retiring_.erase(it);  // destroys h
        break;
      }
    }
    if (unmap) dlclose(dl);
    log::info("plugin", "unloaded '{}'{}", name, unmap ? "" : " (code stays mapped)");
    if (then) then();
    maybe_done();
  };
  h->begin_unload();
}

void PluginManager::unload_all(bool dlclose_plugins, std::function<void()> done) {
  if (unloading_all_) {
    log::warn("plugin", "unload_all already in progress");
    return;
  }
  unloading_all_ = true;
  dlclose_all_ = dlclose_plugins;
  all_done_ = std::move(done);
  // A plugin may be owed nothing but a post still in flight from one of its threads, and the loop's wake-up
  // handle does not keep the loop running: this timer does, and says what is being waited for.
  progress_timer_ = svc_.loop.timer_start(5000, 5000, [this] {
    for (const auto& h : retiring_) {
      log::info("plugin", "unloading '{}': waiting for {} completion(s) and {} post(s)", h->name(), h->owed,
                h->life->posts_queued.load());
    }
  });
  unload_next();
}

void PluginManager::unload_next() {
  if (hosts_.empty()) {
    maybe_done();
    return;
  }
  std::unique_ptr<cl_host_s> host = std::move(hosts_.back());
  hosts_.pop_back();
  bool unmap = dlclose_all_ && !(host->desc->flags & CL_PLUGIN_F_NO_UNLOAD);
  // Last loaded first, one at a time: a plugin may use the operations of those loaded before it.
  retire(std::move(host), unmap, [this] { unload_next(); });
}

void PluginManager::maybe_done() {
  if (!unloading_all_ || !hosts_.empty() || !retiring_.empty() || !all_done_) return;
  unloading_all_ = false;
  svc_.loop.timer_stop(progress_timer_);
  progress_timer_ = 0;
  auto done = std::move(all_done_);
  all_done_ = nullptr;
  svc_.loop.defer(std::move(done));
}

std::vector<const cl_host_s*> PluginManager::plugins() const {
  std::vector<const cl_host_s*> out;
  for (const auto& h : hosts_) out.push_back(h.get());
  return out;
}

}  // namespace cloudlet
