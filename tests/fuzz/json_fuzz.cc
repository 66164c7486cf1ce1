// core/json: every parse is iterative and depth-limited, the validity checks agree with the parser, and what
// stringify writes parses again.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "json/json.h"

namespace json = cloudlet::json;

namespace {

// Nesting depth of a parsed value (iterative, like everything here).
int depth_of(const json::Value& root) {
  int deepest = 0;
  std::vector<std::pair<const json::Value*, int>> todo{{&root, 1}};
  while (!todo.empty()) {
    auto [v, d] = todo.back();
    todo.pop_back();
    if (!v->IsObject() && !v->IsArray()) continue;
    deepest = std::max(deepest, d);
    if (v->IsObject()) {
      for (const auto& m : v->GetObject()) todo.emplace_back(&m.value, d + 1);
    } else {
      for (const auto& e : v->GetArray()) todo.emplace_back(&e, d + 1);
    }
  }
  return deepest;
}

void check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "json_fuzz: %s\n", what);
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool comments : {false, true}) {
    json::Document d;
    std::string err;
    bool ok = json::parse(text, &d, &err, comments);
    if (!comments) {
      check(json::valid(text) == ok, "valid() disagrees with parse()");
      check(json::is_object(text) == (ok && d.IsObject()), "is_object() disagrees with parse()");
      json::Document o;
      std::string oerr;
      check(json::parse_object(text, &o, &oerr) == (ok && d.IsObject()), "parse_object() disagrees with parse()");
    }
    if (!ok) {
      check(!err.empty() && err.rfind("line ", 0) == 0, "an error without its position");
      check(d.IsNull(), "a failed parse left a value behind");
      continue;
    }
    check(depth_of(d) <= json::kMaxDepth, "a value deeper than kMaxDepth was accepted");
    std::string out = json::stringify(d);
    json::Document back;
    check(json::parse(out, &back, &err), "stringify wrote what parse refuses");
    check(json::stringify(back).size() > 0, "empty output");
  }
  return 0;
}
