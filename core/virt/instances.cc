#include "virt/instances.h"

#include <arpa/inet.h>
#include <signal.h>

#include <fmt/format.h>

#include <cerrno>

#include "devices/devices.h"
#include "events/bus.h"
#include "json/json.h"
#include "log/log.h"
#include "virt/domain_xml.h"
#include "virt/domains.h"
#include "virt/files.h"
#include "virt/port_probe.h"
#include "virt/qemu_img.h"
#include "virt/reconcile.h"
#include "virt/save_image.h"
#include "virt/services.h"

namespace cloudlet::virt {
namespace {

constexpr int kPortRetries = 2;  // another process took a reserved port before QEMU bound it
// A forced stop ends an instance for every device using it: the operator's act. A plugin may ask for it only
// when the configuration grants it this name (plugins[].grants), like a privileged operation.
constexpr std::string_view kForceStopGrant = "instance.stop.force";

bool numeric_ip(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  std::string z(s);
  unsigned char buf[16];
  return inet_pton(AF_INET, z.c_str(), buf) == 1 || inet_pton(AF_INET6, z.c_str(), buf) == 1;
}

bool wildcard(const std::string& a) { return a.empty() || a == "0.0.0.0" || a == "::"; }

// QEMU could not bind a forwarded port (taken between our bind test and QEMU's bind).
bool port_conflict(const std::string& error) {
  return error.find("host forwarding rule") != std::string::npos ||
         error.find("Could not set up host forwarding") != std::string::npos;
}

// Removes an instance's directory on a worker. A failure is logged, not returned: the instance is gone (or never
// was) either way, and reconciliation removes a stray directory later.
void remove_instance_dir(const std::string& path) {
  if (auto e = files_remove_tree(path); !e.ok()) log::warn("virt", "instance directory left behind: {}", e.message());
}

// Logs a record that could not be saved where nobody waits for the answer (the state is still right in memory).
void log_unsaved(const std::string& id, cl_status_t st) {
  if (st != CL_OK) log::error("virt", "instance {}: its record could not be saved ({})", id, st);
}

// An optional boolean member: absent -> fallback; present but not a boolean -> false with *bad set.
bool bool_arg(const json::Value& a, const char* key, bool fallback, bool* bad) {
  const json::Value* v = json::member(a, key);
  if (!v || v->IsNull()) return fallback;
  if (!v->IsBool()) {
    *bad = true;
    return fallback;
  }
  return v->GetBool();
}

}  // namespace

struct Instances::Inst {
  InstanceDef def;
  std::vector<std::function<void(cl_status_t, const std::string&)>> start_waiters;  // joiners of a starting one
  std::vector<std::function<void(cl_status_t, const std::string&)>> stop_waiters;   // stops joining a stop
  std::weak_ptr<Start> start;  // the start in progress
  bool died = false;           // its VM stopped while it was starting
  bool busy = false;           // pause or resume in progress (their own lifecycle events are expected)
  bool ports_reserved = false;
};

struct Instances::Start {
  std::string job, service_id, ip_address, device_id;
  bool join = false, wait_ready = false;
  std::string id;  // the new instance
  ServiceDef svc;
  int port_retries = 0;
  bool cancelled = false, failed = false, running = false, durable = false, ready = false;
  size_t committed_users = 0;
  std::shared_ptr<PortProbe> probe;
  std::shared_ptr<void> token;
  uint64_t t0 = 0, restored_ms = 0;
  std::string restore_error;
};

Instances::Instances(VirtContext& ctx, Services& services) : ctx_(ctx), services_(services) {}
Instances::~Instances() = default;

std::string Instances::dir(const std::string& id) const { return ctx_.instances_dir + "/" + id; }

int64_t Instances::count(const std::string& service_id) const {
  int64_t n = 0;
  for (auto& [id, i] : insts_) n += i->def.service_id == service_id;
  return n;
}

void Instances::start() {
  // Records as stored; reconciliation (once connected) keeps, updates or reaps them. Their ports stay taken
  // meanwhile, so new instances never get a port an adopted VM still forwards.
  ctx_.store.scan(kInstancesCollection, "", [&](std::string_view key, std::string_view value) {
    auto inst = std::make_shared<Inst>();
    std::string err = instance_parse_record(value, &inst->def);
    if (!err.empty() || inst->def.id != key) {
      log::error("virt", "instance record '{}' is unreadable ({}): ignored", key, err);
      return true;
    }
    if (inst->def.state != "paused") inst->def.state = "running";
    inst->ports_reserved = true;
    ctx_.hv.ports().reserve_exact(inst->def.port);
    ctx_.hv.ports().reserve_exact(inst->def.ssh_port);
    insts_[inst->def.id] = inst;
    return true;
  });
  ctx_.hv.on_connected([this] { reconcile(); });
  register_operations();
  if (!insts_.empty()) {
    log::info("virt", "{} instance record(s) to re-attach", insts_.size());
    ctx_.hv.start();
  } else {
    // Leftovers of a start that died with the process (a directory, maybe a running domain): reconcile now
    // rather than at the first VM operation.
    std::string idir = ctx_.instances_dir;
    auto any = std::make_shared<bool>(false);
    auto token = ctx_.pending.hold();
    ctx_.loop.queue_work([idir, any] { *any = !files_list(idir).empty(); },
                         [this, any, token](bool) {
                           if (*any && !ctx_.stopping) ctx_.hv.start();
                         });
  }
}

void Instances::stop() {
  for (auto& [id, inst] : insts_) {
    auto s = inst->start.lock();
    if (!s || s->cancelled) continue;
    s->cancelled = true;
    if (s->probe) {
      s->probe->cancel();
      s->probe.reset();
      start_fail(s, CL_ECLOSING, "the server is shutting down");
    }
  }
}

void Instances::publish_state(const Inst& inst, const char* state) {
  std::string p = "{\"id\":";
  json::append_quoted(&p, inst.def.id);
  p += ",\"service_id\":";
  json::append_quoted(&p, inst.def.service_id);
  p += ",\"state\":";
  json::append_quoted(&p, state);
  ctx_.events.publish("instance.state", p + "}");
}

void Instances::commit(const Inst& inst, std::function<void(cl_status_t)> done) {
  InstanceDef d = inst.def;
  if (d.state == "starting" || d.state == "stopping") d.state = "running";  // the record only knows these two
  commit_one(ctx_, kInstancesCollection, d.id, instance_record(d), std::move(done));
}

// ---- operations ------------------------------------------------------------------------------------------

void Instances::register_operations() {
  ctx_.ops.add("instance.start", [this](std::string_view a, Operations::Reply r) { op_start(a, std::move(r)); });
  ctx_.ops.add("instance.stop", [this](std::string_view a, Operations::Reply r) { op_stop(a, std::move(r)); });
  ctx_.ops.add("instance.pause",
               [this](std::string_view a, Operations::Reply r) { op_pause_resume(a, std::move(r), true); });
  ctx_.ops.add("instance.resume",
               [this](std::string_view a, Operations::Reply r) { op_pause_resume(a, std::move(r), false); });
  ctx_.ops.add("instance.get", [this](std::string_view args, Operations::Reply reply) {
    json::Document a;
    json::parse(args, &a, nullptr);
    auto id = json::get_string(a, "id");
    if (!id || !valid_uuid(std::string(*id))) return reply.error(CL_EINVAL, "id must be an instance id (a UUID)");
    auto it = insts_.find(std::string(*id));
    if (it == insts_.end()) return reply.error(CL_ENOENT, fmt::format("no instance '{}'", *id));
    reply(CL_OK, instance_json(it->second->def, wildcard(ctx_.forward_address) ? "" : ctx_.forward_address));
  });
  ctx_.ops.add("instance.list", [this](std::string_view, Operations::Reply reply) {
    std::string out = "{\"instances\":[";
    bool first = true;
    for (auto& [id, inst] : insts_) {
      if (!first) out += ",";
      first = false;
      out += instance_json(inst->def, wildcard(ctx_.forward_address) ? "" : ctx_.forward_address);
    }
    reply(CL_OK, out + "]}");
  });
}

void Instances::op_start(std::string_view args, Operations::Reply reply) {
  json::Document a;
  json::parse(args, &a, nullptr);
  auto sid = json::get_string(a, "service_id");
  if (!sid || !service_id_valid(*sid)) return reply.error(CL_EINVAL, "service_id must be [A-Za-z0-9._-]{1,128}");
  auto s = std::make_shared<Start>();
  s->service_id = std::string(*sid);
  bool bad = false;
  s->join = bool_arg(a, "join", false, &bad);
  s->wait_ready = bool_arg(a, "wait_ready", false, &bad);
  bool wait = bool_arg(a, "wait", true, &bad);
  if (bad) return reply.error(CL_EINVAL, "join, wait_ready and wait must be true or false");
  if (const json::Value* ip = json::member(a, "ip_address"); ip && !ip->IsNull()) {
    if (!ip->IsString() || !numeric_ip({ip->GetString(), ip->GetStringLength()})) {
      return reply.error(CL_EINVAL, "ip_address must be a numeric IPv4 or IPv6 address");
    }
    s->ip_address = ip->GetString();
  }
  if (const json::Value* dev = json::member(a, "device_id"); dev && !dev->IsNull()) {
    if (!dev->IsString() || !Devices::valid_device_id({dev->GetString(), dev->GetStringLength()})) {
      return reply.error(CL_EINVAL, "device_id must be [A-Za-z0-9._:-]{1,128}");
    }
    s->device_id = dev->GetString();
  }
  if (ctx_.stopping) return reply.error(CL_ECLOSING, "the server is shutting down");
  s->token = ctx_.pending.hold();
  s->t0 = ctx_.loop.now_ms();
  std::weak_ptr<Start> weak = s;
  s->job = job_begin(ctx_, "instance.start", s->service_id, wait, reply, [this, weak] {
    auto st = weak.lock();
    if (!st || st->cancelled || st->failed || (st->durable && st->ready)) return;
    st->cancelled = true;
    if (st->probe) {
      st->probe->cancel();
      st->probe.reset();
      start_fail(st, CL_ECANCELED, "cancelled");
    }
  });
  start_instance(s);
}

void Instances::start_instance(std::shared_ptr<Start> s) {
  ctx_.jobs.progress(s->job, 0.05, "looking up the service");
  services_.when_startable(s->service_id, [this, s](cl_status_t st, const std::string& err, const ServiceDef*) {
    if (st != CL_OK) return start_fail(s, st, err);
    if (s->cancelled || ctx_.stopping) return start_fail(s, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
    ctx_.hv.when_connected([this, s](Status connected) {
      if (s->cancelled || ctx_.stopping) return start_fail(s, ctx_.stopping ? CL_ECLOSING : CL_ECANCELED, "cancelled");
      if (!connected.ok()) return start_fail(s, connected.code(), connected.message());
      const ServiceDef* svc = services_.find(s->service_id);
      if (!svc || svc->image.empty()) return start_fail(s, CL_ENOENT, fmt::format("no service '{}'", s->service_id));
      if (s->join && svc->num_users > 0) {
        // Join the instance with room that has been running longest (stable choice; starting ones too).
        std::shared_ptr<Inst> best;
        for (auto& [id, inst] : insts_) {
          if (inst->def.service_id != s->service_id) continue;
          if (inst->def.state != "running" && inst->def.state != "starting") continue;
          if (inst->died || !instance_has_room(inst->def, svc->num_users)) continue;
          if (!best || inst->def.started_ms < best->def.started_ms) best = inst;
        }
        if (best) {
          best->def.users.push_back({s->device_id, wall_ms()});
          std::string id = best->def.id;
          log::info("virt", "instance {} of {}: joined ({} of {} users)", id, s->service_id, best->def.users.size(),
                    svc->num_users);
          auto answer = [this, s, id](cl_status_t st2, const std::string& err2) {
            if (st2 != CL_OK) return start_fail(s, st2, err2);
            auto it = insts_.find(id);
            if (it == insts_.end()) return start_fail(s, CL_EIO, "the instance stopped meanwhile");
            s->ready = s->durable = true;
            std::string ip = wildcard(ctx_.forward_address) ? s->ip_address : ctx_.forward_address;
            ctx_.jobs.finish(s->job, CL_OK, instance_json(it->second->def, ip));
            s->token.reset();
          };
          if (best->def.state == "starting") {
            best->start_waiters.push_back(answer);
          } else {
            commit(*best, [answer](cl_status_t st2) {
              answer(st2, st2 == CL_OK ? "" : "the instance record could not be saved");
            });
          }
          return;
        }
      }
      start_new(s, *svc);
    });
  });
}

void Instances::start_new(std::shared_ptr<Start> s, const ServiceDef& svc) {
  std::vector<uint16_t> ports;
  if (Status reserved = ctx_.hv.ports().reserve_many(2, &ports); !reserved.ok()) {
    return start_fail(s, reserved.code(), reserved.message());
  }
  auto inst = std::make_shared<Inst>();
  InstanceDef& d = inst->def;
  d.id = uuid_generate();
  d.service_id = s->service_id;
  d.name = ctx_.prefix + d.id;
  d.port = ports[0];
  d.ssh_port = ports[1];
  d.ip_address = s->ip_address;
  d.state = "starting";
  d.shared = s->join && svc.num_users > 0;
  d.users.push_back({s->device_id, wall_ms()});
  d.started_ms = wall_ms();
  inst->ports_reserved = true;
  inst->start = s;
  s->id = d.id;
  s->svc = svc;
  insts_[d.id] = inst;
  start_restore(s);
}

void Instances::start_restore(std::shared_ptr<Start> s) {
  auto it = insts_.find(s->id);
  if (it == insts_.end()) return start_fail(s, CL_EIO, "the instance vanished");
  const InstanceDef& d = it->second->def;
  ctx_.jobs.progress(s->job, 0.2, fmt::format("restoring {} (ports {}, {})", d.name, d.port, d.ssh_port));
  struct Work {
    std::string dir, image_dir, name;
    InstanceIdentity id;
  };
  auto w = std::make_shared<Work>();
  w->dir = dir(d.id);
  w->image_dir = services_.image_dir(s->svc);
  w->name = d.name;
  w->id.name = d.name;
  w->id.uuid = d.id;
  w->id.disk_path = w->dir + "/disk.qcow2";
  w->id.console_log = w->dir + "/console.log";
  w->id.forwards = {{ctx_.forward_address, d.port, s->svc.port}, {ctx_.forward_address, d.ssh_port, 22}};
  struct Result {
    Status error;
    std::string restore_error;
    bool restored = false;
    int vnc = -1;
    uint64_t restore_ms = 0;
  };
  ctx_.hv.connection().call<Result>(
      [w](virConnectPtr conn) -> Result {
        // Every failure here is the server's (CL_EIO): the service's files are its own, even a missing one.
        Result r;
        if (auto e = files_make_dirs(w->dir, 0700); !e.ok()) {
          r.error = Status::io(e.message());
          return r;
        }
        if (auto e = qemu_img::create_overlay_sync(w->image_dir + "/disk.qcow2", "qcow2", w->id.disk_path); !e.ok()) {
          remove_instance_dir(w->dir);
          r.error = Status::io("the instance's disk: " + e.message());
          return r;
        }
        std::string state = w->image_dir + "/state.sav";
        SaveImage img;
        std::string err;
        if (auto e = save_image_read(state, &img); !e.ok()) {
          err = e.message();
        } else if (std::string xml; !(e = domain_xml_rewrite(img.xml, w->id, &xml)).ok()) {
          err = e.message();
        } else {
          RestoreOptions ro;
          ro.fifo_path = w->dir + "/restore.fifo";
          virDomainPtr dom = nullptr;
          if (auto e2 = save_image_restore_as(conn, state, xml, ro, &dom); !e2.ok()) {
            err = e2.message();
          } else {
            virDomainFree(dom);
            r.restored = true;
          }
        }
        if (!r.restored) {
          r.restore_error = err;
          // A port taken under us fails the cold boot the same way: let the caller retry with other ports.
          if (!port_conflict(err)) {
            std::string saved, xml;
            err.clear();
            if (auto e = files_read(w->image_dir + "/domain.xml", &saved); !e.ok()) {
              err = e.message();
            } else if (auto e2 = domain_xml_rewrite(saved, w->id, &xml); !e2.ok()) {
              err = e2.message();
            }
            if (!xml.empty()) err = domain_create(conn, xml).message();
            if (err.empty()) {
              r.vnc = domain_vnc_port(conn, w->id.uuid);
              return r;
            }
          }
          if (auto e = domain_destroy(conn, w->id.uuid); !e.ok()) {
            log::warn("virt", "instance {}: cannot destroy its VM after a failed start: {}", w->id.uuid, e.message());
          }
          remove_instance_dir(w->dir);
          r.error = Status::io(port_conflict(err) ? err
                                                  : fmt::format("restoring the saved state failed ({}) and so did a "
                                                                "cold boot of the disk ({})",
                                                                r.restore_error, err));
          return r;
        }
        r.vnc = domain_vnc_port(conn, w->id.uuid);
        return r;
      },
      [this, s](Result r, Status call) {
        auto it2 = insts_.find(s->id);
        if (it2 == insts_.end()) return start_fail(s, CL_EIO, "the instance vanished");
        auto inst = it2->second;
        if (!r.error.ok() || !call.ok()) {
          if (r.error.ok()) return start_fail(s, CL_EUNAVAIL, call.message());
          if (port_conflict(r.error.message()) && s->port_retries < kPortRetries && !s->cancelled) {
            s->port_retries++;
            log::warn("virt", "instance {}: a host port was taken meanwhile ({}); retrying with other ports", s->id,
                      r.error.message());
            auto& pa = ctx_.hv.ports();
            std::vector<uint16_t> fresh;
            Status reserved = pa.reserve_many(2, &fresh);
            pa.release(inst->def.port);
            pa.release(inst->def.ssh_port);
            if (!reserved.ok()) {
              inst->ports_reserved = false;
              log::warn("virt", "instance {}: {}", s->id, reserved.message());
              return start_fail(s, CL_EBUSY, "no free host port");
            }
            inst->def.port = fresh[0];
            inst->def.ssh_port = fresh[1];
            return start_restore(s);
          }
          return start_fail(s, r.error.code(), r.error.message());
        }
        inst->def.memory_restored = r.restored;
        inst->def.vnc_port = r.vnc;
        s->running = true;
        s->restored_ms = ctx_.loop.now_ms() - s->t0;
        if (!r.restored) {
          log::warn("virt", "instance {} of {}: the saved state could not be restored ({}): cold booted instead, its "
                    "memory state is lost", s->id, s->service_id, r.restore_error);
        }
        if (s->cancelled || inst->died || ctx_.stopping) {
          return start_fail(s, ctx_.stopping ? CL_ECLOSING : s->cancelled ? CL_ECANCELED : CL_EIO,
                            inst->died ? "the VM stopped right after it started" : "cancelled");
        }
        start_running(s);
      });
}

void Instances::start_running(std::shared_ptr<Start> s) {
  auto inst = insts_.at(s->id);
  ctx_.jobs.progress(s->job, 0.8, s->wait_ready ? "waiting for the service to answer" : "saving the record");
  start_commit(s, *inst);
  if (!s->wait_ready) {
    s->ready = true;
    return;
  }
  PortProbeOptions po;
  po.address = probe_address_for(ctx_.forward_address);
  po.port = inst->def.port;
  po.timeout_ms = ctx_.ready_timeout_ms;
  s->probe = PortProbe::start(ctx_.loop, po, [this, s](bool ready, const std::string& detail) {
    s->probe.reset();
    if (!ready) {
      return start_fail(s, CL_ETIMEDOUT, fmt::format("the service did not answer on its port: {}", detail));
    }
    s->ready = true;
    start_answer(s);
  });
}

// Makes the record (with the users it has now) durable, then tries to answer.
void Instances::start_commit(std::shared_ptr<Start> s, Inst& inst) {
  s->committed_users = inst.def.users.size();
  commit(inst, [this, s](cl_status_t st) {
    if (s->failed) return;
    if (st != CL_OK) return start_fail(s, st, "the instance record could not be saved");
    s->durable = true;
    start_answer(s);
  });
}

void Instances::start_answer(std::shared_ptr<Start> s) {
  if (!s->durable || !s->ready || s->failed) return;
  auto it = insts_.find(s->id);
  if (it == insts_.end()) return start_fail(s, CL_EIO, "the instance vanished");
  auto inst = it->second;
  if (inst->def.users.size() != s->committed_users) {
    // Users joined while it started: their shares must be durable before anyone is answered.
    s->durable = false;
    start_commit(s, *inst);
    return;
  }
  inst->def.state = "running";
  inst->start.reset();
  uint64_t ms = ctx_.loop.now_ms() - s->t0;
  log::info("virt", "instance {} of {} {} in {} ms (running after {} ms), port {} ssh {}", s->id, s->service_id,
            inst->def.memory_restored ? "restored" : "cold booted", ms, s->restored_ms, inst->def.port,
            inst->def.ssh_port);
  publish_state(*inst, "running");
  std::string ip = wildcard(ctx_.forward_address) ? s->ip_address : ctx_.forward_address;
  ctx_.jobs.finish(s->job, CL_OK, instance_json(inst->def, ip));
  auto waiters = std::move(inst->start_waiters);
  inst->start_waiters.clear();
  for (auto& w : waiters) w(CL_OK, "");
  s->token.reset();
}

void Instances::start_fail(std::shared_ptr<Start> s, cl_status_t status, const std::string& error) {
  if (s->failed) return;
  s->failed = true;
  if (s->probe) {
    s->probe->cancel();
    s->probe.reset();
  }
  log::warn("virt", "instance start of {} failed: {}", s->service_id, error);
  auto end = [this, s, status, error] {
    ctx_.jobs.finish(s->job, status, error_json(error));
    s->token.reset();
  };
  auto it = s->id.empty() ? insts_.end() : insts_.find(s->id);
  if (it == insts_.end()) return end();
  auto inst = it->second;
  auto waiters = std::move(inst->start_waiters);
  inst->start_waiters.clear();
  for (auto& w : waiters) w(status, error);
  if (s->running) {
    // The VM runs (and may have a record): the full stop path.
    teardown(s->id, true, error, [end](const Status&) { end(); });
    return;
  }
  // The worker already removed what it made; only the memory and the ports are left.
  if (inst->ports_reserved) {
    ctx_.hv.ports().release(inst->def.port);
    ctx_.hv.ports().release(inst->def.ssh_port);
  }
  insts_.erase(it);
  end();
}

void Instances::teardown(const std::string& id, bool destroy, const std::string& why,
                         std::function<void(Status)> done) {
  auto it = insts_.find(id);
  if (it == insts_.end()) return ctx_.loop.defer([done] { done({}); });
  auto inst = it->second;
  std::string prev = inst->def.state;
  inst->def.state = "stopping";
  std::string path = dir(id);
  auto token = ctx_.pending.hold();
  auto after = [this, id, why, done, inst, prev, token](Status err) {
    if (!err.ok()) {
      inst->def.state = prev;
      log::warn("virt", "instance {}: cannot destroy its VM: {}", id, err.message());
      return done(err);
    }
    if (inst->ports_reserved) {
      ctx_.hv.ports().release(inst->def.port);
      ctx_.hv.ports().release(inst->def.ssh_port);
      inst->ports_reserved = false;
    }
    insts_.erase(id);
    log::info("virt", "instance {} of {} stopped: {}", id, inst->def.service_id, why);
    commit_one(ctx_, kInstancesCollection, id, "", [this, inst, done, token](cl_status_t st) {
      if (st != CL_OK) log::error("virt", "instance {}: its record could not be deleted ({})", inst->def.id, st);
      publish_state(*inst, "stopped");
      auto waiters = std::move(inst->stop_waiters);
      inst->stop_waiters.clear();
      std::string out = "{\"id\":";
      json::append_quoted(&out, inst->def.id);
      out += ",\"stopped\":true,\"users\":0}";
      for (auto& w : waiters) w(CL_OK, out);
      done({});
    });
  };
  if (!destroy) {
    ctx_.loop.queue_work([path] { remove_instance_dir(path); }, [after](bool) { after({}); });
    return;
  }
  ctx_.hv.connection().call<Status>(
      [id, path](virConnectPtr conn) -> Status {
        if (auto e = domain_destroy(conn, id); !e.ok()) return e;
        remove_instance_dir(path);
        return {};
      },
      [after](Status r, Status call) { after(r.ok() && !call.ok() ? Status::error(CL_EUNAVAIL, call.message()) : r); });
}

void Instances::op_stop(std::string_view args, Operations::Reply reply) {
  json::Document a;
  json::parse(args, &a, nullptr);
  auto idv = json::get_string(a, "id");
  if (!idv || !valid_uuid(std::string(*idv))) return reply.error(CL_EINVAL, "id must be an instance id (a UUID)");
  std::string id(*idv), device;
  if (const json::Value* dev = json::member(a, "device_id"); dev && !dev->IsNull()) {
    if (!dev->IsString() || !Devices::valid_device_id({dev->GetString(), dev->GetStringLength()})) {
      return reply.error(CL_EINVAL, "device_id must be [A-Za-z0-9._:-]{1,128}");
    }
    device = dev->GetString();
  }
  bool bad = false;
  bool force = bool_arg(a, "force", false, &bad);
  if (bad) return reply.error(CL_EINVAL, "force must be true or false");
  if (force && !reply.caller().may_call(kForceStopGrant)) {
    return reply.error(CL_EPERM, fmt::format("a forced stop ends the instance for every device: plugin '{}' needs "
                                             "the grant '{}'", reply.caller().plugin, kForceStopGrant));
  }
  auto it = insts_.find(id);
  if (it == insts_.end()) return reply.error(CL_ENOENT, fmt::format("no instance '{}'", id));
  auto inst = it->second;
  if (inst->def.state == "starting") return reply.error(CL_EBUSY, fmt::format("instance '{}' is starting", id));
  if (inst->def.state == "stopping") {
    inst->stop_waiters.push_back([reply](cl_status_t st, const std::string& r) { reply(st, r); });
    return;
  }
  if (inst->busy) return reply.error(CL_EBUSY, fmt::format("instance '{}' is being paused or resumed", id));
  auto before = inst->def.users;
  if (force) {
    inst->def.users.clear();
  } else if (!instance_remove_user(&inst->def, device)) {
    return reply.error(CL_EPERM, fmt::format("device '{}' does not use instance '{}'", device, id));
  }
  size_t left = inst->def.users.size();
  if (left > 0) {
    auto token = ctx_.pending.hold();
    commit(*inst, [this, inst, before, left, reply, token](cl_status_t st) {
      if (st != CL_OK) {
        inst->def.users = before;
        return reply.error(st, "the instance record could not be saved");
      }
      log::info("virt", "instance {}: a user left, {} remain", inst->def.id, left);
      std::string out = "{\"id\":";
      json::append_quoted(&out, inst->def.id);
      reply(CL_OK, out + fmt::format(",\"stopped\":false,\"users\":{}}}", left));
    });
    return;
  }
  // Stopping from now on: later stops join this one, joins and starts leave it alone.
  std::string prev = inst->def.state;
  inst->def.state = "stopping";
  inst->stop_waiters.push_back([reply](cl_status_t st, const std::string& r) { reply(st, r); });
  auto fail = [inst, before](cl_status_t st, const std::string& err) {
    inst->def.users = before;
    auto waiters = std::move(inst->stop_waiters);
    inst->stop_waiters.clear();
    for (auto& w : waiters) w(st, error_json(err));
  };
  auto token = ctx_.pending.hold();
  ctx_.hv.when_connected([this, id, inst, prev, force, fail, token](Status connected) {
    inst->def.state = prev;  // teardown takes it from here (and back, if the VM cannot be destroyed)
    if (!connected.ok()) return fail(connected.code(), connected.message());
    teardown(id, true, force ? "stopped (forced)" : "its last user left", [fail](const Status& err) {
      if (!err.ok()) fail(CL_EUNAVAIL, "the VM could not be stopped: " + err.message());
    });
  });
}

void Instances::op_pause_resume(std::string_view args, Operations::Reply reply, bool pause) {
  json::Document a;
  json::parse(args, &a, nullptr);
  auto idv = json::get_string(a, "id");
  if (!idv || !valid_uuid(std::string(*idv))) return reply.error(CL_EINVAL, "id must be an instance id (a UUID)");
  std::string id(*idv);
  auto it = insts_.find(id);
  if (it == insts_.end()) return reply.error(CL_ENOENT, fmt::format("no instance '{}'", id));
  auto inst = it->second;
  const char* want = pause ? "running" : "paused";
  if (inst->busy) return reply.error(CL_EBUSY, fmt::format("instance '{}' is being paused or resumed", id));
  if (inst->def.state != want) {
    return reply.error(CL_ESTATE, fmt::format("instance '{}' is {}, not {}", id, inst->def.state, want));
  }
  inst->busy = true;
  auto token = ctx_.pending.hold();
  ctx_.hv.when_connected([this, id, inst, pause, reply, token](Status connected) {
    if (!connected.ok()) {
      inst->busy = false;
      return reply.error(connected.code(), connected.message());
    }
    ctx_.hv.connection().call<Status>(
        [id, pause](virConnectPtr conn) { return pause ? domain_suspend(conn, id) : domain_resume(conn, id); },
        [this, inst, pause, reply, token](Status r, Status call) {
          inst->busy = false;
          if (!r.ok()) return reply.error(r.code(), r.message());
          if (!call.ok()) return reply.error(CL_EUNAVAIL, call.message());
          if (inst->def.state == "stopping" || !insts_.count(inst->def.id)) {
            return reply.error(CL_ENOENT, fmt::format("instance '{}' stopped meanwhile", inst->def.id));
          }
          inst->def.state = pause ? "paused" : "running";
          commit(*inst, [this, inst, pause, reply, token](cl_status_t st) {
            if (st != CL_OK) return reply.error(st, "the instance record could not be saved");
            publish_state(*inst, pause ? "paused" : "running");
            reply(CL_OK, instance_json(inst->def, wildcard(ctx_.forward_address) ? "" : ctx_.forward_address));
          });
        });
  });
}

// ---- events and reconciliation -----------------------------------------------------------------------------

void Instances::on_domain_event(const DomainEvent& ev) {
  auto it = insts_.find(ev.uuid);
  if (it == insts_.end()) return;
  auto inst = it->second;
  const std::string& state = inst->def.state;
  switch (ev.kind) {
    case DomainEvent::Kind::stopped:
    case DomainEvent::Kind::crashed: {
      if (state == "stopping") return;
      std::string why = fmt::format("its VM {} ({})", DomainEvent::kind_name(ev.kind), ev.detail_name());
      if (state == "starting") {
        inst->died = true;
        if (auto s = inst->start.lock(); s && s->running) {
          if (s->probe) {
            s->probe->cancel();
            s->probe.reset();
          }
          start_fail(s, CL_EIO, why + " while starting");
        }
        return;
      }
      log::warn("virt", "instance {} of {}: {}", inst->def.id, inst->def.service_id, why);
      teardown(inst->def.id, false, why, [](const Status&) {});  // it logs its failures
      return;
    }
    case DomainEvent::Kind::suspended:
    case DomainEvent::Kind::resumed: {
      bool paused = ev.kind == DomainEvent::Kind::suspended;
      if (inst->busy || (paused ? state != "running" : state != "paused")) return;
      inst->def.state = paused ? "paused" : "running";
      auto token = ctx_.pending.hold();
      commit(*inst, [token, id = inst->def.id](cl_status_t st) { log_unsaved(id, st); });
      publish_state(*inst, paused ? "paused" : "running");
      return;
    }
    default:
      return;
  }
}

void Instances::reconcile() {
  if (reconciling_) {
    reconcile_again_ = true;
    return;
  }
  reconciling_ = true;
  reconcile_again_ = false;
  using Listing = std::pair<Status, std::pair<std::vector<DomainInfo>, std::vector<std::string>>>;
  std::string idir = ctx_.instances_dir;
  auto token = ctx_.pending.hold();
  ctx_.hv.connection().call<Listing>(
      [idir](virConnectPtr conn) {
        Listing l;
        if (auto e = files_make_dirs(idir, 0700); !e.ok()) log::warn("virt", "instances directory: {}", e.message());
        l.first = domains_list(conn, &l.second.first);
        l.second.second = files_list(idir);
        return l;
      },
      [this, token](Listing l, Status call) {
        reconciling_ = false;
        std::string err = l.first.ok() ? call.message() : l.first.message();
        if (!err.empty()) {
          log::warn("virt", "cannot reconcile instances with the hypervisor: {}", err);
        } else {
          ReconcileInput in;
          for (auto& [id, inst] : insts_) {
            if (inst->def.state == "starting" || inst->def.state == "stopping" || inst->busy) {
              in.in_flight.insert(id);
            } else {
              in.records.push_back(inst->def);
            }
          }
          in.busy_domains = services_.busy_domains();
          in.domains = std::move(l.second.first);
          in.instance_dirs = std::move(l.second.second);
          in.prefix = ctx_.prefix;
          in.pid_alive = [](int pid) { return kill(pid, 0) == 0 || errno == EPERM; };
          ReconcilePlan plan = reconcile_plan(in);
          for (auto& k : plan.keep) {
            auto it = insts_.find(k.id);
            if (it == insts_.end()) continue;
            const char* want = k.paused ? "paused" : "running";
            if (it->second->def.state != want) {
              it->second->def.state = want;
              commit(*it->second, [id = k.id](cl_status_t st) { log_unsaved(id, st); });
              publish_state(*it->second, want);
            }
            log::info("virt", "instance {} of {} re-attached ({}, port {})", k.id, it->second->def.service_id, want,
                      it->second->def.port);
          }
          for (auto& id : plan.reap) {
            log::info("virt", "instance {}: its VM is gone; removing its record and files", id);
            teardown(id, false, "its VM was gone", [](const Status&) {});  // it logs its failures
          }
          std::vector<std::string> uuids;
          for (auto& d : plan.destroy) {
            log::warn("virt", "destroying stray domain {} ({}): ours, but no record or operation knows it", d.name,
                      d.uuid);
            uuids.push_back(d.uuid);
          }
          std::vector<std::string> dirs;
          for (auto& d : plan.remove_dirs) {
            log::info("virt", "removing stray instance directory {}", dir(d));
            dirs.push_back(dir(d));
          }
          if (!uuids.empty() || !dirs.empty()) {
            auto t2 = ctx_.pending.hold();
            // Domains first: a stray directory may be the disk of a stray domain.
            ctx_.hv.connection().call<int>(
                [uuids, dirs](virConnectPtr conn) {
                  for (auto& u : uuids) {
                    if (auto e = domain_destroy(conn, u); !e.ok()) log::warn("virt", "destroy {}: {}", u, e.message());
                  }
                  for (auto& d : dirs) remove_instance_dir(d);
                  return 0;
                },
                [t2](int, Status cleanup) {
                  if (!cleanup.ok()) log::warn("virt", "cleaning up after reconciliation: {}", cleanup.message());
                });
          }
        }
        if (reconcile_again_) reconcile();
      });
}

}  // namespace cloudlet::virt
