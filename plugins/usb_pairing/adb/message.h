// ADB wire messages: a 24-byte little-endian header (command, arg0, arg1, payload length, payload checksum,
// magic = ~command) followed by the payload. Shared by both transports and by the device-side test peer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cloudlet::adb {

// Commands are their four ASCII letters read as a little-endian word.
constexpr uint32_t kCmdCnxn = 0x4e584e43;  // CNXN: connect, carries version, max payload and banner
constexpr uint32_t kCmdAuth = 0x48545541;  // AUTH: token, signature or public key
constexpr uint32_t kCmdOpen = 0x4e45504f;  // OPEN: open a stream to a service ("sync:", "shell:cmd")
constexpr uint32_t kCmdOkay = 0x59414b4f;  // OKAY: stream ready / one WRTE consumed
constexpr uint32_t kCmdClse = 0x45534c43;  // CLSE: stream closed
constexpr uint32_t kCmdWrte = 0x45545257;  // WRTE: stream data
constexpr uint32_t kCmdStls = 0x534c5453;  // STLS: TLS upgrade (newer devices; never requested by us)

// AUTH arg0.
constexpr uint32_t kAuthToken = 1;
constexpr uint32_t kAuthSignature = 2;
constexpr uint32_t kAuthPublicKey = 3;
constexpr size_t kAuthTokenSize = 20;

// Protocol versions: from kVersionSkipChecksum on, payload checksums are neither sent nor checked.
constexpr uint32_t kVersionMin = 0x01000000;
constexpr uint32_t kVersionSkipChecksum = 0x01000001;
constexpr uint32_t kVersion = kVersionSkipChecksum;

// Payload sizes: version-1 devices take 4 KiB; current adb offers 1 MiB and older devices answer 256 KiB.
constexpr uint32_t kMaxPayloadV1 = 4096;
constexpr uint32_t kMaxPayload = 1024 * 1024;

constexpr size_t kHeaderSize = 24;

struct Header {
  uint32_t command = 0;
  uint32_t arg0 = 0;
  uint32_t arg1 = 0;
  uint32_t length = 0;
  uint32_t check = 0;
  uint32_t magic = 0;
};

struct Message {
  Header header;
  std::vector<uint8_t> payload;
};

void header_encode(const Header& h, uint8_t out[kHeaderSize]);
Header header_decode(const uint8_t in[kHeaderSize]);

// The protocol's "checksum": the sum of the payload bytes, modulo 2^32.
uint32_t payload_checksum(const uint8_t* data, size_t len);

// Checks what can be checked from a header alone: the magic and the payload length against the limit we
// advertised. Returns an empty string when the header is acceptable, else a description of the fault.
std::string header_check(const Header& h, uint32_t max_payload);

// Builds a message; the checksum is filled in only when `checksum` (the negotiated version needs it).
Message message_make(uint32_t command, uint32_t arg0, uint32_t arg1, std::vector<uint8_t> payload,
                     bool checksum);
Message message_make(uint32_t command, uint32_t arg0, uint32_t arg1, const std::string& payload,
                     bool checksum);

// "WRTE", or "0x12345678" for something that is not four printable letters.
std::string command_name(uint32_t command);

// Little-endian helpers for the protocol's fixed-width fields.
inline void put_le32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v >> 16);
  p[3] = uint8_t(v >> 24);
}
inline uint32_t get_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace cloudlet::adb
