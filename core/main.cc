// cloudletd: command line, configuration, then the Daemon.
#include <getopt.h>
#include <limits.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "config/config.h"
#include "daemon.h"
#include "json/json.h"
#include "ops/control.h"
#include "log/log.h"
#include "version.h"
#include "virt/fork_guard.h"

namespace {

constexpr int kExitUsage = 2;

void usage(FILE* out) {
  fprintf(out,
          "Usage: cloudletd [OPTION]...\n"
          "A cloudlet server: starts Service VMs from saved memory state for nearby mobile devices.\n"
          "\n"
          "  --config FILE            configuration file (JSON, comments allowed); see config/README.md\n"
          "  --data-dir DIR           data directory (store, images, instances, uploads)\n"
          "  --listen-api HOST:PORT   address of the mobile API listener ('api')\n"
          "  --listen-manager HOST:PORT  address of the web manager listener ('manager')\n"
          "  --libvirt-uri URI        hypervisor connection (default qemu:///embed?root=DATA/libvirt)\n"
          "  --log-level LEVEL        error, warn, info, debug or trace\n"
          "  --api-mode MODE          open, encrypted or both\n"
          "  --demo                   register the built-in demo service (demo.httpd)\n"
          "  --check-config           validate the configuration and exit\n"
          "  --new-token NAME         print a new API token for the web manager on stdout and exit\n"
          "                           (reaches a server running on the data directory, or works alone)\n"
          "  --set-password USER      set a manager user's password (read from stdin; asked twice on a\n"
          "                           terminal), end the user's sessions, and exit\n"
          "  --help                   show this help and exit\n"
          "  --version                show the version and exit\n"
          "\n"
          "Without --config, a build tree's config/cloudletd.json is used when cloudletd runs from that\n"
          "build tree, else /etc/cloudletd/cloudletd.json if it exists, else the embedded defaults.\n"
          "Command-line options override the configuration file. Exit status: 0 clean shutdown,\n"
          "1 runtime failure, 2 bad usage or configuration.\n");
}

bool file_exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The source tree's config when this binary is the one built in that tree's build directory.
std::string default_config_path() {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/'));
    std::string src_cfg = std::string(CLOUDLET_SOURCE_DIR) + "/config/cloudletd.json";
    char real_build[PATH_MAX];
    if (realpath(CLOUDLET_BUILD_DIR, real_build) && dir == real_build && file_exists(src_cfg)) return src_cfg;
  }
  if (file_exists("/etc/cloudletd/cloudletd.json")) return "/etc/cloudletd/cloudletd.json";
  return "";
}

int config_error(const std::string& msg) {
  fprintf(stderr, "cloudletd: configuration error: %s\n", msg.c_str());
  return kExitUsage;
}

// The message of an operation's {"error": ...} answer, or the answer itself.
std::string error_text(std::string_view result) {
  cloudlet::json::Document d;
  std::string ignored;
  if (cloudlet::json::parse_object(result, &d, &ignored)) {
    if (auto e = cloudlet::json::get_string(d, "error")) return std::string(*e);
  }
  return std::string(result);
}

// Runs one of the manager plugin's operations for the command line: through the control socket of a server
// running on the data directory, else in a short-lived Daemon of its own (core/ops/control.h, Daemon::Command).
// print(result) writes what the user asked for; the exit status is 0 on success, 1 otherwise.
int manager_command(cloudlet::Config cfg, const std::string& op, const std::string& args,
                    const std::function<void(std::string_view)>& print) {
  if (cfg.log_level == "info") cfg.log_level = "warn";  // a command's output is its answer, not the start-up story
  std::string result;
  cl_status_t st = cloudlet::control_call(cfg.data_dir + "/control.sock", op, args, 120000, &result);
  if (st == CL_ENOENT) {
    cloudlet::Daemon daemon(std::move(cfg));
    int status = 1;
    daemon.set_command({"manager", op, args, [&](cl_status_t s, std::string_view r) {
                          st = s;
                          result = std::string(r);
                          return status = s == CL_OK ? 0 : 1;
                        }});
    std::string error;
    if (!daemon.start(&error)) {
      fprintf(stderr, "cloudletd: %s\n", error.c_str());
      return 1;
    }
    if (daemon.run() != 0) status = 1;
    if (status != 0 && st == CL_OK) result = "{\"error\":\"the command did not finish cleanly\"}";
    if (status != 0) st = st == CL_OK ? CL_EIO : st;
  }
  if (st != CL_OK) {
    fprintf(stderr, "cloudletd: %s\n", error_text(result).c_str());
    return 1;
  }
  print(result);
  return 0;
}

int new_token_command(cloudlet::Config cfg, const std::string& name) {
  std::string args = "{\"name\":";
  cloudlet::json::append_quoted(&args, name);
  args += "}";
  return manager_command(std::move(cfg), "manager.token.create", args, [](std::string_view result) {
    cloudlet::json::Document d;
    std::string error;
    auto token = cloudlet::json::parse_object(result, &d, &error) ? cloudlet::json::get_string(d, "token")
                                                                    : std::nullopt;
    printf("%.*s\n", static_cast<int>(token.value_or("").size()), token.value_or("").data());
  });
}

// One line of stdin without its line ending; on a terminal without echo.
bool read_secret(const char* prompt, std::string* out) {
  bool tty = isatty(STDIN_FILENO);
  termios saved{};
  if (tty) {
    fprintf(stderr, "%s", prompt);
    fflush(stderr);
    tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  out->clear();
  int c;
  while ((c = getchar()) != EOF && c != '\n' && out->size() <= 4096) out->push_back(static_cast<char>(c));
  if (!out->empty() && out->back() == '\r') out->pop_back();
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    fprintf(stderr, "\n");
  }
  return c != EOF || !out->empty();
}

int set_password_command(cloudlet::Config cfg, const std::string& user) {
  std::string password, again;
  if (!read_secret(("New password for " + user + ": ").c_str(), &password)) {
    fprintf(stderr, "cloudletd: no password on stdin\n");
    return 1;
  }
  if (isatty(STDIN_FILENO) && (!read_secret("Again: ", &again) || again != password)) {
    fprintf(stderr, "cloudletd: the passwords differ\n");
    return 1;
  }
  std::string args = "{\"user\":";
  cloudlet::json::append_quoted(&args, user);
  args += ",\"password\":";
  cloudlet::json::append_quoted(&args, password);
  args += "}";
  return manager_command(std::move(cfg), "manager.user.set_password", args, [&](std::string_view) {
    fprintf(stderr, "cloudletd: password of '%s' set; its sessions ended\n", user.c_str());
  });
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything creates a libuv loop: libvirt's QEMU start-up needs low descriptors reserved (fork_guard.h).
  cloudlet::virt::fork_guard_install();
  // Restores, saves and disk copies hold a worker for seconds: more than libuv's default 4 threads keep them
  // from starving quick work (uploads, store, file serving). An explicit setting in the environment wins.
  setenv("UV_THREADPOOL_SIZE", "16", 0);
  enum {
    kConfig = 1000,
    kDataDir,
    kListenApi,
    kListenManager,
    kLibvirtUri,
    kLogLevel,
    kApiMode,
    kDemo,
    kCheck,
    kNewToken,
    kSetPassword
  };
  static const option options[] = {
      {"config", required_argument, nullptr, kConfig},
      {"data-dir", required_argument, nullptr, kDataDir},
      {"listen-api", required_argument, nullptr, kListenApi},
      {"listen-manager", required_argument, nullptr, kListenManager},
      {"libvirt-uri", required_argument, nullptr, kLibvirtUri},
      {"log-level", required_argument, nullptr, kLogLevel},
      {"api-mode", required_argument, nullptr, kApiMode},
      {"demo", no_argument, nullptr, kDemo},
      {"check-config", no_argument, nullptr, kCheck},
      {"new-token", required_argument, nullptr, kNewToken},
      {"set-password", required_argument, nullptr, kSetPassword},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0},
  };
  std::string config_path, data_dir, listen_api, listen_manager, libvirt_uri, log_level, api_mode;
  std::string new_token, set_password;
  bool have_config = false, have_uri = false, demo = false, check_only = false;
  int opt;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, "hV", options, nullptr)) != -1) {
    switch (opt) {
      case kConfig: config_path = optarg; have_config = true; break;
      case kDataDir: data_dir = optarg; break;
      case kListenApi: listen_api = optarg; break;
      case kListenManager: listen_manager = optarg; break;
      case kLibvirtUri: libvirt_uri = optarg; have_uri = true; break;
      case kLogLevel: log_level = optarg; break;
      case kApiMode: api_mode = optarg; break;
      case kDemo: demo = true; break;
      case kCheck: check_only = true; break;
      case kNewToken: new_token = optarg; break;
      case kSetPassword: set_password = optarg; break;
      case 'h': usage(stdout); return 0;
      case 'V': printf("cloudletd %s\n", CLOUDLETD_VERSION); return 0;
      default:
        fprintf(stderr, "cloudletd: unknown or incomplete option '%s' (try --help)\n", argv[optind - 1]);
        return kExitUsage;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "cloudletd: unexpected argument '%s' (try --help)\n", argv[optind]);
    return kExitUsage;
  }

  cloudlet::Config cfg = cloudlet::default_config();
  if (!have_config) config_path = default_config_path();
  if (!config_path.empty()) {
    if (cloudlet::Status loaded = cloudlet::load_config_file(config_path, &cfg); !loaded.ok()) {
      return config_error(loaded.message());
    }
  }
  // Command-line flags override the file.
  if (!data_dir.empty()) cfg.data_dir = data_dir;
  auto listen = [&](const std::string& name, const std::string& text) -> bool {
    if (text.empty()) return true;
    cloudlet::http::ListenerOptions* l = cloudlet::find_listener(cfg, name);
    if (!l) {
      cfg.listeners.emplace_back();
      l = &cfg.listeners.back();
      l->name = name;
    }
    return cloudlet::parse_host_port(text, &l->host, &l->port);
  };
  if (!listen("api", listen_api)) return config_error("--listen-api: expected HOST:PORT, got '" + listen_api + "'");
  if (!listen("manager", listen_manager)) {
    return config_error("--listen-manager: expected HOST:PORT, got '" + listen_manager + "'");
  }
  if (have_uri) cfg.virt.uri = libvirt_uri;
  if (!log_level.empty()) {
    cloudlet::log::Level l;
    if (!cloudlet::log::parse_level(log_level, &l)) {
      return config_error("--log-level: must be error, warn, info, debug or trace");
    }
    cfg.log_level = log_level;
  }
  if (!api_mode.empty()) {
    if (api_mode != "open" && api_mode != "encrypted" && api_mode != "both") {
      return config_error("--api-mode: must be open, encrypted or both");
    }
    cfg.api_mode = api_mode;
  }
  if (demo) cfg.demo = true;
  if (cloudlet::Status valid = cloudlet::validate_config(cfg); !valid.ok()) return config_error(valid.message());
  if (check_only) {
    printf("cloudletd: configuration OK (%s)\n", cfg.source.empty() ? "embedded defaults" : cfg.source.c_str());
    return 0;
  }

  // libvirt's embedded driver logs by itself, to stderr unless told otherwise: warnings at every domain start
  // ("tainted: custom-argv") and errors about host probes it does not need. cloudletd logs what matters about each
  // VM; libvirt's own errors go to <data_dir>/libvirt.log (read once libvirt is first used, after the data
  // directory exists). An explicit LIBVIRT_LOG_OUTPUTS in the environment wins.
  if (!getenv("LIBVIRT_LOG_OUTPUTS")) {
    std::string dir = cfg.data_dir;
    char cwd[PATH_MAX];
    if (!dir.empty() && dir[0] != '/' && getcwd(cwd, sizeof cwd)) dir = std::string(cwd) + "/" + dir;
    setenv("LIBVIRT_LOG_OUTPUTS", ("4:file:" + dir + "/libvirt.log").c_str(), 1);
  }

  if (!new_token.empty() || !set_password.empty()) {
    if (!new_token.empty() && !set_password.empty()) return config_error("--new-token and --set-password: one at a time");
    return new_token.empty() ? set_password_command(std::move(cfg), set_password)
                             : new_token_command(std::move(cfg), new_token);
  }

  cloudlet::Daemon daemon(std::move(cfg));
  std::string error;
  if (!daemon.start(&error)) {
    cloudlet::log::error("core", "cannot start: {}", error);
    return 1;
  }
  return daemon.run();
}
