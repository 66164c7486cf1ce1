// Incremental multipart/form-data parser (RFC 7578 on top of RFC 2046).
//
// Fed the body in chunks of any size (1 byte or megabytes, split anywhere), it reports each part's headers,
// its data as views into the fed bytes (never buffered, so multi-GB parts cost no memory) and its end. The
// delimiter search is memmem-based; a delimiter split across chunks is tracked by how much of it matched, so
// no part data is ever copied here.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "cloudlet_plugin.h"

namespace cloudlet::http {

// What a form needs from one part's header block.
struct PartHeaders {
  std::string name;           // Content-Disposition name (required), as sent
  std::string filename;       // filename* (RFC 5987, UTF-8 or ISO-8859-1) if usable, else filename: untrusted
  bool has_filename = false;  // a filename parameter was present: a file part, even when filename is empty
  std::string content_type;   // Content-Type as sent (trimmed); empty if absent
};

struct MultipartLimits {
  size_t max_header_bytes = 8 * 1024;  // one part's header block, blank line included
  size_t max_parts = 1000;
};

class MultipartParser {
 public:
  // Each callback returns CL_OK to go on; any other status stops the parser and becomes feed()'s result
  // (the callback keeps its own error message). Callbacks run inside feed(), never later.
  struct Callbacks {
    std::function<cl_status_t(const PartHeaders& headers)> part_begin;
    std::function<cl_status_t(std::string_view data)> part_data;  // borrowed for the call only; never empty
    std::function<cl_status_t()> part_end;
  };

  // An invalid boundary (see boundary_valid) makes the first feed() fail with CL_EINVAL.
  MultipartParser(std::string_view boundary, Callbacks callbacks, MultipartLimits limits = {});

  // Extracts the boundary parameter (quoted or not) of a Content-Type value and checks it with
  // boundary_valid(). Does not look at the media type itself.
  static bool boundary_from_content_type(std::string_view content_type, std::string* boundary);
  // RFC 2046 §5.1.1: 1..70 characters from bchars, not ending with a space.
  static bool boundary_valid(std::string_view boundary);

  // Consumes all of `data`. Returns CL_OK, CL_EINVAL (malformed body), CL_ETOOBIG (a limit) or a callback's
  // status. After an error every later call returns the same status. Bytes after the closing delimiter
  // (the epilogue) are ignored.
  cl_status_t feed(std::string_view data);
  // Call at the end of the body: CL_EINVAL unless the closing delimiter was seen.
  cl_status_t finish();

  cl_status_t status() const { return status_; }
  const std::string& error() const { return error_; }
  bool done() const { return state_ == State::epilogue; }
  size_t parts() const { return parts_; }

 private:
  enum class State { data, after_delimiter, close_dash, padding, padding_lf, headers, epilogue };

  cl_status_t fail(cl_status_t status, std::string message);
  cl_status_t scan_data(const char* p, size_t n, size_t* used);
  cl_status_t scan_headers(const char* p, size_t n, size_t* used);
  cl_status_t emit(const char* p, size_t n);
  cl_status_t delimiter_found();
  cl_status_t parse_headers(PartHeaders* out);

  std::string delimiter_;  // CRLF "--" boundary
  Callbacks cb_;
  MultipartLimits limits_;
  State state_ = State::data;
  size_t match_ = 2;      // bytes of delimiter_ matched at the end of the last chunk; the body starts as if
                          // after a CRLF so a leading "--boundary" is found like any other delimiter
  bool in_part_ = false;  // false while in the preamble or between parts
  std::string headers_;   // the current part's header block, bounded by max_header_bytes
  size_t parts_ = 0;
  cl_status_t status_ = CL_OK;
  std::string error_;
};

}  // namespace cloudlet::http
