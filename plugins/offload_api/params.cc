#include "params.h"

namespace cloudlet::offload {

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

}  // namespace

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const std::string* Params::get(std::string_view name) const {
  for (auto it = items_.rbegin(); it != items_.rend(); ++it) {
    if (it->first == name) return &it->second;
  }
  return nullptr;
}

std::string percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); i++) {
    char c = in[i];
    if (c == '%' && i + 2 < in.size()) {
      int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    out.push_back(c);
  }
  return out;
}

void parse_urlencoded(std::string_view text, Params* out) {
  while (!text.empty()) {
    size_t amp = text.find('&');
    std::string_view piece = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
    if (piece.empty()) continue;
    size_t eq = piece.find('=');
    std::string_view name = piece.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1);
    out->add(percent_decode(name, true), percent_decode(value, true));
  }
}

bool parse_command(std::string_view text, std::string* path, Params* out, std::string* error) {
  size_t amp = text.find('&');
  *path = std::string(text.substr(0, amp));
  text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
  while (!text.empty()) {
    amp = text.find('&');
    std::string_view piece = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
    if (piece.empty()) continue;
    size_t eq = piece.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      *error = "Malformed parameter in command: expected name=value";
      return false;
    }
    out->add(std::string(piece.substr(0, eq)), std::string(piece.substr(eq + 1)));
  }
  return true;
}

bool truthy(const std::string* value) {
  if (!value) return false;
  std::string v;
  for (char c : trim(*value)) v.push_back(upper(c));
  return v == "T" || v == "TRUE" || v == "Y" || v == "YES";
}

std::vector<std::string> split_tags(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view tag = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (!tag.empty()) out.emplace_back(tag);
  }
  return out;
}

bool valid_id(std::string_view id, size_t max, std::string_view extra) {
  if (id.empty() || id.size() > max) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

std::string quote_safe(std::string_view value, size_t max) {
  std::string out;
  for (size_t i = 0; i < value.size() && i < max; i++) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    out.push_back(c < 0x20 || c >= 0x7f || c == '#' ? '?' : static_cast<char>(c));
  }
  if (value.size() > max) out += "...";
  return out;
}

}  // namespace cloudlet::offload
