#include "config/config.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace cloudlet;

namespace {
std::string write(const std::string& text) {
  std::string path = testing::TempDir() + "/cfg.json";
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST(Config, DefaultsHaveTheTwoListeners) {
  Config c = default_config();
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(find_listener(c, "api")->port, 9999);
  EXPECT_EQ(find_listener(c, "manager")->port, 9998);
  EXPECT_EQ(find_listener(c, "api")->host, "127.0.0.1");
}

TEST(Config, FileOverridesAndResolvesRelativePaths) {
  Config c = default_config();
  std::string err;
  std::string path = write(R"({
    // comment
    "data_dir": "data",
    "limits": {"idle_timeout_ms": 1234},
    "listeners": {"api": {"port": 1234}, "extra": {"port": 0, "webroot": "/srv/www"}, "manager": null},
    "plugins": ["hello", {"name": "x", "config": {"k": [1, 2]}, "prefixes": ["/x/"]}],
  })");
  ASSERT_TRUE(load_config_file(path, &c, &err)) << err;
  EXPECT_EQ(c.data_dir, testing::TempDir() + "data");
  EXPECT_EQ(find_listener(c, "api")->port, 1234);
  EXPECT_EQ(find_listener(c, "api")->limits.idle_timeout_ms, 1234u);
  EXPECT_EQ(find_listener(c, "extra")->limits.idle_timeout_ms, 1234u);
  EXPECT_EQ(find_listener(c, "manager"), nullptr);
  ASSERT_EQ(c.plugins.size(), 2u);
  EXPECT_EQ(c.plugins[1].config_json, "{\"k\":[1,2]}");
}

TEST(Config, ErrorsNameTheKey) {
  struct Case {
    const char* text;
    const char* key;
  } cases[] = {
      {R"({"listeners": {"api": {"port": -1}}})", "'listeners.api.port'"},
      {R"({"listeners": {"api": {"limits": {"max_connections": 0}}}})", "'listeners.api.limits.max_connections'"},
      {R"({"api": {"mode": "secret"}})", "'api.mode'"},
      {R"({"shutdown_timeout_ms": true})", "'shutdown_timeout_ms'"},
      {R"({"plugins": [{"name": "a", "prefixes": ["x"]}]})", "'plugins[0].prefixes'"},
      {R"({"discovery": {"extra_txt": [1]}})", "'discovery.extra_txt'"},
      {R"({"listeners": {"Bad-Name": {}}})", "'listeners.Bad-Name'"},
      {R"({"nope": 1})", "'nope'"},
      {R"({"no\npe\u001b[31m": 1})", "'no?pe?[31m'"},  // control characters from the file stay out
      {R"({"discovery": {"extra_txt": ["a\nb"]}})", "'discovery.extra_txt'"},
  };
  for (const auto& tc : cases) {
    Config c = default_config();
    std::string err;
    EXPECT_FALSE(load_config_file(write(tc.text), &c, &err)) << tc.text;
    EXPECT_NE(err.find(tc.key), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << "one line: " << err;
  }
}

TEST(Config, CrossKeyRules) {
  Config c = default_config();
  std::string err;
  find_listener(c, "manager")->port = 9999;
  EXPECT_FALSE(validate_config(c, &err));
  EXPECT_NE(err.find("both use"), std::string::npos);
}

TEST(Config, HostPort) {
  std::string h;
  uint16_t p;
  EXPECT_TRUE(parse_host_port("0.0.0.0:80", &h, &p));
  EXPECT_EQ(h, "0.0.0.0");
  EXPECT_EQ(p, 80);
  EXPECT_TRUE(parse_host_port("[::1]:9999", &h, &p));
  EXPECT_EQ(h, "::1");
  EXPECT_FALSE(parse_host_port("::1:99", &h, &p));
  EXPECT_FALSE(parse_host_port("host:", &h, &p));
  EXPECT_FALSE(parse_host_port("host:65536", &h, &p));
  EXPECT_FALSE(parse_host_port("noport", &h, &p));
}

// A config file nested absurdly deep (here inside a plugin's free-form config) is refused with the reason, not
// a stack overflow.
TEST(Config, DeepNestingIsAClearError) {
  std::string deep(100000, '[');
  Config c = default_config();
  std::string err;
  EXPECT_FALSE(load_config_file(write(R"({"plugins": [{"name": "a", "config": )" + deep + "}]}"), &c, &err));
  EXPECT_NE(err.find("not valid JSON: line 1 column"), std::string::npos) << err;
  EXPECT_NE(err.find("nesting deeper than 128"), std::string::npos) << err;
}
