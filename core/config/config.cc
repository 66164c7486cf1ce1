#include "config/config.h"

#include <algorithm>

#include <arpa/inet.h>
#include <fmt/format.h>

#include <fstream>
#include <functional>
#include <initializer_list>
#include <sstream>

#include "discovery/discovery_options.h"
#include "json/json.h"
#include "log/log.h"
#include "ops/operations.h"

namespace cloudlet {

namespace {

constexpr size_t kMaxGrants = 256;  // plugins[].grants: operation names a plugin may be granted

using json::Value;

// Walks a parsed file, checking types and ranges, and remembers the first error with its key path.
class Reader {
 public:
  Reader(std::string file, std::string base_dir) : file_(std::move(file)), base_(std::move(base_dir)) {}

  bool fail(const std::string& key, const std::string& why) {
    if (!error_.empty()) return false;
    error_ = fmt::format("{}: key '{}': {}", file_, key, why);
    // Key names and quoted values come from the file: one line, whatever they contain (fuzz_config checks it).
    for (char& c : error_) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return false;
  }
  const std::string& error() const { return error_; }

  // Unknown keys are errors: a typo must not silently fall back to a default.
  bool keys(const Value& obj, const std::string& at, std::initializer_list<std::string_view> known) {
    if (!obj.IsObject()) return fail(at.empty() ? "(top level)" : at, "must be an object");
    for (auto it = obj.MemberBegin(); it != obj.MemberEnd(); ++it) {
      std::string_view k(it->name.GetString(), it->name.GetStringLength());
      bool ok = false;
      for (auto n : known) ok = ok || n == k;
      if (!ok) {
        std::string full = at.empty() ? std::string(k) : at + "." + std::string(k);
        std::string list;
        for (auto n : known) list += (list.empty() ? "" : ", ") + std::string(n);
        return fail(full, "unknown key (known here: " + list + ")");
      }
    }
    return true;
  }

  static std::string join(const std::string& at, std::string_view k) {
    return at.empty() ? std::string(k) : at + "." + std::string(k);
  }

  bool str(const Value& obj, const std::string& at, std::string_view k, std::string* out) {
    const Value* v = json::member(obj, k);
    if (!v) return true;
    if (!v->IsString()) return fail(join(at, k), "must be a string");
    out->assign(v->GetString(), v->GetStringLength());
    return true;
  }

  bool path(const Value& obj, const std::string& at, std::string_view k, std::string* out) {
    std::string s;
    const Value* v = json::member(obj, k);
    if (!v) return true;
    if (!str(obj, at, k, &s)) return false;
    if (s.find('\0') != std::string::npos) return fail(join(at, k), "contains a NUL byte");
    *out = (s.empty() || s[0] == '/') ? s : base_ + "/" + s;
    return true;
  }

  bool boolean(const Value& obj, const std::string& at, std::string_view k, bool* out) {
    const Value* v = json::member(obj, k);
    if (!v) return true;
    if (!v->IsBool()) return fail(join(at, k), "must be true or false");
    *out = v->GetBool();
    return true;
  }

  template <typename T>
  bool integer(const Value& obj, const std::string& at, std::string_view k, T* out, int64_t lo, int64_t hi) {
    const Value* v = json::member(obj, k);
    if (!v) return true;
    if (!v->IsInt64() || v->GetInt64() < lo || v->GetInt64() > hi) {
      return fail(join(at, k), fmt::format("must be an integer from {} to {}", lo, hi));
    }
    *out = static_cast<T>(v->GetInt64());
    return true;
  }

  bool one_of(const Value& obj, const std::string& at, std::string_view k, std::string* out,
              std::initializer_list<std::string_view> allowed) {
    std::string s = *out;
    if (!str(obj, at, k, &s)) return false;
    for (auto a : allowed) {
      if (a == s) {
        *out = s;
        return true;
      }
    }
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return fail(join(at, k), "must be one of: " + list);
  }

  bool strings(const Value& obj, const std::string& at, std::string_view k, std::vector<std::string>* out) {
    const Value* v = json::member(obj, k);
    if (!v) return true;
    if (!v->IsArray()) return fail(join(at, k), "must be an array of strings");
    out->clear();
    for (const auto& e : v->GetArray()) {
      if (!e.IsString()) return fail(join(at, k), "must be an array of strings");
      out->emplace_back(e.GetString(), e.GetStringLength());
    }
    return true;
  }

  bool limits(const Value& obj, const std::string& at, http::Limits* l) {
    if (!keys(obj, at,
              {"max_header_bytes", "max_uri_bytes", "max_body_bytes", "max_upload_bytes", "header_timeout_ms",
               "body_timeout_ms", "request_timeout_ms", "min_body_rate", "idle_timeout_ms", "write_timeout_ms",
               "max_connections", "max_connections_per_address", "reserved_connections", "max_unsent_bytes"})) {
      return false;
    }
    return integer(obj, at, "max_header_bytes", &l->max_header_bytes, 1024, 1 << 20) &&
           integer(obj, at, "max_uri_bytes", &l->max_uri_bytes, 256, 1 << 20) &&
           integer(obj, at, "max_body_bytes", &l->max_body_bytes, 0, int64_t{1} << 32) &&
           integer(obj, at, "max_upload_bytes", &l->max_upload_bytes, 0, int64_t{1} << 50) &&
           integer(obj, at, "header_timeout_ms", &l->header_timeout_ms, 100, 3600000) &&
           integer(obj, at, "body_timeout_ms", &l->body_timeout_ms, 100, 3600000) &&
           integer(obj, at, "request_timeout_ms", &l->request_timeout_ms, 100, 3600000) &&
           integer(obj, at, "min_body_rate", &l->min_body_rate, 0, int64_t{1} << 40) &&
           integer(obj, at, "idle_timeout_ms", &l->idle_timeout_ms, 100, 3600000) &&
           integer(obj, at, "write_timeout_ms", &l->write_timeout_ms, 100, 3600000) &&
           integer(obj, at, "max_connections", &l->max_connections, 1, 1000000) &&
           integer(obj, at, "max_connections_per_address", &l->max_connections_per_address, 1, 1000000) &&
           integer(obj, at, "reserved_connections", &l->reserved_connections, 0, 1000000) &&
           integer(obj, at, "max_unsent_bytes", &l->max_unsent_bytes, 4096, int64_t{1} << 32);
  }

  // Host names (or IP literals) a listener serves: letters, digits, '.', '-', '_'; ':' only in an IPv6
  // literal (no port).
  bool server_names(const Value& obj, const std::string& at, std::vector<std::string>* out) {
    if (!strings(obj, at, "server_names", out)) return false;
    for (const auto& n : *out) {
      bool ok = !n.empty() && n.size() <= 253;
      for (char c : n) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == '_' || c == ':');
      }
      in6_addr v6;
      if (ok && n.find(':') != std::string::npos) ok = inet_pton(AF_INET6, n.c_str(), &v6) == 1;  // no port
      if (!ok) return fail(join(at, "server_names"), "'" + n + "' is not a host name or IP address (no port)");
    }
    return true;
  }

  bool listener(const Value& obj, const std::string& at, http::ListenerOptions* o) {
    if (!keys(obj, at,
              {"host", "port", "tls", "tls_cert", "tls_key", "tls_client_certs", "webroot", "index_file", "host_check",
               "server_names", "limits"})) {
      return false;
    }
    std::string client_certs = o->tls_client_certs == http::ClientCerts::require    ? "require"
                               : o->tls_client_certs == http::ClientCerts::optional ? "optional"
                                                                                    : "none";
    if (!one_of(obj, at, "tls_client_certs", &client_certs, {"none", "optional", "require"})) return false;
    o->tls_client_certs = client_certs == "require"    ? http::ClientCerts::require
                          : client_certs == "optional" ? http::ClientCerts::optional
                                                       : http::ClientCerts::none;
    std::string check = o->host_check == http::HostCheck::off           ? "off"
                        : o->host_check == http::HostCheck::names_or_ip ? "names_or_ip"
                                                                        : "names";
    if (!str(obj, at, "host", &o->host) || !integer(obj, at, "port", &o->port, 0, 65535) ||
        !boolean(obj, at, "tls", &o->tls_auto) || !path(obj, at, "tls_cert", &o->tls_cert) ||
        !path(obj, at, "tls_key", &o->tls_key) ||
        !path(obj, at, "webroot", &o->webroot) || !str(obj, at, "index_file", &o->index_file) ||
        !one_of(obj, at, "host_check", &check, {"names", "names_or_ip", "off"}) ||
        !server_names(obj, at, &o->server_names)) {
      return false;
    }
    o->host_check = check == "off" ? http::HostCheck::off
                    : check == "names_or_ip" ? http::HostCheck::names_or_ip
                                             : http::HostCheck::names;
    if (o->index_file.find('/') != std::string::npos) return fail(join(at, "index_file"), "must be a file name");
    if (const Value* l = json::member(obj, "limits")) return limits(*l, join(at, "limits"), &o->limits);
    return true;
  }

 private:
  std::string file_, base_, error_;
};

Status read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::io(path + ": cannot read the configuration file");
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  if (out->size() > (4 << 20)) return Status::error(CL_ETOOBIG, path + ": the configuration file is larger than 4 MiB");
  return Status();
}

}  // namespace

Config default_config() {
  Config c;
  http::ListenerOptions api;
  api.name = "api";
  api.host = "127.0.0.1";
  api.port = 9999;
  http::ListenerOptions manager;
  manager.name = "manager";
  manager.host = "127.0.0.1";
  manager.port = 9998;
  // Phones reach the api listener by IP address (from mDNS); the manager is a browser's, so only its names.
  api.host_check = http::HostCheck::names_or_ip;
  manager.host_check = http::HostCheck::names;
  c.listeners = {api, manager};
  return c;
}

http::ListenerOptions* find_listener(Config& cfg, const std::string& name) {
  for (auto& l : cfg.listeners) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

Status load_config_file(const std::string& file, Config* cfg) {
  std::string text;
  if (Status read = read_file(file, &text); !read.ok()) return read;
  json::Document doc;
  std::string perr;
  if (!json::parse(text, &doc, &perr, true)) return Status::invalid(file + ": not valid JSON: " + perr);
  std::string base = file.find('/') == std::string::npos ? "." : file.substr(0, file.rfind('/'));
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  if (base.empty()) base = "/";
  Reader rd(file, base);
  auto done = [&](bool ok) { return ok ? Status() : Status::invalid(rd.error()); };
  const Value& root = doc;
  if (!rd.keys(root, "",
               {"data_dir", "cloudlet_name", "log", "listeners", "limits", "totals", "store", "shutdown_timeout_ms",
                "plugin_dir", "plugins_dlclose", "plugins", "api", "virt", "discovery"})) {
    return done(false);
  }
  cfg->source = file;
  if (!rd.path(root, "", "data_dir", &cfg->data_dir) || !rd.str(root, "", "cloudlet_name", &cfg->cloudlet_name) ||
      !rd.integer(root, "", "shutdown_timeout_ms", &cfg->shutdown_timeout_ms, 0, 600000) ||
      !rd.path(root, "", "plugin_dir", &cfg->plugin_dir) ||
      !rd.boolean(root, "", "plugins_dlclose", &cfg->plugins_dlclose)) {
    return done(false);
  }
  if (cfg->data_dir.empty()) return done(rd.fail("data_dir", "must not be empty"));
  if (const Value* v = json::member(root, "log")) {
    if (!rd.keys(*v, "log", {"level", "file", "access_log"}) ||
        !rd.one_of(*v, "log", "level", &cfg->log_level, {"error", "warn", "info", "debug", "trace"}) ||
        !rd.path(*v, "log", "file", &cfg->log_file) || !rd.str(*v, "log", "access_log", &cfg->access_log)) {
      return done(false);
    }
    if (!cfg->access_log.empty() && cfg->access_log != "-" && cfg->access_log[0] != '/') {
      cfg->access_log = base + "/" + cfg->access_log;
    }
  }
  // "limits" at the top level applies to every listener; a listener's own "limits" override it.
  if (const Value* v = json::member(root, "limits")) {
    http::Limits shared;
    if (!rd.limits(*v, "limits", &shared)) return done(false);
    for (auto& l : cfg->listeners) {
      l.limits = shared;
    }
  }
  if (const Value* v = json::member(root, "listeners")) {
    if (!v->IsObject()) return done(rd.fail("listeners", "must be an object of named listeners"));
    for (auto it = v->MemberBegin(); it != v->MemberEnd(); ++it) {
      std::string name(it->name.GetString(), it->name.GetStringLength());
      std::string at = "listeners." + name;
      bool ok_name = !name.empty() && name.size() <= 32;
      for (char ch : name) ok_name = ok_name && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_');
      if (!ok_name) return done(rd.fail(at, "listener names are [a-z0-9_]{1,32}"));
      if (it->value.IsNull()) {  // "manager": null removes a default listener
        std::erase_if(cfg->listeners, [&](const http::ListenerOptions& l) { return l.name == name; });
        continue;
      }
      http::ListenerOptions* l = find_listener(*cfg, name);
      if (!l) {
        cfg->listeners.emplace_back();
        l = &cfg->listeners.back();
        l->name = name;
        if (const Value* shared = json::member(root, "limits")) rd.limits(*shared, "limits", &l->limits);
      }
      if (!rd.listener(it->value, at, l)) return done(false);
    }
  }
  if (const Value* v = json::member(root, "totals")) {
    if (!rd.keys(*v, "totals", {"max_unsent_bytes", "max_body_bytes"}) ||
        !rd.integer(*v, "totals", "max_unsent_bytes", &cfg->totals.max_unsent_bytes, 65536, int64_t{1} << 40) ||
        !rd.integer(*v, "totals", "max_body_bytes", &cfg->totals.max_body_bytes, 65536, int64_t{1} << 40)) {
      return done(false);
    }
  }
  if (const Value* v = json::member(root, "store")) {
    if (!rd.keys(*v, "store", {"map_size_mb"}) ||
        !rd.integer(*v, "store", "map_size_mb", &cfg->store_map_size_mb, 1, 1 << 20)) {
      return done(false);
    }
  }
  if (const Value* v = json::member(root, "api")) {
    if (!rd.keys(*v, "api", {"mode"}) || !rd.one_of(*v, "api", "mode", &cfg->api_mode, {"open", "encrypted", "both"})) {
      return done(false);
    }
  }
  if (const Value* v = json::member(root, "virt")) {
    VirtConfig& vc = cfg->virt;
    if (!rd.keys(*v, "virt", {"uri", "domain_type", "forward_address", "port_min", "port_max", "ready_timeout_ms",
                              "boot_timeout_ms", "demo_dir"}) ||
        !rd.str(*v, "virt", "uri", &vc.uri) ||
        !rd.one_of(*v, "virt", "domain_type", &vc.domain_type, {"auto", "kvm", "qemu"}) ||
        !rd.str(*v, "virt", "forward_address", &vc.forward_address) ||
        !rd.integer(*v, "virt", "port_min", &vc.port_min, 1024, 65535) ||
        !rd.integer(*v, "virt", "port_max", &vc.port_max, 1024, 65535) ||
        !rd.integer(*v, "virt", "ready_timeout_ms", &vc.ready_timeout_ms, 0, 600000) ||
        !rd.integer(*v, "virt", "boot_timeout_ms", &vc.boot_timeout_ms, 1000, 3600000) ||
        !rd.path(*v, "virt", "demo_dir", &vc.demo_dir)) {
      return done(false);
    }
  }
  if (const Value* v = json::member(root, "discovery")) {
    DiscoveryConfig& d = cfg->discovery;
    if (!rd.keys(*v, "discovery", {"enabled", "publish", "browse", "name", "extra_txt"}) ||
        !rd.boolean(*v, "discovery", "enabled", &d.enabled) || !rd.boolean(*v, "discovery", "publish", &d.publish) ||
        !rd.boolean(*v, "discovery", "browse", &d.browse) || !rd.str(*v, "discovery", "name", &d.name) ||
        !rd.strings(*v, "discovery", "extra_txt", &d.extra_txt)) {
      return done(false);
    }
    DiscoveryOptions check;
    check.name = d.name;
    check.extra_txt = d.extra_txt;
    if (Status why = discovery_options_check(check); !why.ok()) {
      return done(rd.fail(d.name.empty() || discovery_name_valid(d.name) ? "discovery.extra_txt" : "discovery.name",
                          why.message()));
    }
  }
  if (const Value* v = json::member(root, "plugins")) {
    if (!v->IsArray()) return done(rd.fail("plugins", "must be an array of plugin objects"));
    cfg->plugins.clear();
    size_t i = 0;
    for (const auto& p : v->GetArray()) {
      std::string at = fmt::format("plugins[{}]", i++);
      PluginConfig pc;
      if (p.IsString()) {  // shorthand: just the name
        pc.name.assign(p.GetString(), p.GetStringLength());
      } else {
        if (!rd.keys(p, at, {"name", "path", "enabled", "prefixes", "guards", "grants", "config"}) ||
            !rd.str(p, at, "name", &pc.name) || !rd.path(p, at, "path", &pc.path) ||
            !rd.boolean(p, at, "enabled", &pc.enabled) || !rd.strings(p, at, "prefixes", &pc.prefixes) ||
            !rd.strings(p, at, "guards", &pc.guards) || !rd.strings(p, at, "grants", &pc.grants)) {
          return done(false);
        }
        if (const Value* c = json::member(p, "config")) {
          if (!c->IsObject()) return done(rd.fail(at + ".config", "must be an object"));
          pc.config_json = json::stringify(*c);
        }
      }
      if (pc.name.empty()) return done(rd.fail(at + ".name", "is required"));
      for (const auto& prefix : pc.prefixes) {
        if (prefix.empty() || prefix[0] != '/') return done(rd.fail(at + ".prefixes", "each prefix must start with '/'"));
      }
      if (pc.grants.size() > kMaxGrants) {
        return done(rd.fail(at + ".grants", fmt::format("at most {} operations may be granted", kMaxGrants)));
      }
      for (const auto& op : pc.grants) {
        if (!Operations::valid_name(op)) {
          return done(rd.fail(at + ".grants", "each entry must be an operation name ([a-z0-9_.-]{1,64})"));
        }
      }
      cfg->plugins.push_back(std::move(pc));
    }
  }
  return Status();
}

bool parse_host_port(const std::string& text, std::string* host, uint16_t* port) {
  size_t colon;
  std::string h;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return false;
    h = text.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    h = text.substr(0, colon);
    if (h.find(':') != std::string::npos) return false;  // bare IPv6 needs brackets
  }
  std::string p = text.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  unsigned long v = std::stoul(p);
  if (v > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(v);
  return true;
}

Status validate_config(const Config& cfg) {
  for (size_t i = 0; i < cfg.listeners.size(); i++) {
    for (size_t j = i + 1; j < cfg.listeners.size(); j++) {
      const auto &a = cfg.listeners[i], &b = cfg.listeners[j];
      if (a.port != 0 && a.port == b.port && a.host == b.host) {
        return Status::invalid(fmt::format("listeners '{}' and '{}' both use {}:{}", a.name, b.name, a.host, a.port));
      }
    }
    const auto& l = cfg.listeners[i];
    if (l.tls_cert.empty() != l.tls_key.empty()) {
      return Status::invalid(fmt::format("key 'listeners.{}': TLS needs both tls_cert and tls_key", l.name));
    }
    if (l.tls_client_certs != http::ClientCerts::none && l.tls_cert.empty() && !l.tls_auto) {
      return Status::invalid(
          fmt::format("key 'listeners.{}.tls_client_certs': needs a TLS listener (tls, or tls_cert and tls_key)", l.name));
    }
    if (l.limits.max_body_bytes > cfg.totals.max_body_bytes) {
      return Status::invalid(
          fmt::format("key 'listeners.{}.limits.max_body_bytes': must not exceed totals.max_body_bytes ({})", l.name,
                      cfg.totals.max_body_bytes));
    }
  }
  if (cfg.virt.port_min > cfg.virt.port_max) {
    return Status::invalid("key 'virt.port_min': must not be greater than virt.port_max");
  }
  {
    // QEMU's user networking forwards from IPv4 host addresses only.
    in_addr a;
    if (inet_pton(AF_INET, cfg.virt.forward_address.c_str(), &a) != 1) {
      return Status::invalid(fmt::format("key 'virt.forward_address': must be a numeric IPv4 address (got '{}')",
                                         cfg.virt.forward_address));
    }
  }
  if (!cfg.virt.uri.empty() && cfg.virt.uri.rfind("qemu:///embed", 0) == 0 &&
      cfg.virt.uri.find("root=/") == std::string::npos) {
    return Status::invalid("key 'virt.uri': an embedded driver URI needs an absolute root (qemu:///embed?root=/path)");
  }
  for (size_t i = 0; i < cfg.plugins.size(); i++) {
    for (size_t j = i + 1; j < cfg.plugins.size(); j++) {
      if (cfg.plugins[i].name == cfg.plugins[j].name) {
        return Status::invalid(fmt::format("key 'plugins[{}]': plugin '{}' is listed twice", j, cfg.plugins[j].name));
      }
    }
    // A listener has one guard: granting it to two plugins would make which one runs depend on load order.
    for (const auto& g : cfg.plugins[i].guards) {
      bool known = std::any_of(cfg.listeners.begin(), cfg.listeners.end(),
                               [&](const http::ListenerOptions& l) { return l.name == g; });
      if (!known) {
        return Status::invalid(fmt::format("key 'plugins[{}].guards': no listener named '{}'", i, g));
      }
      for (size_t j = 0; j < i; j++) {
        const auto& other = cfg.plugins[j].guards;
        if (std::find(other.begin(), other.end(), g) != other.end()) {
          return Status::invalid(
              fmt::format("key 'plugins[{}].guards': the guard of listener '{}' is already granted to plugin '{}'", i,
                          g, cfg.plugins[j].name));
        }
      }
    }
  }
  return Status();
}

}  // namespace cloudlet
