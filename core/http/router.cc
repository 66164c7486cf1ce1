#include "http/router.h"

#include <algorithm>

#include "http/header_text.h"

namespace cloudlet::http {

bool method_matches(std::string_view route_method, std::string_view method) {
  if (route_method.empty() || route_method == method) return true;
  return route_method == "GET" && method == "HEAD";  // HEAD is served by GET routes
}

bool Router::parse(std::string_view pattern, std::vector<Route::Segment>* out) {
  if (pattern.empty() || pattern[0] != '/') return false;
  size_t pos = 1;
  while (pos <= pattern.size()) {
    size_t slash = pattern.find('/', pos);
    std::string_view seg = pattern.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (!out->empty() && out->back().kind == Route::Segment::rest) return false;  // {*x} must be last
    if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
      std::string_view name = seg.substr(1, seg.size() - 2);
      bool rest = !name.empty() && name[0] == '*';
      if (rest) name.remove_prefix(1);
      if (name.empty() || name.find_first_of("{}/") != std::string_view::npos) return false;
      out->push_back({rest ? Route::Segment::rest : Route::Segment::param, std::string(name)});
    } else {
      if (seg.find_first_of("{}") != std::string_view::npos) return false;
      out->push_back({Route::Segment::literal, std::string(seg)});
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return true;
}

cl_status_t Router::add(Route route) {
  std::vector<Route::Segment> segs;
  if (!parse(route.pattern, &segs)) return CL_EINVAL;
  for (const auto& r : routes_) {
    if (r->pattern == route.pattern && r->method == route.method) return CL_EEXIST;
  }
  route.segments = std::move(segs);
  bool literal = std::all_of(route.segments.begin(), route.segments.end(),
                             [](const Route::Segment& s) { return s.kind == Route::Segment::literal; });
  routes_.push_back(std::make_unique<Route>(std::move(route)));
  const Route* r = routes_.back().get();
  if (literal) {
    literal_[r->pattern].push_back(r);
  } else {
    patterned_.push_back(r);
  }
  return CL_OK;
}

bool Router::match_segments(const Route& r, std::string_view path, Params* params) {
  size_t pos = 1;  // path starts with '/'
  for (size_t i = 0; i < r.segments.size(); i++) {
    const auto& s = r.segments[i];
    if (s.kind == Route::Segment::rest) {
      params->emplace_back(s.text, std::string(path.substr(std::min(pos, path.size()))));
      return true;
    }
    if (pos > path.size()) return false;
    size_t slash = path.find('/', pos);
    std::string_view seg = path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (s.kind == Route::Segment::literal) {
      if (seg != s.text) return false;
    } else {
      if (seg.empty()) return false;
      params->emplace_back(s.text, std::string(seg));
    }
    bool last = i + 1 == r.segments.size();
    if (slash == std::string_view::npos) {
      if (!last) {
        // The path ended: only a trailing {*rest} may still match (with an empty value).
        if (i + 2 == r.segments.size() && r.segments[i + 1].kind == Route::Segment::rest) {
          params->emplace_back(r.segments[i + 1].text, std::string());
          return true;
        }
        return false;
      }
      return true;
    }
    if (last) return false;
    pos = slash + 1;
  }
  return false;
}

void Router::match(std::string_view method, std::string_view path, std::vector<Match>* out,
                   std::string* allowed) const {
  out->clear();
  auto consider = [&](const Route* r, Params&& params) {
    if (method_matches(r->method, method)) {
      out->push_back({r, std::move(params)});
    } else if (allowed) {
      std::string m = r->method.empty() ? std::string("*") : r->method;
      // Whole list elements: a method must not be taken for part of another ("PUT" in "PUTX").
      auto listed = [&](std::string_view x) {
        return for_each_list_element(*allowed, [&](std::string_view e) { return e == x; });
      };
      if (!listed(m)) {
        if (!allowed->empty()) allowed->append(", ");
        allowed->append(m);
        if (m == "GET" && !listed("HEAD")) allowed->append(", HEAD");
      }
    }
  };
  auto it = literal_.find(std::string(path));
  if (it != literal_.end()) {
    for (const Route* r : it->second) consider(r, {});
  }
  for (const Route* r : patterned_) {
    Params params;
    if (match_segments(*r, path, &params)) consider(r, std::move(params));
  }
}

void Router::remove_owner(void* owner) {
  for (auto& [path, list] : literal_) {
    list.erase(std::remove_if(list.begin(), list.end(), [&](const Route* r) { return r->owner == owner; }),
               list.end());
  }
  patterned_.erase(
      std::remove_if(patterned_.begin(), patterned_.end(), [&](const Route* r) { return r->owner == owner; }),
      patterned_.end());
  routes_.erase(std::remove_if(routes_.begin(), routes_.end(), [&](const auto& r) { return r->owner == owner; }),
                routes_.end());
}

}  // namespace cloudlet::http
