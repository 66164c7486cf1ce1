// A small blocking HTTP/1.1 client for tests: real bytes over loopback, strict about framing (a response
// without Content-Length or chunked encoding is read until the connection closes, and says so).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cloudlet::test {

struct HttpResponse {
  int status = 0;  // 0 when no complete response arrived (error says why)
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool had_content_length = false;
  bool chunked = false;
  std::string error;
  std::string header(const std::string& name) const;  // case-insensitive, "" when absent
};

// Connects to host:port (IPv4), sends raw bytes, reads one response. timeout_ms bounds the whole exchange.
HttpResponse http_raw(const std::string& host, uint16_t port, const std::string& request, uint64_t timeout_ms = 5000,
                      bool head = false);

// A blocking TCP connection to 127.0.0.1:port, for tests that hold a connection open; -1 on error.
int connect_loopback(uint16_t port);
// Sends all of data (MSG_NOSIGNAL); false on error.
bool send_all(int fd, std::string_view data);

// GET path with "Connection: close".
HttpResponse http_get(uint16_t port, const std::string& path, uint64_t timeout_ms = 5000);

// Parses one response from `data` starting at *pos; advances *pos. Returns false if incomplete.
bool parse_response(const std::string& data, size_t* pos, HttpResponse* out, bool head = false);

}  // namespace cloudlet::test
