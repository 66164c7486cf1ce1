#include "virt/services.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "events/bus.h"
#include "json/json.h"
#include "log/log.h"
#include "virt/domain_xml.h"
#include "virt/domains.h"
#include "virt/files.h"
#include "virt/port_probe.h"
#include "virt/qemu_img.h"
#include "virt/save_image.h"

namespace cloudlet::virt {
namespace {

// After the port first answers, the guest still finishes serving the probe's connection; saving a moment later
// keeps that half-done connection out of the saved state.
constexpr uint64_t kSettleMs = 300;
constexpr size_t kMaxCmdline = 2048;

int image_number(const std::string& image) {
  if (image.rfind("image-", 0) != 0) return 0;
  return atoi(image.c_str() + 6);
}

void publish_changed(EventBus& events, const std::string& id) {
  std::string q;
  json::append_quoted(&q, id);
  events.publish("service.changed", "{\"service_id\":" + q + "}");
}

// For steps after which nothing waits for the result (the record is already right): the failure is logged.
void log_failure(const std::string& service_id, const Status& status) {
  if (!status.ok()) log::warn("virt", "service {}: {}", service_id, status.message());
}

bool clean_cmdline(const std::string& s) {
  if (s.size() > kMaxCmdline) return false;
  for (unsigned char c : s)
    if (c < 0x20) return false;
  return true;
}

}  // namespace

struct Services::Run {
  enum class Phase { waiting, booting, probing, saving, committing, done };
  bool refresh = false;
  ServiceDef def;
  Source src;
  bool confine = true;
  std::string job;
  std::string new_image;
  std::string uuid, name;
  uint16_t port = 0;
  DomainType type = DomainType::qemu;
  Phase phase = Phase::waiting;
  bool cancelled = false;
  bool memory_restored = false;
  std::string stopped_detail;  // the guest stopped on its own while booting
  std::shared_ptr<PortProbe> probe;
  Loop::TimerId settle_timer = 0;
  std::shared_ptr<void> token;
  int64_t t0 = 0;
};

Services::Services(VirtContext& ctx) : ctx_(ctx) {}
Services::~Services() = default;

std::string Services::dir(const std::string& id) const { return ctx_.services_dir + "/" + id; }
std::string Services::image_dir(const ServiceDef& s) const { return dir(s.service_id) + "/" + s.image; }

const ServiceDef* Services::find(const std::string& id) const {
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.stored ? &it->second.def : nullptr;
}

std::set<std::string> Services::busy_domains() const {
  std::set<std::string> out;
  for (auto& [id, e] : entries_)
    if (e.run && !e.run->uuid.empty()) out.insert(e.run->uuid);
  return out;
}

std::string Services::json_of(const Entry& e) const {
  return service_json(e.def, !e.def.image.empty(), instance_count ? instance_count(e.def.service_id) : 0);
}

void Services::start() {
  ctx_.store.scan(kServicesCollection, "", [&](std::string_view key, std::string_view value) {
    ServiceDef def;
    if (Status parsed = service_parse_record(value, &def); !parsed.ok()) {
      log::error("virt", "service record '{}' is unreadable ({}): ignored", key, parsed.message());
      return true;
    }
    Entry e;
    e.def = std::move(def);
    e.stored = true;
    entries_[e.def.service_id] = std::move(e);
    return true;
  });
  // Files no record refers to: services whose creation died with the process, images a refresh left behind.
  std::map<std::string, std::string> keep;  // service id -> current image
  for (auto& [id, e] : entries_) keep[id] = e.def.image;
  std::string root = ctx_.services_dir;
  auto token = ctx_.pending.hold();
  auto removed = std::make_shared<std::vector<std::string>>();
  ctx_.loop.queue_work(
      [root, keep, removed] {
        if (auto e = files_make_dirs(root); !e.ok()) log::warn("virt", "services directory: {}", e.message());
        auto sweep = [&removed](const std::string& path) {
          if (auto e = files_remove_tree(path); !e.ok()) {
            log::warn("virt", "{} (no service record refers to it)", e.message());
          } else {
            removed->push_back(path);
          }
        };
        for (const auto& name : files_list(root)) {
          std::string path = root + "/" + name;
          auto it = keep.find(name);
          if (it == keep.end()) {
            sweep(path);
            continue;
          }
          for (const auto& sub : files_list(path)) {
            bool stale_image = sub.rfind("image-", 0) == 0 && sub != it->second;
            bool temp = sub.size() > 4 && sub.compare(sub.size() - 4, 4, ".tmp") == 0;
            if (stale_image || temp) sweep(path + "/" + sub);
          }
        }
      },
      [this, token, removed](bool) {
        for (auto& p : *removed) log::info("virt", "removed {} (no service record refers to it)", p);
        // A service boot that died with the process may have left its domain running: reconcile now.
        if (!removed->empty() && !ctx_.stopping) ctx_.hv.start();
        swept_ = true;
        auto waiters = std::move(sweep_waiters_);
        sweep_waiters_.clear();
        for (auto& w : waiters) w();
      });
  register_operations();
  log::info("virt", "{} service(s) registered", entries_.size());
}

void Services::stop() {
  for (auto& [id, e] : entries_) {
    if (!e.run) continue;
    auto run = e.run;
    run->cancelled = true;
    if (run->phase == Run::Phase::probing) run_fail(run, CL_ECLOSING, "the server is shutting down");
  }
}

void Services::when_startable(const std::string& id,
                              std::function<void(cl_status_t, const std::string&, const ServiceDef*)> fn) {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.deleting) {
    return ctx_.loop.defer([fn, id] { fn(CL_ENOENT, fmt::format("no service '{}'", id), nullptr); });
  }
  Entry& e = it->second;
  if (!e.job.empty()) {
    e.waiters.push_back([this, id, fn] { when_startable(id, fn); });
    return;
  }
  if (e.def.image.empty()) {
    return ctx_.loop.defer([fn, id] { fn(CL_ESTATE, fmt::format("service '{}' has no saved memory state", id), nullptr); });
  }
  ctx_.loop.defer([this, fn, id] {
    // Looked up again: the service may have changed since.
    auto it2 = entries_.find(id);
    if (it2 == entries_.end() || !it2->second.stored || it2->second.deleting) {
      return fn(CL_ENOENT, fmt::format("no service '{}'", id), nullptr);
    }
    if (!it2->second.job.empty()) return when_startable(id, fn);
    fn(CL_OK, "", &it2->second.def);
  });
}

// ---- operations --------------------------------------------------------------------------------------------

void Services::register_operations() {
  ctx_.ops.add("service.list", [this](std::string_view, Operations::Reply reply) {
    std::string out = "{\"services\":[";
    bool first = true;
    for (auto& [id, e] : entries_) {
      if (!e.stored || e.deleting) continue;
      if (!first) out += ",";
      first = false;
      out += json_of(e);
    }
    reply(CL_OK, out + "]}");
  });
  ctx_.ops.add("service.get", [this](std::string_view args, Operations::Reply reply) {
    json::Document a;
    json::parse(args, &a, nullptr);
    if (Entry* e = entry_for(a, reply)) reply(CL_OK, json_of(*e));
  });
  ctx_.ops.add("service.create", [this](std::string_view a, Operations::Reply r) { op_create(a, std::move(r)); });
  ctx_.ops.add("service.refresh", [this](std::string_view a, Operations::Reply r) { op_refresh(a, std::move(r)); });
  ctx_.ops.add("service.update", [this](std::string_view a, Operations::Reply r) { op_update(a, std::move(r)); });
  // Privileged: deleting a service (its disk and memory image) is for the core's front ends and granted plugins.
  ctx_.ops.add(
      "service.delete", [this](std::string_view a, Operations::Reply r) { op_delete(a, std::move(r)); }, nullptr,
      CL_OP_F_PRIVILEGED);
}

void Services::op_create(std::string_view args, Operations::Reply reply) {
  json::Document a;
  json::parse(args, &a, nullptr);
  auto id = json::get_string(a, "service_id");
  if (!id || !service_id_valid(*id)) return reply.error(CL_EINVAL, "service_id must be [A-Za-z0-9._-]{1,128}");
  ServiceDef def;
  def.service_id = std::string(*id);
  if (Status e = service_apply_metadata(a, &def, true); !e.ok()) return reply.error(e.code(), e.message());
  if (def.port == 0) return reply.error(CL_EINVAL, "port (the service's port inside the guest, 1-65535) is required");
  Source src;
  for (auto [key, out] : {std::pair{"disk_image", &src.disk_image}, std::pair{"kernel", &src.kernel},
                          std::pair{"initrd", &src.initrd}, std::pair{"cmdline", &src.cmdline}}) {
    const json::Value* v = json::member(a, key);
    if (!v || v->IsNull()) continue;
    if (!v->IsString()) return reply.error(CL_EINVAL, fmt::format("{} must be a string", key));
    *out = std::string(v->GetString(), v->GetStringLength());
  }
  if (src.disk_image.empty() && src.kernel.empty()) {
    return reply.error(CL_EINVAL, "give disk_image (a qcow2 image under the data directory), or kernel (with optional "
                                  "initrd and cmdline) for a direct-kernel guest");
  }
  if (src.kernel.empty() && (!src.initrd.empty() || !src.cmdline.empty())) {
    return reply.error(CL_EINVAL, "initrd and cmdline need a kernel");
  }
  if (!clean_cmdline(src.cmdline)) return reply.error(CL_EINVAL, "cmdline must be one line of at most 2048 characters");
  auto wait = json::get_bool(a, "wait");
  if (json::member(a, "wait") && !wait) return reply.error(CL_EINVAL, "wait must be true or false");
  if (ctx_.stopping) return reply.error(CL_ECLOSING, "the server is shutting down");
  auto it = entries_.find(def.service_id);
  if (it != entries_.end()) {
    return reply.error(CL_EEXIST, it->second.stored ? fmt::format("service '{}' already exists", def.service_id)
                                                    : fmt::format("service '{}' is being created", def.service_id));
  }
  if (wait.value_or(true)) {
    create(std::move(def), std::move(src), true, [reply](cl_status_t st, const std::string& r) { reply(st, r); });
  } else {
    std::string job = create(std::move(def), std::move(src), true, nullptr);
    std::string out = "{\"job_id\":";
    json::append_quoted(&out, job);
    reply(CL_OK, out + "}");
  }
}

std::string Services::create(ServiceDef def, Source src, bool confine,
                             std::function<void(cl_status_t, const std::string&)> done) {
  auto run = std::make_shared<Run>();
  run->def = std::move(def);
  run->src = std::move(src);
  run->confine = confine;
  run->new_image = "image-1";
  run->def.kernel_boot = !run->src.kernel.empty();
  run->def.has_initrd = !run->src.initrd.empty();
  run->def.cmdline = run->src.cmdline;
  run->token = ctx_.pending.hold();
  run->t0 = static_cast<int64_t>(ctx_.loop.now_ms());
  std::weak_ptr<Run> weak = run;
  run->job = ctx_.jobs.create("service.create", run->def.service_id, [this, weak] {
    auto r = weak.lock();
    if (!r || r->phase == Run::Phase::done || r->phase == Run::Phase::committing || r->phase == Run::Phase::saving)
      return;
    r->cancelled = true;
    if (r->phase == Run::Phase::probing) run_fail(r, CL_ECANCELED, "cancelled");
  });
  if (done) ctx_.jobs.wait(run->job, std::move(done));
  Entry e;
  e.def = run->def;
  e.job = run->job;
  e.run = run;
  entries_[run->def.service_id] = std::move(e);
  log::info("virt", "service {}: creating (job {})", run->def.service_id, run->job);
  run_start(run);
  return run->job;
}

void Services::op_refresh(std::string_view args, Operations::Reply reply) {
  json::Document a;
  json::parse(args, &a, nullptr);
  Entry* entry = entry_for(a, reply);
  if (!entry) return;
  Entry& e = *entry;
  const std::string& id = e.def.service_id;
  auto wait = json::get_bool(a, "wait");
  if (json::member(a, "wait") && !wait) return reply.error(CL_EINVAL, "wait must be true or false");
  if (ctx_.stopping) return reply.error(CL_ECLOSING, "the server is shutting down");
  if (!e.job.empty()) return reply.error(CL_EBUSY, fmt::format("service '{}' is busy (job {})", id, e.job));
  int64_t n = instance_count ? instance_count(id) : 0;
  if (n > 0) {
    return reply.error(CL_EBUSY, fmt::format("service '{}' has {} instance(s): stop them before refreshing its saved "
                                             "state (they use its disk)", id, n));
  }
  auto run = std::make_shared<Run>();
  run->refresh = true;
  run->def = e.def;
  run->new_image = fmt::format("image-{}", image_number(e.def.image) + 1);
  run->token = ctx_.pending.hold();
  run->t0 = static_cast<int64_t>(ctx_.loop.now_ms());
  std::weak_ptr<Run> weak = run;
  run->job = job_begin(ctx_, "service.refresh", e.def.service_id, wait.value_or(true), reply, [this, weak] {
    auto r = weak.lock();
    if (!r || r->phase == Run::Phase::done || r->phase == Run::Phase::committing || r->phase == Run::Phase::saving)
      return;
    r->cancelled = true;
    if (r->phase == Run::Phase::probing) run_fail(r, CL_ECANCELED, "cancelled");
  });
  e.job = run->job;
  e.run = run;
  log::info("virt", "service {}: refreshing its saved state (job {})", e.def.service_id, run->job);
  run_start(run);
}

Services::Entry* Services::entry_for(const json::Value& args, Operations::Reply& reply) {
  auto id = json::get_string(args, "service_id");
  if (!id || !service_id_valid(*id)) {
    reply.error(CL_EINVAL, "service_id must be [A-Za-z0-9._-]{1,128}");
    return nullptr;
  }
  auto it = entries_.find(std::string(*id));
  if (it == entries_.end() || !it->second.stored || it->second.deleting) {
    reply.error(CL_ENOENT, fmt::format("no service '{}'", *id));
    return nullptr;
  }
  return &it->second;
}

void Services::op_update(std::string_view args, Operations::Reply reply) {
  json::Document a;
  json::parse(args, &a, nullptr);
  Entry* entry = entry_for(a, reply);
  if (!entry) return;
  ServiceDef def = entry->def;
  if (Status e = service_apply_metadata(a, &def, false); !e.ok()) return reply.error(e.code(), e.message());
  entry->def = def;  // visible at once (the store overlay is too)
  // From now until service.json is rewritten a delete waits (files_written): it must not remove the directory
  // while this puts a file back into it.
  entry->file_writes++;
  std::string sid = def.service_id;
  std::string record = service_record(def);
  auto token = ctx_.pending.hold();
  commit_one(ctx_, kServicesCollection, sid, record, [this, sid, record, reply, token](cl_status_t st) {
    if (st != CL_OK) {
      reply.error(st, "the service could not be saved");
      return files_written(sid);
    }
    // The answer waits for the file too: a client that deletes right after finds the files settled.
    std::string path = dir(sid) + "/service.json";
    auto write_err = std::make_shared<Status>();
    ctx_.loop.queue_work([path, record, write_err] { *write_err = files_write(path, record, 0444); },
                         [this, sid, reply, token, write_err](bool) {
                           log_failure(sid, *write_err);
                           auto it = entries_.find(sid);  // still there: deletes wait for this write
                           publish_changed(ctx_.events, sid);
                           if (it != entries_.end()) reply(CL_OK, json_of(it->second));
                           files_written(sid);
                         });
  });
}

void Services::files_written(const std::string& sid) {
  auto it = entries_.find(sid);
  if (it == entries_.end() || --it->second.file_writes > 0) return;
  auto waiting = std::move(it->second.after_writes);
  it->second.after_writes.clear();
  for (auto& w : waiting) w();  // a delete: may erase the entry
}

void Services::op_delete(std::string_view args, Operations::Reply reply) {
  json::Document a;
  json::parse(args, &a, nullptr);
  Entry* entry = entry_for(a, reply);
  if (!entry) return;
  Entry& e = *entry;
  std::string sid = e.def.service_id;
  if (!e.job.empty()) return reply.error(CL_EBUSY, fmt::format("service '{}' is busy (job {})", sid, e.job));
  int64_t n = instance_count ? instance_count(sid) : 0;
  if (n > 0) return reply.error(CL_EBUSY, fmt::format("service '{}' has {} instance(s): stop them first", sid, n));
  if (e.file_writes > 0) {
    // An update is rewriting service.json: delete once it is written (everything is checked again then).
    e.after_writes.push_back([this, args = std::string(args), reply] { op_delete(args, reply); });
    return;
  }
  e.deleting = true;
  auto token = ctx_.pending.hold();
  commit_one(ctx_, kServicesCollection, sid, "", [this, sid, reply, token](cl_status_t st) {
    auto it2 = entries_.find(sid);
    if (st != CL_OK) {
      if (it2 != entries_.end()) it2->second.deleting = false;
      return reply.error(st, "the service record could not be deleted");
    }
    std::string path = dir(sid);
    auto err = std::make_shared<Status>();
    ctx_.loop.queue_work([path, err] { *err = files_remove_tree(path); },
                         [this, sid, reply, token, err](bool) {
                           log_failure(sid, *err);
                           auto it3 = entries_.find(sid);
                           if (it3 != entries_.end()) {
                             auto waiters = std::move(it3->second.waiters);
                             entries_.erase(it3);
                             for (auto& w : waiters) w();
                           }
                           publish_changed(ctx_.events, sid);
                           log::info("virt", "service {} deleted", sid);
                           reply(CL_OK, "{}");
                         });
  });
}

// ---- create / refresh pipeline -----------------------------------------------------------------------------

void Services::progress(Run& run, double fraction, const std::string& message) {
  ctx_.jobs.progress(run.job, fraction, message);
  log::info("virt", "service {}: {}", run.def.service_id, message);
}

void Services::run_start(std::shared_ptr<Run> run) {
  if (!swept_) {
    sweep_waiters_.push_back([this, run] { run_start(run); });
    return;
  }
  if (run->cancelled) return run_fail(run, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
  progress(*run, 0.02, "waiting for the hypervisor");
  ctx_.hv.when_connected([this, run](Status connected) {
    if (!connected.ok()) return run_fail(run, connected.code(), connected.message());
    if (run->cancelled) return run_fail(run, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
    ctx_.hv.domain_type([this, run](DomainType t) {
      run->type = t;
      if (run->cancelled) return run_fail(run, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
      uint16_t port = 0;
      if (Status reserved = ctx_.hv.ports().reserve(&port); !reserved.ok()) {
        return run_fail(run, reserved.code(), reserved.message());
      }
      run->port = port;
      run->uuid = uuid_generate();
      run->name = ctx_.prefix + run->uuid;
      run_boot(run);
    });
  });
}

void Services::run_boot(std::shared_ptr<Run> run) {
  run->phase = Run::Phase::booting;
  progress(*run, 0.1, run->refresh ? "restoring the current state onto a new overlay" : "preparing the disk and booting");
  struct Work {
    bool refresh;
    ServiceDef def;
    Source src;
    bool confine;
    std::string data_dir, svc_dir, old_dir, new_dir;
    DomainSpec spec;
    InstanceIdentity id;
  };
  auto w = std::make_shared<Work>();
  w->refresh = run->refresh;
  w->def = run->def;
  w->src = run->src;
  w->confine = run->confine;
  w->data_dir = ctx_.data_dir;
  w->svc_dir = dir(run->def.service_id);
  w->old_dir = run->refresh ? image_dir(run->def) : "";
  w->new_dir = w->svc_dir + "/" + run->new_image;
  PortForward fwd{ctx_.forward_address, run->port, run->def.port};
  DomainSpec& s = w->spec;
  s.name = run->name;
  s.uuid = run->uuid;
  s.type = run->type;
  s.memory_mib = static_cast<uint64_t>(service_memory_mib(run->def));
  s.vcpus = 1;
  if (run->def.kernel_boot) {
    s.kernel = w->svc_dir + "/vmlinuz";
    if (run->def.has_initrd) s.initrd = w->svc_dir + "/initrd.img";
    s.cmdline = run->def.cmdline;
  }
  s.disk_path = w->new_dir + (run->refresh ? "/overlay.qcow2" : "/disk.qcow2");
  s.console_log = w->new_dir + "/console.log";
  s.forwards = {fwd};
  w->id = InstanceIdentity{s.name, s.uuid, s.disk_path, s.console_log, {fwd}};
  using Result = std::pair<Status, bool>;  // error, memory restored
  ctx_.hv.connection().call<Result>(
      [w](virConnectPtr conn) -> Result {
        if (!w->refresh) {
          // A directory without a record is a leftover of a creation that died with the process.
          if (auto e = files_remove_tree(w->svc_dir); !e.ok()) return {e, false};
          if (auto e = files_make_dirs(w->new_dir, 0755); !e.ok()) return {e, false};
          Source& src = w->src;
          std::string kernel = src.kernel, initrd = src.initrd, disk = src.disk_image;
          if (w->confine) {
            for (auto* p : {&kernel, &initrd, &disk}) {
              if (p->empty()) continue;
              std::string real;
              if (auto e = files_confine(w->data_dir, *p, &real); !e.ok()) return {e, false};
              *p = real;
            }
          }
          if (!kernel.empty()) {
            if (auto e = files_copy(kernel, w->svc_dir + "/vmlinuz", 0444); !e.ok()) return {e, false};
            if (!initrd.empty()) {
              if (auto e = files_copy(initrd, w->svc_dir + "/initrd.img", 0444); !e.ok()) return {e, false};
            }
            if (auto e = files_write(w->svc_dir + "/cmdline", src.cmdline + "\n", 0444); !e.ok()) return {e, false};
          }
          if (!disk.empty()) {
            // The client's image: whatever qemu-img cannot read in it is the client's mistake.
            qemu_img::Info info;
            if (auto e = qemu_img::info_sync(disk, &info); !e.ok()) return {Status::invalid(e.message()), false};
            if (info.format != "qcow2") {
              return {Status::invalid("disk_image must be a qcow2 image, not " + info.format), false};
            }
            // A backing file or an external data file would make the copy read another file of the server.
            if (!info.backing_file.empty()) return {Status::invalid("disk_image must not have a backing file"), false};
            if (!info.data_file.empty()) {
              return {Status::invalid("disk_image must not have an external data file"), false};
            }
            if (auto e = qemu_img::convert_sync(disk, "qcow2", w->spec.disk_path, "qcow2"); !e.ok()) return {e, false};
          } else {
            uint64_t bytes = static_cast<uint64_t>(src.blank_disk_mib) << 20;
            if (auto e = qemu_img::create_sync(w->spec.disk_path, "qcow2", bytes); !e.ok()) return {e, false};
          }
          std::string xml;
          if (auto e = domain_xml_build(w->spec, &xml); !e.ok()) return {Status::io(e.message()), false};
          return {domain_create(conn, xml), false};
        }
        // Refresh: a new image directory next to the current one, which stays untouched.
        if (auto e = files_remove_tree(w->new_dir); !e.ok()) return {e, false};
        if (auto e = files_make_dirs(w->new_dir, 0755); !e.ok()) return {e, false};
        if (auto e = qemu_img::create_overlay_sync(w->old_dir + "/disk.qcow2", "qcow2", w->spec.disk_path); !e.ok()) {
          return {Status::io(e.message()), false};  // the service's own disk, even a missing one: the server's failure
        }
        SaveImage img;
        std::string restore_err;
        if (auto e = save_image_read(w->old_dir + "/state.sav", &img); !e.ok()) {
          restore_err = e.message();
        } else if (std::string xml; !(e = domain_xml_rewrite(img.xml, w->id, &xml)).ok()) {
          restore_err = e.message();
        } else {
          RestoreOptions ro;
          ro.fifo_path = w->new_dir + "/restore.fifo";
          virDomainPtr d = nullptr;
          auto e2 = save_image_restore_as(conn, w->old_dir + "/state.sav", xml, ro, &d);
          if (e2.ok()) {
            virDomainFree(d);
            return {Status(), true};
          }
          restore_err = e2.message();
        }
        log::warn("virt", "service {}: restoring the current state failed ({}): cold booting its disk", w->def.service_id,
                  restore_err);
        std::string saved;
        std::string xml;
        if (auto e = files_read(w->old_dir + "/domain.xml", &saved); !e.ok()) {
          log::warn("virt", "service {}: {}: booting a new domain definition", w->def.service_id, e.message());
        } else if (auto e2 = domain_xml_rewrite(saved, w->id, &xml); !e2.ok()) {
          log::warn("virt", "service {}: its domain XML: {}: booting a new domain definition", w->def.service_id,
                    e2.message());
        }
        if (xml.empty()) {
          if (auto e2 = domain_xml_build(w->spec, &xml); !e2.ok()) return {Status::io(e2.message()), false};
        }
        return {domain_create(conn, xml), false};
      },
      [this, run](Result r, Status call) {
        if (!r.first.ok()) return run_fail(run, r.first.code(), r.first.message());
        if (!call.ok()) return run_fail(run, CL_EUNAVAIL, call.message());
        run->memory_restored = r.second;
        if (run->cancelled) return run_fail(run, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
        run_wait_port(run);
      });
}

void Services::run_wait_port(std::shared_ptr<Run> run) {
  run->phase = Run::Phase::probing;
  if (!run->stopped_detail.empty()) return run_fail(run, CL_EIO, "the guest stopped while booting: " + run->stopped_detail);
  progress(*run, 0.4, fmt::format("{} ({}); waiting for port {} to answer (host port {})",
                                  run->memory_restored ? "restored" : "booted", domain_type_name(run->type),
                                  run->def.port, run->port));
  PortProbeOptions po;
  po.address = probe_address_for(ctx_.forward_address);
  po.port = run->port;
  po.timeout_ms = ctx_.boot_timeout_ms;
  run->probe = PortProbe::start(ctx_.loop, po, [this, run](bool ready, const std::string& detail) {
    run->probe.reset();
    if (!ready) {
      return run_fail(run, CL_ETIMEDOUT,
                      fmt::format("the guest's port {} did not answer: {}", run->def.port, detail));
    }
    if (run->cancelled) return run_fail(run, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
    progress(*run, 0.6, fmt::format("port {} answers ({})", run->def.port, detail));
    run->settle_timer = ctx_.loop.timer_start(kSettleMs, 0, [this, run] {
      run->settle_timer = 0;
      if (run->cancelled) return run_fail(run, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
      run_save(run);
    });
  });
}

void Services::run_save(std::shared_ptr<Run> run) {
  run->phase = Run::Phase::saving;
  progress(*run, 0.7, "saving the memory state");
  std::string new_dir = dir(run->def.service_id) + "/" + run->new_image;
  bool refresh = run->refresh;
  std::string uuid = run->uuid;
  ctx_.hv.connection().call<Status>(
      [new_dir, refresh, uuid](virConnectPtr conn) -> Status {
        std::string state = new_dir + "/state.sav";
        if (auto e = domain_save(conn, uuid, state); !e.ok()) return e.prefixed("saving the memory state: ");
        if (refresh) {
          // The new disk stands alone: the old image directory is removed once the record points here.
          std::string overlay = new_dir + "/overlay.qcow2";
          if (auto e = qemu_img::convert_sync(overlay, "qcow2", new_dir + "/disk.qcow2", "qcow2"); !e.ok()) return e;
          if (::unlink(overlay.c_str()) != 0) log::warn("virt", "cannot remove {}: {}", overlay, strerror(errno));
        }
        SaveImage img;
        if (auto e = save_image_read(state, &img); !e.ok()) return e;
        if (auto e = files_write(new_dir + "/domain.xml", img.xml, 0444); !e.ok()) return e;
        if (auto e = files_protect(new_dir); !e.ok()) return e;
        return files_sync_dir(new_dir);  // the record points here next: the image must survive a crash first
      },
      [this, run](Status r, Status call) {
        // Every step works on the server's own domain and files: whatever failed, it is the server's failure.
        if (!r.ok()) return run_fail(run, CL_EIO, r.message());
        if (!call.ok()) return run_fail(run, CL_EIO, call.message());
        run_commit(run);
      });
}

void Services::run_commit(std::shared_ptr<Run> run) {
  run->phase = Run::Phase::committing;
  ctx_.hv.ports().release(run->port);
  run->port = 0;
  ServiceDef def = run->def;
  def.image = run->new_image;
  if (run->refresh) {
    def.refreshed_ms = wall_ms();
  } else {
    def.created_ms = wall_ms();
  }
  std::string record = service_record(def);
  commit_one(ctx_, kServicesCollection, def.service_id, record, [this, run, def, record](cl_status_t st) {
    if (st != CL_OK) return run_fail(run, st, "the service record could not be saved");
    auto it = entries_.find(def.service_id);
    if (it == entries_.end()) return run_fail(run, CL_EIO, "the service vanished");
    std::string old_image = it->second.def.image;
    it->second.def = def;
    it->second.stored = true;
    std::string svc_dir = dir(def.service_id);
    std::string old_dir = run->refresh && !old_image.empty() && old_image != def.image ? svc_dir + "/" + old_image : "";
    // The job answers once the files match the record: service.json written, the previous image gone. The record
    // is committed, so a step that fails is logged, not answered (the start-up sweep removes an old image left).
    ctx_.loop.queue_work(
        [svc_dir, old_dir, record, sid = def.service_id] {
          if (!old_dir.empty()) log_failure(sid, files_remove_tree(old_dir));
          log_failure(sid, files_write(svc_dir + "/service.json", record, 0444));
          log_failure(sid, files_protect(svc_dir));
          log_failure(sid, files_sync_dir(svc_dir));
        },
        [this, run, def](bool) {
          run->phase = Run::Phase::done;
          publish_changed(ctx_.events, def.service_id);
          log::info("virt", "service {}: memory state saved in {} ms ({}{})", def.service_id,
                    static_cast<int64_t>(ctx_.loop.now_ms()) - run->t0, def.image,
                    run->refresh ? (run->memory_restored ? ", from the previous state" : ", cold booted") : "");
          auto it2 = entries_.find(def.service_id);
          ctx_.jobs.finish(run->job, CL_OK, it2 != entries_.end() ? json_of(it2->second) : "{}");
          run_end(run);
        });
  });
}

void Services::run_fail(std::shared_ptr<Run> run, cl_status_t status, const std::string& error) {
  if (run->phase == Run::Phase::done) return;
  run->phase = Run::Phase::done;
  if (run->probe) {
    run->probe->cancel();
    run->probe.reset();
  }
  if (run->settle_timer) {
    ctx_.loop.timer_stop(run->settle_timer);
    run->settle_timer = 0;
  }
  log::warn("virt", "service {}: {} failed: {}", run->def.service_id, run->refresh ? "refresh" : "creation", error);
  // Nothing stays: the domain, the new files, the port.
  std::string uuid = run->uuid;
  std::string target = run->refresh ? dir(run->def.service_id) + "/" + run->new_image : dir(run->def.service_id);
  bool created_files = run->uuid.size() > 0;  // files exist only once the boot step ran
  auto finish = [this, run, status, error] {
    if (run->port) ctx_.hv.ports().release(run->port);
    run->port = 0;
    ctx_.jobs.finish(run->job, status, error_json(error));
    if (!run->refresh) {
      auto it = entries_.find(run->def.service_id);
      if (it != entries_.end() && !it->second.stored && it->second.run == run) {
        auto waiters = std::move(it->second.waiters);
        entries_.erase(it);
        for (auto& w : waiters) w();
        run->token.reset();
        return;
      }
    }
    run_end(run);
  };
  if (!created_files) return finish();
  // A domain or files that cannot be removed are logged: reconciliation and the start-up sweep retry them.
  auto cleanup = [uuid, target, sid = run->def.service_id](virConnectPtr conn) -> int {
    if (conn && !uuid.empty()) log_failure(sid, domain_destroy(conn, uuid).prefixed("destroying its domain: "));
    log_failure(sid, files_remove_tree(target));
    return 0;
  };
  if (ctx_.hv.connected()) {
    ctx_.hv.connection().call<int>(cleanup, [this, finish, cleanup](int, Status call) {
      if (!call.ok()) {
        // The call never ran (connection gone): at least the files go. A domain left running is a stray that
        // reconciliation destroys when the connection is back.
        ctx_.loop.queue_work([cleanup] { cleanup(nullptr); }, [finish](bool) { finish(); });
        return;
      }
      finish();
    });
  } else {
    ctx_.loop.queue_work([cleanup] { cleanup(nullptr); }, [finish](bool) { finish(); });
  }
}

void Services::run_end(std::shared_ptr<Run> run) {
  auto it = entries_.find(run->def.service_id);
  if (it != entries_.end() && it->second.run == run) {
    it->second.run.reset();
    it->second.job.clear();
    auto waiters = std::move(it->second.waiters);
    it->second.waiters.clear();
    for (auto& w : waiters) w();
  }
  run->token.reset();
}

void Services::on_domain_event(const DomainEvent& ev) {
  for (auto& [id, e] : entries_) {
    if (!e.run || e.run->uuid != ev.uuid) continue;
    auto run = e.run;
    bool gone = ev.kind == DomainEvent::Kind::stopped || ev.kind == DomainEvent::Kind::crashed;
    if (!gone || run->phase == Run::Phase::saving || run->phase == Run::Phase::committing ||
        run->phase == Run::Phase::done) {
      return;
    }
    run->stopped_detail = fmt::format("{} ({})", DomainEvent::kind_name(ev.kind), ev.detail_name());
    if (run->phase == Run::Phase::probing) {
      run_fail(run, CL_EIO, "the guest stopped while booting: " + run->stopped_detail);
    }
    return;
  }
}

}  // namespace cloudlet::virt
