// Digests the core needs in more than one place (device passwords, client certificate fingerprints), so
// there is one implementation of each.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cloudlet {

// Lower-case hex of n bytes.
std::string hex_encode(const unsigned char* p, size_t n);

// Lower-case hex of the SHA-256 of data (64 characters).
std::string sha256_hex(std::string_view data);

}  // namespace cloudlet
