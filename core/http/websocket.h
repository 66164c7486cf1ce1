// The WebSocket protocol (RFC 6455) as bytes: the opening handshake's checks and answer, the server's frames,
// and an incremental decoder of a client's frames. No sockets here: a connection feeds the decoder what it
// reads and writes what the encoder returns, so every rule is tested and fuzzed without a network.
//
// The decoder enforces the RFC's rules for a server: client frames are masked, reserved bits are zero,
// control frames are final and at most 125 bytes, continuations follow a started message, text is UTF-8, a
// close frame carries a valid code and a UTF-8 reason. Messages are joined from their fragments and bounded
// (max_message); a violation ends decoding with the close code to send (1002, 1007 or 1009).
//
// Thread: none of its own; a Decoder belongs to one connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace cloudlet::http::ws {

enum Opcode : uint8_t { kContinuation = 0x0, kText = 0x1, kBinary = 0x2, kClose = 0x8, kPing = 0x9, kPong = 0xA };

// Close codes the server sends for what it found (RFC 6455 7.4.1).
enum CloseCode : uint16_t {
  kNormal = 1000,
  kGoingAway = 1001,
  kProtocolError = 1002,
  kNoStatus = 1005,  // reported when a close frame had no code; never sent
  kAbnormal = 1006,  // reported when the peer left without a close frame; never sent
  kInvalidData = 1007,
  kTooBig = 1009,
};

constexpr size_t kMaxControlPayload = 125;
constexpr size_t kMaxCloseReason = 123;

// Header lookup of the request being upgraded: true and *value when present (names are case-insensitive).
using HeaderLookup = std::function<bool(std::string_view name, std::string_view* value)>;

// Checks that a request asks for a WebSocket as RFC 6455 4.2.1 says (GET, Upgrade: websocket, Connection:
// upgrade, Sec-WebSocket-Version: 13, a Sec-WebSocket-Key of 16 bytes in base64). "" when it does, else why
// not, in a sentence for a 400 answer. *key (optional) gets the key.
std::string upgrade_error(std::string_view method, const HeaderLookup& header, std::string_view* key = nullptr);

// The Sec-WebSocket-Accept value for a client's key: base64(SHA-1(key + the RFC's GUID)).
std::string accept_key(std::string_view client_key);

// True if `offered` (the client's Sec-WebSocket-Protocol list) names `protocol`.
bool protocol_offered(std::string_view offered, std::string_view protocol);

// A server frame's header (FIN set, never masked) for a payload of `length` bytes; the payload follows it.
std::string frame_header(Opcode opcode, uint64_t length);

// A whole server frame: header and payload (for control frames and copied messages).
std::string frame(Opcode opcode, std::string_view payload);

// A close frame's payload: the code, then the reason cut to 123 bytes on a UTF-8 boundary.
std::string close_payload(uint16_t code, std::string_view reason);

// True if a peer may send this close code (1000-1003, 1007-1014, 3000-4999).
bool close_code_valid(uint32_t code);

class Decoder {
 public:
  struct Event {
    enum Kind { message, ping, pong, close, error } kind;
    Opcode type = kBinary;  // message: kText or kBinary
    std::string data;       // message, ping, pong: the payload; close, error: the reason
    uint16_t code = 0;      // close: the peer's code (kNoStatus when none); error: the code to close with
  };
  using Emit = std::function<void(Event&& event)>;

  explicit Decoder(uint64_t max_message) : max_message_(max_message) {}

  // Decodes what arrived, calling emit for each complete message and control frame, in order. After a close
  // or an error nothing more is decoded (done() is true); further bytes are ignored.
  void feed(std::string_view bytes, const Emit& emit);
  bool done() const { return done_; }

 private:
  bool parse_header(const Emit& emit);
  void finish_frame(const Emit& emit);
  void fail(uint16_t code, std::string reason, const Emit& emit);

  uint64_t max_message_;
  bool done_ = false;
  // The frame header being read (2 to 14 bytes).
  uint8_t head_[14];
  size_t head_len_ = 0;
  bool in_payload_ = false;
  // The frame being read.
  bool fin_ = false;
  Opcode opcode_ = kContinuation;
  uint64_t remaining_ = 0;
  uint8_t mask_[4] = {0, 0, 0, 0};
  uint64_t mask_pos_ = 0;
  std::string control_;  // a control frame's payload
  // The data message being joined from fragments.
  bool in_message_ = false;
  Opcode message_type_ = kBinary;
  std::string message_;
};

}  // namespace cloudlet::http::ws
