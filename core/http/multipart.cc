#include "http/multipart.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "http/header_text.h"
#include "http/url.h"

namespace cloudlet::http {

namespace {

bool is_ows(char c) { return c == ' ' || c == '\t'; }

// RFC 7230 tchar.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// RFC 2046 bcharsnospace, plus the space (allowed except last).
bool is_bchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c != '\0' && std::strchr("'()+_,-./:=? ", c) != nullptr;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }


struct Param {
  std::string name;  // lower-cased
  std::string value;
};

// Parses `type *( OWS ";" OWS name "=" ( token / quoted-string ) )` (Content-Type, Content-Disposition).
// In quoted strings a backslash escapes only '"' and '\\' (see below). Unquoted values run to the next ';' so a
// sloppy client's unquoted "a b.txt" still parses. Returns false on a syntax error.
bool parse_header_value(std::string_view v, std::string* type, std::vector<Param>* params) {
  size_t i = 0, n = v.size();
  size_t semi = v.find(';');
  std::string_view t = trim_ows(v.substr(0, semi));
  if (t.empty()) return false;
  for (char c : t) {
    if (!is_tchar(c) && c != '/') return false;
  }
  type->assign(t);
  i = semi == std::string_view::npos ? n : semi;
  while (i < n) {
    i++;  // the ';'
    while (i < n && is_ows(v[i])) i++;
    if (i == n) break;
    if (v[i] == ';') continue;
    size_t start = i;
    while (i < n && is_tchar(v[i])) i++;
    if (i == start) return false;
    Param p;
    for (size_t k = start; k < i; k++) p.name.push_back(lower(v[k]));
    while (i < n && is_ows(v[i])) i++;
    if (i == n || v[i] != '=') return false;
    i++;
    while (i < n && is_ows(v[i])) i++;
    if (i < n && v[i] == '"') {
      i++;
      for (;;) {
        if (i == n) return false;  // unterminated
        char c = v[i];
        if (c == '"') {
          i++;
          break;
        }
        // Only \" and \\ are escapes: browsers and curl send backslashes raw (HTML's form encoding
        // escapes quotes as %22 instead), so "C:\dir" must keep its backslash.
        if (c == '\\' && i + 1 < n && (v[i + 1] == '"' || v[i + 1] == '\\')) c = v[++i];
        p.value.push_back(c);
        i++;
      }
      while (i < n && is_ows(v[i])) i++;
      if (i < n && v[i] != ';') return false;
    } else {
      size_t end = v.find(';', i);
      if (end == std::string_view::npos) end = n;
      p.value.assign(trim_ows(v.substr(i, end - i)));
      i = end;
    }
    params->push_back(std::move(p));
  }
  return true;
}

// Finds a parameter; false if it appears twice (ambiguous input is refused, not guessed at).
bool find_param(const std::vector<Param>& params, std::string_view name, const Param** out) {
  *out = nullptr;
  for (const auto& p : params) {
    if (p.name != name) continue;
    if (*out) return false;
    *out = &p;
  }
  return true;
}

// RFC 5987 ext-value: charset "'" [language] "'" pct-encoded. Returns false on malformed input; sets *usable
// to false for a charset we do not convert (the plain filename is then used).
bool decode_ext_value(std::string_view v, std::string* out, bool* usable) {
  *usable = false;
  size_t q1 = v.find('\'');
  if (q1 == std::string_view::npos) return false;
  size_t q2 = v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return false;
  std::string_view charset = v.substr(0, q1);
  std::string decoded;
  if (!percent_decode(v.substr(q2 + 1), &decoded, false)) return false;
  if (iequals(charset, "utf-8")) {
    *out = std::move(decoded);
    *usable = true;
  } else if (iequals(charset, "iso-8859-1")) {
    out->clear();
    for (unsigned char c : decoded) {
      if (c < 0x80) {
        out->push_back(static_cast<char>(c));
      } else {
        out->push_back(static_cast<char>(0xC0 | (c >> 6)));
        out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
      }
    }
    *usable = true;
  }
  return true;
}

}  // namespace

MultipartParser::MultipartParser(std::string_view boundary, Callbacks callbacks, MultipartLimits limits)
    : cb_(std::move(callbacks)), limits_(limits) {
  if (!boundary_valid(boundary)) {
    fail(CL_EINVAL, "invalid multipart boundary");
    return;
  }
  delimiter_.reserve(boundary.size() + 4);
  delimiter_.append("\r\n--");
  delimiter_.append(boundary);
}

bool MultipartParser::boundary_valid(std::string_view boundary) {
  if (boundary.empty() || boundary.size() > 70 || boundary.back() == ' ') return false;
  return std::all_of(boundary.begin(), boundary.end(), is_bchar);
}

bool MultipartParser::boundary_from_content_type(std::string_view content_type, std::string* boundary) {
  std::string type;
  std::vector<Param> params;
  if (!parse_header_value(content_type, &type, &params)) return false;
  const Param* p = nullptr;
  if (!find_param(params, "boundary", &p) || !p) return false;
  if (!boundary_valid(p->value)) return false;
  *boundary = p->value;
  return true;
}

cl_status_t MultipartParser::fail(cl_status_t status, std::string message) {
  if (status_ == CL_OK) {
    status_ = status;
    error_ = std::move(message);
  }
  return status_;
}

cl_status_t MultipartParser::feed(std::string_view data) {
  if (status_ != CL_OK) return status_;
  const char* p = data.data();
  size_t n = data.size();
  size_t i = 0;
  while (i < n) {
    char c = p[i];
    switch (state_) {
      case State::data: {
        size_t used = 0;
        if (cl_status_t st = scan_data(p + i, n - i, &used); st != CL_OK) return st;
        i += used;
        break;
      }
      case State::after_delimiter:
        // "--" closes, otherwise optional transport padding then CRLF.
        if (c == '-') {
          state_ = State::close_dash;
        } else if (is_ows(c)) {
          state_ = State::padding;
        } else if (c == '\r') {
          state_ = State::padding_lf;
        } else {
          return fail(CL_EINVAL, "malformed multipart boundary line");
        }
        i++;
        break;
      case State::close_dash:
        if (c != '-') return fail(CL_EINVAL, "malformed multipart closing boundary");
        state_ = State::epilogue;
        i++;
        break;
      case State::padding:
        if (c == '\r') {
          state_ = State::padding_lf;
        } else if (!is_ows(c)) {
          return fail(CL_EINVAL, "malformed multipart boundary line");
        }
        i++;
        break;
      case State::padding_lf:
        if (c != '\n') return fail(CL_EINVAL, "malformed multipart boundary line");
        if (parts_ >= limits_.max_parts) {
          return fail(CL_ETOOBIG, "too many parts in multipart body (limit " + std::to_string(limits_.max_parts) + ")");
        }
        parts_++;
        headers_.clear();
        state_ = State::headers;
        i++;
        break;
      case State::headers: {
        size_t used = 0;
        if (cl_status_t st = scan_headers(p + i, n - i, &used); st != CL_OK) return st;
        i += used;
        break;
      }
      case State::epilogue:
        return CL_OK;  // ignored, like the preamble
    }
  }
  return CL_OK;
}

cl_status_t MultipartParser::finish() {
  if (status_ != CL_OK) return status_;
  if (state_ != State::epilogue) {
    return fail(CL_EINVAL, in_part_ || state_ == State::headers ? "multipart body ends inside a part"
                                                                : "multipart body has no closing boundary");
  }
  return CL_OK;
}

cl_status_t MultipartParser::emit(const char* p, size_t n) {
  if (n == 0 || !in_part_) return CL_OK;  // preamble bytes are dropped
  cl_status_t st = cb_.part_data ? cb_.part_data(std::string_view(p, n)) : CL_OK;
  if (st != CL_OK) return fail(st, "stopped by the part handler");
  return CL_OK;
}

cl_status_t MultipartParser::delimiter_found() {
  match_ = 0;
  state_ = State::after_delimiter;
  if (!in_part_) return CL_OK;
  in_part_ = false;
  cl_status_t st = cb_.part_end ? cb_.part_end() : CL_OK;
  if (st != CL_OK) return fail(st, "stopped by the part handler");
  return CL_OK;
}

// Scans part data (or the preamble) for the delimiter. The delimiter starts with the only CR it contains
// (bchars exclude CR/LF), so a partial match can only begin at the last CR of a chunk, and bytes held back
// as a partial match are exactly a prefix of delimiter_ (re-emitted from there if the match fails).
cl_status_t MultipartParser::scan_data(const char* p, size_t n, size_t* used) {
  const char* delim = delimiter_.data();
  const size_t dlen = delimiter_.size();
  size_t search_from = 0;
  if (match_ > 0) {
    size_t want = dlen - match_;
    size_t k = std::min(want, n);
    size_t j = 0;
    while (j < k && p[j] == delim[match_ + j]) j++;
    if (j == want) {
      *used = want;
      return delimiter_found();
    }
    if (j == n) {
      match_ += n;
      *used = n;
      return CL_OK;
    }
    // No delimiter after all: the held-back prefix is data, and p[0..j) (which continues it) too.
    size_t held = match_;
    match_ = 0;
    if (cl_status_t st = emit(delim, held); st != CL_OK) return st;
    search_from = j;
  }
  const char* hit = static_cast<const char*>(memmem(p + search_from, n - search_from, delim, dlen));
  if (hit) {
    if (cl_status_t st = emit(p, static_cast<size_t>(hit - p)); st != CL_OK) return st;
    *used = static_cast<size_t>(hit - p) + dlen;
    return delimiter_found();
  }
  size_t tail = std::min(dlen - 1, n - search_from);
  size_t keep = 0;
  if (const void* cr = memrchr(p + n - tail, '\r', tail)) {
    size_t len = static_cast<size_t>(p + n - static_cast<const char*>(cr));
    if (std::memcmp(cr, delim, len) == 0) keep = len;
  }
  if (cl_status_t st = emit(p, n - keep); st != CL_OK) return st;
  match_ = keep;
  *used = n;
  return CL_OK;
}

cl_status_t MultipartParser::scan_headers(const char* p, size_t n, size_t* used) {
  size_t old = headers_.size();
  size_t take = std::min(n, limits_.max_header_bytes - old);
  headers_.append(p, take);
  if (headers_.size() >= 2 && headers_[0] == '\r' && headers_[1] == '\n') {
    return fail(CL_EINVAL, "multipart part without headers (Content-Disposition is required)");
  }
  size_t pos = headers_.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
  if (pos == std::string::npos) {
    if (headers_.size() >= limits_.max_header_bytes) {
      return fail(CL_ETOOBIG, "multipart part headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes");
    }
    *used = take;
    return CL_OK;
  }
  *used = pos + 4 - old;
  headers_.resize(pos + 2);  // every line, each with its CRLF
  PartHeaders h;
  if (cl_status_t st = parse_headers(&h); st != CL_OK) return st;
  headers_.clear();
  headers_.shrink_to_fit();
  state_ = State::data;
  match_ = 0;
  in_part_ = true;
  cl_status_t st = cb_.part_begin ? cb_.part_begin(h) : CL_OK;
  if (st != CL_OK) return fail(st, "stopped by the part handler");
  return CL_OK;
}

cl_status_t MultipartParser::parse_headers(PartHeaders* out) {
  // Split into (name, value) fields; obsolete line folding joins a line to the previous value.
  std::vector<std::pair<std::string_view, std::string>> fields;
  std::string_view block(headers_);
  while (!block.empty()) {
    size_t eol = block.find("\r\n");  // the block ends with CRLF, so this always finds one
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    for (char c : line) {
      unsigned char u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return fail(CL_EINVAL, "control character in multipart headers");
    }
    if (is_ows(line.front())) {
      if (fields.empty()) return fail(CL_EINVAL, "malformed multipart header line");
      fields.back().second.push_back(' ');
      fields.back().second.append(trim_ows(line));
      continue;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return fail(CL_EINVAL, "malformed multipart header line");
    std::string_view name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), is_tchar)) {
      return fail(CL_EINVAL, "malformed multipart header name");
    }
    fields.emplace_back(name, std::string(trim_ows(line.substr(colon + 1))));
  }

  const std::string* disposition = nullptr;
  const std::string* content_type = nullptr;
  for (const auto& [name, value] : fields) {
    const std::string** slot = nullptr;
    if (iequals(name, "content-disposition")) {
      slot = &disposition;
    } else if (iequals(name, "content-type")) {
      slot = &content_type;
    } else {
      continue;  // Content-Transfer-Encoding and friends: deprecated by RFC 7578, ignored
    }
    if (*slot) return fail(CL_EINVAL, "repeated " + std::string(name) + " header in multipart part");
    *slot = &value;
  }
  if (!disposition) return fail(CL_EINVAL, "multipart part without Content-Disposition");

  std::string type;
  std::vector<Param> params;
  if (!parse_header_value(*disposition, &type, &params)) {
    return fail(CL_EINVAL, "malformed Content-Disposition in multipart part");
  }
  if (!iequals(type, "form-data")) return fail(CL_EINVAL, "multipart part is not form-data");
  const Param *name = nullptr, *filename = nullptr, *filename_ext = nullptr;
  if (!find_param(params, "name", &name) || !find_param(params, "filename", &filename) ||
      !find_param(params, "filename*", &filename_ext)) {
    return fail(CL_EINVAL, "repeated parameter in Content-Disposition");
  }
  if (!name) return fail(CL_EINVAL, "multipart part without a name");
  out->name = name->value;
  if (filename) {
    out->has_filename = true;
    out->filename = filename->value;
  }
  if (filename_ext) {
    std::string decoded;
    bool usable = false;
    if (!decode_ext_value(filename_ext->value, &decoded, &usable)) {
      return fail(CL_EINVAL, "malformed filename* in Content-Disposition");
    }
    out->has_filename = true;
    if (usable) out->filename = std::move(decoded);
  }
  if (content_type) out->content_type = *content_type;
  return CL_OK;
}

}  // namespace cloudlet::http
