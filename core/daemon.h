// The assembled server: loop, store, HTTP listeners, operations, events, Service VMs, plugins — and their orderly
// start and graceful shutdown. main() parses the command line and runs a Daemon; tests can run one in-process.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cloudlet_plugin.h"
#include "config/config.h"

namespace cloudlet {

class Loop;
class Store;
class Operations;
class EventBus;
class PluginManager;
class Jobs;
class Devices;
class SystemInfo;
class Discovery;
class ControlSocket;
struct Peer;
struct HostServices;
namespace http {
class Server;
struct ListenerOptions;
}
namespace virt {
class Virt;
}

class Daemon {
 public:
  explicit Daemon(Config cfg);
  ~Daemon();

  // A one-shot command instead of a server (`cloudletd --new-token`, `--set-password` when no server runs on
  // the data directory): start() then loads only `plugin`, binds the listeners on loopback ephemeral ports
  // (routes register; nobody is told), starts no VMs and no discovery, calls `op` with `args_json` as the core,
  // hands its answer to `done`, and shuts down; run() returns done's exit status. Set before start().
  struct Command {
    std::string plugin;
    std::string op;
    std::string args_json;
    std::function<int(cl_status_t status, std::string_view result_json)> done;
  };
  void set_command(Command command) { command_ = std::move(command); }

  // Opens the store, binds listeners, registers core operations, loads plugins. Returns false with *error
  // (one line) when the server cannot run at all (unusable data directory, a listener that cannot bind).
  bool start(std::string* error);
  // Runs the loop until shutdown completes; returns the process exit status (0 = clean).
  int run();
  // Begins a graceful shutdown (also on SIGINT/SIGTERM). Safe to call more than once.
  void shutdown();

  Loop& loop() { return *loop_; }
  http::Server& server() { return *server_; }
  Operations& ops() { return *ops_; }
  EventBus& events() { return *events_; }
  Store* store() { return store_.get(); }
  const Config& config() const { return cfg_; }

 private:
  void register_core_operations();
  void register_core_routes();
  void load_plugins();
  bool start_discovery(std::string* error);
  bool start_command(std::string* error);
  // A listener with "tls": true and no certificate gets the server's own (http/self_signed.h).
  bool use_own_certificate(http::ListenerOptions* l, std::string* error);
  void finish_shutdown();

  Config cfg_;
  std::unique_ptr<Loop> loop_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Operations> ops_;
  std::unique_ptr<EventBus> events_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Jobs> jobs_;
  std::unique_ptr<SystemInfo> system_;
  std::unique_ptr<Devices> devices_;
  std::unique_ptr<virt::Virt> virt_;
  std::unique_ptr<Discovery> discovery_;
  std::unique_ptr<HostServices> services_;
  std::unique_ptr<PluginManager> plugins_;
  std::unique_ptr<ControlSocket> control_;
  std::optional<Command> command_;
  int command_status_ = 0;
  uint64_t watchdog_ = 0;  // the loop timer that feeds systemd's watchdog (0: none)
  bool stopping_ = false;
  bool stopped_ = false;
};

// The plugin directory to use when the configuration names none: "<exe dir>/plugins" when that exists (a
// build tree), else /usr/lib/cloudletd/plugins.
std::string default_plugin_dir();
// The host name (for the default cloudlet name).
std::string host_name();

}  // namespace cloudlet
