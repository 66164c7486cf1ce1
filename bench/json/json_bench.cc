// core/json's parse versus RapidJSON's recursive Document::Parse on the same text, rounds alternating, medians
// and the ratio ours/baseline per document. Exit status 1 when a ratio is above the acceptance (argv[1], 1.3).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "json/json.h"

namespace {

double per_parse_ns(const std::string& text, int reps, bool ours) {
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; i++) {
    cloudlet::json::Document d;
    bool ok = ours ? cloudlet::json::parse(text, &d, nullptr) : !d.Parse(text.data(), text.size()).HasParseError();
    if (!ok) abort();
  }
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  double accept = argc > 1 ? atof(argv[1]) : 1.3;
  // A service record (what most operations pass around) and a 1,000-service list (the largest routine answer).
  std::string one = R"({"service_id":"demo.httpd","description":"Demo web server","version":"1.0",)"
                    R"("tags":["demo","http"],"port":8080,"num_users":2,"memory_mb":256,"ready":{"http":true,)"
                    R"("path":"/"},"state_saved":true,"instances":[],"created_ms":1764000000000})";
  std::string list = "{\"services\":[";
  for (int i = 0; i < 1000; i++) list += (i ? "," : "") + one;
  list += "]}";
  struct Case {
    const char* name;
    const std::string* text;
    int reps;
  };
  bool pass = true;
  for (const Case& c : {Case{"service record", &one, 100000}, Case{"1,000 services", &list, 100}}) {
    const auto& [name, text, reps] = c;
    std::vector<double> ours, base;
    for (int round = 0; round < 11; round++) {
      ours.push_back(per_parse_ns(*text, reps, true));
      base.push_back(per_parse_ns(*text, reps, false));
    }
    std::sort(ours.begin(), ours.end());
    std::sort(base.begin(), base.end());
    double ratio = ours[5] / base[5];
    printf("json %-15s %7zu bytes: core/json %10.0f ns, recursive Document::Parse %10.0f ns, ratio %.2f\n", name,
           text->size(), ours[5], base[5], ratio);
    pass = pass && ratio <= accept;
  }
  return pass ? 0 : 1;
}
