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

// A configuration failure is always CL_EINVAL here (the files exist and are small); its message goes to *err for
// the assertions on its text.
bool passes(const Status& s, std::string* err) {
  *err = s.message();
  EXPECT_TRUE(s.ok() || s.code() == CL_EINVAL) << s.code() << ": " << s.message();
  return s.ok();
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
    "plugins": ["hello", {"name": "x", "config": {"k": [1, 2]}, "prefixes": ["/x/"], "grants": ["device.auth"]}],
  })");
  ASSERT_TRUE(passes(load_config_file(path, &c), &err)) << err;
  EXPECT_EQ(c.data_dir, testing::TempDir() + "data");
  EXPECT_EQ(find_listener(c, "api")->port, 1234);
  EXPECT_EQ(find_listener(c, "api")->limits.idle_timeout_ms, 1234u);
  EXPECT_EQ(find_listener(c, "extra")->limits.idle_timeout_ms, 1234u);
  EXPECT_EQ(find_listener(c, "manager"), nullptr);
  ASSERT_EQ(c.plugins.size(), 2u);
  EXPECT_EQ(c.plugins[1].config_json, "{\"k\":[1,2]}");
  EXPECT_EQ(c.plugins[1].grants, std::vector<std::string>{"device.auth"});
  EXPECT_TRUE(c.plugins[0].grants.empty());
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
      {R"({"plugins": [{"name": "a", "grants": "device.auth"}]})", "'plugins[0].grants'"},
      {R"({"plugins": [{"name": "a", "grants": [1]}]})", "'plugins[0].grants'"},
      {R"({"plugins": [{"name": "a", "grants": ["Device Auth"]}]})", "'plugins[0].grants'"},
      {R"({"plugins": [{"name": "a", "grants": [""]}]})", "'plugins[0].grants'"},
      {R"({"discovery": {"extra_txt": [1]}})", "'discovery.extra_txt'"},
      {R"({"listeners": {"Bad-Name": {}}})", "'listeners.Bad-Name'"},
      {R"({"nope": 1})", "'nope'"},
      {R"({"listeners": {"manager": {"host_check": "loose"}}})", "'listeners.manager.host_check'"},
      {R"({"listeners": {"manager": {"server_names": ["a.example:80"]}}})", "'listeners.manager.server_names'"},
      {R"({"limits": {"max_unsent_bytes": 10}})", "'limits.max_unsent_bytes'"},
      {R"({"limits": {"min_body_rate": -1}})", "'limits.min_body_rate'"},
      {R"({"totals": {"max_body_bytes": 1}})", "'totals.max_body_bytes'"},
      {R"({"no\npe\u001b[31m": 1})", "'no?pe?[31m'"},  // control characters from the file stay out
      {R"({"discovery": {"extra_txt": ["a\nb"]}})", "'discovery.extra_txt'"},
  };
  for (const auto& tc : cases) {
    Config c = default_config();
    std::string err;
    EXPECT_FALSE(passes(load_config_file(write(tc.text), &c), &err)) << tc.text;
    EXPECT_NE(err.find(tc.key), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << "one line: " << err;
  }
}

TEST(Config, AnUnreadableFileIsAnIoError) {
  Config c = default_config();
  Status s = load_config_file(testing::TempDir() + "/no-such-config.json", &c);
  EXPECT_EQ(s.code(), CL_EIO);
  EXPECT_NE(s.message().find("cannot read the configuration file"), std::string::npos) << s.message();
}

TEST(Config, PluginGrantsAreBounded) {
  std::string grants;
  for (int i = 0; i < 257; i++) grants += (i ? ",\"op." : "\"op.") + std::to_string(i) + "\"";
  Config c = default_config();
  std::string err;
  EXPECT_FALSE(
      passes(load_config_file(write("{\"plugins\": [{\"name\": \"a\", \"grants\": [" + grants + "]}]}"), &c), &err));
  EXPECT_NE(err.find("'plugins[0].grants'"), std::string::npos) << err;
  EXPECT_NE(err.find("at most 256"), std::string::npos) << err;
  grants = grants.substr(0, grants.rfind(','));  // 256 names: fine
  c = default_config();
  EXPECT_TRUE(
      passes(load_config_file(write("{\"plugins\": [{\"name\": \"a\", \"grants\": [" + grants + "]}]}"), &c), &err))
      << err;
  ASSERT_EQ(c.plugins.size(), 1u);
  EXPECT_EQ(c.plugins[0].grants.size(), 256u);
}

TEST(Config, CrossKeyRules) {
  Config c = default_config();
  std::string err;
  find_listener(c, "manager")->port = 9999;
  EXPECT_FALSE(passes(validate_config(c), &err));
  EXPECT_NE(err.find("both use"), std::string::npos);
  c = default_config();
  c.totals.max_body_bytes = 65536;  // below the listeners' max_body_bytes: every large body would get 503
  EXPECT_FALSE(passes(validate_config(c), &err));
  EXPECT_NE(err.find("totals.max_body_bytes"), std::string::npos) << err;
}

TEST(Config, HardeningKeys) {
  Config c = default_config();
  // Phones reach the api listener by IP address; the manager answers only its names.
  EXPECT_EQ(find_listener(c, "api")->host_check, http::HostCheck::names_or_ip);
  EXPECT_EQ(find_listener(c, "manager")->host_check, http::HostCheck::names);
  std::string err;
  std::string path = write(R"({
    "limits": {"request_timeout_ms": 5000, "min_body_rate": 0, "max_connections_per_address": 16,
               "reserved_connections": 32, "max_unsent_bytes": 8192},
    "listeners": {"manager": {"server_names": ["cloudlet.example.org", "10.0.0.5"], "host_check": "off"},
                  "extra": {"port": 0}},
    "totals": {"max_unsent_bytes": 1048576, "max_body_bytes": 2097152}
  })");
  ASSERT_TRUE(passes(load_config_file(path, &c), &err)) << err;
  const http::ListenerOptions* m = find_listener(c, "manager");
  EXPECT_EQ(m->host_check, http::HostCheck::off);
  EXPECT_EQ(m->server_names, (std::vector<std::string>{"cloudlet.example.org", "10.0.0.5"}));
  EXPECT_EQ(m->limits.request_timeout_ms, 5000u);
  EXPECT_EQ(m->limits.min_body_rate, 0u);
  EXPECT_EQ(m->limits.max_connections_per_address, 16u);
  EXPECT_EQ(m->limits.reserved_connections, 32u);
  EXPECT_EQ(m->limits.max_unsent_bytes, 8192u);
  EXPECT_EQ(find_listener(c, "extra")->host_check, http::HostCheck::names);  // a new listener: strict
  EXPECT_EQ(find_listener(c, "api")->host_check, http::HostCheck::names_or_ip);
  EXPECT_EQ(c.totals.max_unsent_bytes, 1048576u);
  EXPECT_EQ(c.totals.max_body_bytes, 2097152u);
  EXPECT_TRUE(passes(validate_config(c), &err)) << err;
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
  EXPECT_FALSE(passes(load_config_file(write(R"({"plugins": [{"name": "a", "config": )" + deep + "}]}"), &c), &err));
  EXPECT_NE(err.find("not valid JSON: line 1 column"), std::string::npos) << err;
  EXPECT_NE(err.find("nesting deeper than 128"), std::string::npos) << err;
}

TEST(Config, ListenerGuardsAndClientCertificates) {
  Config c = default_config();
  std::string err;
  std::string path = write(R"({
    "listeners": {"secure": {"port": 0, "tls_cert": "/etc/c.pem", "tls_key": "/etc/k.pem",
                             "tls_client_certs": "require"}},
    "plugins": [{"name": "manager", "guards": ["manager"]}, {"name": "devices", "guards": ["secure"]}]
  })");
  ASSERT_TRUE(passes(load_config_file(path, &c), &err)) << err;
  EXPECT_EQ(find_listener(c, "secure")->tls_client_certs, http::ClientCerts::require);
  EXPECT_EQ(find_listener(c, "manager")->tls_client_certs, http::ClientCerts::none);
  EXPECT_EQ(c.plugins[0].guards, (std::vector<std::string>{"manager"}));
  EXPECT_TRUE(passes(validate_config(c), &err)) << err;

  // Bad values name their key.
  c = default_config();
  EXPECT_FALSE(
      passes(load_config_file(write(R"({"listeners": {"manager": {"tls_client_certs": "always"}}})"), &c), &err));
  EXPECT_NE(err.find("'listeners.manager.tls_client_certs'"), std::string::npos) << err;
  c = default_config();
  EXPECT_FALSE(passes(load_config_file(write(R"({"plugins": [{"name": "a", "guards": "manager"}]})"), &c), &err));
  EXPECT_NE(err.find("'plugins[0].guards'"), std::string::npos) << err;

  // "tls": true asks for the server's own certificate; only a boolean.
  c = default_config();
  ASSERT_TRUE(passes(load_config_file(write(R"({"listeners": {"manager": {"tls": true}}})"), &c), &err)) << err;
  EXPECT_TRUE(find_listener(c, "manager")->tls_auto);
  EXPECT_FALSE(find_listener(c, "api")->tls_auto);
  c = default_config();
  EXPECT_FALSE(passes(load_config_file(write(R"({"listeners": {"manager": {"tls": "yes"}}})"), &c), &err));
  EXPECT_NE(err.find("'listeners.manager.tls'"), std::string::npos) << err;

  // Cross-key rules: client certificates need TLS; a guard names a listener, and one plugin only.
  c = default_config();
  find_listener(c, "manager")->tls_client_certs = http::ClientCerts::optional;
  EXPECT_FALSE(passes(validate_config(c), &err));
  EXPECT_NE(err.find("listeners.manager.tls_client_certs"), std::string::npos) << err;
  find_listener(c, "manager")->tls_auto = true;  // its own certificate is TLS too
  EXPECT_TRUE(passes(validate_config(c), &err)) << err;
  c = default_config();
  c.plugins.push_back(PluginConfig{});
  c.plugins.back().name = "a";
  c.plugins.back().guards = {"nowhere"};
  EXPECT_FALSE(passes(validate_config(c), &err));
  EXPECT_NE(err.find("no listener named 'nowhere'"), std::string::npos) << err;
  c.plugins.back().guards = {"manager"};
  EXPECT_TRUE(passes(validate_config(c), &err)) << err;
  c.plugins.push_back(PluginConfig{});
  c.plugins.back().name = "b";
  c.plugins.back().guards = {"manager"};
  EXPECT_FALSE(passes(validate_config(c), &err));
  EXPECT_NE(err.find("already granted to plugin 'a'"), std::string::npos) << err;
}
