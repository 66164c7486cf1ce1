// The daemon's shutdown with a plugin that holds everything an unload must wait for: slow work on the
// workers, 32 MiB lent to a client that does not read, a request body stream that stops half-way, and posts
// from its own thread. SIGTERM must unload it as a step of the shutdown sequence, without re-entering uv_run
// (the test is linked with -Wl,--wrap=uv_run), deliver every completion exactly once before fini, unmap it,
// and exit 0. Run it in the ASan build (make asan) for the "clean under ASan" half.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "config/config.h"
#include "daemon.h"
#include "http/server.h"
#include "http_client.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "plugin_test_util.h"
#include "uv_run_probe.h"

namespace fs = std::filesystem;
using namespace cloudlet;

namespace {

TEST(PluginShutdown, SigtermUnloadsAPluginHoldingWorkAWriteAndABodyStream) {
  fs::path dir = fs::temp_directory_path() / ("cl-shutdown-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string log_path = (dir / "log.txt").string();

  Config cfg = default_config();
  cfg.data_dir = (dir / "data").string();
  cfg.log_file = log_path;
  cfg.log_level = "debug";
  for (auto& l : cfg.listeners) {
    l.host = "127.0.0.1";
    l.port = 0;
  }
  cfg.discovery.enabled = false;
  cfg.plugins_dlclose = true;
  cfg.shutdown_timeout_ms = 300;  // the held connections are closed at this deadline
  PluginConfig p;
  p.name = "unload_pending";
  p.path = std::string(getenv("CLOUDLET_BUILD_DIR")) + "/tests/fixtures/fixture_unload_pending.so";
  cfg.plugins.push_back(p);

  int rc = -1;
  {
    Daemon d(cfg);
    std::string error;
    ASSERT_TRUE(d.start(&error)) << error;
    uint16_t port = d.server().listener("manager")->bound_port;
    // A download nobody reads (its lent bytes stay pending) and an upload that stops half-way.
    int down = -1, up = -1;
    ASSERT_TRUE(test::hold_download_and_upload(port, &down, &up));

    // On the loop: queue the slow work, wait until the write and the stream are pending, then SIGTERM.
    bool queued = false, busy = false;
    uint64_t started = uv_hrtime();
    Loop::TimerId poll = 0;
    auto terminate = [&] {
      d.loop().timer_stop(poll);
      kill(getpid(), SIGTERM);
    };
    poll = d.loop().timer_start(5, 5, [&] {
      if (uv_hrtime() - started > 20ull * 1000000000) return terminate();  // the assertions below will say why
      if (busy) return;
      busy = true;
      if (!queued) {
        d.ops().call("unload_pending.work", "{}", [&](cl_status_t st, std::string_view) {
          busy = false;
          queued = st == CL_OK;
        });
        return;
      }
      d.ops().call("unload_pending.status", "{}", [&](cl_status_t, std::string_view s) {
        busy = false;
        if (s.find("\"lent_pending\":1") != std::string_view::npos && s.find("\"body_open\":1") != std::string_view::npos) {
          terminate();
        }
      });
    });
    rc = d.run();
    close(down);
    close(up);
  }

  EXPECT_EQ(rc, 0);
  EXPECT_EQ(test::uv_run_reentries(), 0);
  std::ifstream in(log_path);
  std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t tally_at = log.find("tally:");
  ASSERT_NE(tally_at, std::string::npos) << log;
  std::string tally = log.substr(tally_at, log.find('\n', tally_at) - tally_at);
  EXPECT_EQ(test::tally_value(tally, "work_queued"), 40) << tally;
  EXPECT_EQ(test::tally_value(tally, "work_ok") + test::tally_value(tally, "work_canceled"), 40) << tally;
  EXPECT_EQ(test::tally_value(tally, "work_twice"), 0) << tally;
  EXPECT_EQ(test::tally_value(tally, "lent_done"), 1) << tally;
  EXPECT_EQ(test::tally_value(tally, "lent_twice"), 0) << tally;
  EXPECT_EQ(test::tally_value(tally, "body_final"), 1) << tally;
  // The server closes held connections at its shutdown deadline, before plugins unload: the client is gone.
  EXPECT_EQ(test::tally_value(tally, "body_status"), CL_ECLOSING) << tally;
  EXPECT_EQ(test::tally_value(tally, "body_twice"), 0) << tally;
  EXPECT_EQ(test::tally_value(tally, "posts_accepted"), test::tally_value(tally, "posts_delivered")) << tally;
  EXPECT_EQ(test::tally_value(tally, "pending_at_fini"), 0) << tally;
  size_t unloaded_at = log.find("unloaded 'unload_pending'");
  ASSERT_NE(unloaded_at, std::string::npos) << log;
  EXPECT_EQ(log.find("code stays mapped"), std::string::npos);  // plugins_dlclose: unmapped
  size_t complete_at = log.find("shutdown complete");
  ASSERT_NE(complete_at, std::string::npos) << log;
  EXPECT_LT(tally_at, unloaded_at);
  EXPECT_LT(unloaded_at, complete_at);
  fs::remove_all(dir);
}

}  // namespace
