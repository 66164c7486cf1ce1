// Who may use the manager: users with passwords, their sessions, and API tokens for scripts; the listener's
// guard that lets only them through; and the routes and operations that manage all three.
//
// Store (the plugin's own namespace; secrets are kept only as digests):
//   users/<name>           {"hash": "pbkdf2-sha256$...", "changed_ms": N}
//   sessions/<sha256(id)>  {"user": name, "csrf": token, "created_ms": N, "seen_ms": N}
//   tokens/<sha256(token)> {"id": 12 hex, "name": name, "created_ms": N}
// Times are wall-clock milliseconds (sessions outlive a restart). Password hashing (PBKDF2, ~0.3 s) runs on
// workers, at most kMaxHashing at once; the guard itself only reads the store (microseconds).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "credentials.h"
#include "json/json.h"
#include "plugin.h"

namespace cloudlet::manager {

struct LoginRoute {
  const char* method;
  const char* pattern;
  cl_status_t (*handle)(Manager&, const cl::Request&);
  bool json_body;
};

namespace {

constexpr std::string_view kCookie = "cloudletd_session";
constexpr std::string_view kCsrfHeader = "x-csrf-token";
constexpr const char* kLoginPage = "/manager/login";
constexpr const char* kLoginScript = "/manager/login.js";
constexpr const char* kLoginStyle = "/manager/login.css";
constexpr const char* kLoginRoute = "/manager/api/login";
constexpr int kMaxHashing = 4;                       // KDF runs at once; more logins wait (503, Retry-After)
constexpr int kFreeFailures = 5;                     // failed logins before the back-off starts
constexpr uint64_t kFailureWindowMs = 15 * 60 * 1000;  // failures older than this are forgotten
constexpr uint64_t kMaxBackoffMs = 15 * 60 * 1000;
constexpr size_t kMaxThrottleEntries = 4096;
constexpr uint64_t kSeenWriteEveryMs = 60 * 1000;  // a session's last use is written at most this often
constexpr uint64_t kSweepEveryMs = 10 * 60 * 1000;  // sessions nobody presents again are deleted this often
constexpr size_t kMaxSessionsPerUser = 32;          // a login beyond this ends the user's oldest session
// What an unknown user's password is checked against, so that a wrong name costs the same time as a wrong
// password (no user enumeration by timing). Well-formed; matches nothing.
constexpr std::string_view kNoUserHash =
    "pbkdf2-sha256$600000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

uint64_t wall_ms() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

std::optional<std::string> store_read(const cl::Host& h, std::string_view coll, std::string_view key) {
  cl::Buf b(h);
  if (h.api()->store_get(h.handle(), cl::str(coll), cl::str(key), b.out()) != CL_OK) return std::nullopt;
  return std::string(b.view());
}

// Every (key, document) of a collection; the scan copies, so the callback may not write.
std::vector<std::pair<std::string, std::string>> store_all(const cl::Host& h, std::string_view coll) {
  std::vector<std::pair<std::string, std::string>> all;
  h.api()->store_scan(
      h.handle(), cl::str(coll), cl::str(""),
      [](void* ud, cl_str_t k, cl_str_t v) {
        static_cast<decltype(all)*>(ud)->emplace_back(std::string(cl::view(k)), std::string(cl::view(v)));
        return 0;
      },
      &all);
  return all;
}

// One transaction of puts and deletes; done(status) once durable (or failed).
struct Write {
  std::vector<std::pair<std::string, std::string>> puts;  // "coll/key" -> document
  std::vector<std::string> dels;                          // "coll/key"
};

template <typename D>
cl_status_t store_write(const cl::Host& h, const Write& w, D done) {
  cl::Txn txn;
  cl_status_t st = cl::Txn::begin(h, &txn);
  auto split = [](const std::string& path) {
    size_t slash = path.find('/');
    return std::make_pair(std::string_view(path).substr(0, slash), std::string_view(path).substr(slash + 1));
  };
  for (const auto& [path, doc] : w.puts) {
    if (st != CL_OK) break;
    auto [coll, key] = split(path);
    st = txn.put(coll, key, doc);
  }
  for (const auto& path : w.dels) {
    if (st != CL_OK) break;
    auto [coll, key] = split(path);
    st = txn.del(coll, key);
    if (st == CL_ENOENT) st = CL_OK;
  }
  if (st != CL_OK) return st;
  return cl::commit(txn, std::move(done));
}

std::string user_doc(const std::string& hash, uint64_t now) {
  std::string out = "{\"hash\":";
  json::append_quoted(&out, hash);
  return out + ",\"changed_ms\":" + std::to_string(now) + "}";
}

std::string session_doc(const Session& s) {
  std::string out = "{\"user\":";
  json::append_quoted(&out, s.user);
  out += ",\"csrf\":";
  json::append_quoted(&out, s.csrf);
  return out + ",\"created_ms\":" + std::to_string(s.created_ms) + ",\"seen_ms\":" + std::to_string(s.seen_ms) + "}";
}

bool session_parse(std::string_view doc, Session* s) {
  json::Document d;
  std::string error;
  if (!json::parse_object(doc, &d, &error)) return false;
  auto user = json::get_string(d, "user");
  auto csrf = json::get_string(d, "csrf");
  auto created = json::get_int(d, "created_ms");
  auto seen = json::get_int(d, "seen_ms");
  if (!user || !csrf || !created || !seen) return false;
  s->user = *user;
  s->csrf = *csrf;
  s->created_ms = static_cast<uint64_t>(*created);
  s->seen_ms = static_cast<uint64_t>(*seen);
  return true;
}

// ---- throttling -----------------------------------------------------------------------------------------

uint64_t backoff_ms(int failures) {
  if (failures < kFreeFailures) return 0;
  int shift = failures - kFreeFailures;
  return shift >= 20 ? kMaxBackoffMs : std::min<uint64_t>(1000ull << shift, kMaxBackoffMs);
}

// Milliseconds this key must still wait before its next attempt (0: go ahead).
uint64_t throttle_wait(Auth& a, const std::string& key, uint64_t now) {
  auto it = a.failures.find(key);
  if (it == a.failures.end()) return 0;
  if (now - it->second.last_ms > kFailureWindowMs) {
    a.failures.erase(it);
    return 0;
  }
  uint64_t until = it->second.last_ms + backoff_ms(it->second.count);
  return until > now ? until - now : 0;
}

void throttle_fail(Auth& a, const std::string& key, uint64_t now) {
  if (a.failures.size() >= kMaxThrottleEntries && !a.failures.count(key)) {
    for (auto it = a.failures.begin(); it != a.failures.end();) {
      it = now - it->second.last_ms > kFailureWindowMs ? a.failures.erase(it) : std::next(it);
    }
    // Still full: an address flood; forget the oldest half rather than grow.
    while (a.failures.size() >= kMaxThrottleEntries) a.failures.erase(a.failures.begin());
  }
  auto& f = a.failures[key];
  f.count++;
  f.last_ms = now;
}

// ---- sessions -----------------------------------------------------------------------------------------

std::optional<std::string> request_session_id(const cl::Request& req) {
  auto cookie = req.header("cookie");
  if (!cookie) return std::nullopt;
  auto sid = cookie_value(*cookie, kCookie);
  if (!sid || sid->empty() || sid->size() > 128) return std::nullopt;
  return std::string(*sid);
}

// Idle too long, or too old. A clock that went backwards makes sessions look expired: fail closed.
bool session_expired(const Manager& m, const Session& s, uint64_t now) {
  return now < s.seen_ms || now < s.created_ms || now - s.seen_ms > m.auth.idle_ms ||
         now - s.created_ms > m.auth.absolute_ms;
}

// Deletes the sessions nobody will present again (expired ones), so the store does not keep them for ever.
void sessions_sweep(void* ud, cl_timer_id_t) {
  cl::guarded_void([&] {
    Manager& m = *static_cast<Manager*>(ud);
    Write w;
    uint64_t now = wall_ms();
    for (const auto& [key, doc] : store_all(m.host, "sessions")) {
      Session s;
      if (!session_parse(doc, &s) || session_expired(m, s, now)) w.dels.push_back("sessions/" + key);
    }
    if (!w.dels.empty()) store_write(m.host, w, [](cl_status_t) {});
  });
}

// The live session behind a session id (expired ones are deleted on the way).
bool session_find(Manager& m, const std::string& sid, Session* out, std::string* key) {
  *key = sha256_hex(sid);
  auto doc = store_read(m.host, "sessions", *key);
  if (!doc || !session_parse(*doc, out)) return false;
  uint64_t now = wall_ms();
  if (session_expired(m, *out, now)) {
    store_write(m.host, Write{{}, {"sessions/" + *key}}, [](cl_status_t) {});
    return false;
  }
  if (now - out->seen_ms > kSeenWriteEveryMs) {
    out->seen_ms = now;
    store_write(m.host, Write{{{"sessions/" + *key, session_doc(*out)}}, {}}, [](cl_status_t) {});
  }
  return true;
}

std::string session_cookie(const Manager& m, std::string_view sid, bool clear) {
  std::string c = std::string(kCookie) + "=" + std::string(sid) + "; Path=/; HttpOnly; SameSite=Strict";
  c += clear ? "; Max-Age=0" : "; Max-Age=" + std::to_string(m.auth.absolute_ms / 1000);
  if (m.auth.tls) c += "; Secure";
  return c;
}

// The stored sessions of user, with their store keys.
std::vector<std::pair<std::string, Session>> sessions_of(const cl::Host& h, const std::string& user) {
  std::vector<std::pair<std::string, Session>> out;
  for (const auto& [key, doc] : store_all(h, "sessions")) {
    Session s;
    if (session_parse(doc, &s) && s.user == user) out.emplace_back(key, std::move(s));
  }
  return out;
}

// Deletes every session of user (password change); done(count) after the commit.
template <typename D>
void sessions_revoke_user(Manager& m, const std::string& user, D done) {
  Write w;
  for (const auto& [key, s] : sessions_of(m.host, user)) w.dels.push_back("sessions/" + key);
  size_t n = w.dels.size();
  if (n == 0) return done(size_t{0});
  if (store_write(m.host, w, [done, n](cl_status_t) { done(n); }) != CL_OK) done(size_t{0});
}

// ---- refusing -------------------------------------------------------------------------------------------

cl_status_t refuse(const cl::Request& req, uint32_t status, std::string_view message) {
  if (status == 401) req.add_header("WWW-Authenticate", "Bearer realm=\"cloudletd manager\"");
  auto accept = req.header("accept");
  if (status == 401 && req.method() == "GET" && accept && accept->find("text/html") != std::string_view::npos) {
    // A browser opening a page: say where to log in (the answer stays a 401, like every anonymous request).
    req.send(401, "text/html; charset=utf-8",
             "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0; url=/manager/login\">"
             "<title>Log in</title><p>Log in first: <a href=\"/manager/login\">/manager/login</a>\n");
  } else {
    req.send_json(status, json::error_object(message));
  }
  return status == 401 ? CL_EUNAUTH : CL_EPERM;
}

// ---- the guard -------------------------------------------------------------------------------------------

cl_status_t on_guard(void* ud, cl_request_t* r) noexcept {
  return cl::guarded([&]() -> cl_status_t {
    Manager& m = *static_cast<Manager*>(ud);
    cl::Request req(m.host, r);
    std::string_view method = req.method(), path = req.path();
    bool safe = method == "GET" || method == "HEAD";
    if (safe && (path == "/healthz" || path == kLoginPage || path == kLoginScript || path == kLoginStyle)) {
      return CL_OK;
    }
    if (method == "POST" && path == kLoginRoute) return CL_OK;
    if (auto authz = req.header("authorization")) {
      constexpr std::string_view kBearer = "Bearer ";
      if (authz->size() <= kBearer.size() || authz->size() > 256 ||
          strncasecmp(authz->data(), kBearer.data(), kBearer.size()) != 0) {
        return refuse(req, 401, "Authorization: only 'Bearer <API token>' is accepted");
      }
      std::string token(authz->substr(kBearer.size()));
      auto doc = store_read(m.host, "tokens", sha256_hex(token));
      json::Document d;
      std::string error;
      if (!doc || !json::parse_object(*doc, &d, &error) || !json::get_string(d, "name")) {
        return refuse(req, 401, "unknown or revoked API token");
      }
      req.set_principal("token:" + std::string(*json::get_string(d, "name")));
      return CL_OK;
    }
    if (auto sid = request_session_id(req)) {
      Session s;
      std::string key;
      if (session_find(m, *sid, &s, &key)) {
        if (!safe) {
          // Only a page of ours can read the session's CSRF token (GET /manager/api/session, same origin).
          auto sent = req.header(kCsrfHeader);
          if (!sent || !equal_secret(*sent, s.csrf)) {
            return refuse(req, 403, "missing or wrong X-CSRF-Token header (read it from GET /manager/api/session)");
          }
        }
        req.set_principal("user:" + s.user);
        return CL_OK;
      }
    }
    return refuse(req, 401,
                  "authentication required: log in at /manager/login, or send an API token as "
                  "'Authorization: Bearer <token>'");
  });
}

// ---- user and token changes (routes and operations share these) --------------------------------------

struct PasswordChange {
  std::string user, password, hash;
  std::string current_hash, current;  // checked first when set (a user changing their own password)
  bool current_ok = true;
};

// Hashes (and checks) on a worker, stores the user, revokes their sessions; done(status, message).
template <typename D>
cl_status_t password_set(Manager& m, std::shared_ptr<PasswordChange> c, D done) {
  if (c->password.size() < kPasswordMinLength || c->password.size() > kPasswordMaxLength) {
    done(CL_EINVAL, "a password has " + std::to_string(kPasswordMinLength) + " to " +
                        std::to_string(kPasswordMaxLength) + " characters");
    return CL_OK;
  }
  if (m.auth.hashing >= kMaxHashing) {
    done(CL_EBUSY, "busy hashing other passwords; try again in a second");
    return CL_OK;
  }
  m.auth.hashing++;
  uint32_t iterations = m.auth.iterations;
  Manager* mp = &m;
  cl_status_t queued = cl::queue_work(
      m.host,
      [c, iterations] {
        if (!c->current_hash.empty()) c->current_ok = password_verify(c->current_hash, c->current);
        if (c->current_ok) c->hash = password_hash(c->password, iterations);
      },
      [mp, c, done](cl_status_t st) {
        mp->auth.hashing--;
        if (st != CL_OK) return done(st, "cancelled");
        if (!c->current_ok) return done(CL_EPERM, "the current password is wrong");
        if (c->hash.empty()) return done(CL_EIO, "hashing the password failed");
        Manager& mm = *mp;
        Write w{{{"users/" + c->user, user_doc(c->hash, wall_ms())}}, {}};
        cl_status_t s = store_write(mm.host, w, [mp, c, done](cl_status_t committed) {
          if (committed != CL_OK) return done(committed, "the store refused the new password");
          sessions_revoke_user(*mp, c->user, [mp, c, done](size_t n) {
            mp->host.info("password of user '" + c->user + "' changed; " + std::to_string(n) +
                          " session(s) ended");
            std::string out = "{\"user\":";
            json::append_quoted(&out, c->user);
            done(CL_OK, out + ",\"sessions_ended\":" + std::to_string(n) + "}");
          });
        });
        if (s != CL_OK) done(s, "the store refused the new password");
      });
  if (queued != CL_OK) m.auth.hashing--;
  return queued;
}

// A new API token; done(status, result JSON with the token, shown this once).
template <typename D>
void token_create(Manager& m, std::string_view name, D done) {
  if (!valid_name(name)) return done(CL_EINVAL, json::error_object("a token name has 1-64 of A-Z a-z 0-9 . _ -"));
  std::string token = "cl_" + random_text(32);
  std::string key = sha256_hex(token);
  if (token.size() < 40 || key.empty()) return done(CL_EIO, json::error_object("no randomness for a token"));
  std::string id = key.substr(0, 12);
  std::string doc = "{\"id\":\"" + id + "\",\"name\":";
  json::append_quoted(&doc, name);
  doc += ",\"created_ms\":" + std::to_string(wall_ms()) + "}";
  std::string result = doc.substr(0, doc.size() - 1) + ",\"token\":\"" + token + "\"}";
  Manager* mp = &m;
  std::string n(name);
  cl_status_t st = store_write(m.host, Write{{{"tokens/" + key, doc}}, {}}, [mp, n, result, done](cl_status_t s) {
    if (s != CL_OK) return done(s, json::error_object("the store refused the token"));
    mp->host.info("API token '" + n + "' created");
    done(CL_OK, result);
  });
  if (st != CL_OK) done(st, json::error_object("the store refused the token"));
}

std::string tokens_list(Manager& m) {
  std::string out = "[";
  for (const auto& [key, doc] : store_all(m.host, "tokens")) {
    if (out.size() > 1) out += ",";
    out += doc;
  }
  return out + "]";
}

// ---- routes -----------------------------------------------------------------------------------------------

cl_status_t on_login(Manager& m, const cl::Request& req) {
  json::Document d;
  std::string error;
  if (!json::parse_object(req.body(), &d, &error)) return req.send_json(400, json::error_object(error));
  auto user = json::get_string(d, "user");
  auto password = json::get_string(d, "password");
  if (!user || !password) return req.send_json(400, json::error_object("send {\"user\": ..., \"password\": ...}"));
  if (!valid_name(*user) || password->size() > kPasswordMaxLength) {
    return req.send_json(401, json::error_object("wrong user name or password"));
  }
  uint64_t now = wall_ms();
  std::string user_key = "user:" + std::string(*user);
  std::string addr_key = "addr:" + std::string(req.peer_ip().value_or("?"));
  uint64_t wait = std::max(throttle_wait(m.auth, user_key, now), throttle_wait(m.auth, addr_key, now));
  if (wait > 0) {
    req.add_header("Retry-After", std::to_string((wait + 999) / 1000));
    return req.send_json(429, json::error_object("too many failed logins; try again in " +
                                                 std::to_string((wait + 999) / 1000) + " s"));
  }
  if (m.auth.hashing >= kMaxHashing) {
    req.add_header("Retry-After", "1");
    return req.send_json(503, json::error_object("busy checking other logins; try again in a second"));
  }
  struct Check {
    std::string user, password, stored;
    bool known = false, ok = false;
    std::optional<std::string> old_sid;
  };
  auto c = std::make_shared<Check>();
  c->user = std::string(*user);
  c->password = std::string(*password);
  auto stored = store_read(m.host, "users", c->user);
  json::Document u;
  if (stored && json::parse_object(*stored, &u, &error) && json::get_string(u, "hash")) {
    c->stored = std::string(*json::get_string(u, "hash"));
    c->known = true;
  } else {
    c->stored = std::string(kNoUserHash);
  }
  c->old_sid = request_session_id(req);
  m.auth.hashing++;
  Manager* mp = &m;
  cl::Host host = m.host;
  cl_request_t* r = req.handle();
  cl_status_t queued = cl::queue_work(
      m.host, [c] { c->ok = password_verify(c->stored, c->password) && c->known; },
      [mp, c, host, r, user_key, addr_key](cl_status_t st) {
        Manager& mm = *mp;
        mm.auth.hashing--;
        cl::Request later(host, r);
        if (st != CL_OK) return (void)later.send_json(503, json::error_object("the server is stopping"));
        uint64_t at = wall_ms();
        if (!c->ok) {
          throttle_fail(mm.auth, user_key, at);
          throttle_fail(mm.auth, addr_key, at);
          mm.host.warn("failed manager login for '" + c->user + "' from " + addr_key.substr(5));
          return (void)later.send_json(401, json::error_object("wrong user name or password"));
        }
        mm.auth.failures.erase(user_key);
        mm.auth.failures.erase(addr_key);
        // A new id at every login (never the one the browser brought), and the old one ends.
        Session s;
        std::string sid = random_text(32);
        s.user = c->user;
        s.csrf = random_text(32);
        s.created_ms = s.seen_ms = at;
        if (sid.empty() || s.csrf.empty()) return (void)later.send_json(500, json::error_object("no randomness"));
        Write w{{{"sessions/" + sha256_hex(sid), session_doc(s)}}, {}};
        if (c->old_sid) w.dels.push_back("sessions/" + sha256_hex(*c->old_sid));
        // Bounded per user: the oldest sessions beyond kMaxSessionsPerUser - 1 end to make room for this one.
        std::vector<std::pair<uint64_t, std::string>> mine;
        for (const auto& [key, other] : sessions_of(mm.host, s.user)) mine.emplace_back(other.created_ms, key);
        std::sort(mine.begin(), mine.end());
        for (size_t i = 0; i + kMaxSessionsPerUser <= mine.size(); i++) w.dels.push_back("sessions/" + mine[i].second);
        cl_status_t ws = store_write(mm.host, w, [mp, host, r, sid, s](cl_status_t committed) {
          cl::Request answer(host, r);
          if (committed != CL_OK) return (void)answer.send_json(500, json::error_object("the store refused the session"));
          answer.add_header("Set-Cookie", session_cookie(*mp, sid, false));
          answer.add_header("Cache-Control", "no-store");
          std::string out = "{\"user\":";
          json::append_quoted(&out, s.user);
          out += ",\"csrf_token\":\"" + s.csrf + "\"}";
          mp->host.info("user '" + s.user + "' logged in to the manager");
          answer.send_json(200, out);
        });
        if (ws != CL_OK) later.send_json(500, json::error_object("the store refused the session"));
      });
  if (queued != CL_OK) m.auth.hashing--;
  return queued;
}

// The caller's session (cookie) when the principal is a user; false for tokens.
bool caller_session(Manager& m, const cl::Request& req, Session* s, std::string* key) {
  auto sid = request_session_id(req);
  return sid && session_find(m, *sid, s, key);
}

cl_status_t on_session(Manager& m, const cl::Request& req) {
  std::string principal(req.principal().value_or(""));
  std::string out = "{\"principal\":";
  json::append_quoted(&out, principal);
  Session s;
  std::string key;
  if (principal.rfind("user:", 0) == 0 && caller_session(m, req, &s, &key)) {
    out += ",\"user\":";
    json::append_quoted(&out, s.user);
    out += ",\"csrf_token\":\"" + s.csrf + "\",\"idle_timeout_s\":" + std::to_string(m.auth.idle_ms / 1000) +
           ",\"expires_ms\":" + std::to_string(s.created_ms + m.auth.absolute_ms);
  }
  req.add_header("Cache-Control", "no-store");
  return req.send_json(200, out + "}");
}

cl_status_t on_logout(Manager& m, const cl::Request& req) {
  Session s;
  std::string key;
  if (!caller_session(m, req, &s, &key)) return req.send_json(400, json::error_object("an API token has no session"));
  cl::Host host = m.host;
  cl_request_t* r = req.handle();
  Manager* mp = &m;
  cl_status_t st = store_write(m.host, Write{{}, {"sessions/" + key}}, [mp, host, r, s](cl_status_t committed) {
    cl::Request later(host, r);
    if (committed != CL_OK) return (void)later.send_json(500, json::error_object("the store refused the logout"));
    later.add_header("Set-Cookie", session_cookie(*mp, "", true));
    mp->host.info("user '" + s.user + "' logged out of the manager");
    later.send_json(200, "{\"logged_out\":true}");
  });
  return st == CL_OK ? CL_OK : req.send_json(500, json::error_object("the store refused the logout"));
}

cl_status_t on_password(Manager& m, const cl::Request& req) {
  Session s;
  std::string key;
  if (!caller_session(m, req, &s, &key)) {
    return req.send_json(403, json::error_object("log in as the user whose password changes (tokens cannot)"));
  }
  json::Document d;
  std::string error;
  if (!json::parse_object(req.body(), &d, &error)) return req.send_json(400, json::error_object(error));
  auto current = json::get_string(d, "current");
  auto next = json::get_string(d, "new");
  if (!current || !next) return req.send_json(400, json::error_object("send {\"current\": ..., \"new\": ...}"));
  auto stored = store_read(m.host, "users", s.user);
  json::Document u;
  if (!stored || !json::parse_object(*stored, &u, &error) || !json::get_string(u, "hash")) {
    return req.send_json(404, json::error_object("the user no longer exists"));
  }
  auto c = std::make_shared<PasswordChange>();
  c->user = s.user;
  c->password = std::string(*next);
  c->current = std::string(*current);
  c->current_hash = std::string(*json::get_string(u, "hash"));
  cl::Host host = m.host;
  cl_request_t* r = req.handle();
  Manager* mp = &m;
  return password_set(m, c, [host, r, mp](cl_status_t st, const std::string& msg) {
    cl::Request later(host, r);
    if (st != CL_OK) return (void)later.send_json(cl::http_status(st), json::error_object(msg));
    later.add_header("Set-Cookie", session_cookie(*mp, "", true));
    later.send_json(200, msg);
  });
}

cl_status_t on_tokens(Manager& m, const cl::Request& req) {
  if (req.method() == "GET") return req.send_json(200, tokens_list(m));
  json::Document d;
  std::string error;
  if (!json::parse_object(req.body(), &d, &error)) return req.send_json(400, json::error_object(error));
  auto name = json::get_string(d, "name");
  if (!name) return req.send_json(400, json::error_object("send {\"name\": ...}"));
  cl::Host host = m.host;
  cl_request_t* r = req.handle();
  token_create(m, *name, [host, r](cl_status_t st, const std::string& result) {
    cl::Request later(host, r);
    later.add_header("Cache-Control", "no-store");
    later.send_json(st == CL_OK ? 201 : cl::http_status(st), result);
  });
  return CL_OK;
}

cl_status_t on_token_delete(Manager& m, const cl::Request& req) {
  std::string_view id = req.param("id").value_or("");
  for (const auto& [key, doc] : store_all(m.host, "tokens")) {
    json::Document d;
    std::string error;
    if (!json::parse_object(doc, &d, &error) || json::get_string(d, "id") != id) continue;
    cl::Host host = m.host;
    cl_request_t* r = req.handle();
    std::string name(json::get_string(d, "name").value_or(""));
    Manager* mp = &m;
    cl_status_t st = store_write(m.host, Write{{}, {"tokens/" + key}}, [host, r, mp, name, doc](cl_status_t s) {
      cl::Request later(host, r);
      if (s != CL_OK) return (void)later.send_json(500, json::error_object("the store refused the change"));
      mp->host.info("API token '" + name + "' revoked");
      later.send_json(200, doc);
    });
    return st == CL_OK ? CL_OK : req.send_json(500, json::error_object("the store refused the change"));
  }
  return req.send_json(404, json::error_object("no such token"));
}

cl_status_t on_login_page(Manager&, const cl::Request& req) {
  req.add_header("Cache-Control", "no-store");
  req.add_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
  return req.send(200, "text/html; charset=utf-8", login_page_html());
}

cl_status_t on_login_script(Manager&, const cl::Request& req) {
  return req.send(200, "text/javascript; charset=utf-8", login_page_script());
}

cl_status_t on_login_style(Manager&, const cl::Request& req) {
  return req.send(200, "text/css; charset=utf-8", login_page_style());
}

constexpr LoginRoute kLoginRoutes[] = {
    {"GET", kLoginPage, on_login_page, false},
    {"GET", kLoginStyle, on_login_style, false},
    {"GET", kLoginScript, on_login_script, false},
    {"POST", kLoginRoute, on_login, true},
    {"POST", "/manager/api/logout", on_logout, false},
    {"GET", "/manager/api/session", on_session, false},
    {"POST", "/manager/api/password", on_password, true},
    {"GET", "/manager/api/tokens", on_tokens, false},
    {"POST", "/manager/api/tokens", on_tokens, true},
    {"DELETE", "/manager/api/tokens/{id}", on_token_delete, false},
};

cl_status_t on_login_route(void* ud, cl_request_t* r) noexcept {
  return cl::guarded([&] {
    auto* e = static_cast<Manager::LoginEntry*>(ud);
    return e->route->handle(*e->m, cl::Request(e->m->host, r));
  });
}

// ---- operations (the command line's --new-token and --set-password, and other plugins granted them) -----

cl_status_t op_token_create(void* ud, cl_op_call_t* call, cl_str_t args) noexcept {
  return cl::guarded([&] {
    Manager& m = *static_cast<Manager*>(ud);
    json::Document d;
    std::string error;
    if (!json::parse_object(cl::view(args), &d, &error) || !json::get_string(d, "name")) return CL_EINVAL;
    cl::Host host = m.host;
    token_create(m, *json::get_string(d, "name"),
                 [host, call](cl_status_t st, const std::string& result) { host.reply(call, st, result); });
    return CL_OK;
  });
}

cl_status_t op_set_password(void* ud, cl_op_call_t* call, cl_str_t args) noexcept {
  return cl::guarded([&] {
    Manager& m = *static_cast<Manager*>(ud);
    json::Document d;
    std::string error;
    if (!json::parse_object(cl::view(args), &d, &error)) return CL_EINVAL;
    auto user = json::get_string(d, "user");
    auto password = json::get_string(d, "password");
    if (!user || !password || !valid_name(*user)) return CL_EINVAL;
    auto c = std::make_shared<PasswordChange>();
    c->user = std::string(*user);
    c->password = std::string(*password);
    cl::Host host = m.host;
    return password_set(m, c, [host, call](cl_status_t st, const std::string& msg) {
      host.reply(call, st, st == CL_OK ? msg : json::error_object(msg));
    });
  });
}

// The first start has no user: make "admin" with a random password, told once (log and a 0600 file).
void first_user(Manager& m) {
  if (!store_all(m.host, "users").empty()) return;
  auto dir = cl::host_get(m.host, "plugin_data_dir");
  if (!dir) {
    m.host.error("no plugin data directory: cannot create the first manager user");
    return;
  }
  struct First {
    std::string password, hash, file, error;
  };
  auto f = std::make_shared<First>();
  f->password = random_text(18);
  f->file = *dir + "/admin-password";
  uint32_t iterations = m.auth.iterations;
  Manager* mp = &m;
  m.auth.hashing++;
  cl_status_t queued = cl::queue_work(
      m.host,
      [f, iterations] {
        f->hash = password_hash(f->password, iterations);
        std::string tmp = f->file + ".tmp";
        ::unlink(tmp.c_str());
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        std::string line = f->password + "\n";
        bool ok = fd >= 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
        if (fd >= 0) ok = ::fsync(fd) == 0 && ok;
        if (fd >= 0) ::close(fd);
        if (!ok || ::rename(tmp.c_str(), f->file.c_str()) != 0) {
          f->error = std::string("cannot write ") + f->file + ": " + std::strerror(errno);
          ::unlink(tmp.c_str());
        }
      },
      [mp, f](cl_status_t st) {
        Manager& mm = *mp;
        mm.auth.hashing--;
        if (st != CL_OK || f->hash.empty()) return;
        if (!store_all(mm.host, "users").empty()) return;  // someone was faster (--set-password)
        if (!f->error.empty()) mm.host.warn(f->error);
        store_write(mm.host, Write{{{"users/admin", user_doc(f->hash, wall_ms())}}, {}}, [mp, f](cl_status_t s) {
          if (s != CL_OK) return mp->host.error("cannot store the first manager user");
          mp->host.warn("first start: created the manager user 'admin' with password '" + f->password +
                        "' (also in " + f->file + ", mode 0600). Log in at /manager/login; change it there or "
                        "with `cloudletd --set-password admin`.");
        });
      });
  if (queued != CL_OK) m.auth.hashing--;
}

}  // namespace

cl_status_t login_add(Manager& m) {
  auto tls = cl::host_get(m.host, "listener_tls.manager");
  m.auth.tls = tls && *tls == "true";
  m.login_entries.reserve(std::size(kLoginRoutes));
  for (const LoginRoute& route : kLoginRoutes) {
    m.login_entries.push_back({&m, &route});
    cl_status_t st = manager_route_add(m, route.method, route.pattern, route.json_body ? CL_ROUTE_F_JSON : 0,
                                       on_login_route, &m.login_entries.back());
    if (st != CL_OK) return st;
  }
  if (cl_status_t st = m.host.op_register_ex("manager.token.create", CL_OP_F_PRIVILEGED, op_token_create, &m);
      st != CL_OK) {
    return st;
  }
  if (cl_status_t st = m.host.op_register_ex("manager.user.set_password", CL_OP_F_PRIVILEGED, op_set_password, &m);
      st != CL_OK) {
    return st;
  }
  if (cl_status_t st = m.host.listener_guard_set("manager", on_guard, &m); st != CL_OK) {
    m.host.error(std::string("cannot guard the manager listener: ") + m.host.strerror(st) +
                 " (the configuration must grant it: \"guards\": [\"manager\"])");
    return st;
  }
  first_user(m);
  cl_timer_id_t sweep = 0;
  // First a second after start-up (what expired while the server was down), then every kSweepEveryMs.
  return m.host.timer_start(1000, kSweepEveryMs, sessions_sweep, &m, &sweep);
}

}  // namespace cloudlet::manager
