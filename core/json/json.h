// JSON helpers over RapidJSON: parsing with readable errors, serialising, and the error-object convention
// ({"error": "<message>"}) shared by operations and HTTP front ends.
//
// Every JSON text that enters the process goes through parse/valid/is_object (HTTP bodies, the store's
// documents, config files, operation arguments and results, plugins' calls): they parse iteratively (no
// recursion on the input's nesting, so no stack overflow however deep it is) and refuse nesting deeper than
// kMaxDepth, so every later recursive walk over a parsed value (RapidJSON's Accept, CopyFrom, comparisons) is
// bounded too. stringify walks iteratively and is safe on values of any depth.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cloudlet::json {

using Document = rapidjson::Document;
using Value = rapidjson::Value;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// The deepest nesting of arrays and objects accepted in any input (the outermost value is level 1). Real
// documents (service definitions, device records, operation arguments, config) use fewer than ten levels;
// 128 leaves room for any honest document while keeping recursive walks of parsed values shallow.
inline constexpr int kMaxDepth = 128;

// Parses text into *doc. With allow_comments, // and /* */ comments and trailing commas are accepted (config
// files). On failure returns false, leaves *doc null and sets *error to "line L column C: <reason>"; input
// nested deeper than kMaxDepth fails with the reason "nesting deeper than 128". Also refused: a raw NUL byte
// (RapidJSON alone would stop reading there) and numbers beyond a double's range (RapidJSON 1.1 read some as
// infinity, which no writer can write back).
bool parse(std::string_view text, Document* doc, std::string* error, bool allow_comments = false);

// parse, and the value must be an object: else false with *error "not a JSON object" or the parse error.
bool parse_object(std::string_view text, Document* doc, std::string* error);

// True when text is one complete JSON value (anything), resp. a JSON object, nested at most kMaxDepth deep.
// No DOM is built.
bool valid(std::string_view text);
bool is_object(std::string_view text);

// Compact JSON text of v (any depth: the walk keeps its own stack).
std::string stringify(const Value& v);

// {"error": message}
std::string error_object(std::string_view message);

// Members with type checks. The optional is empty when the member is absent or has another type.
const Value* member(const Value& obj, std::string_view name);
std::optional<std::string_view> get_string(const Value& obj, std::string_view name);
std::optional<int64_t> get_int(const Value& obj, std::string_view name);
std::optional<bool> get_bool(const Value& obj, std::string_view name);

// Appends a JSON string literal (quoted, escaped) for s to *out.
void append_quoted(std::string* out, std::string_view s);

// w.Key(key) then the string v: the common case of building objects with a Writer.
void put_string(Writer& w, const char* key, std::string_view v);

}  // namespace cloudlet::json
