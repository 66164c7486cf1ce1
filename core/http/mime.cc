#include "http/mime.h"

#include "http/header_text.h"

namespace cloudlet::http {

std::string_view mime_type_for(std::string_view path) {
  struct Entry {
    std::string_view ext, type;
  };
  static constexpr Entry table[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"json", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"ico", "image/x-icon"},
      {"webp", "image/webp"},
      {"woff", "font/woff"},
      {"woff2", "font/woff2"},
      {"ttf", "font/ttf"},
      {"map", "application/json"},
      {"wasm", "application/wasm"},
      {"apk", "application/vnd.android.package-archive"},
      {"qcow2", "application/octet-stream"},
      {"pdf", "application/pdf"},
      {"xml", "application/xml"},
  };
  size_t slash = path.rfind('/');
  size_t dot = path.rfind('.');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) {
    return "application/octet-stream";
  }
  std::string_view ext = path.substr(dot + 1);
  for (const auto& e : table) {
    if (iequals(e.ext, ext)) return e.type;
  }
  return "application/octet-stream";
}

}  // namespace cloudlet::http
