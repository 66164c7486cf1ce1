#include "virt/instance_def.h"

#include "json/json.h"
#include "virt/domain_xml.h"
#include "virt/service_def.h"

namespace cloudlet::virt {

using json::put_string;

namespace {

// The store document and the operations' object share one writer: the fields both carry are written once, in
// the same order; `stored` selects the few that differ (users as a list with times vs a count, the VNC port vs
// its address, the state as stored vs as clients see it).
std::string write_instance(const InstanceDef& i, bool stored, const std::string& ip_address) {
  rapidjson::StringBuffer b;
  json::Writer w(b);
  w.StartObject();
  put_string(w, "id", i.id);
  put_string(w, "service_id", i.service_id);
  put_string(w, "name", i.name);
  w.Key("port");
  w.Uint(i.port);
  w.Key("ssh_port");
  w.Uint(i.ssh_port);
  put_string(w, "ip_address", ip_address.empty() ? i.ip_address : ip_address);
  if (stored) {
    w.Key("vnc_port");
    w.Int(i.vnc_port);
    put_string(w, "state", i.state);
  } else {
    w.Key("vnc_address");
    if (i.vnc_port > 0) {
      std::string v = "127.0.0.1:" + std::to_string(i.vnc_port);
      w.String(v.c_str(), static_cast<rapidjson::SizeType>(v.size()));
    } else {
      w.Null();
    }
    w.Key("fqdn");
    w.Null();
    // The contract's states: an instance being stopped is already gone for its clients.
    put_string(w, "state", i.state == "stopping" ? std::string("stopped") : i.state);
  }
  w.Key("memory_restored");
  w.Bool(i.memory_restored);
  w.Key("shared");
  w.Bool(i.shared);
  w.Key("users");
  if (stored) {
    w.StartArray();
    for (auto& u : i.users) {
      w.StartObject();
      put_string(w, "device_id", u.device_id);
      w.Key("since_ms");
      w.Int64(u.since_ms);
      w.EndObject();
    }
    w.EndArray();
  } else {
    w.Uint64(i.users.size());
  }
  w.Key("started_ms");
  w.Int64(i.started_ms);
  w.EndObject();
  return std::string(b.GetString(), b.GetSize());
}

}  // namespace

std::string instance_record(const InstanceDef& i) { return write_instance(i, true, {}); }

std::string instance_parse_record(std::string_view text, InstanceDef* out) {
  json::Document d;
  std::string err;
  if (!json::parse(text, &d, &err) || !d.IsObject()) return "not a JSON object: " + err;
  InstanceDef i;
  i.id = std::string(json::get_string(d, "id").value_or(""));
  i.service_id = std::string(json::get_string(d, "service_id").value_or(""));
  i.name = std::string(json::get_string(d, "name").value_or(""));
  if (!valid_uuid(i.id) || !service_id_valid(i.service_id) || !valid_domain_name(i.name)) return "bad identity";
  auto port = json::get_int(d, "port").value_or(0), ssh = json::get_int(d, "ssh_port").value_or(0);
  if (port <= 0 || port > 65535 || ssh <= 0 || ssh > 65535) return "bad ports";
  i.port = static_cast<uint16_t>(port);
  i.ssh_port = static_cast<uint16_t>(ssh);
  i.ip_address = std::string(json::get_string(d, "ip_address").value_or(""));
  i.vnc_port = static_cast<int>(json::get_int(d, "vnc_port").value_or(-1));
  i.state = std::string(json::get_string(d, "state").value_or("running"));
  i.memory_restored = json::get_bool(d, "memory_restored").value_or(false);
  i.shared = json::get_bool(d, "shared").value_or(false);
  if (const json::Value* users = json::member(d, "users"); users && users->IsArray()) {
    for (const auto& u : users->GetArray()) {
      if (!u.IsObject()) continue;
      InstanceUser iu;
      iu.device_id = std::string(json::get_string(u, "device_id").value_or(""));
      iu.since_ms = json::get_int(u, "since_ms").value_or(0);
      i.users.push_back(std::move(iu));
    }
  }
  i.started_ms = json::get_int(d, "started_ms").value_or(0);
  *out = std::move(i);
  return {};
}

std::string instance_json(const InstanceDef& i, const std::string& ip_address) {
  return write_instance(i, false, ip_address);
}

bool instance_remove_user(InstanceDef* i, const std::string& device_id) {
  auto& u = i->users;
  if (u.empty()) return true;
  auto take = [&](size_t k) {
    u.erase(u.begin() + static_cast<std::ptrdiff_t>(k));
    return true;
  };
  if (!device_id.empty()) {
    for (size_t k = u.size(); k-- > 0;)
      if (u[k].device_id == device_id) return take(k);
  }
  for (size_t k = u.size(); k-- > 0;)
    if (u[k].device_id.empty()) return take(k);
  if (!device_id.empty()) return false;
  return take(u.size() - 1);
}

bool instance_has_room(const InstanceDef& i, int64_t num_users) {
  return i.shared && num_users > 0 && static_cast<int64_t>(i.users.size()) < num_users;
}

}  // namespace cloudlet::virt
