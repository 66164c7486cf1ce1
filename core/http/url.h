// Percent-decoding and query-string parsing (RFC 3986, plus '+' as space for query and form bodies).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cloudlet::http {

// Decodes %XX escapes (and '+' as a space when plus_is_space). Returns false on a malformed escape or when
// the result would contain a NUL byte (never useful in a name or path, often an attack).
bool percent_decode(std::string_view in, std::string* out, bool plus_is_space);

// Appends `in` to *out with every byte outside [A-Za-z0-9-._~] escaped (for building URLs and test clients).
void percent_encode(std::string_view in, std::string* out);

// Parses "a=1&b=x%20y&c" into decoded pairs (a missing '=' gives an empty value; empty pieces are skipped).
// Returns false on a malformed escape; *out then holds the pairs parsed before it.
bool parse_query(std::string_view query, std::vector<std::pair<std::string, std::string>>* out);

}  // namespace cloudlet::http
