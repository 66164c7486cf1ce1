#include "virt/xml.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

namespace cloudlet::virt::xml {

Node* Node::child(std::string_view element_name) const {
  for (auto& c : children)
    if (c->kind == Kind::element && c->name == element_name) return c.get();
  return nullptr;
}

std::vector<Node*> Node::children_named(std::string_view element_name) const {
  std::vector<Node*> out;
  for (auto& c : children)
    if (c->kind == Kind::element && c->name == element_name) out.push_back(c.get());
  return out;
}

const std::string* Node::attr(std::string_view attr_name) const {
  for (auto& [k, v] : attrs)
    if (k == attr_name) return &v;
  return nullptr;
}

void Node::set_attr(std::string_view attr_name, std::string_view value) {
  for (auto& [k, v] : attrs) {
    if (k == attr_name) {
      v = value;
      return;
    }
  }
  attrs.emplace_back(std::string(attr_name), std::string(value));
}

bool Node::remove_attr(std::string_view attr_name) {
  auto it = std::find_if(attrs.begin(), attrs.end(), [&](auto& a) { return a.first == attr_name; });
  if (it == attrs.end()) return false;
  attrs.erase(it);
  return true;
}

std::string Node::text_content() const {
  std::string out;
  for (auto& c : children)
    if (c->kind == Kind::text || c->kind == Kind::cdata) out += c->text;
  return out;
}

void Node::set_text(std::string_view value) {
  children.clear();
  append_text(value);
}

Node* Node::append_element(std::string_view element_name) {
  auto n = std::make_unique<Node>();
  n->kind = Kind::element;
  n->name = element_name;
  children.push_back(std::move(n));
  return children.back().get();
}

void Node::append_text(std::string_view value) {
  auto n = std::make_unique<Node>();
  n->kind = Kind::text;
  n->text = value;
  children.push_back(std::move(n));
}

bool Node::remove_child(const Node* node) {
  auto it = std::find_if(children.begin(), children.end(), [&](auto& c) { return c.get() == node; });
  if (it == children.end()) return false;
  children.erase(it);
  return true;
}

namespace {

bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         static_cast<unsigned char>(c) >= 0x80;
}
bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Characters XML 1.0 allows in a document.
bool is_xml_char(uint32_t cp) {
  return cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) || (cp >= 0xE000 && cp <= 0xFFFD) ||
         (cp >= 0x10000 && cp <= 0x10FFFF);
}

class Parser {
 public:
  Parser(std::string_view s, Limits limits) : s_(s), limits_(limits) {}

  bool parse(Document* out, std::string* error) {
    if (s_.size() > limits_.max_bytes) return fail(error, fmt::format("document larger than {} bytes", limits_.max_bytes));
    for (char c : s_)
      if (c == '\0') return fail(error, "NUL byte in document");
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
    std::unique_ptr<Node> root;
    while (true) {
      skip_space();
      if (pos_ >= s_.size()) break;
      if (starts("<?")) {
        auto pi = std::make_unique<Node>();
        if (!parse_pi(pi.get())) return fail(error, err_);
        continue;
      }
      if (starts("<!--")) {
        auto c = std::make_unique<Node>();
        if (!parse_comment(c.get())) return fail(error, err_);
        continue;
      }
      if (starts("<!DOCTYPE") || starts("<!doctype")) return fail(error, "DOCTYPE is not accepted");
      if (starts("<")) {
        if (root) return fail(error, "content after the root element");
        root = std::make_unique<Node>();
        if (!parse_element(root.get(), 1)) return fail(error, err_);
        continue;
      }
      return fail(error, "text outside the root element");
    }
    if (!root) return fail(error, "no root element");
    out->root = std::move(root);
    return true;
  }

 private:
  bool fail(std::string* error, const std::string& what) {
    if (error) *error = fmt::format("XML error at offset {}: {}", pos_, what);
    return false;
  }
  bool set_err(std::string what) {
    err_ = std::move(what);
    return false;
  }
  bool starts(std::string_view p) const { return s_.substr(pos_, p.size()) == p; }
  void skip_space() {
    while (pos_ < s_.size() && is_space(s_[pos_])) pos_++;
  }

  bool parse_name(std::string* name) {
    if (pos_ >= s_.size() || !is_name_start(s_[pos_])) return set_err("expected a name");
    size_t start = pos_;
    while (pos_ < s_.size() && is_name_char(s_[pos_])) pos_++;
    *name = std::string(s_.substr(start, pos_ - start));
    return true;
  }

  // Decodes text up to (not including) `end` chars; handles entity and character references.
  bool decode(std::string_view raw, std::string* out) {
    out->clear();
    out->reserve(raw.size());
    for (size_t i = 0; i < raw.size(); i++) {
      char c = raw[i];
      if (c == '<') return set_err("'<' not allowed here");
      if (c != '&') {
        *out += c;
        continue;
      }
      size_t semi = raw.find(';', i);
      if (semi == std::string_view::npos || semi - i > 12) return set_err("unterminated entity reference");
      std::string_view ent = raw.substr(i + 1, semi - i - 1);
      if (ent == "amp") *out += '&';
      else if (ent == "lt") *out += '<';
      else if (ent == "gt") *out += '>';
      else if (ent == "quot") *out += '"';
      else if (ent == "apos") *out += '\'';
      else if (ent.size() >= 2 && ent[0] == '#') {
        uint32_t cp = 0;
        bool hex = ent[1] == 'x';
        std::string_view digits = ent.substr(hex ? 2 : 1);
        if (digits.empty()) return set_err("empty character reference");
        for (char d : digits) {
          uint32_t v;
          if (d >= '0' && d <= '9') v = d - '0';
          else if (hex && d >= 'a' && d <= 'f') v = d - 'a' + 10;
          else if (hex && d >= 'A' && d <= 'F') v = d - 'A' + 10;
          else return set_err("bad character reference");
          cp = cp * (hex ? 16 : 10) + v;
          if (cp > 0x10FFFF) return set_err("character reference out of range");
        }
        if (!is_xml_char(cp)) return set_err("character reference to a forbidden character");
        append_utf8(*out, cp);
      } else {
        return set_err(fmt::format("unknown entity '&{};'", ent));
      }
      i = semi;
    }
    return true;
  }

  bool parse_pi(Node* n) {
    pos_ += 2;
    n->kind = Node::Kind::pi;
    if (!parse_name(&n->name)) return false;
    size_t end = s_.find("?>", pos_);
    if (end == std::string_view::npos) return set_err("unterminated processing instruction");
    size_t start = pos_;
    while (start < end && is_space(s_[start])) start++;
    n->text = std::string(s_.substr(start, end - start));
    pos_ = end + 2;
    return true;
  }

  bool parse_comment(Node* n) {
    pos_ += 4;
    n->kind = Node::Kind::comment;
    size_t end = s_.find("-->", pos_);
    if (end == std::string_view::npos) return set_err("unterminated comment");
    n->text = std::string(s_.substr(pos_, end - pos_));
    pos_ = end + 3;
    return true;
  }

  bool parse_element(Node* n, int depth) {
    if (depth > limits_.max_depth) return set_err(fmt::format("nesting deeper than {}", limits_.max_depth));
    pos_++;  // '<'
    n->kind = Node::Kind::element;
    if (!parse_name(&n->name)) return false;
    while (true) {
      size_t before = pos_;
      skip_space();
      if (pos_ >= s_.size()) return set_err("unterminated start tag");
      if (starts("/>")) {
        pos_ += 2;
        return true;
      }
      if (s_[pos_] == '>') {
        pos_++;
        break;
      }
      if (pos_ == before) return set_err("expected whitespace before an attribute");
      std::string key;
      if (!parse_name(&key)) return false;
      skip_space();
      if (pos_ >= s_.size() || s_[pos_] != '=') return set_err("expected '=' after attribute name");
      pos_++;
      skip_space();
      if (pos_ >= s_.size() || (s_[pos_] != '"' && s_[pos_] != '\'')) return set_err("expected a quoted value");
      char q = s_[pos_++];
      size_t end = s_.find(q, pos_);
      if (end == std::string_view::npos) return set_err("unterminated attribute value");
      std::string value;
      if (!decode(s_.substr(pos_, end - pos_), &value)) return false;
      if (n->attr(key)) return set_err(fmt::format("duplicate attribute '{}'", key));
      n->attrs.emplace_back(std::move(key), std::move(value));
      pos_ = end + 1;
    }
    // Content.
    while (true) {
      if (pos_ >= s_.size()) return set_err(fmt::format("unterminated element '{}'", n->name));
      if (starts("</")) {
        pos_ += 2;
        std::string end_name;
        if (!parse_name(&end_name)) return false;
        if (end_name != n->name) return set_err(fmt::format("end tag '{}' does not match '{}'", end_name, n->name));
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != '>') return set_err("expected '>' in end tag");
        pos_++;
        return true;
      }
      auto c = std::make_unique<Node>();
      if (starts("<!--")) {
        if (!parse_comment(c.get())) return false;
      } else if (starts("<![CDATA[")) {
        pos_ += 9;
        size_t end = s_.find("]]>", pos_);
        if (end == std::string_view::npos) return set_err("unterminated CDATA section");
        c->kind = Node::Kind::cdata;
        c->text = std::string(s_.substr(pos_, end - pos_));
        pos_ = end + 3;
      } else if (starts("<?")) {
        if (!parse_pi(c.get())) return false;
      } else if (starts("<!")) {
        return set_err("markup declaration not accepted");
      } else if (s_[pos_] == '<') {
        if (!parse_element(c.get(), depth + 1)) return false;
      } else {
        size_t end = s_.find('<', pos_);
        if (end == std::string_view::npos) end = s_.size();
        c->kind = Node::Kind::text;
        if (!decode(s_.substr(pos_, end - pos_), &c->text)) return false;
        pos_ = end;
      }
      n->children.push_back(std::move(c));
    }
  }

  std::string_view s_;
  Limits limits_;
  size_t pos_ = 0;
  std::string err_;
};

void write_node(const Node& n, std::string& out) {
  switch (n.kind) {
    case Node::Kind::text:
      out += escape_text(n.text);
      return;
    case Node::Kind::cdata:
      // A CDATA section cannot contain "]]>": write such text escaped instead.
      if (n.text.find("]]>") != std::string::npos) {
        out += escape_text(n.text);
      } else {
        out += "<![CDATA[";
        out += n.text;
        out += "]]>";
      }
      return;
    case Node::Kind::comment:
      out += "<!--";
      out += n.text;
      out += "-->";
      return;
    case Node::Kind::pi:
      out += "<?";
      out += n.name;
      if (!n.text.empty()) {
        out += ' ';
        out += n.text;
      }
      out += "?>";
      return;
    case Node::Kind::element:
      break;
  }
  out += '<';
  out += n.name;
  for (auto& [k, v] : n.attrs) {
    out += ' ';
    out += k;
    out += "='";
    out += escape_attr(v);
    out += '\'';
  }
  if (n.children.empty()) {
    out += "/>";
    return;
  }
  out += '>';
  for (auto& c : n.children) write_node(*c, out);
  out += "</";
  out += n.name;
  out += '>';
}

}  // namespace

Status parse(std::string_view text, Document* out, Limits limits) {
  Parser p(text, limits);
  std::string error;
  if (!p.parse(out, &error)) return Status::invalid(std::move(error));
  return Status();
}

std::string serialize(const Node& node) {
  std::string out;
  write_node(node, out);
  return out;
}

std::string serialize(const Document& doc) {
  if (!doc.root) return {};
  std::string out = serialize(*doc.root);
  out += '\n';
  return out;
}

std::string escape_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string escape_attr(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      // Attribute value normalization would turn these into spaces on re-parse: keep them exact.
      case '\n': out += "&#10;"; break;
      case '\r': out += "&#13;"; break;
      case '\t': out += "&#9;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string prefix_for(const Node& element, std::string_view uri) {
  for (auto& [k, v] : element.attrs)
    if (k.rfind("xmlns:", 0) == 0 && v == uri) return k.substr(6);
  return {};
}

}  // namespace cloudlet::virt::xml
