// The encrypted tunnel's cipher, byte for byte what client-lib's AESEncrypter and pycloud's encryption.py do:
// key = SHA-256(API password as ASCII), AES-256-CBC with PKCS#7 padding, wire = standard Base64 (with '='
// padding, no line breaks) of IV(16) || ciphertext. There is no MAC (the protocol has none), so callers must
// not reveal decrypted text in errors.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cloudlet::offload {

constexpr size_t kIvBytes = 16;
using TunnelKey = std::array<unsigned char, 32>;
using TunnelIv = std::array<unsigned char, kIvBytes>;

// Standard Base64 with padding, no line breaks.
std::string base64_encode(std::string_view bytes);

// Strict standard Base64: '=' padding required and only at the end, CR/LF ignored. A space counts as '+'
// (Base64 has no spaces, so one can only be a '+' that lost its URL encoding). False for anything else.
bool base64_decode(std::string_view text, std::string* out);

// SHA-256 of the password text.
TunnelKey tunnel_key(std::string_view api_password);

// Encrypts with the given IV (tests use fixed ones; replies use tunnel_random_iv()).
std::string tunnel_seal(std::string_view plaintext, const TunnelKey& key, const TunnelIv& iv);

// 16 fresh random bytes; false if the system has no randomness to give.
bool tunnel_random_iv(TunnelIv* iv);

enum class OpenError { none, base64, length, padding };

// Decrypts a wire-format command. On error nothing about the plaintext is returned. With ciphertext, the
// command's ciphertext blocks (after the IV) are returned too, for the replay check (replay.h).
OpenError tunnel_open(std::string_view wire, const TunnelKey& key, std::string* plaintext,
                      std::string* ciphertext = nullptr);

// A short fingerprint of a key (SHA-256 of it, first 8 bytes): tells when a device's key changed without
// keeping the key.
uint64_t tunnel_key_id(const TunnelKey& key);

// A human message for an OpenError (never mentions plaintext).
const char* tunnel_error_text(OpenError e);

}  // namespace cloudlet::offload
