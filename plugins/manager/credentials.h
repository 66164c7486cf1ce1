// The manager's secrets as pure functions: password hashes (PBKDF2-HMAC-SHA256), random ids and tokens, the
// digests the store keeps instead of the secrets themselves, and the Cookie header. No state, no host calls:
// hashing is slow on purpose and runs on a worker (login.cc); everything else is safe on the loop.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cloudlet::manager {

// OWASP's 2023 figure for PBKDF2-HMAC-SHA256. About 0.3 s per hash on one core of the test machines.
constexpr uint32_t kPasswordIterations = 600000;
// Passwords are bounded: a megabyte "password" would be hashed 600,000 times.
constexpr size_t kPasswordMinLength = 8;
constexpr size_t kPasswordMaxLength = 1024;

// "pbkdf2-sha256$<iterations>$<salt, base64url>$<hash, base64url>" with a fresh 16-byte salt; "" if OpenSSL fails.
std::string password_hash(std::string_view password, uint32_t iterations = kPasswordIterations);
// Whether password matches a password_hash() string (constant-time comparison). A malformed stored value, or
// iterations outside 1,000..10,000,000, never matches.
bool password_verify(std::string_view stored, std::string_view password);

// n random bytes from OpenSSL's CSPRNG as unpadded base64url; "" if the generator fails.
std::string random_text(size_t n);
// Lower-case hex SHA-256: what the store keeps of a session id or an API token.
std::string sha256_hex(std::string_view data);
// Constant-time equality of two strings (different lengths are unequal).
bool equal_secret(std::string_view a, std::string_view b);

// The value of one cookie in a Cookie header ("a=1; b=2"), or nullopt.
std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name);

// A user name: 1-64 of [A-Za-z0-9._-], starting with a letter or digit. A token name: the same rule.
bool valid_name(std::string_view name);

}  // namespace cloudlet::manager
