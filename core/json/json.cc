#include "json/json.h"

#include <rapidjson/error/en.h>

namespace cloudlet::json {

namespace {
// Line and column (1-based) of a byte offset, for error messages people can act on.
void position(std::string_view text, size_t offset, size_t* line, size_t* col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < offset && i < text.size(); i++) {
    if (text[i] == '\n') {
      ++*line;
      *col = 1;
    } else {
      ++*col;
    }
  }
}
}  // namespace

bool parse(std::string_view text, Document* doc, std::string* error, bool allow_comments) {
  if (allow_comments) {
    doc->Parse<rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag>(text.data(), text.size());
  } else {
    doc->Parse(text.data(), text.size());
  }
  if (doc->HasParseError()) {
    size_t line, col;
    position(text, doc->GetErrorOffset(), &line, &col);
    if (error) {
      *error = "line " + std::to_string(line) + " column " + std::to_string(col) + ": " +
               rapidjson::GetParseError_En(doc->GetParseError());
    }
    return false;
  }
  return true;
}

bool valid(std::string_view text) {
  Document doc;
  doc.Parse(text.data(), text.size());
  return !doc.HasParseError();
}

bool is_object(std::string_view text) {
  Document doc;
  doc.Parse(text.data(), text.size());
  return !doc.HasParseError() && doc.IsObject();
}

std::string stringify(const Value& v) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  v.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

void append_quoted(std::string* out, std::string_view s) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  out->append(buf.GetString(), buf.GetSize());
}

void put_string(Writer& w, const char* key, std::string_view v) {
  w.Key(key);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

std::string error_object(std::string_view message) {
  std::string out = "{\"error\":";
  append_quoted(&out, message);
  out.push_back('}');
  return out;
}

const Value* member(const Value& obj, std::string_view name) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(Value(rapidjson::StringRef(name.data(), static_cast<rapidjson::SizeType>(name.size()))));
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

std::optional<std::string_view> get_string(const Value& obj, std::string_view name) {
  const Value* v = member(obj, name);
  if (!v || !v->IsString()) return std::nullopt;
  return std::string_view(v->GetString(), v->GetStringLength());
}

std::optional<int64_t> get_int(const Value& obj, std::string_view name) {
  const Value* v = member(obj, name);
  if (!v || !v->IsInt64()) return std::nullopt;
  return v->GetInt64();
}

std::optional<bool> get_bool(const Value& obj, std::string_view name) {
  const Value* v = member(obj, name);
  if (!v || !v->IsBool()) return std::nullopt;
  return v->GetBool();
}

}  // namespace cloudlet::json
