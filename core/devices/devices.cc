#include "devices/devices.h"

#include <openssl/rand.h>

#include <fmt/format.h>

#include <optional>
#include <vector>

#include "devices/op_util.h"
#include "events/bus.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "store/store.h"
#include "system/digest.h"

namespace cloudlet {

namespace {

constexpr const char* kDevices = "devices";
constexpr int64_t kMaxDurationS = 10LL * 366 * 24 * 3600;

const char* state_of(const json::Value& d, int64_t now) {
  if (d["revoked"].GetBool()) return "revoked";
  int64_t end = d["auth_start_ms"].GetInt64() + d["auth_duration_s"].GetInt64() * 1000;
  return now >= end ? "expired" : "ok";
}

int64_t end_of(const json::Value& d) { return d["auth_start_ms"].GetInt64() + d["auth_duration_s"].GetInt64() * 1000; }

// The public view of a device: everything but its password.
std::string view(const json::Value& d, int64_t now) {
  rapidjson::StringBuffer buf;
  json::Writer w(buf);
  w.StartObject();
  w.Key("device_id");
  w.String(d["device_id"].GetString());
  w.Key("type");
  w.String(d["type"].GetString());
  w.Key("connection_id");
  w.String(d["connection_id"].GetString());
  w.Key("paired_ms");
  w.Int64(d["paired_ms"].GetInt64());
  w.Key("auth_start_ms");
  w.Int64(d["auth_start_ms"].GetInt64());
  w.Key("auth_duration_s");
  w.Int64(d["auth_duration_s"].GetInt64());
  w.Key("auth_end_ms");
  w.Int64(end_of(d));
  w.Key("revoked");
  w.Bool(d["revoked"].GetBool());
  w.Key("state");
  w.String(state_of(d, now));
  w.Key("instances");
  d["instances"].Accept(w);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

bool load(Store& store, std::string_view id, json::Document* doc) {
  std::string text;
  if (store.get(kDevices, id, &text) != CL_OK) return false;
  return json::parse(text, doc, nullptr) && doc->IsObject();
}

// The paired device an operation's "device_id" names, loaded into *d; nullopt once it has answered CL_EINVAL
// (missing or malformed id) or CL_ENOENT (not paired).
std::optional<std::string> named_device(Store& store, std::string_view args, const Operations::Reply& reply,
                                        json::Document* d) {
  json::Document a = devices::args_of(args);
  auto id = json::get_string(a, "device_id");
  if (!id || !Devices::valid_device_id(*id)) {
    reply.error(CL_EINVAL, "device_id is required");
    return std::nullopt;
  }
  if (!load(store, *id, d)) {
    reply.error(CL_ENOENT, "device " + std::string(*id) + " is not paired");
    return std::nullopt;
  }
  return std::string(*id);
}

// The instances a device uses (its record's "instances").
std::vector<std::string> instances_of(const json::Value& d) {
  std::vector<std::string> out;
  for (const auto& i : d["instances"].GetArray()) out.emplace_back(i.GetString());
  return out;
}

}  // namespace

using devices::args_of;
using devices::printable;
using devices::put_durable;

bool Devices::valid_device_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == ':' || c == '-')) {
      return false;
    }
  }
  return true;
}

bool Devices::valid_service_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

Devices::Devices(Loop& loop, Store& store, Operations& ops, EventBus& events)
    : loop_(loop), store_(store), ops_(ops), events_(events), mailbox_(store, ops) {}

Devices::~Devices() { stop(); }

void Devices::stop() {
  for (auto& [id, t] : timers_) loop_.timer_stop(t);
  timers_.clear();
  if (sub_) events_.unsubscribe(sub_);
  sub_ = 0;
}

void Devices::arm(const std::string& device_id, int64_t end_ms) {
  disarm(device_id);
  int64_t wait = end_ms - wall_ms();
  uint64_t delay = wait > 0 ? static_cast<uint64_t>(wait) : 0;
  timers_[device_id] = loop_.timer_start(delay, 0, [this, device_id] {
    timers_.erase(device_id);
    json::Document d;
    if (!load(store_, device_id, &d)) return;
    if (wall_ms() < end_of(d)) {  // the window was extended meanwhile
      arm(device_id, end_of(d));
      return;
    }
    log::info("devices", "authorization of device {} ended", device_id);
    leave_instances(device_id, instances_of(d), "authorization ended");
    events_.publish("device.changed", fmt::format("{{\"device_id\":\"{}\",\"state\":\"expired\"}}", device_id));
  });
}

void Devices::disarm(const std::string& device_id) {
  auto it = timers_.find(device_id);
  if (it == timers_.end()) return;
  loop_.timer_stop(it->second);
  timers_.erase(it);
}

void Devices::leave_instances(const std::string& device_id, const std::vector<std::string>& instances,
                              const char* why) {
  for (const auto& id : instances) {
    std::string args = "{\"id\":";
    json::append_quoted(&args, id);
    args += ",\"device_id\":";
    json::append_quoted(&args, device_id);
    args += "}";
    cl_status_t st = ops_.call("instance.stop", args, [device_id, id, why](cl_status_t s, std::string_view r) {
      if (s == CL_OK) {
        log::info("devices", "device {} left instance {} ({}): {}", device_id, id, why, r);
      } else if (s != CL_ENOENT) {
        log::warn("devices", "device {}: stopping instance {} failed: {}", device_id, id, r);
      }
    });
    if (st != CL_OK) log::warn("devices", "cannot stop instance {} of device {}: no instance service", id, device_id);
  }
}

// An instance stopped (by anyone): forget it in every device that used it.
void Devices::on_instance_state(std::string_view payload) {
  json::Document ev;
  if (!json::parse(payload, &ev, nullptr) || !ev.IsObject()) return;
  auto state = json::get_string(ev, "state");
  auto id = json::get_string(ev, "id");
  if (!state || !id || *state != "stopped") return;
  std::vector<std::pair<std::string, std::string>> updates;
  store_.scan(kDevices, "", [&](std::string_view key, std::string_view value) {
    json::Document d;
    if (!json::parse(value, &d, nullptr) || !d.IsObject()) return true;
    auto& list = d["instances"];
    bool changed = false;
    for (auto it = list.Begin(); it != list.End();) {
      if (std::string_view(it->GetString(), it->GetStringLength()) == *id) {
        it = list.Erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
    if (changed) updates.emplace_back(std::string(key), json::stringify(d));
    return true;
  });
  if (updates.empty()) return;
  auto txn = store_.begin();
  if (!txn) return;
  for (auto& [k, v] : updates) txn->put(kDevices, k, v);
  store_.commit(std::move(txn), {});
}

void Devices::start() {
  // Re-arm every window; those that ended while the server was down fire at once.
  std::vector<std::pair<std::string, int64_t>> windows;
  store_.scan(kDevices, "", [&](std::string_view key, std::string_view value) {
    json::Document d;
    if (json::parse(value, &d, nullptr) && d.IsObject() && !d["revoked"].GetBool()) {
      windows.emplace_back(std::string(key), end_of(d));
    }
    return true;
  });
  for (auto& [id, end] : windows) arm(id, end);
  sub_ = events_.subscribe("instance.state", [this](std::string_view, std::string_view p) { on_instance_state(p); });

  // Privileged: pairing, revoking and unpairing change who may use the cloudlet, and device.auth hands out a
  // device's API password; a plugin needs a grant for them (see Operations).
  using Method = void (Devices::*)(std::string_view, Operations::Reply);
  struct Entry {
    const char* name;
    Method method;
    uint32_t flags;
  };
  const Entry operations[] = {
      {"device.pair", &Devices::pair, CL_OP_F_PRIVILEGED},     {"device.list", &Devices::list, 0},
      {"device.get", &Devices::get, 0},                        {"device.auth", &Devices::auth, CL_OP_F_PRIVILEGED},
      {"device.revoke", &Devices::revoke, CL_OP_F_PRIVILEGED}, {"device.unpair", &Devices::unpair, CL_OP_F_PRIVILEGED},
      {"device.attach", &Devices::attach, 0},
  };
  for (const Entry& e : operations) {
    Method method = e.method;
    ops_.add(
        e.name, [this, method](std::string_view args, Operations::Reply reply) { (this->*method)(args, reply); },
        nullptr, e.flags);
  }
  mailbox_.start();
}

void Devices::pair(std::string_view args, Operations::Reply reply) {
  std::string by = reply.caller().by();
  json::Document a = args_of(args);
  auto id = json::get_string(a, "device_id");
  auto duration = json::get_int(a, "duration_s");
  auto type = json::get_string(a, "type").value_or("mobile");
  auto conn = json::get_string(a, "connection_id").value_or("");
  if (!id || !valid_device_id(*id)) return reply.error(CL_EINVAL, "device_id must be [A-Za-z0-9._:-]{1,128}");
  if (!duration || *duration <= 0 || *duration > kMaxDurationS) {
    return reply.error(CL_EINVAL, "duration_s must be a positive number of seconds (at most ten years)");
  }
  if (type != "mobile" && type != "cloudlet") return reply.error(CL_EINVAL, "type must be mobile or cloudlet");
  if (!printable(conn, 128)) return reply.error(CL_EINVAL, "connection_id must be printable, at most 128 bytes");
  std::string existing;
  if (store_.get(kDevices, *id, &existing) == CL_OK) {
    return reply.error(CL_EEXIST, "device " + std::string(*id) + " is already paired");
  }
  unsigned char key[32];
  if (RAND_bytes(key, sizeof key) != 1) return reply.error(CL_EIO, "no randomness available");
  std::string device_key = hex_encode(key, sizeof key);
  OPENSSL_cleanse(key, sizeof key);
  std::string password = sha256_hex(device_key);
  int64_t now = wall_ms();
  json::Document d(rapidjson::kObjectType);
  auto& al = d.GetAllocator();
  d.AddMember("device_id", json::Value(id->data(), static_cast<rapidjson::SizeType>(id->size()), al), al);
  d.AddMember("type", json::Value(type.data(), static_cast<rapidjson::SizeType>(type.size()), al), al);
  d.AddMember("connection_id", json::Value(conn.data(), static_cast<rapidjson::SizeType>(conn.size()), al), al);
  d.AddMember("api_password", json::Value(password.c_str(), al), al);
  d.AddMember("paired_ms", now, al);
  d.AddMember("auth_start_ms", now, al);
  d.AddMember("auth_duration_s", *duration, al);
  d.AddMember("revoked", false, al);
  d.AddMember("instances", json::Value(rapidjson::kArrayType), al);
  std::string v = view(d, now);
  // The key goes to the caller once; only its hash is kept.
  std::string answer = v.substr(0, v.size() - 1) + ",\"device_key\":\"" + device_key + "\",\"api_password\":\"" +
                       password + "\"}";
  std::string device_id(*id);
  put_durable(store_, kDevices, device_id, json::stringify(d), reply, answer);
  arm(device_id, now + *duration * 1000);
  log::info("devices", "paired device {} for {} s{}", device_id, *duration, by);
  events_.publish("device.changed", fmt::format("{{\"device_id\":\"{}\",\"state\":\"ok\"}}", device_id));
}

void Devices::list(std::string_view, Operations::Reply reply) {
  int64_t now = wall_ms();
  std::string out = "{\"devices\":[";
  bool first = true;
  store_.scan(kDevices, "", [&](std::string_view, std::string_view value) {
    json::Document d;
    if (json::parse(value, &d, nullptr) && d.IsObject()) {
      if (!first) out += ",";
      first = false;
      out += view(d, now);
    }
    return true;
  });
  reply(CL_OK, out + "]}");
}

void Devices::get(std::string_view args, Operations::Reply reply) {
  json::Document d;
  if (!named_device(store_, args, reply, &d)) return;
  reply(CL_OK, view(d, wall_ms()));
}

void Devices::auth(std::string_view args, Operations::Reply reply) {
  json::Document a = args_of(args);
  auto id = json::get_string(a, "device_id");
  json::Document d;
  if (!id || !valid_device_id(*id) || !load(store_, *id, &d)) {
    return reply.error(CL_ENOENT, "device is not paired to this cloudlet");
  }
  std::string out = "{\"device_id\":";
  json::append_quoted(&out, *id);
  out += fmt::format(",\"state\":\"{}\",\"api_password\":\"{}\",\"type\":\"{}\"}}", state_of(d, wall_ms()),
                     d["api_password"].GetString(), d["type"].GetString());
  reply(CL_OK, out);
}

void Devices::revoke(std::string_view args, Operations::Reply reply) {
  std::string by = reply.caller().by();
  json::Document d;
  std::optional<std::string> named = named_device(store_, args, reply, &d);
  if (!named) return;
  const std::string& device_id = *named;
  std::vector<std::string> instances = instances_of(d);
  d["revoked"].SetBool(true);
  put_durable(store_, kDevices, device_id, json::stringify(d), reply, view(d, wall_ms()));
  disarm(device_id);
  leave_instances(device_id, instances, "revoked");
  log::info("devices", "revoked device {}{}", device_id, by);
  events_.publish("device.changed", fmt::format("{{\"device_id\":\"{}\",\"state\":\"revoked\"}}", device_id));
}

void Devices::unpair(std::string_view args, Operations::Reply reply) {
  std::string by = reply.caller().by();
  json::Document d;
  std::optional<std::string> named = named_device(store_, args, reply, &d);
  if (!named) return;
  const std::string& device_id = *named;
  std::vector<std::string> instances = instances_of(d);
  cl_status_t st = CL_OK;
  auto txn = store_.begin(&st);
  if (!txn) return reply.error(st, "the store is busy");
  txn->del(kDevices, device_id);
  size_t deleted = mailbox_delete_device(store_, *txn, device_id);
  store_.commit(std::move(txn), [reply](cl_status_t s) {
    if (s != CL_OK) return reply.error(s, "the store could not write the change");
    reply(CL_OK, "{}");
  });
  disarm(device_id);
  leave_instances(device_id, instances, "unpaired");
  log::info("devices", "unpaired device {} ({} message(s) deleted){}", device_id, deleted, by);
  events_.publish("device.changed", fmt::format("{{\"device_id\":\"{}\",\"state\":\"unpaired\"}}", device_id));
}

void Devices::attach(std::string_view args, Operations::Reply reply) {
  json::Document a = args_of(args);
  auto id = json::get_string(a, "device_id");
  auto inst = json::get_string(a, "instance_id");
  json::Document d;
  if (!id || !inst || !valid_device_id(*id) || inst->empty() || inst->size() > 64) {
    return reply.error(CL_EINVAL, "device_id and instance_id are required");
  }
  if (!load(store_, *id, &d)) return reply.error(CL_ENOENT, "device " + std::string(*id) + " is not paired");
  auto& list = d["instances"];
  for (const auto& i : list.GetArray()) {
    if (std::string_view(i.GetString(), i.GetStringLength()) == *inst) return reply(CL_OK, "{}");
  }
  list.PushBack(json::Value(inst->data(), static_cast<rapidjson::SizeType>(inst->size()), d.GetAllocator()),
                d.GetAllocator());
  put_durable(store_, kDevices, *id, json::stringify(d), reply, "{}");
}

}  // namespace cloudlet
