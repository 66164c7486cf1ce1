// The WebSocket protocol module (core/http/websocket.h) against RFC 6455's own examples and its rules for a
// server: handshake checks and answer, server frames, and the decoder fed whole, byte by byte and in pieces.
#include "http/websocket.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace ws = cloudlet::http::ws;
using Event = ws::Decoder::Event;

namespace {

// A masked client frame, as a browser sends it.
std::string client_frame(uint8_t first_byte, std::string_view payload, uint32_t mask = 0x37fa213d) {
  std::string f;
  f.push_back(static_cast<char>(first_byte));
  uint8_t m = 0x80;
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(m | payload.size()));
  } else if (payload.size() <= 0xFFFF) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xFF));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int s = 56; s >= 0; s -= 8) f.push_back(static_cast<char>((uint64_t{payload.size()} >> s) & 0xFF));
  }
  uint8_t k[4] = {uint8_t(mask >> 24), uint8_t(mask >> 16), uint8_t(mask >> 8), uint8_t(mask)};
  f.append(reinterpret_cast<const char*>(k), 4);
  for (size_t i = 0; i < payload.size(); i++) f.push_back(static_cast<char>(payload[i] ^ k[i & 3]));
  return f;
}

std::vector<Event> decode(std::string_view bytes, uint64_t max = 1 << 20, size_t piece = 0) {
  ws::Decoder d(max);
  std::vector<Event> out;
  auto emit = [&](Event&& e) { out.push_back(std::move(e)); };
  if (piece == 0) {
    d.feed(bytes, emit);
  } else {
    for (size_t i = 0; i < bytes.size(); i += piece) d.feed(bytes.substr(i, piece), emit);
  }
  return out;
}

ws::HeaderLookup headers(std::map<std::string, std::string> h) {
  return [h](std::string_view name, std::string_view* v) {
    auto it = h.find(std::string(name));
    if (it == h.end()) return false;
    *v = it->second;
    return true;
  };
}

}  // namespace

TEST(WebSocket, AcceptKeyIsTheRfcExample) {
  EXPECT_EQ(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");  // RFC 6455 1.3
}

TEST(WebSocket, UpgradeRequestsAreCheckedAsTheRfcSays) {
  std::map<std::string, std::string> good = {{"upgrade", "websocket"},
                                             {"connection", "keep-alive, Upgrade"},
                                             {"sec-websocket-version", "13"},
                                             {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="}};
  std::string_view key;  // a view into what the lookup returned: keep the lookup
  ws::HeaderLookup lookup = headers(good);
  EXPECT_EQ(ws::upgrade_error("GET", lookup, &key), "");
  EXPECT_EQ(key, "dGhlIHNhbXBsZSBub25jZQ==");
  EXPECT_NE(ws::upgrade_error("POST", headers(good)), "");
  for (const char* name : {"upgrade", "connection", "sec-websocket-version", "sec-websocket-key"}) {
    auto h = good;
    h.erase(name);
    EXPECT_NE(ws::upgrade_error("GET", headers(h)), "") << name;
  }
  for (auto [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"upgrade", "h2c"}, {"connection", "close"}, {"sec-websocket-version", "8"},
           {"sec-websocket-key", "short=="}, {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ"},
           {"sec-websocket-key", "!!!!!!!!!!!!!!!!!!!!!!=="}}) {
    auto h = good;
    h[name] = value;
    EXPECT_NE(ws::upgrade_error("GET", headers(h)), "") << name << ": " << value;
  }
}

TEST(WebSocket, SubprotocolsAreExactTokens) {
  EXPECT_TRUE(ws::protocol_offered("chat, binary", "binary"));
  EXPECT_FALSE(ws::protocol_offered("chat, binary", "Binary"));
  EXPECT_FALSE(ws::protocol_offered("chat", ""));
}

TEST(WebSocket, ServerFramesAreUnmaskedWithMinimalLengths) {
  // RFC 6455 5.7: an unmasked "Hello", a 256-byte and a 64 KiB binary message.
  EXPECT_EQ(ws::frame(ws::kText, "Hello"), std::string("\x81\x05Hello", 7));
  EXPECT_EQ(ws::frame_header(ws::kBinary, 256), std::string("\x82\x7E\x01\x00", 4));
  EXPECT_EQ(ws::frame_header(ws::kBinary, 65536), std::string("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  EXPECT_EQ(ws::frame_header(ws::kBinary, 125).size(), 2u);
  EXPECT_EQ(ws::frame_header(ws::kBinary, 126).size(), 4u);
}

TEST(WebSocket, ClosePayloadCutsTheReasonOnACharacter) {
  std::string reason(122, 'a');
  reason += "\xC3\xA9";  // a 2-byte character straddling byte 123
  std::string p = ws::close_payload(1000, reason);
  EXPECT_EQ(p.size(), 2u + 122u);
  EXPECT_EQ(p.substr(0, 2), std::string("\x03\xE8", 2));
}

TEST(WebSocket, DecodesTheRfcMaskedExampleWholeAndByteByByte) {
  const std::string hello("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);  // RFC 6455 5.7
  for (size_t piece : {0, 1, 3}) {
    auto ev = decode(hello, 1 << 20, piece);
    ASSERT_EQ(ev.size(), 1u) << piece;
    EXPECT_EQ(ev[0].kind, Event::message);
    EXPECT_EQ(ev[0].type, ws::kText);
    EXPECT_EQ(ev[0].data, "Hello");
  }
}

TEST(WebSocket, JoinsFragmentsAndAnswersControlFramesBetweenThem) {
  std::string bytes = client_frame(0x01, "Hel") + client_frame(0x89, "ping!") + client_frame(0x80, "lo") +
                      client_frame(0x8A, "") + client_frame(0x82, std::string(70000, 'b'));
  for (size_t piece : {0, 1, 7, 4096}) {
    auto ev = decode(bytes, 1 << 20, piece);
    ASSERT_EQ(ev.size(), 4u) << piece;
    EXPECT_EQ(ev[0].kind, Event::ping);
    EXPECT_EQ(ev[0].data, "ping!");
    EXPECT_EQ(ev[1].kind, Event::message);
    EXPECT_EQ(ev[1].data, "Hello");
    EXPECT_EQ(ev[2].kind, Event::pong);
    EXPECT_EQ(ev[3].type, ws::kBinary);
    EXPECT_EQ(ev[3].data.size(), 70000u);
  }
}

TEST(WebSocket, CloseFramesCarryCodeAndReasonAndEndDecoding) {
  auto ev = decode(client_frame(0x88, ws::close_payload(1001, "bye")) + client_frame(0x81, "after"));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, Event::close);
  EXPECT_EQ(ev[0].code, 1001);
  EXPECT_EQ(ev[0].data, "bye");
  ev = decode(client_frame(0x88, ""));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].code, ws::kNoStatus);
}

// Each violation ends decoding with the code the server closes with.
TEST(WebSocket, ViolationsEndWithTheRightCloseCode) {
  struct Case {
    const char* what;
    std::string bytes;
    uint16_t code;
  };
  std::string unmasked("\x81\x02hi", 4);
  std::vector<Case> cases = {
      {"unmasked", unmasked, ws::kProtocolError},
      {"reserved bits", client_frame(0xC1, "x"), ws::kProtocolError},
      {"unknown opcode", client_frame(0x83, "x"), ws::kProtocolError},
      {"fragmented ping", client_frame(0x09, "x"), ws::kProtocolError},
      {"long ping", client_frame(0x89, std::string(126, 'p')), ws::kProtocolError},
      {"lone continuation", client_frame(0x80, "x"), ws::kProtocolError},
      {"message inside a message", client_frame(0x01, "a") + client_frame(0x81, "b"), ws::kProtocolError},
      {"1-byte close", client_frame(0x88, "x"), ws::kProtocolError},
      {"close code 1005", client_frame(0x88, std::string("\x03\xED", 2)), ws::kProtocolError},
      {"close code 999", client_frame(0x88, std::string("\x03\xE7", 2)), ws::kProtocolError},
      {"bad UTF-8 text", client_frame(0x81, "\xC0\xAF"), ws::kInvalidData},
      {"surrogate in text", client_frame(0x81, "\xED\xA0\x80"), ws::kInvalidData},
      {"bad UTF-8 close reason", client_frame(0x88, std::string("\x03\xE8\xFF", 3)), ws::kInvalidData},
      {"too big", client_frame(0x82, std::string(1025, 'x')), ws::kTooBig},
      {"too big in fragments", client_frame(0x02, std::string(600, 'x')) + client_frame(0x80, std::string(600, 'x')),
       ws::kTooBig},
  };
  for (const auto& c : cases) {
    for (size_t piece : {0, 1}) {
      auto ev = decode(c.bytes, 1024, piece);
      ASSERT_FALSE(ev.empty()) << c.what;
      EXPECT_EQ(ev.back().kind, Event::error) << c.what;
      EXPECT_EQ(ev.back().code, c.code) << c.what << ": " << ev.back().data;
    }
  }
}

TEST(WebSocket, TooBigIsRefusedFromTheHeaderBeforeAnyPayload) {
  // A header announcing 2^40 bytes: refused at once, nothing is buffered waiting for it.
  std::string h("\x82\xFF\x00\x00\x01\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14);
  auto ev = decode(h, 1 << 20);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].code, ws::kTooBig);
  std::string huge("\x82\xFF\x80\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04", 14);
  ev = decode(huge, 1 << 20);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].code, ws::kProtocolError);
}
