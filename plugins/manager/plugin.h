// The manager plugin's state, shared by its parts: login (login.cc), the JSON API (api_routes.cc) and the event
// stream (event_stream.cc). One instance per load, owned by the core between init and fini; loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.hpp"

namespace cloudlet::manager {

struct EventStream;
struct ApiRoute;
struct LoginRoute;

// A logged-in browser (login.cc). Stored under the SHA-256 of its id; the id itself lives only in the cookie.
struct Session {
  std::string user;
  std::string csrf;  // what state-changing requests must echo in X-CSRF-Token
  uint64_t created_ms = 0;
  uint64_t seen_ms = 0;
};

// Login state that is not in the store (login.cc).
struct Auth {
  bool tls = false;                          // the manager listener serves HTTPS: cookies get Secure
  uint64_t idle_ms = 30 * 60 * 1000;         // config "session_idle_minutes"
  uint64_t absolute_ms = 12 * 3600 * 1000;   // config "session_max_hours"
  uint32_t iterations = 600000;              // PBKDF2 rounds for new hashes (credentials.h)
  int hashing = 0;                           // password hashes running on workers now
  struct Failures {
    int count = 0;
    uint64_t last_ms = 0;
  };
  std::map<std::string, Failures> failures;  // "user:NAME" and "addr:IP" -> recent failed logins
};

struct Manager {
  cl::Host host;
  size_t max_event_streams = 64;  // config "max_event_streams": a page open in many tabs cannot exhaust the server
  std::set<EventStream*> streams;
  cl_timer_id_t heartbeat = 0;
  cl_sub_id_t stopping_sub = 0;
  // What each JSON API route's handler gets (api_routes.cc); sized once, so the pointers stay valid.
  struct ApiEntry {
    Manager* m;
    const ApiRoute* route;
  };
  std::vector<ApiEntry> api_entries;
  Auth auth;
  struct LoginEntry {
    Manager* m;
    const LoginRoute* route;
  };
  std::vector<LoginEntry> login_entries;
};

// The OpenAPI document of the JSON API (openapi.json, embedded at build time: cmake/embed_json.cmake).
std::string_view openapi_document();
// Adds one route on the manager listener; logs why when the core refuses it (manager.cc).
cl_status_t manager_route_add(Manager& m, const char* method, const char* pattern, uint32_t flags, cl_route_cb handler,
                              void* ud);
// The login page and its script (login_page.cc).
std::string_view login_page_html();
std::string_view login_page_style();
std::string_view login_page_script();
// Users, sessions and API tokens: the listener's guard, the login routes, manager.token.create and
// manager.user.set_password, and the first user on a fresh data directory (login.cc).
cl_status_t login_add(Manager& m);
// Registers the JSON API's routes on the manager listener.
cl_status_t api_routes_add(Manager& m);
// Registers GET /manager/api/events and ends its streams when the server stops.
cl_status_t event_stream_add(Manager& m);
// Ends every open stream (fini, server shutdown).
void event_streams_end_all(Manager& m);

}  // namespace cloudlet::manager
