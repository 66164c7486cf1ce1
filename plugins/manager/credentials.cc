#include "credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cctype>
#include <charconv>
#include <vector>

namespace cloudlet::manager {
namespace {

constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::string_view kScheme = "pbkdf2-sha256";
constexpr size_t kSaltBytes = 16;
constexpr size_t kHashBytes = 32;

std::string b64url(const unsigned char* p, size_t n) {
  std::string out;
  out.reserve((n * 4 + 2) / 3);
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = static_cast<uint32_t>(p[i]) << 16;
    if (i + 1 < n) v |= static_cast<uint32_t>(p[i + 1]) << 8;
    if (i + 2 < n) v |= p[i + 2];
    out += kB64Url[(v >> 18) & 63];
    out += kB64Url[(v >> 12) & 63];
    if (i + 1 < n) out += kB64Url[(v >> 6) & 63];
    if (i + 2 < n) out += kB64Url[v & 63];
  }
  return out;
}

bool b64url_decode(std::string_view s, std::vector<unsigned char>* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const char* at = std::char_traits<char>::find(kB64Url, 64, c);
    if (!at) return false;
    acc = (acc << 6) | static_cast<uint32_t>(at - kB64Url);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<unsigned char>((acc >> bits) & 0xff));
    }
  }
  return bits < 6;  // a lone trailing character cannot come from whole bytes
}

bool derive(std::string_view password, const unsigned char* salt, size_t salt_len, uint32_t iterations,
            unsigned char* out, size_t out_len) {
  return PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt, static_cast<int>(salt_len),
                           static_cast<int>(iterations), EVP_sha256(), static_cast<int>(out_len), out) == 1;
}

}  // namespace

std::string password_hash(std::string_view password, uint32_t iterations) {
  if (password.size() > kPasswordMaxLength) return {};
  unsigned char salt[kSaltBytes], hash[kHashBytes];
  if (RAND_bytes(salt, sizeof salt) != 1) return {};
  if (!derive(password, salt, sizeof salt, iterations, hash, sizeof hash)) return {};
  return std::string(kScheme) + "$" + std::to_string(iterations) + "$" + b64url(salt, sizeof salt) + "$" +
         b64url(hash, sizeof hash);
}

bool password_verify(std::string_view stored, std::string_view password) {
  if (password.size() > kPasswordMaxLength) return false;
  std::string_view parts[4];
  for (int i = 0; i < 4; i++) {
    size_t dollar = stored.find('$');
    if (i < 3 && dollar == std::string_view::npos) return false;
    parts[i] = i < 3 ? stored.substr(0, dollar) : stored;
    if (i < 3) stored.remove_prefix(dollar + 1);
  }
  if (parts[0] != kScheme || parts[3].find('$') != std::string_view::npos) return false;
  uint32_t iterations = 0;
  auto [end, ec] = std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), iterations);
  if (ec != std::errc() || end != parts[1].data() + parts[1].size()) return false;
  if (iterations < 1000 || iterations > 10000000) return false;
  std::vector<unsigned char> salt, want;
  if (!b64url_decode(parts[2], &salt) || !b64url_decode(parts[3], &want)) return false;
  if (salt.empty() || want.size() != kHashBytes) return false;
  unsigned char got[kHashBytes];
  if (!derive(password, salt.data(), salt.size(), iterations, got, sizeof got)) return false;
  return CRYPTO_memcmp(got, want.data(), kHashBytes) == 0;
}

std::string random_text(size_t n) {
  std::vector<unsigned char> bytes(n);
  if (n == 0 || RAND_bytes(bytes.data(), static_cast<int>(n)) != 1) return {};
  return b64url(bytes.data(), n);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; i++) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

bool equal_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) pair.remove_prefix(1);
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = pair.substr(0, eq);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
    if (key != name) continue;
    std::string_view value = pair.substr(eq + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    return value;
  }
  return std::nullopt;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || !std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace cloudlet::manager
