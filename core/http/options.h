// Listener options and HTTP limits (filled from the configuration's "listeners" section).
#pragma once

#include <cstdint>
#include <string>

namespace cloudlet::http {

struct Limits {
  uint64_t max_header_bytes = 16 * 1024;      // request line + headers; beyond: 431
  uint64_t max_uri_bytes = 8 * 1024;          // request target; beyond: 414
  uint64_t max_body_bytes = 1024 * 1024;      // buffered bodies; beyond: 413
  uint64_t max_upload_bytes = 64ull << 30;    // streamed and form bodies (disk images); beyond: 413
  uint32_t header_timeout_ms = 10000;         // from a request's first byte to the end of its headers
  uint32_t body_timeout_ms = 30000;           // longest pause while a body arrives
  uint32_t idle_timeout_ms = 30000;           // keep-alive connection with no request
  uint32_t write_timeout_ms = 60000;          // longest pause while the client does not read our response
  uint32_t max_connections = 4096;            // beyond: new connections are closed at once
};

struct ListenerOptions {
  std::string name;  // "api", "manager", ...
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port (tests)
  std::string tls_cert;  // PEM chain; TLS is on when both cert and key are set
  std::string tls_key;
  std::string webroot;   // static files for GET/HEAD requests no route took ("" = none)
  std::string index_file = "index.html";
  Limits limits;
};

}  // namespace cloudlet::http
