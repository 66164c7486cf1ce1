// JSON helpers over RapidJSON: parsing with readable errors, serialising, and the error-object convention
// ({"error": "<message>"}) shared by operations and HTTP front ends.
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

// Parses text into *doc. With allow_comments, // and /* */ comments and trailing commas are accepted (config
// files). On failure returns false and sets *error to "line L column C: <reason>".
bool parse(std::string_view text, Document* doc, std::string* error, bool allow_comments = false);

// True when text is one complete JSON value (anything), resp. a JSON object.
bool valid(std::string_view text);
bool is_object(std::string_view text);

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
