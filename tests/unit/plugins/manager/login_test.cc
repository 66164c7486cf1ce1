// plugins/manager/login.cc on the fake host: the listener's guard (every route refuses an anonymous caller),
// the first user, sessions (cookie flags, rotation, CSRF, logout, expiry), throttling, password changes and
// API tokens.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "fakehost.h"
#include "json/json.h"
#include "manager_host.h"

using cloudlet::test::FakeHost;
using manager_test::configure;
using manager_test::plugin_path;
using Headers = std::vector<std::pair<std::string, std::string>>;

namespace {

std::string field(const std::string& json, const char* name) {
  cloudlet::json::Document d;
  if (!cloudlet::json::parse(json, &d, nullptr) || !d.IsObject() || !d.HasMember(name) || !d[name].IsString()) {
    return "";
  }
  return d[name].GetString();
}

// Loads the manager and waits for its first user; returns that user's password (from its 0600 file).
std::string load_and_first_password(FakeHost& fh, const std::string& config = "") {
  EXPECT_EQ(config.empty() ? fh.load(plugin_path()) : fh.load(plugin_path(), config), CL_OK);
  EXPECT_TRUE(fh.run_until([&] { return fh.store["users"].count("admin") > 0; }, 10000));
  std::ifstream f(fh.facts["plugin_data_dir"] + "/admin-password");
  std::string pw;
  std::getline(f, pw);
  return pw;
}

FakeHost::Response login(FakeHost& fh, const std::string& user, const std::string& password,
                         const Headers& extra = {}) {
  Headers h = {{"Content-Type", "application/json"}};
  h.insert(h.end(), extra.begin(), extra.end());
  return fh.request("manager", "POST", "/manager/api/login",
                    "{\"user\":\"" + user + "\",\"password\":\"" + password + "\"}", h, 10000);
}

// "cloudletd_session=<id>" from a login's Set-Cookie.
std::string session_cookie(const FakeHost::Response& r) {
  std::string c = r.header("Set-Cookie");
  return c.substr(0, c.find(';'));
}

}  // namespace

// Enumerated from what the plugin registered, not listed by hand: each route refuses a caller with neither a
// session nor a token, except the login page, its script and the login itself.
TEST(Login, EveryRouteRefusesAnAnonymousCaller) {
  FakeHost fh;
  configure(fh);
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  ASSERT_GE(fh.routes.size(), 30u);
  size_t refused = 0;
  for (const auto& route : fh.routes) {
    std::string target = route.pattern;
    if (size_t at = target.find("{id}"); at != std::string::npos) target.replace(at, 4, "x1");
    if (size_t at = target.find("{*path}"); at != std::string::npos) target.replace(at, 7, "index.html");  // pages
    auto r = fh.request("manager", route.method, target, route.method == "POST" ? "{}" : "",
                        {{"Content-Type", "application/json"}});
    std::string name = route.method + " " + route.pattern;
    if (name == "GET /manager/login" || name == "GET /manager/login.js" || name == "GET /manager/login.css" ||
        name == "POST /manager/api/login") {
      EXPECT_NE(r.status, 401u) << name;
      continue;
    }
    EXPECT_EQ(r.status, 401u) << name << ": " << r.body;
    EXPECT_EQ(r.header("WWW-Authenticate"), "Bearer realm=\"cloudletd manager\"") << name;
    refused++;
  }
  EXPECT_EQ(refused, fh.routes.size() - 4);
  // A browser asking for a page is told where to log in (still a 401).
  auto page = fh.request("manager", "GET", "/manager/api/services", "", {{"Accept", "text/html"}});
  EXPECT_EQ(page.status, 401u);
  EXPECT_NE(page.body.find("/manager/login"), std::string::npos);
  // Garbage credentials are no better than none.
  for (const Headers& h : {Headers{{"Authorization", "Bearer cl_nope"}}, Headers{{"Authorization", "Basic YTpi"}},
                           Headers{{"Cookie", "cloudletd_session=forged"}}}) {
    EXPECT_EQ(fh.request("manager", "GET", "/manager/api/info", "", h).status, 401u) << h[0].second;
  }
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, TheFirstStartMakesAdminWithARandomPasswordToldOnce) {
  FakeHost fh;
  configure(fh);
  std::string pw = load_and_first_password(fh);
  EXPECT_EQ(pw.size(), 24u);
  struct stat st;
  ASSERT_EQ(stat((fh.facts["plugin_data_dir"] + "/admin-password").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  bool logged = false;
  {
    std::lock_guard<std::mutex> lock(fh.log_mutex);
    for (const auto& l : fh.logs) logged = logged || l.text.find(pw) != std::string::npos;
  }
  EXPECT_TRUE(logged) << "the first password is written to the log once";
  // Stored as a PBKDF2 hash at OWASP's cost, never in clear.
  EXPECT_EQ(fh.store["users"]["admin"].find(pw), std::string::npos);
  EXPECT_NE(fh.store["users"]["admin"].find("pbkdf2-sha256$600000$"), std::string::npos);
  EXPECT_EQ(login(fh, "admin", pw).status, 200u);
  EXPECT_EQ(fh.unload(), 0u);
  // A second start keeps the user and its password.
  FakeHost again;
  configure(again);
  again.store = fh.store;
  ASSERT_EQ(again.load(plugin_path()), CL_OK);
  again.run_for(300);
  EXPECT_EQ(login(again, "admin", pw).status, 200u);
  EXPECT_EQ(again.unload(), 0u);
}

TEST(Login, ASessionCookieIsHardenedRotatedAndEndsAtLogout) {
  FakeHost fh;
  configure(fh);
  std::string pw = load_and_first_password(fh);
  auto r = login(fh, "admin", pw);
  ASSERT_EQ(r.status, 200u) << r.body;
  std::string set = r.header("Set-Cookie");
  for (const char* flag : {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"}) {
    EXPECT_NE(set.find(flag), std::string::npos) << flag << " in " << set;
  }
  EXPECT_EQ(set.find("Secure"), std::string::npos) << "plain HTTP: a Secure cookie would never come back";
  std::string cookie = session_cookie(r);
  EXPECT_EQ(cookie.size(), std::string("cloudletd_session=").size() + 43);  // 256 random bits
  std::string csrf = field(r.body, "csrf_token");
  EXPECT_EQ(csrf.size(), 43u);
  // The store keeps a digest of the id, not the id.
  for (const auto& [key, doc] : fh.store["sessions"]) EXPECT_EQ(cookie.find(key), std::string::npos);

  auto who = fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", cookie}});
  EXPECT_EQ(who.status, 200u);
  EXPECT_EQ(field(who.body, "principal"), "user:admin");
  EXPECT_EQ(field(who.body, "csrf_token"), csrf);

  // Logging in again gives a new id and ends the one the browser brought.
  auto again = login(fh, "admin", pw, {{"Cookie", cookie}});
  ASSERT_EQ(again.status, 200u);
  std::string cookie2 = session_cookie(again);
  EXPECT_NE(cookie2, cookie);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", cookie}}).status, 401u);
  std::string csrf2 = field(again.body, "csrf_token");

  // Logout needs the CSRF token like any POST, then the cookie is dead and cleared.
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/logout", "", {{"Cookie", cookie2}}).status, 403u);
  auto out = fh.request("manager", "POST", "/manager/api/logout", "", {{"Cookie", cookie2}, {"X-CSRF-Token", csrf2}});
  EXPECT_EQ(out.status, 200u) << out.body;
  EXPECT_NE(out.header("Set-Cookie").find("Max-Age=0"), std::string::npos);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", cookie2}}).status, 401u);
  EXPECT_TRUE(fh.store["sessions"].empty());
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, StateChangesNeedTheSessionsCsrfToken) {
  FakeHost fh;
  configure(fh);
  int created = 0;
  fh.provide("service.create", [&](const std::string&, std::function<void(cl_status_t, std::string)> reply) {
    created++;
    reply(CL_OK, "{}");
  });
  fh.provide("service.list", [&](const std::string&, std::function<void(cl_status_t, std::string)> reply) {
    reply(CL_OK, "{\"services\":[]}");
  });
  std::string pw = load_and_first_password(fh);
  auto r = login(fh, "admin", pw);
  std::string cookie = session_cookie(r), csrf = field(r.body, "csrf_token");
  Headers json = {{"Content-Type", "application/json"}, {"Cookie", cookie}};
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/services", "", json).status, 200u);  // reads need none
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/services", "{}", json).status, 403u);
  Headers wrong = json;
  wrong.emplace_back("X-CSRF-Token", csrf.substr(1) + "A");
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/services", "{}", wrong).status, 403u);
  EXPECT_EQ(created, 0);
  Headers right = json;
  right.emplace_back("X-CSRF-Token", csrf);
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/services", "{}", right).status, 200u);
  EXPECT_EQ(created, 1);
  // A script's token needs no CSRF header: a browser never sends it by itself.
  auto [st, made] = fh.call("manager.token.create", "{\"name\":\"script\"}");
  ASSERT_EQ(st, CL_OK);
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/services", "{}",
                       {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + field(made, "token")}})
                .status,
            200u);
  EXPECT_EQ(created, 2);
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, FailedLoginsAreThrottledPerUserAndPerAddress) {
  FakeHost fh;
  configure(fh);
  std::string pw = load_and_first_password(fh);
  fh.peer_ip = "192.0.2.1";
  for (int i = 0; i < 5; i++) {
    auto r = login(fh, "admin", "wrong-password");
    EXPECT_EQ(r.status, 401u) << i;
    EXPECT_EQ(field(r.body, "error"), "wrong user name or password");
  }
  auto r = login(fh, "admin", pw);  // even the right password waits now
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(r.header("Retry-After"), "1");
  // The same address trying another user is held too; an unknown user reads exactly like a wrong password.
  EXPECT_EQ(login(fh, "someone", "whatever-1").status, 429u);
  fh.peer_ip = "192.0.2.2";
  EXPECT_EQ(login(fh, "admin", pw).status, 429u) << "the user is held from every address";
  auto unknown = login(fh, "someone", "whatever-1");
  EXPECT_EQ(unknown.status, 401u);
  EXPECT_EQ(field(unknown.body, "error"), "wrong user name or password");
  // The back-off ends: after it, the right password gets in and clears the count.
  fh.run_for(1100);
  EXPECT_EQ(login(fh, "admin", pw).status, 200u);
  EXPECT_EQ(login(fh, "admin", "wrong-password").status, 401u);
  EXPECT_EQ(login(fh, "admin", pw).status, 200u);
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, APasswordChangeEndsEverySessionOfTheUser) {
  FakeHost fh;
  configure(fh);
  std::string pw = load_and_first_password(fh);
  auto a = login(fh, "admin", pw), b = login(fh, "admin", pw);
  std::string cookie = session_cookie(a), csrf = field(a.body, "csrf_token");
  Headers h = {{"Content-Type", "application/json"}, {"Cookie", cookie}, {"X-CSRF-Token", csrf}};
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/password", "{\"current\":\"nope\",\"new\":\"a-new-password\"}", h,
                       10000)
                .status,
            403u);
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/password", "{\"current\":\"" + pw + "\",\"new\":\"short\"}", h)
                .status,
            400u);
  auto changed = fh.request("manager", "POST", "/manager/api/password",
                            "{\"current\":\"" + pw + "\",\"new\":\"a-new-password\"}", h, 10000);
  ASSERT_EQ(changed.status, 200u) << changed.body;
  EXPECT_NE(changed.body.find("\"sessions_ended\":2"), std::string::npos) << changed.body;
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", cookie}}).status, 401u);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", session_cookie(b)}}).status, 401u);
  EXPECT_EQ(login(fh, "admin", pw).status, 401u);
  EXPECT_EQ(login(fh, "admin", "a-new-password").status, 200u);
  // The command line's operation does the same (cloudletd --set-password).
  EXPECT_EQ(fh.call("manager.user.set_password", "{\"user\":\"admin\",\"password\":\"short\"}").first, CL_EINVAL);
  EXPECT_EQ(fh.call("manager.user.set_password", "{\"user\":\"admin\",\"password\":\"third-password\"}", 10000).first,
            CL_OK);
  EXPECT_EQ(login(fh, "admin", "third-password").status, 200u);
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, ApiTokensAreShownOnceListedWithoutSecretsAndRevokedAtOnce) {
  FakeHost fh;
  configure(fh);
  ASSERT_EQ(fh.load(plugin_path()), CL_OK);
  auto [st, first] = fh.call("manager.token.create", "{\"name\":\"ops\"}");
  ASSERT_EQ(st, CL_OK);
  Headers ops = {{"Content-Type", "application/json"}, {"Authorization", "Bearer " + field(first, "token")}};
  auto made = fh.request("manager", "POST", "/manager/api/tokens", "{\"name\":\"backup\"}", ops);
  ASSERT_EQ(made.status, 201u) << made.body;
  std::string secret = field(made.body, "token"), id = field(made.body, "id");
  EXPECT_EQ(secret.rfind("cl_", 0), 0u);
  EXPECT_EQ(fh.request("manager", "POST", "/manager/api/tokens", "{\"name\":\"bad name\"}", ops).status, 400u);
  auto list = fh.request("manager", "GET", "/manager/api/tokens", "", ops);
  EXPECT_EQ(list.status, 200u);
  EXPECT_NE(list.body.find("\"backup\""), std::string::npos);
  EXPECT_EQ(list.body.find(secret), std::string::npos);
  for (const auto& [key, doc] : fh.store["tokens"]) EXPECT_EQ(doc.find(secret), std::string::npos);
  Headers backup = {{"Authorization", "Bearer " + secret}};
  auto who = fh.request("manager", "GET", "/manager/api/session", "", backup);
  EXPECT_EQ(field(who.body, "principal"), "token:backup");
  EXPECT_EQ(fh.request("manager", "DELETE", "/manager/api/tokens/" + id, "", ops).status, 200u);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", backup).status, 401u);
  EXPECT_EQ(fh.request("manager", "DELETE", "/manager/api/tokens/" + id, "", ops).status, 404u);
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, CookiesAreSecureOnHttpsAndSessionsExpire) {
  FakeHost fh;
  configure(fh);
  fh.facts["listener_tls.manager"] = "true";
  std::string pw = load_and_first_password(fh, "{\"session_idle_minutes\": 1, \"session_max_hours\": 1}");
  auto r = login(fh, "admin", pw);
  ASSERT_EQ(r.status, 200u);
  EXPECT_NE(r.header("Set-Cookie").find("; Secure"), std::string::npos);
  EXPECT_NE(r.header("Set-Cookie").find("Max-Age=3600"), std::string::npos);
  std::string cookie = session_cookie(r);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", cookie}}).status, 200u);
  // Idle for two minutes (the record's last use moved back): the session is over and gone from the store.
  ASSERT_EQ(fh.store["sessions"].size(), 1u);
  auto& doc = fh.store["sessions"].begin()->second;
  cloudlet::json::Document d;
  ASSERT_TRUE(cloudlet::json::parse(doc, &d, nullptr));
  d["seen_ms"].SetInt64(d["seen_ms"].GetInt64() - 120000);
  doc = cloudlet::json::stringify(d);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", cookie}}).status, 401u);
  EXPECT_TRUE(fh.run_until([&] { return fh.store["sessions"].empty(); }));
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, SessionsAreBoundedPerUserAndExpiredOnesSwept) {
  FakeHost fh;
  configure(fh);
  // Left by an earlier run: one long expired, one fresh. The sweep after start-up deletes only the first.
  uint64_t now = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  auto doc = [](uint64_t created, uint64_t seen) {
    return "{\"user\":\"admin\",\"csrf\":\"c\",\"created_ms\":" + std::to_string(created) +
           ",\"seen_ms\":" + std::to_string(seen) + "}";
  };
  fh.store["sessions"]["old"] = doc(now - 86400000, now - 86400000);
  fh.store["sessions"]["fresh"] = doc(now - 1000, now - 1000);
  std::string pw = load_and_first_password(fh);
  EXPECT_TRUE(fh.run_until([&] { return fh.store["sessions"].count("old") == 0; }, 3000));
  EXPECT_EQ(fh.store["sessions"].count("fresh"), 1u);
  // 34 logins (and "fresh"): the user keeps the newest 32 sessions; the first login's cookie no longer works.
  std::string first;
  for (int i = 0; i < 34; i++) {
    auto r = login(fh, "admin", pw);
    ASSERT_EQ(r.status, 200u) << i;
    if (i == 0) first = session_cookie(r);
  }
  EXPECT_EQ(fh.store["sessions"].size(), 32u);
  EXPECT_EQ(fh.request("manager", "GET", "/manager/api/session", "", {{"Cookie", first}}).status, 401u);
  EXPECT_EQ(fh.unload(), 0u);
}

TEST(Login, RefusesBadSessionSettings) {
  for (const char* config : {"{\"session_idle_minutes\": 0}", "{\"session_idle_minutes\": 1441}",
                             "{\"session_max_hours\": \"long\"}", "{\"session_max_hours\": 721}"}) {
    FakeHost fh;
    configure(fh);
    EXPECT_EQ(fh.load(plugin_path(), config), CL_EINVAL) << config;
  }
  // Without the guard granted, the manager does not load (it must never serve unguarded).
  FakeHost fh;
  configure(fh);
  fh.guards.clear();
  EXPECT_NE(fh.load(plugin_path()), CL_OK);
}
