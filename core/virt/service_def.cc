#include "virt/service_def.h"

#include <fmt/format.h>

#include <charconv>

namespace cloudlet::virt {

using json::put_string;

namespace {

// Printable text without control characters (descriptions go into HTML pages and logs).
bool clean_text(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 && c != '\t') return false;
  return true;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) b++;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) e--;
  return std::string(s.substr(b, e - b));
}

}  // namespace

bool service_id_valid(std::string_view id) {
  if (id.empty() || id.size() > kMaxServiceId || id == "." || id == "..") return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok) return false;
  }
  return true;
}

int64_t service_memory_mib(const ServiceDef& s) {
  if (s.ideal_memory > 0) return s.ideal_memory;
  if (s.min_memory > 0) return s.min_memory;
  return kDefaultMemoryMib;
}

Status json_int_member(const json::Value& obj, const char* key, int64_t min, int64_t max, int64_t* out, bool* present) {
  const json::Value* v = json::member(obj, key);
  if (present) *present = v != nullptr && !v->IsNull();
  if (!v || v->IsNull()) return Status();
  int64_t n = 0;
  bool ok = false;
  if (v->IsInt64()) {
    n = v->GetInt64();
    ok = true;
  } else if (v->IsString()) {
    std::string_view s(v->GetString(), v->GetStringLength());
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    ok = !s.empty() && ec == std::errc() && p == s.data() + s.size();
  }
  if (!ok || n < min || n > max)
    return Status::invalid(fmt::format("{} must be an integer from {} to {}", key, min, max));
  *out = n;
  return Status();
}

Status service_apply_metadata(const json::Value& args, ServiceDef* def, bool allow_port) {
  ServiceDef d = *def;
  auto fail = [](std::string msg) { return Status::invalid(std::move(msg)); };
  auto text = [&](const char* key, size_t max, std::string* out) -> Status {
    const json::Value* v = json::member(args, key);
    if (!v || v->IsNull()) return Status();
    if (!v->IsString() || v->GetStringLength() > max || !clean_text({v->GetString(), v->GetStringLength()})) {
      return fail(fmt::format("{} must be a string of at most {} characters without control characters", key, max));
    }
    *out = trim({v->GetString(), v->GetStringLength()});
    return Status();
  };
  if (Status e = text("description", kMaxDescription, &d.description); !e.ok()) return e;
  if (Status e = text("version", kMaxVersion, &d.version); !e.ok()) return e;
  if (const json::Value* t = json::member(args, "tags"); t && !t->IsNull()) {
    // A list, or one comma-separated string (what a form sends).
    std::vector<std::string> raw;
    if (t->IsArray()) {
      for (const auto& e : t->GetArray()) {
        if (!e.IsString()) return fail("tags must be strings");
        raw.emplace_back(e.GetString(), e.GetStringLength());
      }
    } else if (t->IsString()) {
      std::string_view s(t->GetString(), t->GetStringLength());
      size_t start = 0;
      while (start <= s.size()) {
        size_t c = s.find(',', start);
        raw.emplace_back(s.substr(start, c == std::string_view::npos ? std::string_view::npos : c - start));
        if (c == std::string_view::npos) break;
        start = c + 1;
      }
    } else {
      return fail("tags must be a list of strings");
    }
    d.tags.clear();
    for (auto& r : raw) {
      std::string tag = trim(r);
      if (tag.empty()) continue;
      if (tag.size() > kMaxTag || !clean_text(tag)) {
        return fail(fmt::format("a tag must be at most {} characters", kMaxTag));
      }
      bool dup = false;
      for (auto& x : d.tags) dup = dup || x == tag;
      if (!dup) d.tags.push_back(std::move(tag));
    }
    if (d.tags.size() > kMaxTags) return fail(fmt::format("at most {} tags", kMaxTags));
  }
  int64_t port = d.port;
  bool has_port = false;
  if (allow_port) {
    if (Status e = json_int_member(args, "port", 1, 65535, &port, &has_port); !e.ok()) return e;
    d.port = static_cast<uint16_t>(port);
  } else if (json::member(args, "port")) {
    return fail("port cannot change: it is part of the saved guest (create a new service instead)");
  }
  if (Status e = json_int_member(args, "num_users", 0, kMaxUsers, &d.num_users, nullptr); !e.ok()) return e;
  bool has_min = false, has_ideal = false;
  if (Status e = json_int_member(args, "min_memory", 0, kMaxMemoryMib, &d.min_memory, &has_min); !e.ok()) return e;
  if (Status e = json_int_member(args, "ideal_memory", 0, kMaxMemoryMib, &d.ideal_memory, &has_ideal); !e.ok()) {
    return e;
  }
  for (int64_t m : {d.min_memory, d.ideal_memory}) {
    if (m != 0 && m < 16) return fail("memory sizes are in MiB: at least 16 (or 0 for the default)");
  }
  if (d.min_memory > 0 && d.ideal_memory > 0 && d.ideal_memory < d.min_memory) {
    return fail("ideal_memory must not be less than min_memory");
  }
  *def = std::move(d);
  return Status();
}

namespace {

// The fields the stored record and the operations' answers share.
void put_metadata(json::Writer& w, const ServiceDef& s) {
  put_string(w, "service_id", s.service_id);
  put_string(w, "description", s.description);
  put_string(w, "version", s.version);
  w.Key("tags");
  w.StartArray();
  for (auto& t : s.tags) w.String(t.c_str(), static_cast<rapidjson::SizeType>(t.size()));
  w.EndArray();
  w.Key("port");
  w.Uint(s.port);
  w.Key("num_users");
  w.Int64(s.num_users);
  w.Key("min_memory");
  w.Int64(s.min_memory);
  w.Key("ideal_memory");
  w.Int64(s.ideal_memory);
}

}  // namespace

std::string service_record(const ServiceDef& s) {
  rapidjson::StringBuffer b;
  json::Writer w(b);
  w.StartObject();
  put_metadata(w, s);
  put_string(w, "image", s.image);
  w.Key("kernel_boot");
  w.Bool(s.kernel_boot);
  w.Key("has_initrd");
  w.Bool(s.has_initrd);
  put_string(w, "cmdline", s.cmdline);
  w.Key("created_ms");
  w.Int64(s.created_ms);
  w.Key("refreshed_ms");
  w.Int64(s.refreshed_ms);
  w.EndObject();
  return std::string(b.GetString(), b.GetSize());
}

Status service_parse_record(std::string_view text, ServiceDef* out) {
  json::Document d;
  std::string err;
  if (!json::parse(text, &d, &err) || !d.IsObject()) return Status::invalid("not a JSON object: " + err);
  ServiceDef s;
  auto id = json::get_string(d, "service_id");
  if (!id || !service_id_valid(*id)) return Status::invalid("bad service_id");
  s.service_id = std::string(*id);
  if (Status e = service_apply_metadata(d, &s, true); !e.ok()) return e;
  if (s.port == 0) return Status::invalid("no port");
  s.image = std::string(json::get_string(d, "image").value_or(""));
  if (!s.image.empty() && s.image.rfind("image-", 0) != 0) return Status::invalid("bad image");
  s.kernel_boot = json::get_bool(d, "kernel_boot").value_or(false);
  s.has_initrd = json::get_bool(d, "has_initrd").value_or(false);
  s.cmdline = std::string(json::get_string(d, "cmdline").value_or(""));
  s.created_ms = json::get_int(d, "created_ms").value_or(0);
  s.refreshed_ms = json::get_int(d, "refreshed_ms").value_or(0);
  *out = std::move(s);
  return Status();
}

std::string service_json(const ServiceDef& s, bool state_saved, int64_t instances) {
  rapidjson::StringBuffer b;
  json::Writer w(b);
  w.StartObject();
  put_metadata(w, s);
  w.Key("state_saved");
  w.Bool(state_saved);
  w.Key("instances");
  w.Int64(instances);
  w.EndObject();
  return std::string(b.GetString(), b.GetSize());
}

}  // namespace cloudlet::virt
