// Small helpers for header values (RFC 9110 5.6): case-insensitive comparison, optional whitespace, media
// types and comma-separated lists. One copy for the whole HTTP layer.
#pragma once

#include <string_view>

namespace cloudlet::http {

// ASCII case-insensitive equality (header names, tokens, media types).
bool iequals(std::string_view a, std::string_view b);
// Without leading and trailing spaces and tabs (OWS).
std::string_view trim_ows(std::string_view s);
// The media type of a Content-Type value, without parameters and whitespace ("application/json").
std::string_view media_type(std::string_view content_type);
// Calls fn(element) for each non-empty element of a comma-separated list, trimmed. Commas inside
// double-quoted strings do not split (entity tags may contain them). fn returns true to stop early.
template <typename Fn>
bool for_each_list_element(std::string_view list, Fn fn) {
  size_t start = 0;
  bool quoted = false;
  for (size_t i = 0; i <= list.size(); i++) {
    if (i < list.size() && list[i] == '"') quoted = !quoted;
    if (i == list.size() || (list[i] == ',' && !quoted)) {
      std::string_view e = trim_ows(list.substr(start, i - start));
      if (!e.empty() && fn(e)) return true;
      start = i + 1;
    }
  }
  return false;
}

}  // namespace cloudlet::http
