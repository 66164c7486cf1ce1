// A WebSocket client for tests, over server_test_util.h's Client (plain or TLS): masked frames as browsers send
// them, the upgrade request, and reading the server's frames. Shared by the server's and the plugin ABI's
// WebSocket tests.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "http/websocket.h"
#include "server_test_util.h"

namespace httptest {

namespace ws = cloudlet::http::ws;

inline std::string masked(uint8_t first, std::string_view payload) {
  const uint8_t k[4] = {0x12, 0x34, 0x56, 0x78};
  std::string f(1, static_cast<char>(first));
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(0x80 | payload.size()));
  } else if (payload.size() <= 0xFFFF) {
    f.push_back(static_cast<char>(0x80 | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xFF));
  } else {
    f.push_back(static_cast<char>(0x80 | 127));
    for (int s = 56; s >= 0; s -= 8) f.push_back(static_cast<char>((uint64_t{payload.size()} >> s) & 0xFF));
  }
  f.append(reinterpret_cast<const char*>(k), 4);
  for (size_t i = 0; i < payload.size(); i++) f.push_back(static_cast<char>(payload[i] ^ k[i & 3]));
  return f;
}

inline std::string upgrade_request(const std::string& path = "/ws", const std::string& extra = "") {
  return "GET " + path +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
         extra + "\r\n";
}

struct Frame {
  uint8_t opcode = 0;
  std::string payload;
  uint16_t code() const {
    return payload.size() >= 2 ? static_cast<uint16_t>((uint8_t(payload[0]) << 8) | uint8_t(payload[1])) : 0;
  }
};

// Reads one server frame (unmasked, final).
inline std::optional<Frame> read_frame(Client& c, int timeout_ms = 5000) {
  std::string h = c.read_raw(2, timeout_ms);
  if (h.size() < 2) return std::nullopt;
  Frame f;
  f.opcode = uint8_t(h[0]) & 0x0F;
  EXPECT_TRUE(uint8_t(h[0]) & 0x80) << "server frames are final";
  EXPECT_FALSE(uint8_t(h[1]) & 0x80) << "server frames are not masked";
  uint64_t len = uint8_t(h[1]) & 0x7F;
  if (len >= 126) {
    std::string ext = c.read_raw(len == 126 ? 2 : 8, timeout_ms);
    len = 0;
    for (char b : ext) len = (len << 8) | uint8_t(b);
  }
  f.payload = c.read_raw(len, timeout_ms);
  if (f.payload.size() != len) return std::nullopt;
  return f;
}

}  // namespace httptest
