#include "adb/message.h"

#include <fmt/format.h>

namespace cloudlet::adb {

void header_encode(const Header& h, uint8_t out[kHeaderSize]) {
  put_le32(out + 0, h.command);
  put_le32(out + 4, h.arg0);
  put_le32(out + 8, h.arg1);
  put_le32(out + 12, h.length);
  put_le32(out + 16, h.check);
  put_le32(out + 20, h.magic);
}

Header header_decode(const uint8_t in[kHeaderSize]) {
  Header h;
  h.command = get_le32(in + 0);
  h.arg0 = get_le32(in + 4);
  h.arg1 = get_le32(in + 8);
  h.length = get_le32(in + 12);
  h.check = get_le32(in + 16);
  h.magic = get_le32(in + 20);
  return h;
}

uint32_t payload_checksum(const uint8_t* data, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i < len; i++) sum += data[i];
  return sum;
}

std::string header_check(const Header& h, uint32_t max_payload) {
  if (h.magic != (h.command ^ 0xffffffffu)) {
    return fmt::format("corrupt message header: magic {:#010x} does not match command {}", h.magic,
                       command_name(h.command));
  }
  if (h.length > max_payload) {
    return fmt::format("message {} announces a {} byte payload, more than the {} byte limit",
                       command_name(h.command), h.length, max_payload);
  }
  return {};
}

Message message_make(uint32_t command, uint32_t arg0, uint32_t arg1, std::vector<uint8_t> payload,
                     bool checksum) {
  Message m;
  m.header.command = command;
  m.header.arg0 = arg0;
  m.header.arg1 = arg1;
  m.header.length = uint32_t(payload.size());
  m.header.check = checksum ? payload_checksum(payload.data(), payload.size()) : 0;
  m.header.magic = command ^ 0xffffffffu;
  m.payload = std::move(payload);
  return m;
}

Message message_make(uint32_t command, uint32_t arg0, uint32_t arg1, const std::string& payload,
                     bool checksum) {
  return message_make(command, arg0, arg1, std::vector<uint8_t>(payload.begin(), payload.end()), checksum);
}

std::string command_name(uint32_t command) {
  std::string s;
  for (int i = 0; i < 4; i++) {
    char c = char((command >> (8 * i)) & 0xff);
    if (c < 'A' || c > 'Z') return fmt::format("{:#010x}", command);
    s.push_back(c);
  }
  return s;
}

}  // namespace cloudlet::adb
