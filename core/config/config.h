// The server configuration: JSON (comments and trailing commas allowed), a default for every key, and one
// clear error line naming the key for any bad value. Every key is documented in config/README.md.
//
// Relative paths in a file are relative to that file's directory; relative paths given on the command line
// are relative to the working directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "http/options.h"
#include "system/status.h"

namespace cloudlet {

struct PluginConfig {
  std::string name;
  std::string path;                   // "" = <plugin_dir>/<name>.so
  bool enabled = true;
  std::vector<std::string> prefixes;  // URL prefixes its routes may use ("" list = "/plugins/<name>/")
  std::vector<std::string> guards;    // listeners whose guard it may install (listener_guard_set)
  std::vector<std::string> grants;    // privileged operations it may call ("device.auth")
  std::string config_json = "{}";     // handed to the plugin's init
};

struct VirtConfig {
  std::string uri;                    // "" = qemu:///embed?root=<data_dir>/libvirt
  std::string domain_type = "auto";   // auto | kvm | qemu
  std::string forward_address = "0.0.0.0";  // host address QEMU binds forwarded ports to (numeric IPv4)
  uint16_t port_min = 20000, port_max = 20999;
  uint32_t ready_timeout_ms = 30000;  // readiness wait of an instance's service port
  uint32_t boot_timeout_ms = 300000;  // how long a service's boot (create, refresh) may take to answer
  std::string demo_dir;               // "" = <build dir>/demo-guest, else /usr/share/cloudletd/demo-guest
};

struct DiscoveryConfig {
  bool enabled = true;
  bool publish = true;
  bool browse = true;
  std::string name;  // "" = the cloudlet name
  std::vector<std::string> extra_txt;
};

struct Config {
  std::string source;  // the file it came from, "" for the embedded defaults
  std::string data_dir = "/var/lib/cloudletd";
  std::string cloudlet_name;  // "" = the host name
  std::string log_level = "info";
  std::string log_file;    // "" = stderr
  std::string access_log;  // "" = off, "-" = stderr
  std::vector<http::ListenerOptions> listeners;
  http::Totals totals;  // memory held for clients, all listeners together
  uint64_t store_map_size_mb = 1024;
  uint32_t shutdown_timeout_ms = 5000;
  std::string plugin_dir;  // "" = next to the executable (build tree) or /usr/lib/cloudletd/plugins
  bool plugins_dlclose = false;
  std::vector<PluginConfig> plugins;
  std::string api_mode = "open";  // open | encrypted | both
  VirtConfig virt;
  DiscoveryConfig discovery;
  bool demo = false;  // register the demo service (set by --demo)
};

// The embedded defaults: api on 127.0.0.1:9999, manager on 127.0.0.1:9998, data in /var/lib/cloudletd.
Config default_config();

// Reads a configuration file over the defaults. A failure's message is one line:
// "<file>: key 'listeners.api.port': must be an integer from 0 to 65535". Codes: CL_EIO (the file cannot be
// read), CL_ETOOBIG (larger than 4 MiB), CL_EINVAL (anything wrong in it).
Status load_config_file(const std::string& path, Config* cfg);

// Parses "HOST:PORT" ("[::1]:9999" for IPv6). False if malformed.
bool parse_host_port(const std::string& text, std::string* host, uint16_t* port);

// Checks cross-key rules after files and flags were applied (e.g. listener names unique, port range order).
// CL_EINVAL naming the broken rule.
Status validate_config(const Config& cfg);

http::ListenerOptions* find_listener(Config& cfg, const std::string& name);

}  // namespace cloudlet
