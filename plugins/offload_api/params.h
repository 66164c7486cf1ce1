// Request parameters of the mobile API: query strings, form bodies and the encrypted tunnel's command text,
// plus the small parsing rules pycloud's clients rely on (truthy flags, tag lists, identifiers).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cloudlet::offload {

class Params {
 public:
  void add(std::string name, std::string value) { items_.emplace_back(std::move(name), std::move(value)); }
  // The value of `name`, or nullptr. A later duplicate wins (pycloud's tunnel did the same).
  const std::string* get(std::string_view name) const;
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

// Percent-decodes (and '+' -> ' ' when plus_is_space). Malformed escapes are kept as they are: nothing that
// reaches an operation depends on them, and the identifiers are validated afterwards.
std::string percent_decode(std::string_view in, bool plus_is_space);

// Parses "a=1&b=2" (query string or x-www-form-urlencoded body) into out.
void parse_urlencoded(std::string_view text, Params* out);

// Parses the tunnel's plaintext "<path>&k=v&k=v": split on '&', each pair on its FIRST '=' (values may contain
// '='), values taken verbatim (clients do not URL-encode them). Empty pieces are skipped. Returns false, with a
// message, for a piece without '=' or with an empty name.
bool parse_command(std::string_view text, std::string* path, Params* out, std::string* error);

// Without leading and trailing spaces and tabs (header values, tag list entries).
std::string_view trim(std::string_view s);

// pycloud's boolean parameters: true for T, TRUE, Y, YES (any case), false for anything else.
bool truthy(const std::string* value);

// "a,b, c" -> {"a", "b", "c"} (blank entries dropped).
std::vector<std::string> split_tags(std::string_view text);

// Identifiers that go into operations and error messages: [A-Za-z0-9._-] plus the extra characters given,
// 1..max bytes.
bool valid_id(std::string_view id, size_t max, std::string_view extra = "");

// A value made safe to quote in a plain-text error: non-printable bytes and '#' (the clients' message
// separator) become '?', and it is cut at `max` bytes.
std::string quote_safe(std::string_view value, size_t max = 128);

}  // namespace cloudlet::offload
