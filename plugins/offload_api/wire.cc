#include "wire.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "json/json.h"

namespace cloudlet::offload {

namespace {

using json::member;
using json::put_string;
using json::Value;
using json::Writer;

// An operation result: a JSON object (core/json: iterative, depth-limited).
bool parse(std::string_view text, json::Document* d) { return json::parse(text, d, nullptr) && d->IsObject(); }

// Any scalar as text: phones call getString, and desktop org.json returns null for non-strings.
std::string text_of(const Value* v) {
  if (!v || v->IsNull()) return "";
  if (v->IsString()) return std::string(v->GetString(), v->GetStringLength());
  if (v->IsBool()) return v->GetBool() ? "true" : "false";
  if (v->IsInt64()) return std::to_string(v->GetInt64());
  if (v->IsUint64()) return std::to_string(v->GetUint64());
  if (v->IsNumber()) {
    rapidjson::StringBuffer b;
    Writer w(b);
    w.Double(v->GetDouble());
    return std::string(b.GetString(), b.GetSize());
  }
  return "";
}

void put_string(Writer& w, const char* key, const Value* v) {
  w.Key(key);
  std::string s = text_of(v);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// A string, or null when the value is absent, null or empty.
void put_string_or_null(Writer& w, const char* key, const Value* v) {
  std::string s = text_of(v);
  w.Key(key);
  if (s.empty()) {
    w.Null();
  } else {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  }
}

int64_t int_of(const Value* v) {
  if (!v) return 0;
  if (v->IsInt64()) return v->GetInt64();
  if (v->IsUint64()) return v->GetUint64() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v->GetUint64());
  if (v->IsNumber()) {
    // Converting a double outside int64's range is undefined: saturate, as strtoll does for strings.
    double d = v->GetDouble();
    if (!std::isfinite(d)) return 0;
    if (d >= 9223372036854775807.0) return INT64_MAX;
    if (d <= -9223372036854775808.0) return INT64_MIN;
    return static_cast<int64_t>(d);
  }
  if (v->IsString()) return std::strtoll(v->GetString(), nullptr, 10);
  return 0;
}

double double_of(const Value* v) {
  if (!v) return 0;
  if (v->IsNumber()) return std::isfinite(v->GetDouble()) ? v->GetDouble() : 0;
  if (v->IsString()) {
    double d = std::strtod(v->GetString(), nullptr);
    return std::isfinite(d) ? d : 0;
  }
  return 0;
}

void put_tags(Writer& w, const Value* v) {
  w.Key("tags");
  w.StartArray();
  if (v && v->IsArray()) {
    for (const auto& t : v->GetArray()) {
      std::string s = text_of(&t);
      if (!s.empty()) w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    }
  }
  w.EndArray();
}

bool write_service(Writer& w, const Value& s) {
  const Value* id = member(s, "service_id");
  if (!id || text_of(id).empty()) return false;
  w.StartObject();
  put_string(w, "_id", id);  // pycloud sent a Mongo id; phones ignore it but it must be a string
  put_string(w, "service_id", id);
  put_string(w, "description", member(s, "description"));
  put_string(w, "version", member(s, "version"));
  put_tags(w, member(s, "tags"));
  w.EndObject();
  return true;
}

void write_app(Writer& w, const Value& a) {
  const Value* id = member(a, "_id");
  if (!id) id = member(a, "app_id");
  if (!id) id = member(a, "id");
  w.StartObject();
  put_string(w, "_id", id);
  put_string(w, "name", member(a, "name"));
  put_string(w, "package_name", member(a, "package_name"));
  put_tags(w, member(a, "tags"));
  put_string_or_null(w, "md5sum", member(a, "md5sum"));  // null makes the client skip its check
  put_string(w, "min_android_version", member(a, "min_android_version"));
  put_string(w, "service_id", member(a, "service_id"));
  put_string(w, "app_version", member(a, "app_version"));
  put_string(w, "description", member(a, "description"));
  w.EndObject();
}

std::string done(const rapidjson::StringBuffer& b) { return std::string(b.GetString(), b.GetSize()); }

}  // namespace

bool services_array(std::string_view service_list_json, std::string* out) {
  json::Document d;
  if (!parse(service_list_json, &d)) return false;
  const Value* list = member(d, "services");
  if (!list || !list->IsArray()) return false;
  rapidjson::StringBuffer b;
  Writer w(b);
  w.StartArray();
  for (const auto& s : list->GetArray()) write_service(w, s);  // entries without an id are skipped
  w.EndArray();
  *out = done(b);
  return true;
}

bool service_object(std::string_view service_json, std::string* out) {
  json::Document d;
  if (!parse(service_json, &d)) return false;
  rapidjson::StringBuffer b;
  Writer w(b);
  if (!write_service(w, d)) return false;
  *out = done(b);
  return true;
}

bool start_body(std::string_view instance_json, std::string_view ip_address, std::string* out,
                std::string* instance_id) {
  json::Document d;
  if (!parse(instance_json, &d)) return false;
  std::string id = text_of(member(d, "id"));
  if (id.empty()) id = text_of(member(d, "_id"));
  if (id.empty()) return false;
  const Value* state = member(d, "state");
  bool running = !state || (state->IsString() && std::string_view(state->GetString()) == "running");
  rapidjson::StringBuffer b;
  Writer w(b);
  w.StartObject();
  put_string(w, "_id", id);
  put_string(w, "service_id", member(d, "service_id"));
  w.Key("port");
  w.Int64(int_of(member(d, "port")));
  w.Key("ssh_port");
  w.Int64(int_of(member(d, "ssh_port")));
  put_string(w, "ip_address", ip_address);
  put_string_or_null(w, "vnc_address", member(d, "vnc_address"));
  put_string_or_null(w, "fqdn", member(d, "fqdn"));  // null: the client then uses ip_address
  w.Key("running");
  w.Bool(running);
  w.EndObject();
  *out = done(b);
  *instance_id = id;
  return true;
}

bool apps_array(std::string_view app_list_json, std::string* out) {
  json::Document d;
  if (!parse(app_list_json, &d)) return false;
  const Value* list = member(d, "apps");
  if (!list || !list->IsArray()) return false;
  rapidjson::StringBuffer b;
  Writer w(b);
  w.StartArray();
  for (const auto& a : list->GetArray()) {
    if (a.IsObject()) write_app(w, a);
  }
  w.EndArray();
  *out = done(b);
  return true;
}

bool app_file(std::string_view app_json, std::string* path, std::string* file_name) {
  json::Document d;
  if (!parse(app_json, &d)) return false;
  *path = text_of(member(d, "file_path"));
  if (path->empty() || (*path)[0] != '/') return false;
  *file_name = text_of(member(d, "file_name"));
  if (file_name->empty()) {
    std::string name = text_of(member(d, "name"));
    *file_name = (name.empty() ? std::string("app") : name) + ".apk";
  }
  return true;
}

bool system_body(std::string_view system_json, const std::string* services, const std::string* apps, std::string* out) {
  json::Document d;
  if (!parse(system_json, &d)) return false;
  const Value* cpu = member(d, "cpu_info");
  const Value* mem = member(d, "memory_info");
  if (!cpu || !cpu->IsObject() || !mem || !mem->IsObject()) return false;
  rapidjson::StringBuffer b;
  Writer w(b);
  w.StartObject();
  w.Key("cpu_info");
  w.StartObject();
  w.Key("max_cores");
  w.Int64(int_of(member(*cpu, "max_cores")));
  w.Key("usage");
  w.Double(double_of(member(*cpu, "usage")));
  w.Key("speed");
  w.Double(double_of(member(*cpu, "speed")));
  w.Key("cache");
  w.Int64(int_of(member(*cpu, "cache")));
  w.EndObject();
  w.Key("memory_info");
  w.StartObject();
  w.Key("max_memory");
  w.Int64(int_of(member(*mem, "max_memory")));
  w.Key("free_memory");
  w.Int64(int_of(member(*mem, "free_memory")));
  w.EndObject();
  // The arrays are already valid JSON made by the shapers above.
  if (services) {
    w.Key("services");
    w.RawValue(services->data(), services->size(), rapidjson::kArrayType);
  }
  if (apps) {
    w.Key("apps");
    w.RawValue(apps->data(), apps->size(), rapidjson::kArrayType);
  }
  w.EndObject();
  *out = done(b);
  return true;
}

bool messages_body(std::string_view fetch_json, std::string_view device_id, std::string_view service_id,
                   std::string* out) {
  json::Document d;
  if (!parse(fetch_json, &d)) return false;
  const Value* list = member(d, "messages");
  if (!list || !list->IsArray()) return false;
  rapidjson::StringBuffer b;
  Writer w(b);
  w.StartObject();
  w.Key("messages");
  w.StartArray();
  for (const auto& m : list->GetArray()) {
    if (!m.IsObject()) continue;
    w.StartObject();
    put_string(w, "device_id", device_id);
    put_string(w, "service_id", service_id);
    put_string(w, "message", member(m, "message"));
    w.Key("params");
    w.StartObject();
    const Value* params = member(m, "params");
    if (params && params->IsObject()) {
      for (auto it = params->MemberBegin(); it != params->MemberEnd(); ++it) {
        w.Key(it->name.GetString(), it->name.GetStringLength());
        std::string s = text_of(&it->value);  // handlers read every value with getString
        w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
      }
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  *out = done(b);
  return true;
}

uint32_t http_status(cl_status_t status) {
  switch (status) {
    case CL_OK:
      return 200;
    case CL_EINVAL:
      return 400;
    case CL_EUNAUTH:
      return 401;
    case CL_EPERM:
      return 403;
    case CL_ENOENT:
      return 404;
    case CL_EBUSY:
    case CL_EEXIST:
    case CL_ESTATE:
      return 409;
    case CL_ETOOBIG:
      return 413;
    case CL_ENOMEM:
    case CL_EUNAVAIL:
    case CL_ECANCELED:
      return 503;
    case CL_ENOTSUP:
      return 501;
    case CL_ETIMEDOUT:
      return 504;
    default:
      return 500;
  }
}

std::string op_error_message(std::string_view result_json, cl_status_t status) {
  json::Document d;
  if (parse(result_json, &d)) {
    const Value* e = member(d, "error");
    if (e && e->IsString() && e->GetStringLength() > 0) return std::string(e->GetString(), e->GetStringLength());
  }
  return "operation failed (status " + std::to_string(status) + ")";
}

std::string error_body(uint32_t status, std::string_view message) {
  // No trailing newline and no second '#': client-lib keeps what lies between the first '#' and the next.
  if (status == 401 || status == 403) {
    std::string m(message);
    for (char& c : m) {
      if (c == '#') c = '?';
    }
    return (status == 401 ? "401 Unauthorized\n#" : "403 Forbidden\n#") + m;
  }
  return std::string(message);
}

}  // namespace cloudlet::offload
