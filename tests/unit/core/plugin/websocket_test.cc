// WebSockets through the plugin ABI (ws_accept, ws_send, ws_pause, ws_close; ABI 1.1) with the real core:
// the conformance fixture's /plugins/conformance/ws echoes text (copied) and binary (lent) messages and closes
// on request; a raw RFC 6455 client talks to it over loopback. Also: a request that is no upgrade stays the
// plugin's to answer, and unloading closes open sockets with 1001 and reports CL_ECANCELED before fini.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <string>

#include "../http/server/server_test_util.h"
#include "../http/server/ws_test_client.h"
#include "plugin_core.h"
#include "plugin_test_util.h"

using namespace cloudlet;
using cloudlet::test::PluginCore;
using httptest::Client;
using httptest::Frame;
using httptest::masked;
using httptest::read_frame;
using httptest::upgrade_request;

namespace {

std::string fixture() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/tests/fixtures/fixture_conformance.so"; }

// Loads the conformance fixture as its init wants: the manager listener's guard granted, files with www/.
void load_fixture(PluginCore& core, const std::string& tag) {
  std::filesystem::path files = core.dir / ("files-" + tag);
  std::filesystem::create_directories(files / "www");
  core.guards = {"manager"};
  core.files_dir = files.string();
  std::string error;
  ASSERT_EQ(core.load("conformance", fixture(), {}, &error), CL_OK) << error;
}

// Runs client(port) on another thread while the core's loop turns here.
template <typename F>
void with_client(PluginCore& core, F client) {
  auto fut = std::async(std::launch::async, [&] { client(core.port); });
  EXPECT_TRUE(core.run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; },
                             15000));
  fut.get();
}

std::string stat(PluginCore& core, const std::string& key) {
  auto [st, out] = core.call("conf.ws_stats");
  EXPECT_EQ(st, CL_OK) << out;
  size_t p = out.find("\"" + key + "\":");
  if (p == std::string::npos) return "<absent>";
  p += key.size() + 3;
  if (out[p] == '"') return out.substr(p + 1, out.find('"', p + 1) - p - 1);
  return out.substr(p, out.find_first_of(",}", p) - p);
}

}  // namespace

TEST(PluginWebSocket, EchoesCopiedAndLentMessagesAndClosesWithThePluginsCode) {
  PluginCore core("ws-echo");
  load_fixture(core, "echo");
  with_client(core, [](uint16_t port) {
    Client c(port);
    auto r = c.roundtrip(upgrade_request("/plugins/conformance/ws"));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 101);
    EXPECT_EQ(r->header("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ASSERT_TRUE(c.send(masked(0x81, "h\xC3\xA9llo")));
    auto f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, 0x1);
    EXPECT_EQ(f->payload, "h\xC3\xA9llo");
    std::string big = httptest::pattern_bytes(90000, 7);
    ASSERT_TRUE(c.send(masked(0x82, big)));
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, 0x2);
    EXPECT_EQ(httptest::fnv(f->payload), httptest::fnv(big));
    ASSERT_TRUE(c.send(masked(0x81, "close please")));
    f = read_frame(c);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->opcode, 0x8);
    EXPECT_EQ(f->code(), 4001);
    EXPECT_EQ(f->payload.substr(2), "bye");
    ASSERT_TRUE(c.send(masked(0x88, httptest::ws::close_payload(4001, ""))));
    EXPECT_TRUE(c.wait_closed(3000));
  });
  EXPECT_TRUE(core.run_until([&] { return stat(core, "closes") == "1"; }));
  EXPECT_EQ(stat(core, "open"), "1");
  EXPECT_EQ(stat(core, "messages"), "3");
  EXPECT_EQ(stat(core, "lent_done"), "1");
  EXPECT_EQ(stat(core, "status"), std::to_string(CL_OK));
  EXPECT_EQ(stat(core, "code"), "4001");
  EXPECT_EQ(stat(core, "send_in_close"), std::to_string(CL_ECLOSING));
  EXPECT_EQ(core.close(), 0);
}

TEST(PluginWebSocket, APlainRequestIsStillThePluginsToAnswer) {
  PluginCore core("ws-plain");
  load_fixture(core, "plain");
  auto r = core.get("/plugins/conformance/ws");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "not a WebSocket request");
  EXPECT_EQ(stat(core, "refused"), std::to_string(CL_EINVAL));
  EXPECT_EQ(core.close(), 0);
}

TEST(PluginWebSocket, UnloadingClosesOpenSocketsWithGoingAwayBeforeFini) {
  PluginCore core("ws-unload");
  load_fixture(core, "unload");
  std::promise<void> opened;
  auto opened_f = opened.get_future();
  std::optional<Frame> got;
  auto fut = std::async(std::launch::async, [&] {
    Client c(core.port);
    auto r = c.roundtrip(upgrade_request("/plugins/conformance/ws"));
    opened.set_value();
    if (!r || r->status != 101) return;
    got = read_frame(c, 8000);  // the close the unloading sends
    if (got) c.send(masked(0x88, httptest::ws::close_payload(1001, "")));
    c.wait_closed(3000);
  });
  ASSERT_TRUE(core.run_until([&] { return opened_f.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
  ASSERT_TRUE(core.run_until([&] { return stat(core, "open") == "1"; }));
  EXPECT_TRUE(core.unload_all());
  core.run_until([&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, 10000);
  fut.get();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->opcode, 0x8);
  EXPECT_EQ(got->code(), 1001);
  EXPECT_EQ(core.log_lines_with("ws close: " + std::to_string(CL_ECANCELED) + " code 1001"), 1);
  EXPECT_EQ(core.log_lines_with("unloading: closing 1 WebSocket(s)"), 1);
  EXPECT_EQ(core.close(), 0);
}
