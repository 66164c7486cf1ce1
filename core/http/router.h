// Routes of one listener: method + path pattern -> handler.
//
// Pattern syntax: literal segments, "{name}" (one segment) and "{*name}" (the rest of the path, last only).
// Matching is on the percent-decoded path. Literal routes are found by hash lookup; patterned routes are tried
// in registration order. A handler may decline (CL_EDECLINED) to pass the request to the next match.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"

struct cl_request_s;

namespace cloudlet::http {

using Request = ::cl_request_s;
using Params = std::vector<std::pair<std::string, std::string>>;

struct Route {
  std::string method;  // empty: any method
  std::string pattern;
  uint32_t flags = 0;       // CL_ROUTE_F_*
  uint64_t max_body = 0;    // 0: the listener's limit
  // A JSON API route: a request body must come with Content-Type application/json (else 415). A cross-site
  // page can post text/plain without asking; application/json needs a CORS preflight it cannot pass.
  bool json_body = false;
  std::function<cl_status_t(Request&)> handler;
  void* owner = nullptr;  // the plugin host that added it (nullptr: the core)

  struct Segment {
    enum Kind { literal, param, rest } kind;
    std::string text;  // literal text or parameter name
  };
  std::vector<Segment> segments;
};

class Router {
 public:
  // Validates the pattern and adds the route. CL_EINVAL for a bad pattern, CL_EEXIST for a duplicate.
  cl_status_t add(Route route);

  struct Match {
    const Route* route;
    Params params;  // path parameters
  };
  // Routes matching path and method, in priority order (literal first). If none matches the method but some
  // match the path, *allowed lists their methods (for 405).
  void match(std::string_view method, std::string_view path, std::vector<Match>* out, std::string* allowed) const;

  // Removes every route of an owner (a plugin that failed to initialise).
  void remove_owner(void* owner);
  size_t size() const { return routes_.size(); }

 private:
  static bool parse(std::string_view pattern, std::vector<Route::Segment>* out);
  static bool match_segments(const Route& r, std::string_view path, Params* params);
  std::vector<std::unique_ptr<Route>> routes_;
  std::unordered_map<std::string, std::vector<const Route*>> literal_;  // path -> routes
  std::vector<const Route*> patterned_;
};

bool method_matches(std::string_view route_method, std::string_view method);

}  // namespace cloudlet::http
