#include "json/json.h"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/encodedstream.h>
#include <rapidjson/reader.h>

#include <cmath>
#include <vector>

namespace cloudlet::json {

namespace {

// Iterative parsing: RapidJSON's default parser recurses once per nesting level, which a few hundred KB of
// '[' turn into a stack overflow. The iterative one keeps its state on the heap.
constexpr unsigned kStrictFlags = rapidjson::kParseIterativeFlag;
constexpr unsigned kConfigFlags =
    rapidjson::kParseIterativeFlag | rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag;

// Passes SAX events on to `next` (a Document building its DOM, or a sink that only validates) and stops the
// parse once arrays and objects nest deeper than kMaxDepth, or at a number beyond a double's range: RapidJSON 1.1
// turns some of those (1.5e309 written with a fraction) into infinity, which no JSON writer can write back.
template <typename Next>
class DepthGuard {
 public:
  explicit DepthGuard(Next& next) : next_(next) {}
  bool too_deep() const { return too_deep_; }
  bool too_big() const { return too_big_; }
  bool root_is_object() const { return root_ == rapidjson::kObjectType; }

  bool Null() { return scalar(rapidjson::kNullType) && next_.Null(); }
  bool Bool(bool b) { return scalar(rapidjson::kTrueType) && next_.Bool(b); }
  bool Int(int i) { return scalar(rapidjson::kNumberType) && next_.Int(i); }
  bool Uint(unsigned u) { return scalar(rapidjson::kNumberType) && next_.Uint(u); }
  bool Int64(int64_t i) { return scalar(rapidjson::kNumberType) && next_.Int64(i); }
  bool Uint64(uint64_t u) { return scalar(rapidjson::kNumberType) && next_.Uint64(u); }
  bool Double(double d) {
    if (!std::isfinite(d)) {
      too_big_ = true;
      return false;
    }
    return scalar(rapidjson::kNumberType) && next_.Double(d);
  }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) {
    return scalar(rapidjson::kNumberType) && next_.RawNumber(s, n, copy);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) {
    return scalar(rapidjson::kStringType) && next_.String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return next_.Key(s, n, copy); }
  bool StartObject() { return open(rapidjson::kObjectType) && next_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) {
    depth_--;
    return next_.EndObject(n);
  }
  bool StartArray() { return open(rapidjson::kArrayType) && next_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    depth_--;
    return next_.EndArray(n);
  }

 private:
  bool scalar(rapidjson::Type t) {
    if (depth_ == 0) root_ = t;
    return true;
  }
  bool open(rapidjson::Type t) {
    if (depth_ == 0) root_ = t;
    if (++depth_ > kMaxDepth) {
      too_deep_ = true;
      return false;  // RapidJSON stops with kParseErrorTermination at this offset
    }
    return true;
  }

  Next& next_;
  int depth_ = 0;
  bool too_deep_ = false;
  bool too_big_ = false;
  rapidjson::Type root_ = rapidjson::kNullType;
};

// RapidJSON reads a NUL byte as the end of the text, so "{}\0anything" would pass as "{}". JSON text never
// holds a raw NUL (strings escape it), so one is an error at its offset.
constexpr rapidjson::ParseErrorCode kNulByte = rapidjson::kParseErrorDocumentRootNotSingular;

bool nul_at(std::string_view text, size_t offset) { return offset < text.size() && text[offset] == '\0'; }

template <unsigned Flags, typename Handler>
rapidjson::ParseResult read(std::string_view text, Handler& handler) {
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) return rapidjson::ParseResult(kNulByte, nul);
  rapidjson::MemoryStream ms(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> is(ms);
  rapidjson::Reader reader;
  return reader.Parse<Flags>(is, handler);
}

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
  doc->SetNull();
  rapidjson::ParseResult result;
  bool too_deep = false, too_big = false;
  auto fill = [&](Document& d) {
    DepthGuard<Document> guard(d);
    result = allow_comments ? read<kConfigFlags>(text, guard) : read<kStrictFlags>(text, guard);
    too_deep = guard.too_deep();
    too_big = guard.too_big();
    return !result.IsError();
  };
  doc->Populate(fill);
  if (!result.IsError()) return true;
  doc->SetNull();
  if (error) {
    size_t line, col;
    position(text, result.Offset(), &line, &col);
    std::string reason = too_deep  ? "nesting deeper than " + std::to_string(kMaxDepth)
                         : too_big ? rapidjson::GetParseError_En(rapidjson::kParseErrorNumberTooBig)
                         : nul_at(text, result.Offset()) ? "a NUL byte"
                                                         : rapidjson::GetParseError_En(result.Code());
    *error = "line " + std::to_string(line) + " column " + std::to_string(col) + ": " + reason;
  }
  return false;
}

bool parse_object(std::string_view text, Document* doc, std::string* error) {
  if (!parse(text, doc, error)) return false;
  if (doc->IsObject()) return true;
  if (error) *error = "not a JSON object";
  doc->SetNull();
  return false;
}

bool valid(std::string_view text) {
  rapidjson::BaseReaderHandler<> sink;
  DepthGuard<rapidjson::BaseReaderHandler<>> guard(sink);
  return !read<kStrictFlags>(text, guard).IsError();
}

bool is_object(std::string_view text) {
  rapidjson::BaseReaderHandler<> sink;
  DepthGuard<rapidjson::BaseReaderHandler<>> guard(sink);
  return !read<kStrictFlags>(text, guard).IsError() && guard.root_is_object();
}

std::string stringify(const Value& v) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  // Value::Accept recurses once per level; this walk keeps its own stack, so no value is too deep to write.
  struct Frame {
    const Value* container;
    rapidjson::SizeType next;
  };
  std::vector<Frame> stack;
  auto write = [&](const Value& x) {
    if (x.IsObject()) {
      w.StartObject();
      stack.push_back({&x, 0});
    } else if (x.IsArray()) {
      w.StartArray();
      stack.push_back({&x, 0});
    } else {
      x.Accept(w);  // a scalar: no recursion
    }
  };
  write(v);
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (f.container->IsObject()) {
      if (f.next == f.container->MemberCount()) {
        w.EndObject(f.next);
        stack.pop_back();
        continue;
      }
      const auto& m = f.container->MemberBegin()[f.next++];
      w.Key(m.name.GetString(), m.name.GetStringLength());
      write(m.value);  // may grow the stack: f is not used after this
    } else {
      if (f.next == f.container->Size()) {
        w.EndArray(f.next);
        stack.pop_back();
        continue;
      }
      write((*f.container)[f.next++]);
    }
  }
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
