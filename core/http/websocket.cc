#include "http/websocket.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>

#include "http/header_text.h"
#include "text/utf8.h"

namespace cloudlet::http::ws {
namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";  // RFC 6455 1.3

bool list_has(std::string_view list, std::string_view token) {
  return for_each_list_element(list, [&](std::string_view e) { return iequals(e, token); });
}

bool is_control(Opcode op) { return (op & 0x8) != 0; }

}  // namespace

std::string upgrade_error(std::string_view method, const HeaderLookup& header, std::string_view* key) {
  if (method != "GET") return "a WebSocket is opened with GET";
  std::string_view v;
  if (!header("upgrade", &v) || !list_has(v, "websocket")) return "Upgrade: websocket is missing";
  if (!header("connection", &v) || !list_has(v, "upgrade")) return "Connection: Upgrade is missing";
  if (!header("sec-websocket-version", &v) || trim_ows(v) != "13") return "only Sec-WebSocket-Version 13 is supported";
  if (!header("sec-websocket-key", &v)) return "Sec-WebSocket-Key is missing";
  v = trim_ows(v);
  // 16 random bytes in base64: 24 characters, the last two "=" (RFC 6455 4.1).
  unsigned char raw[18];
  if (v.size() != 24 || v[22] != '=' || v[23] != '=' ||
      EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char*>(v.data()), 24) != 18) {
    return "Sec-WebSocket-Key must be 16 bytes in base64";
  }
  if (key) *key = v;
  return "";
}

std::string accept_key(std::string_view client_key) {
  std::string input(client_key);
  input += kGuid;
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  char out[32];  // 4 * ceil(20 / 3) = 28, plus the NUL
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out), digest, SHA_DIGEST_LENGTH);
  return std::string(out, static_cast<size_t>(n));
}

bool protocol_offered(std::string_view offered, std::string_view protocol) {
  // Subprotocol names are tokens compared exactly (RFC 6455 11.3.4).
  return !protocol.empty() &&
         for_each_list_element(offered, [&](std::string_view e) { return e == protocol; });
}

std::string frame_header(Opcode opcode, uint64_t length) {
  std::string h;
  h.push_back(static_cast<char>(0x80 | opcode));
  if (length < 126) {
    h.push_back(static_cast<char>(length));
  } else if (length <= 0xFFFF) {
    h.push_back(126);
    h.push_back(static_cast<char>(length >> 8));
    h.push_back(static_cast<char>(length & 0xFF));
  } else {
    h.push_back(127);
    for (int shift = 56; shift >= 0; shift -= 8) h.push_back(static_cast<char>((length >> shift) & 0xFF));
  }
  return h;
}

std::string frame(Opcode opcode, std::string_view payload) {
  std::string f = frame_header(opcode, payload.size());
  f.append(payload);
  return f;
}

std::string close_payload(uint16_t code, std::string_view reason) {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  size_t n = 0;
  while (n < reason.size()) {
    size_t len = text::utf8_sequence_length(reason, n);
    if (len == 0 || n + len > kMaxCloseReason) break;
    n += len;
  }
  p.append(reason.substr(0, n));
  return p;
}

bool close_code_valid(uint32_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

void Decoder::fail(uint16_t code, std::string reason, const Emit& emit) {
  done_ = true;
  message_.clear();
  control_.clear();
  Event e{Event::error};
  e.code = code;
  e.data = std::move(reason);
  emit(std::move(e));
}

// Validates a complete header in head_ and starts its payload. False when the frame is refused.
bool Decoder::parse_header(const Emit& emit) {
  uint64_t len = head_[1] & 0x7F;
  size_t at = 2;
  if (len == 126) {
    len = (uint64_t{head_[2]} << 8) | head_[3];
    at = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) len = (len << 8) | head_[2 + i];
    at = 10;
    if (len >> 63) return fail(kProtocolError, "frame length out of range", emit), false;
  }
  memcpy(mask_, head_ + at, 4);
  mask_pos_ = 0;
  remaining_ = len;
  if (!is_control(opcode_)) {
    uint64_t have = message_.size();
    if (len > max_message_ || have + len > max_message_) {
      return fail(kTooBig, "message larger than " + std::to_string(max_message_) + " bytes", emit), false;
    }
  }
  in_payload_ = true;
  return true;
}

void Decoder::finish_frame(const Emit& emit) {
  in_payload_ = false;
  head_len_ = 0;
  if (opcode_ == kPing || opcode_ == kPong) {
    Event e{opcode_ == kPing ? Event::ping : Event::pong};
    e.data = std::move(control_);
    control_.clear();
    emit(std::move(e));
    return;
  }
  if (opcode_ == kClose) {
    Event e{Event::close};
    if (control_.empty()) {
      e.code = kNoStatus;
    } else if (control_.size() == 1) {
      return fail(kProtocolError, "close frame with a 1-byte payload", emit);
    } else {
      uint32_t code = (uint32_t{static_cast<unsigned char>(control_[0])} << 8) | static_cast<unsigned char>(control_[1]);
      if (!close_code_valid(code)) return fail(kProtocolError, "invalid close code " + std::to_string(code), emit);
      e.code = static_cast<uint16_t>(code);
      e.data = control_.substr(2);
      if (!text::utf8_valid(e.data)) return fail(kInvalidData, "close reason is not UTF-8", emit);
    }
    control_.clear();
    done_ = true;
    emit(std::move(e));
    return;
  }
  if (!fin_) return;  // more fragments follow
  if (message_type_ == kText && !text::utf8_valid(message_)) return fail(kInvalidData, "text is not UTF-8", emit);
  Event e{Event::message};
  e.type = message_type_;
  e.data = std::move(message_);
  message_.clear();
  in_message_ = false;
  emit(std::move(e));
}

void Decoder::feed(std::string_view bytes, const Emit& emit) {
  size_t pos = 0;
  while (!done_) {
    if (!in_payload_) {
      if (pos == bytes.size()) return;
      head_[head_len_++] = static_cast<uint8_t>(bytes[pos++]);
      if (head_len_ == 2) {
        // Everything the first two bytes tell is checked before reading on (fail fast, nothing buffered).
        uint8_t b0 = head_[0], b1 = head_[1];
        fin_ = b0 & 0x80;
        opcode_ = static_cast<Opcode>(b0 & 0x0F);
        if (b0 & 0x70) return fail(kProtocolError, "reserved bits set (no extension was agreed)", emit);
        if (!(b1 & 0x80)) return fail(kProtocolError, "client frames must be masked", emit);
        bool known = opcode_ == kContinuation || opcode_ == kText || opcode_ == kBinary || opcode_ == kClose ||
                     opcode_ == kPing || opcode_ == kPong;
        if (!known) return fail(kProtocolError, "unknown opcode " + std::to_string(opcode_), emit);
        if (is_control(opcode_)) {
          if (!fin_) return fail(kProtocolError, "fragmented control frame", emit);
          if ((b1 & 0x7F) > kMaxControlPayload) return fail(kProtocolError, "control frame over 125 bytes", emit);
        } else if (opcode_ == kContinuation) {
          if (!in_message_) return fail(kProtocolError, "continuation without a message", emit);
        } else {
          if (in_message_) return fail(kProtocolError, "new message before the last one ended", emit);
          in_message_ = true;
          message_type_ = opcode_;
        }
      }
      if (head_len_ < 2) continue;
      size_t len7 = head_[1] & 0x7F;
      size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
      if (head_len_ < need) continue;
      if (!parse_header(emit)) return;
      if (remaining_ == 0) finish_frame(emit);
      continue;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, bytes.size() - pos));
    std::string& dest = is_control(opcode_) ? control_ : message_;
    size_t start = dest.size();
    dest.append(bytes.substr(pos, take));
    for (size_t i = start; i < dest.size(); i++) dest[i] = static_cast<char>(dest[i] ^ mask_[mask_pos_++ & 3]);
    pos += take;
    remaining_ -= take;
    if (remaining_ > 0) return;  // the rest of the payload comes with the next read
    finish_frame(emit);
  }
}

}  // namespace cloudlet::http::ws
