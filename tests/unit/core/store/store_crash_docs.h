// The documents the kill -9 test writes, so the child and the checker agree on what is intact.
//
// Transaction n writes docs/<n> (a JSON document whose content depends on n: mostly 16..271 bytes, every 16th
// up to 6 KiB so LMDB also writes overflow pages), sets meta/last to n, puts ring/<n % 64> = n and deletes ring/<(n + 32) % 64>. After
// transactions 0..L the ring therefore holds exactly the 32 keys of L-31..L (those >= 0).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace cloudlet::test {

inline std::string crash_doc_key(uint64_t n) {
  char buf[24];
  snprintf(buf, sizeof buf, "%012llu", static_cast<unsigned long long>(n));
  return buf;
}

inline std::string crash_ring_key(uint64_t slot) { return "r" + std::to_string(slot); }

inline std::string crash_doc_value(uint64_t n) {
  uint64_t x = n * 0x9E3779B97F4A7C15ull + 1;
  size_t len = 16 + (x >> 40) % (n % 16 == 0 ? 6000 : 256);
  std::string v = "{\"n\":" + std::to_string(n) + ",\"pad\":\"";
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v.push_back(static_cast<char>('a' + x % 26));
  }
  v += "\"}";
  return v;
}

}  // namespace cloudlet::test
