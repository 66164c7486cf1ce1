// adb_test_peer: the device-side test peer as a program, for checking it against the real `adb` client and
// for benchmarks. Prints "listening <port>" once ready and serves until SIGINT/SIGTERM.
//
//   adb_test_peer --dir DIR [--listen 127.0.0.1:5555] [--offer accept|save|deny|ignore] [--no-auth]
//                 [--version HEX] [--max-payload N] [--verbose]
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "peer/adb_peer.h"

using namespace cloudlet::adb::peer;

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int) { g_stop = 1; }

static int usage() {
  std::fprintf(stderr,
               "usage: adb_test_peer --dir DIR [--listen HOST:PORT] [--offer accept|save|deny|ignore] [--no-auth]\n"
               "                     [--version HEX] [--max-payload N] [--verbose]\n");
  return 2;
}

int main(int argc, char** argv) {
  PeerOptions opts;
  std::string listen = "127.0.0.1:0";
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--dir") {
      const char* v = next();
      if (!v) return usage();
      opts.dir = v;
    } else if (a == "--listen") {
      const char* v = next();
      if (!v) return usage();
      listen = v;
    } else if (a == "--offer") {
      const char* v = next();
      if (!v) return usage();
      std::string o = v;
      if (o == "accept") opts.offer = Offer::accept;
      else if (o == "save") opts.offer = Offer::accept_save;
      else if (o == "deny") opts.offer = Offer::deny;
      else if (o == "ignore") opts.offer = Offer::ignore;
      else return usage();
    } else if (a == "--no-auth") {
      opts.require_auth = false;
    } else if (a == "--version") {
      const char* v = next();
      if (!v) return usage();
      opts.version = uint32_t(std::strtoul(v, nullptr, 16));
    } else if (a == "--max-payload") {
      const char* v = next();
      if (!v) return usage();
      opts.max_payload = uint32_t(std::strtoul(v, nullptr, 10));
    } else if (a == "--verbose") {
      opts.verbose = true;
    } else {
      return usage();
    }
  }
  size_t colon = listen.rfind(':');
  if (opts.dir.empty() || colon == std::string::npos) return usage();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Peer peer(opts);
  std::string err;
  if (!peer.listen(listen.substr(0, colon), uint16_t(std::atoi(listen.c_str() + colon + 1)), &err)) {
    std::fprintf(stderr, "adb_test_peer: %s\n", err.c_str());
    return 1;
  }
  std::printf("listening %u\n", peer.port());
  std::fflush(stdout);
  while (!g_stop) usleep(50 * 1000);
  peer.stop();
  return 0;
}
