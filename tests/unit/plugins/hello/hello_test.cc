// The hello plugin against the fake host: no server, the plugin sees only the ABI.
#include <gtest/gtest.h>

#include <tuple>

#include "fakehost.h"

using cloudlet::test::FakeHost;

namespace {
std::string plugin_path() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/plugins/hello.so"; }
}  // namespace

TEST(Hello, RegistersItsRouteAndOperation) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  ASSERT_EQ(fh.routes.size(), 2u);
  EXPECT_EQ(fh.routes[0].listener, "manager");
  EXPECT_EQ(fh.routes[0].pattern, "/plugins/hello/greet");
  EXPECT_EQ(fh.routes[1].pattern, "/plugins/hello/echo");
  EXPECT_TRUE(fh.has_operation("hello.greet"));
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Hello, EchoesWebSocketMessages) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  EXPECT_EQ(fh.request("manager", "GET", "/plugins/hello/echo").status, 400u);  // not an upgrade
  auto r = fh.request("manager", "GET", "/plugins/hello/echo", "",
                      {{"Upgrade", "websocket"},
                       {"Connection", "keep-alive, Upgrade"},
                       {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                       {"Sec-WebSocket-Version", "13"}});
  ASSERT_EQ(r.status, 101u);
  EXPECT_EQ(r.header("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");  // RFC 6455 1.3's example
  ASSERT_TRUE(r.websocket);
  fh.ws_send(r.websocket, CL_WS_TEXT, "ping \xE2\x9C\x93");
  fh.ws_send(r.websocket, CL_WS_BINARY, std::string("\0\x01\xFF", 3));
  ASSERT_EQ(r.websocket->messages.size(), 2u);
  EXPECT_EQ(r.websocket->messages[0], std::make_pair(int32_t{CL_WS_TEXT}, std::string("ping \xE2\x9C\x93")));
  EXPECT_EQ(r.websocket->messages[1], std::make_pair(int32_t{CL_WS_BINARY}, std::string("\0\x01\xFF", 3)));
  fh.ws_send(r.websocket, CL_WS_BINARY, std::string(64 * 1024 + 1, 'x'));  // over its max_message
  EXPECT_FALSE(r.websocket->open);
  EXPECT_EQ(r.websocket->close_code, 1009u);
  EXPECT_EQ(r.websocket->messages.size(), 2u);
  bool logged = false;
  for (auto& l : fh.logs) logged |= l.text.find("echo socket closed") != std::string::npos;
  EXPECT_TRUE(logged);
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Hello, GreetsCountsAndPublishes) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  auto r1 = fh.request("manager", "GET", "/plugins/hello/greet?name=ada");
  EXPECT_EQ(r1.status, 200u);
  EXPECT_EQ(r1.body, "{\"greeting\":\"hello, ada\",\"count\":1}");
  EXPECT_EQ(r1.header("Content-Type"), "application/json");
  auto r2 = fh.request("manager", "GET", "/plugins/hello/greet?name=ada");
  EXPECT_EQ(r2.body, "{\"greeting\":\"hello, ada\",\"count\":2}");
  EXPECT_EQ(fh.store["greetings"]["ada"], "2");
  ASSERT_EQ(fh.published.size(), 2u);
  EXPECT_EQ(fh.published[1].first, "hello.greeted");
  EXPECT_EQ(fh.published[1].second, "{\"name\":\"ada\",\"count\":2}");
  auto r3 = fh.request("manager", "GET", "/plugins/hello/greet");
  EXPECT_EQ(r3.body, "{\"greeting\":\"hello, world\",\"count\":1}");
}

TEST(Hello, RefusesBadNames) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  auto r = fh.request("manager", "GET", "/plugins/hello/greet?name=%22%3Cscript%3E");
  EXPECT_EQ(r.status, 400u);
  EXPECT_TRUE(fh.store["greetings"].empty());
  auto [st, out] = fh.call("hello.greet", "{\"name\":\"a b\"}");
  EXPECT_EQ(st, CL_EINVAL);
}

TEST(Hello, OperationSharesTheCounter) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  fh.request("manager", "GET", "/plugins/hello/greet?name=bo");
  auto [st, out] = fh.call("hello.greet", "{\"name\":\"bo\"}");
  EXPECT_EQ(st, CL_OK);
  EXPECT_EQ(out, "{\"greeting\":\"hello, bo\",\"count\":2}");
}

TEST(Hello, HeartbeatTimerRunsAndStopsAtUnload) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path(), "{\"heartbeat_s\": 1}"), CL_OK);
  ASSERT_TRUE(fh.run_until(
      [&] {
        for (auto& l : fh.logs) {
          if (l.text == "still here") return true;
        }
        return false;
      },
      3000));
  EXPECT_EQ(fh.unload(), 0u);  // fini stopped its timer
}

// Arguments are read with the host's JSON slots, not scanned by hand: spacing, escapes and key order do not
// matter, and a value of the wrong type is refused.
TEST(Hello, OperationReadsItsJsonArgumentsProperly) {
  FakeHost fh;
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  auto [st, out] = fh.call("hello.greet", "{\"name\": \"bob\"}");
  EXPECT_EQ(st, CL_OK);
  EXPECT_EQ(out, "{\"greeting\":\"hello, bob\",\"count\":1}");
  std::tie(st, out) = fh.call("hello.greet", "{ \"x\" : [1, {\"name\": \"no\"}], \"name\" : \"b\\u006fb\" }");
  EXPECT_EQ(st, CL_OK);
  EXPECT_EQ(out, "{\"greeting\":\"hello, bob\",\"count\":2}");
  std::tie(st, out) = fh.call("hello.greet", "{}");
  EXPECT_EQ(out, "{\"greeting\":\"hello, world\",\"count\":1}");
  EXPECT_EQ(fh.call("hello.greet", "{\"name\": 5}").first, CL_EINVAL);
  EXPECT_EQ(fh.call("hello.greet", "not json").first, CL_EINVAL);
  EXPECT_EQ(fh.unload(), 0u);  // every parsed document was freed
}

TEST(Hello, BadHeartbeatConfigurationIsRefused) {
  FakeHost fh;
  std::string error;
  EXPECT_EQ(fh.load(plugin_path(), "{\"heartbeat_s\": \"often\"}", &error), CL_EINVAL);
  EXPECT_EQ(error, "init failed: invalid argument");
  EXPECT_EQ(fh.request("manager", "GET", "/plugins/hello/greet").status, 404u);  // its route was removed
  EXPECT_FALSE(fh.has_operation("hello.greet"));
}
