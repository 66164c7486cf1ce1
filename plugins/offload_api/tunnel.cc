#include "tunnel.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

namespace cloudlet::offload {

namespace {

const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == ' ') return 62;
  if (c == '/') return 63;
  return -1;
}

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{p[i]} << 16;
    if (rest == 2) v |= uint32_t{p[i + 1]} << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

bool base64_decode(std::string_view text, std::string* out) {
  out->clear();
  out->reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int have = 0;  // 6-bit groups in acc
  int pad = 0;   // '=' seen
  for (char c : text) {
    if (c == '\r' || c == '\n') continue;
    if (c == '=') {
      pad++;
      if (pad > 2 || have < 2) return false;
      continue;
    }
    if (pad > 0) return false;  // data after padding
    int v = b64_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    if (++have == 4) {
      out->push_back(static_cast<char>((acc >> 16) & 0xff));
      out->push_back(static_cast<char>((acc >> 8) & 0xff));
      out->push_back(static_cast<char>(acc & 0xff));
      acc = 0;
      have = 0;
    }
  }
  if (pad == 0) return have == 0;
  // A final quantum of 2 or 3 symbols, completed by exactly 4 - have '=' characters, unused bits zero.
  if (have + pad != 4) return false;
  if (have == 2) {
    if (acc & 0xf) return false;
    out->push_back(static_cast<char>((acc >> 4) & 0xff));
  } else {
    if (acc & 0x3) return false;
    out->push_back(static_cast<char>((acc >> 10) & 0xff));
    out->push_back(static_cast<char>((acc >> 2) & 0xff));
  }
  return true;
}

TunnelKey tunnel_key(std::string_view api_password) {
  TunnelKey key{};
  unsigned int len = 0;
  EVP_Digest(api_password.data(), api_password.size(), key.data(), &len, EVP_sha256(), nullptr);
  return key;
}

bool tunnel_random_iv(TunnelIv* iv) { return RAND_bytes(iv->data(), static_cast<int>(iv->size())) == 1; }

std::string tunnel_seal(std::string_view plaintext, const TunnelKey& key, const TunnelIv& iv) {
  std::string raw(kIvBytes + plaintext.size() + 16, '\0');
  std::copy(iv.begin(), iv.end(), raw.begin());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n1 = 0, n2 = 0;
  auto* out = reinterpret_cast<unsigned char*>(raw.data() + kIvBytes);
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, key.data(), iv.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out, &n1, reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out + n1, &n2) != 1) {
    return "";
  }
  raw.resize(kIvBytes + static_cast<size_t>(n1 + n2));
  return base64_encode(raw);
}

OpenError tunnel_open(std::string_view wire, const TunnelKey& key, std::string* plaintext, std::string* ciphertext) {
  plaintext->clear();
  if (ciphertext) ciphertext->clear();
  std::string raw;
  if (!base64_decode(wire, &raw)) return OpenError::base64;
  // The IV and at least one block; CBC works on whole blocks.
  if (raw.size() < kIvBytes + 16 || (raw.size() - kIvBytes) % 16 != 0) return OpenError::length;
  const auto* iv = reinterpret_cast<const unsigned char*>(raw.data());
  const auto* ct = iv + kIvBytes;
  int ct_len = static_cast<int>(raw.size() - kIvBytes);
  std::string out(static_cast<size_t>(ct_len), '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  Ctx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  // Padding is checked here rather than by OpenSSL so that the check is the same for every byte value.
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, key.data(), iv) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1 || EVP_DecryptUpdate(ctx.get(), o, &n, ct, ct_len) != 1 ||
      n != ct_len) {
    OPENSSL_cleanse(out.data(), out.size());
    return OpenError::length;
  }
  unsigned pad = o[ct_len - 1];
  unsigned bad = (pad == 0) | (pad > 16);
  for (unsigned i = 1; i <= 16; i++) {
    unsigned in_pad = i <= pad;  // bytes covered by the padding must all equal pad
    bad |= in_pad & (o[ct_len - static_cast<int>(i)] != pad);
  }
  if (bad) {
    OPENSSL_cleanse(out.data(), out.size());
    return OpenError::padding;
  }
  out.resize(static_cast<size_t>(ct_len) - pad);
  *plaintext = std::move(out);
  if (ciphertext) ciphertext->assign(raw, kIvBytes, std::string::npos);
  return OpenError::none;
}

uint64_t tunnel_key_id(const TunnelKey& key) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), md, &len, EVP_sha256(), nullptr);
  uint64_t id = 0;
  for (int i = 0; i < 8; i++) id = (id << 8) | md[i];
  return id;
}

const char* tunnel_error_text(OpenError e) {
  switch (e) {
    case OpenError::none:
      return "ok";
    case OpenError::base64:
      return "The command is not valid Base64";
    case OpenError::length:
      return "The command has the wrong length (IV and whole AES blocks expected)";
    case OpenError::padding:
      return "The command could not be decrypted (wrong key or corrupted data)";
  }
  return "The command could not be decrypted";
}

}  // namespace cloudlet::offload
