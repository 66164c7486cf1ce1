#include "daemon.h"

#include <arpa/inet.h>
#include <limits.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "devices/devices.h"
#include "discovery/discovery.h"
#include "events/bus.h"
#include "http/form_reader.h"
#include "http/request.h"
#include "http/self_signed.h"
#include "http/server.h"
#include "jobs/jobs.h"
#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"
#include "ops/control.h"
#include "ops/operations.h"
#include "plugin/host.h"
#include "store/store.h"
#include "system/notify.h"
#include "system/system_info.h"
#include "version.h"
#include "virt/event_impl.h"
#include "virt/virt.h"

namespace cloudlet {

namespace {

constexpr int kSchemaVersion = 1;
// What the control socket offers: the command line's operations (main.cc).
constexpr std::array<const char*, 2> kCommandOps = {"manager.token.create", "manager.user.set_password"};

// mkdir -p with the given mode for each created component.
bool make_dirs(const std::string& path, mode_t mode, std::string* error) {
  std::string cur;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    cur = path.substr(0, slash == std::string::npos ? path.size() : slash);
    if (!cur.empty() && mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
      *error = "cannot create " + cur + ": " + strerror(errno);
      return false;
    }
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = path + " is not a directory";
    return false;
  }
  return true;
}

std::string absolute(const std::string& p) {
  if (!p.empty() && p[0] == '/') return p;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return p;
  return std::string(cwd) + "/" + p;
}

// Every connection is a descriptor: lift the soft limit to the hard one (the default 1024 is too low).
void raise_fd_limit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "cloudlet";
  std::string name(buf);
  size_t dot = name.find('.');
  if (dot != std::string::npos) name.resize(dot);
  return name;
}

std::string default_plugin_dir() {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/')) + "/plugins";
    struct stat st;
    if (stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return dir;
  }
  return "/usr/lib/cloudletd/plugins";
}

Daemon::Daemon(Config cfg) : cfg_(std::move(cfg)) {}

Daemon::~Daemon() {
  if (loop_ && !stopped_) {
    if (plugins_) {
      // start() failed (or run() never ran): the loop is not running, so it may be turned here until the
      // plugins' outstanding work has come back.
      bool unloaded = false;
      plugins_->unload_all(cfg_.plugins_dlclose, [&unloaded] { unloaded = true; });
      while (!unloaded && uv_run(loop_->uv(), UV_RUN_ONCE) != 0) {
      }
    }
    if (devices_) devices_->stop();
    if (virt_) {
      // start() failed after the VM subsystem began: let its work in flight come back, then close it.
      bool done = false;
      virt_->stop([&done] { done = true; });
      while (!done && uv_run(loop_->uv(), UV_RUN_ONCE) != 0) {
      }
      virt::event_impl_shutdown();
      virt_.reset();
    }
    if (system_) system_->stop();
    discovery_.reset();
    if (store_) store_->close();
    server_.reset();
    loop_->close();
  }
}

bool Daemon::start(std::string* error) {
  log::Level level;
  if (log::parse_level(cfg_.log_level, &level)) log::set_level(level);
  if (!cfg_.log_file.empty() && !log::set_output_file(cfg_.log_file)) {
    *error = "cannot open log file " + cfg_.log_file;
    return false;
  }
  if (!cfg_.access_log.empty() && !log::open_access_log(cfg_.access_log)) {
    *error = "cannot open access log " + cfg_.access_log;
    return false;
  }
  raise_fd_limit();
  cfg_.data_dir = absolute(cfg_.data_dir);
  if (cfg_.cloudlet_name.empty()) cfg_.cloudlet_name = host_name();
  if (cfg_.plugin_dir.empty()) cfg_.plugin_dir = default_plugin_dir();
  std::string spool = cfg_.data_dir + "/tmp";
  if (!make_dirs(cfg_.data_dir, 0700, error) || !make_dirs(spool, 0700, error)) return false;
  // Uploads a previous run left half-written (it died mid-transfer) are garbage: nothing refers to them.
  int swept = http::FormReader::sweep_spool(spool);
  if (swept > 0) log::info("core", "removed {} unfinished upload(s) from {}", swept, spool);

  loop_ = std::make_unique<Loop>();
  Store::Options so;
  so.dir = cfg_.data_dir + "/db";
  so.map_size = cfg_.store_map_size_mb << 20;
  so.schema_version = kSchemaVersion;
  store_ = Store::open(*loop_, so, error);
  if (!store_) return false;
  ops_ = std::make_unique<Operations>(*loop_);
  events_ = std::make_unique<EventBus>(*loop_);
  server_ = std::make_unique<http::Server>(*loop_, spool);
  server_->set_totals(cfg_.totals);
  for (auto l : cfg_.listeners) {
    if (command_) {
      // A command serves nobody: its plugin may add routes, but the real addresses may be in use (the server),
      // and it needs no certificate (nor may it make one).
      l.host = "127.0.0.1";
      l.port = 0;
      l.tls_auto = false;
      l.tls_cert.clear();
      l.tls_key.clear();
      l.tls_client_certs = http::ClientCerts::none;
    }
    if (!use_own_certificate(&l, error)) return false;
    if (l.name == "manager" && l.tls_cert.empty() && !http::host_is_loopback(l.host)) {
      log::warn("http", "the manager listens on {} without TLS: passwords and session cookies cross the network in "
                "clear. Set listeners.manager.tls to true (or give tls_cert and tls_key).", l.host);
    }
    // The machine's own names (as Avahi announces it: <host>.local) are names every listener serves.
    std::string host = host_name();
    for (std::string name : {host, host + ".local"}) {
      if (std::find(l.server_names.begin(), l.server_names.end(), name) == l.server_names.end()) {
        l.server_names.push_back(name);
      }
    }
    if (server_->listen(l, error) != CL_OK) return false;
  }
  jobs_ = std::make_unique<Jobs>(*loop_, *events_, *ops_);
  system_ = std::make_unique<SystemInfo>(*loop_, *ops_, events_.get());
  system_->start();
  devices_ = std::make_unique<Devices>(*loop_, *store_, *ops_, *events_);
  devices_->start();
  // Service VMs. libvirt is touched only when needed (VMs to re-attach, leftovers, --demo, the first VM
  // operation): its event implementation is registered then, before its first call, and the connection opens in
  // the background, so a missing or broken hypervisor never delays or stops the HTTP service.
  if (!command_) {
    virt_ = std::make_unique<virt::Virt>(*loop_, *store_, *ops_, *events_, *jobs_,
                                         virt::VirtOptions{cfg_.data_dir, cfg_.virt, cfg_.demo});
    virt_->start();
  }
  register_core_operations();
  register_core_routes();
  services_ = std::make_unique<HostServices>(HostServices{*loop_, *server_, store_.get(), *ops_, *events_,
                                                          CLOUDLETD_VERSION, cfg_.data_dir, cfg_.cloudlet_name,
                                                          cfg_.api_mode, jobs_.get()});
  plugins_ = std::make_unique<PluginManager>(*services_);
  load_plugins();
  if (command_) return start_command(error);
  if (!start_discovery(error)) return false;
  // The command line's way in while this server holds the store (core/ops/control.h).
  control_ = std::make_unique<ControlSocket>(*loop_, *ops_, std::set<std::string>{kCommandOps.begin(), kCommandOps.end()});
  if (Status bound = control_->start(cfg_.data_dir + "/control.sock"); !bound.ok()) {
    log::warn("core", "{}: `cloudletd --new-token` and `--set-password` will not reach this server", bound.message());
  }
  loop_->watch_signals([this](int signum) {
    log::info("core", "received {}: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
    shutdown();
  });
  log::info("core", "cloudletd {} ready: cloudlet '{}', data in {}, {} plugin(s)", CLOUDLETD_VERSION,
            cfg_.cloudlet_name, cfg_.data_dir, plugins_->count());
  // systemd (Type=notify): ready now; the watchdog is fed from the loop, so a loop that stops turning is noticed.
  notify_send(fmt::format("READY=1\nSTATUS=serving: cloudlet '{}', {} plugin(s)", cfg_.cloudlet_name,
                          plugins_->count()));
  if (uint64_t every = notify_watchdog_ms() / 2; every > 0) {
    watchdog_ = loop_->timer_start(every, every, [] { notify_send("WATCHDOG=1"); });
  }
  return true;
}

void Daemon::load_plugins() {
  // A listener whose guard the configuration grants stays closed (503) until its plugin installs the guard:
  // if that plugin fails to load, the listener must not serve unauthenticated.
  for (const auto& p : cfg_.plugins) {
    if (!p.enabled) continue;
    for (const auto& listener : p.guards) server_->expect_guard(listener);
  }
  for (const auto& p : cfg_.plugins) {
    if (!p.enabled || (command_ && p.name != command_->plugin)) continue;
    PluginSpec spec;
    spec.name = p.name;
    spec.path = p.path.empty() ? cfg_.plugin_dir + "/" + p.name + ".so" : p.path;
    spec.config_json = p.config_json;
    spec.prefixes = p.prefixes;
    spec.guards = p.guards;
    spec.grants = p.grants;
    std::string error;
    plugins_->load(spec, &error);  // a failing plugin is logged and skipped: the server serves on
  }
}

namespace {
std::string peer_json(const Peer& p) {
  rapidjson::StringBuffer buf;
  json::Writer w(buf);
  w.StartObject();
  w.Key("name");
  w.String(p.name.c_str());
  w.Key("host");
  w.String(p.host.c_str());
  w.Key("addresses");
  w.StartArray();
  for (const auto& a : p.addresses) w.String(a.c_str());
  w.EndArray();
  w.Key("port");
  w.Uint(p.port);
  w.Key("encryption");
  w.Bool(p.encryption);
  w.Key("interface");
  w.String(p.interface.c_str());
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}
}  // namespace

// Publishes _cloudlet._tcp for the api listener and browses other cloudlets (peer.found / peer.lost events,
// operation peer.list). A missing avahi-daemon is not an error: Discovery retries in the background.
bool Daemon::start_discovery(std::string* error) {
  DiscoveryOptions o;
  o.enabled = cfg_.discovery.enabled;
  o.publish = cfg_.discovery.publish;
  o.browse = cfg_.discovery.browse;
  o.name = cfg_.discovery.name.empty() ? cfg_.cloudlet_name : cfg_.discovery.name;
  o.extra_txt = cfg_.discovery.extra_txt;
  // "both" advertises the plain API: every phone can use it, paired or not.
  o.encrypted = cfg_.api_mode == "encrypted";
  http::Listener* api = server_->listener("api");
  if (!api) o.publish = false;
  if (api) {
    o.port = api->bound_port;
    if (o.enabled && o.publish && (api->options.host == "127.0.0.1" || api->options.host == "::1")) {
      log::warn("discovery", "the api listener is on {}: phones on the network cannot reach the published port",
                api->options.host);
    }
  }
  discovery_ = std::make_unique<Discovery>(*loop_, o);
  discovery_->on_peer_change([this](const Peer& p, bool present) {
    events_->publish(present ? "peer.found" : "peer.lost", peer_json(p));
  });
  ops_->add("peer.list", [this](std::string_view, Operations::Reply reply) {
    std::string out = "{\"peers\":[";
    bool first = true;
    for (const auto& p : discovery_->peers()) {
      if (!first) out += ",";
      first = false;
      out += peer_json(p);
    }
    reply(CL_OK, out + "]}");
  });
  if (Status started = discovery_->start(); !started.ok()) {
    *error = "discovery: " + started.message();
    return false;
  }
  return true;
}

void Daemon::register_core_operations() {
  ops_->add("server.info", [this](std::string_view, Operations::Reply reply) {
    rapidjson::StringBuffer buf;
    json::Writer w(buf);
    w.StartObject();
    w.Key("version");
    w.String(CLOUDLETD_VERSION);
    w.Key("cloudlet_name");
    w.String(cfg_.cloudlet_name.c_str());
    w.Key("api_mode");
    w.String(cfg_.api_mode.c_str());
    w.Key("listeners");
    w.StartArray();
    for (const auto& name : server_->listener_names()) {
      http::Listener* l = server_->listener(name);
      w.StartObject();
      w.Key("name");
      w.String(name.c_str());
      w.Key("host");
      w.String(l->options.host.c_str());
      w.Key("port");
      w.Uint(l->bound_port);
      w.Key("tls");
      w.Bool(l->tls != nullptr);
      w.EndObject();
    }
    w.EndArray();
    w.Key("plugins");
    w.StartArray();
    for (const cl_host_s* h : plugins_->plugins()) {
      w.StartObject();
      w.Key("name");
      w.String(h->name().c_str());
      w.Key("version");
      w.String(h->desc->version ? h->desc->version : "");
      w.EndObject();
    }
    w.EndArray();
    w.Key("operations");
    w.StartArray();
    for (const auto& n : ops_->names()) w.String(n.c_str());
    w.EndArray();
    w.EndObject();
    reply(CL_OK, std::string(buf.GetString(), buf.GetSize()));
  });
}

void Daemon::register_core_routes() {
  // Liveness on every listener: load balancers, tests and `make run` users poll it.
  for (const auto& name : server_->listener_names()) {
    http::Route health;
    health.method = "GET";
    health.pattern = "/healthz";
    health.handler = [](http::Request& r) { return r.send(200, "text/plain; charset=utf-8", "ok\n"); };
    server_->router(name)->add(std::move(health));
  }
}

bool Daemon::use_own_certificate(http::ListenerOptions* l, std::string* error) {
  if (!l->tls_auto || !l->tls_cert.empty()) return true;
  std::string dir = cfg_.data_dir + "/credentials";
  if (!make_dirs(dir, 0700, error)) return false;
  std::vector<std::string> names = {host_name(), host_name() + ".local", "localhost"};
  std::vector<std::string> ips = {"127.0.0.1", "::1"};
  for (const auto& n : l->server_names) {
    in6_addr any;
    bool ip = inet_pton(AF_INET, n.c_str(), &any) == 1 || inet_pton(AF_INET6, n.c_str(), &any) == 1;
    (ip ? ips : names).push_back(n);
  }
  if (l->host != "0.0.0.0" && l->host != "::" && !http::host_is_loopback(l->host)) ips.push_back(l->host);
  http::SelfSigned made;
  Status s = http::self_signed_ensure(dir + "/" + l->name + ".crt", dir + "/" + l->name + ".key", cfg_.cloudlet_name,
                                      names, ips, &made);
  if (!s.ok()) {
    *error = fmt::format("listener '{}': {}", l->name, s.message());
    return false;
  }
  if (made.made) {
    log::warn("http", "listener '{}': made a self-signed certificate, {} (key {}), valid until {}, SHA-256 {}. "
              "Browsers warn until you accept it or install your own (tls/README.md).",
              l->name, made.cert_path, made.key_path, made.not_after, made.fingerprint);
  } else {
    log::info("http", "listener '{}': certificate {} (SHA-256 {}, valid until {})", l->name, made.cert_path,
              made.fingerprint, made.not_after);
  }
  l->tls_cert = made.cert_path;
  l->tls_key = made.key_path;
  return true;
}

bool Daemon::start_command(std::string* error) {
  if (!ops_->exists(command_->op)) {
    *error = fmt::format("no {} here: is the '{}' plugin enabled in the configuration?", command_->op,
                         command_->plugin);
    return false;
  }
  cl_status_t st = ops_->call(command_->op, command_->args_json, [this](cl_status_t s, std::string_view result) {
    command_status_ = command_->done(s, result);
    shutdown();
  });
  if (st != CL_OK) {
    *error = fmt::format("{} refused its arguments", command_->op);
    return false;
  }
  return true;
}

void Daemon::shutdown() {
  if (stopping_) {
    log::warn("core", "shutdown already in progress");
    return;
  }
  stopping_ = true;
  notify_send("STOPPING=1\nSTATUS=shutting down");
  if (watchdog_) loop_->timer_stop(watchdog_);
  watchdog_ = 0;
  if (control_) control_->stop([] {});
  // Live streams (the manager's event stream) never end by themselves: their plugins end them on this event,
  // so the drain below does not wait for its deadline.
  events_->publish("server.stopping", "{}");
  // Withdraw the mDNS record first, so phones stop being sent here while we drain.
  auto drain = [this] { server_->shutdown(cfg_.shutdown_timeout_ms, [this] { finish_shutdown(); }); };
  if (discovery_) {
    discovery_->stop(drain);
  } else {
    drain();
  }
}

void Daemon::finish_shutdown() {
  // Unloading plugins is one asynchronous step of the sequence: the loop keeps turning while their work,
  // posts, lent writes and commits come back (nothing here runs the loop). It starts from a clean stack, not
  // from the HTTP server's close callback that reports the drain complete.
  loop_->defer([this] {
    plugins_->unload_all(cfg_.plugins_dlclose, [this] {
      devices_->stop();
      // VM work in flight comes back (or is cancelled and cleans up) and writes its records before the store
      // closes; libvirt's connection closes before its event implementation, and that before the loop.
      auto last = [this] {
        virt::event_impl_shutdown();
        system_->stop();
        store_->close();
        stopped_ = true;
        log::info("core", "shutdown complete");
      };
      if (virt_) {
        virt_->stop(last);
      } else {
        last();
      }
    });
  });
}

int Daemon::run() {
  loop_->run();
  if (!stopped_) {
    // The loop ran dry without a shutdown (no listeners): still close everything in order.
    shutdown();
    loop_->run();
  }
  int rc = loop_->close();
  if (rc != 0) log::error("core", "the loop did not close cleanly ({})", uv_strerror(rc));
  if (rc != 0) return 1;
  return command_ ? command_status_ : 0;
}

}  // namespace cloudlet
