#include "plugin/json_doc.h"

#include <rapidjson/document.h>

#include <cmath>
#include <new>
#include <string>

struct cl_json_s {
  rapidjson::Document doc;
};

namespace cloudlet::plugin_json {

namespace {

using Value = rapidjson::Value;

// Nesting depth of JSON text, counted outside strings. The parse that follows checks everything else; this
// only keeps a hostile document from being built at all.
bool depth_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        i++;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return true;
}

// One reference token of a JSON Pointer, unescaped (~1 is '/', ~0 is '~'). False for any other '~' escape.
bool unescape_token(std::string_view raw, std::string* out) {
  out->clear();
  for (size_t i = 0; i < raw.size(); i++) {
    if (raw[i] != '~') {
      out->push_back(raw[i]);
      continue;
    }
    if (i + 1 >= raw.size() || (raw[i + 1] != '0' && raw[i + 1] != '1')) return false;
    out->push_back(raw[i + 1] == '0' ? '~' : '/');
    i++;
  }
  return true;
}

// An array index as RFC 6901 writes it: "0", or digits without a leading zero.
bool array_index(std::string_view token, size_t* out) {
  if (token.empty() || token.size() > 18 || (token.size() > 1 && token[0] == '0')) return false;
  size_t n = 0;
  for (char c : token) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  *out = n;
  return true;
}

// Resolves a JSON Pointer: CL_OK with *out, CL_ENOENT when nothing is there, CL_EINVAL for a malformed path.
cl_status_t lookup(const cl_json_t* doc, std::string_view path, const Value** out) {
  if (!doc) return CL_EINVAL;
  const Value* v = &doc->doc;
  if (path.empty()) {
    *out = v;
    return CL_OK;
  }
  if (path[0] != '/') return CL_EINVAL;
  std::string token;
  cl_status_t missing = CL_OK;  // keep validating the rest of the path: a malformed path is EINVAL wherever
  size_t pos = 1;
  for (;;) {
    size_t slash = path.find('/', pos);
    std::string_view raw = path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (!unescape_token(raw, &token)) return CL_EINVAL;
    if (missing == CL_OK) {
      if (v->IsObject()) {
        auto m = v->FindMember(Value(rapidjson::StringRef(token.data(), token.size())));
        if (m == v->MemberEnd()) {
          missing = CL_ENOENT;
        } else {
          v = &m->value;
        }
      } else if (v->IsArray()) {
        size_t i = 0;
        if (!array_index(token, &i) || i >= v->Size()) {
          missing = CL_ENOENT;
        } else {
          v = &(*v)[static_cast<rapidjson::SizeType>(i)];
        }
      } else {
        missing = CL_ENOENT;
      }
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  if (missing != CL_OK) return missing;
  *out = v;
  return CL_OK;
}

}  // namespace

cl_status_t parse(std::string_view text, cl_json_t** out) {
  if (!out) return CL_EINVAL;
  *out = nullptr;
  if (text.size() > kMaxBytes || !depth_within(text, kMaxDepth)) return CL_ETOOBIG;
  auto* d = new (std::nothrow) cl_json_s;
  if (!d) return CL_ENOMEM;
  d->doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (d->doc.HasParseError()) {
    delete d;
    return CL_EINVAL;
  }
  *out = d;
  return CL_OK;
}

void free(cl_json_t* doc) { delete doc; }

cl_status_t type(const cl_json_t* doc, std::string_view path, int32_t* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (v->IsNull()) {
    *out = CL_JSON_NULL;
  } else if (v->IsBool()) {
    *out = CL_JSON_BOOL;
  } else if (v->IsNumber()) {
    *out = CL_JSON_NUMBER;
  } else if (v->IsString()) {
    *out = CL_JSON_STRING;
  } else if (v->IsArray()) {
    *out = CL_JSON_ARRAY;
  } else {
    *out = CL_JSON_OBJECT;
  }
  return CL_OK;
}

cl_status_t get_str(const cl_json_t* doc, std::string_view path, cl_str_t* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (!v->IsString()) return CL_EINVAL;
  *out = cl_str_t{v->GetString(), v->GetStringLength()};
  return CL_OK;
}

cl_status_t get_int(const cl_json_t* doc, std::string_view path, int64_t* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (v->IsInt64()) {
    *out = v->GetInt64();
    return CL_OK;
  }
  // 1e3 parses as a double: accept it when it is whole and exactly representable (|x| <= 2^53).
  if (v->IsDouble()) {
    double d = v->GetDouble();
    if (std::trunc(d) == d && std::fabs(d) <= 9007199254740992.0) {
      *out = static_cast<int64_t>(d);
      return CL_OK;
    }
  }
  return CL_EINVAL;
}

cl_status_t get_num(const cl_json_t* doc, std::string_view path, double* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (!v->IsNumber()) return CL_EINVAL;
  *out = v->GetDouble();
  return CL_OK;
}

cl_status_t get_bool(const cl_json_t* doc, std::string_view path, int* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (!v->IsBool()) return CL_EINVAL;
  *out = v->GetBool() ? 1 : 0;
  return CL_OK;
}

cl_status_t get_len(const cl_json_t* doc, std::string_view path, size_t* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (v->IsArray()) {
    *out = v->Size();
  } else if (v->IsObject()) {
    *out = v->MemberCount();
  } else {
    return CL_EINVAL;
  }
  return CL_OK;
}

cl_status_t key_at(const cl_json_t* doc, std::string_view path, size_t index, cl_str_t* out) {
  const Value* v = nullptr;
  cl_status_t st = out ? lookup(doc, path, &v) : CL_EINVAL;
  if (st != CL_OK) return st;
  if (!v->IsObject()) return CL_EINVAL;
  if (index >= v->MemberCount()) return CL_ENOENT;
  const Value& name = (v->MemberBegin() + static_cast<rapidjson::SizeType>(index))->name;
  *out = cl_str_t{name.GetString(), name.GetStringLength()};
  return CL_OK;
}

}  // namespace cloudlet::plugin_json
