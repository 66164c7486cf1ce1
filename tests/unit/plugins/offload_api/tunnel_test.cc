// The tunnel's cipher against the known-answer vectors of mobile-clients.md 1.3 (client-lib's AESEncrypter)
// and pycloud-security.md 1 (pycloud's encryption.py), both ways, plus the strictness of Base64 and padding.
#include "tunnel.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <string>

using namespace cloudlet::offload;

namespace {

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; i++) {
    out.push_back(d[p[i] >> 4]);
    out.push_back(d[p[i] & 15]);
  }
  return out;
}

std::string sha256_hex(const std::string& s) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr);
  return hex(md, len);
}

TunnelIv counting_iv() {
  TunnelIv iv;
  for (size_t i = 0; i < iv.size(); i++) iv[i] = static_cast<unsigned char>(i);
  return iv;
}

// AES-256-CBC without padding, so a test can build ciphertexts whose padding is wrong on purpose.
std::string raw_cbc(const std::string& blocks, const TunnelKey& key, const TunnelIv& iv) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  std::string out(blocks.size(), '\0');
  int n = 0;
  EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), nullptr, key.data(), iv.data());
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  EVP_EncryptUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &n,
                    reinterpret_cast<const unsigned char*>(blocks.data()), static_cast<int>(blocks.size()));
  EVP_CIPHER_CTX_free(ctx);
  return base64_encode(std::string(reinterpret_cast<const char*>(iv.data()), iv.size()) + out);
}

const char* kClientPassword = "c93e781ffd96d3794d5e02c71a23dc824cad730b1e09d7f8c87dadc141f14632";
const char* kClientPlain = "/servicevm/start&join=true&serviceId=edu.cmu.sei.ams.speech_rec_service";
const char* kClientWire =
    "AAECAwQFBgcICQoLDA0OD9PpLIvFAm19+jOVwFyBVFMIAOmpZvYVbPaq67RPmeQR2EKQBe2JZ9vvvnp0DkUF4m1ROP6bqPJYIDbytvyRmBYVmAy"
    "ZxoaKt7ogFQ3Xlc3S";

}  // namespace

TEST(Tunnel, ClientLibVectorKeyDerivation) {
  // device.key -> password (hex SHA-256) -> AES key (SHA-256 of the 64 hex characters).
  EXPECT_EQ(sha256_hex("test-device-private-key\n"), kClientPassword);
  TunnelKey key = tunnel_key(kClientPassword);
  EXPECT_EQ(hex(key.data(), key.size()), "c6c655e0aa76cd122cfe1a69f6feca370ca0aadee64b61e9939046886e728b39");
}

TEST(Tunnel, ClientLibVectorEncrypts) {
  EXPECT_EQ(tunnel_seal(kClientPlain, tunnel_key(kClientPassword), counting_iv()), kClientWire);
}

TEST(Tunnel, ClientLibVectorDecrypts) {
  std::string plain;
  ASSERT_EQ(tunnel_open(kClientWire, tunnel_key(kClientPassword), &plain), OpenError::none);
  EXPECT_EQ(plain, kClientPlain);
}

TEST(Tunnel, PycloudVectorBothWays) {
  const char* password = "f1f74d619544ee4def06ad98799a33e5f023ae83b80cd651eadd39670a2ae583";
  const char* plain = "/services/get&serviceId=edu.cmu.sei.ams.speech";
  const char* wire = "AAECAwQFBgcICQoLDA0OD3B+safBgyTrH7ZGXm4MVpYt1+nJQKdRRxD3CTFYqK7Opg66eoUL4DT5rU04VkAy3A==";
  TunnelKey key = tunnel_key(password);
  EXPECT_EQ(hex(key.data(), key.size()), "c85bbba3f7dad68a086c8ddea392afab59b3caa92d4e2905d7b9d6737c11a7c6");
  EXPECT_EQ(tunnel_seal(plain, key, counting_iv()), wire);
  std::string out;
  ASSERT_EQ(tunnel_open(wire, key, &out), OpenError::none);
  EXPECT_EQ(out, plain);
}

TEST(Tunnel, RoundTripsEveryPaddingLengthAndFreshIvs) {
  TunnelKey key = tunnel_key("pw");
  for (size_t len = 0; len <= 48; len++) {
    std::string plain(len, 'x');
    for (size_t i = 0; i < len; i++) plain[i] = static_cast<char>(i * 7);
    TunnelIv iv;
    ASSERT_TRUE(tunnel_random_iv(&iv));
    std::string wire = tunnel_seal(plain, key, iv);
    std::string raw;
    ASSERT_TRUE(base64_decode(wire, &raw));
    EXPECT_EQ(raw.size(), 16 + (len / 16 + 1) * 16) << len;  // PKCS#7 always adds 1..16 bytes
    std::string out;
    ASSERT_EQ(tunnel_open(wire, key, &out), OpenError::none) << len;
    EXPECT_EQ(out, plain);
  }
  TunnelIv a, b;
  ASSERT_TRUE(tunnel_random_iv(&a));
  ASSERT_TRUE(tunnel_random_iv(&b));
  EXPECT_NE(a, b);
}

TEST(Tunnel, RefusesBadLengthsAndPadding) {
  TunnelKey key = tunnel_key(kClientPassword);
  std::string out;
  std::string iv16(16, 'i');
  EXPECT_EQ(tunnel_open(base64_encode(iv16), key, &out), OpenError::length);                         // IV only
  EXPECT_EQ(tunnel_open(base64_encode(iv16 + std::string(15, 'c')), key, &out), OpenError::length);  // partial block
  EXPECT_EQ(tunnel_open(base64_encode(iv16 + std::string(33, 'c')), key, &out), OpenError::length);
  EXPECT_EQ(tunnel_open("", key, &out), OpenError::length);
  // Last byte 0, 17, and a pad byte that disagrees with the others.
  std::string block(16, 'a');
  block[15] = 0;
  EXPECT_EQ(tunnel_open(raw_cbc(block, key, counting_iv()), key, &out), OpenError::padding);
  block[15] = 17;
  EXPECT_EQ(tunnel_open(raw_cbc(block, key, counting_iv()), key, &out), OpenError::padding);
  block[15] = 3;
  block[14] = 3;
  block[13] = 2;
  EXPECT_EQ(tunnel_open(raw_cbc(block, key, counting_iv()), key, &out), OpenError::padding);
  EXPECT_TRUE(out.empty());
  block[13] = 3;
  ASSERT_EQ(tunnel_open(raw_cbc(block, key, counting_iv()), key, &out), OpenError::none);
  EXPECT_EQ(out, std::string(13, 'a'));
  // A full block of padding (16 x 0x10) is valid and leaves nothing.
  EXPECT_EQ(tunnel_open(raw_cbc(std::string(16, '\x10'), key, counting_iv()), key, &out), OpenError::none);
  EXPECT_EQ(out, "");
  // The wrong key almost always breaks the padding.
  std::string wire = tunnel_seal(kClientPlain, tunnel_key("another password"), counting_iv());
  int refused = 0;
  for (int i = 0; i < 20; i++) {
    TunnelIv iv;
    ASSERT_TRUE(tunnel_random_iv(&iv));
    refused += tunnel_open(tunnel_seal(kClientPlain, tunnel_key("other"), iv), key, &out) == OpenError::padding;
  }
  EXPECT_GE(refused, 15);
}

TEST(Base64, EncodesLikeRfc4648) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xfb\xff", 2)), "+/8=");
}

TEST(Base64, DecodesStrictly) {
  std::string out;
  EXPECT_TRUE(base64_decode("Zm9vYmFy", &out));
  EXPECT_EQ(out, "foobar");
  EXPECT_TRUE(base64_decode("Zg==", &out));
  EXPECT_EQ(out, "f");
  EXPECT_TRUE(base64_decode("Zm8=", &out));
  EXPECT_EQ(out, "fo");
  EXPECT_TRUE(base64_decode("Zm9v\r\nYmFy", &out));  // line breaks are ignored
  EXPECT_EQ(out, "foobar");
  EXPECT_TRUE(base64_decode(" /8=", &out));  // a space is a '+' that lost its URL encoding
  EXPECT_EQ(out, std::string("\xfb\xff", 2));
  EXPECT_FALSE(base64_decode("Zg", &out));     // padding missing
  EXPECT_FALSE(base64_decode("Zg=", &out));    // padding short
  EXPECT_FALSE(base64_decode("Zg===", &out));  // too much padding
  EXPECT_FALSE(base64_decode("Z===", &out));
  EXPECT_FALSE(base64_decode("Zg==Zg==", &out));  // data after padding
  EXPECT_FALSE(base64_decode("Zh==", &out));      // non-zero unused bits
  EXPECT_FALSE(base64_decode("Zm9=", &out));      // non-zero unused bits in a 3-symbol quantum
  EXPECT_FALSE(base64_decode("Zm9v!mFy", &out));  // not in the alphabet
  EXPECT_FALSE(base64_decode("Zm9v%2B", &out));
  EXPECT_FALSE(base64_decode("Zm9-", &out));  // URL-safe alphabet is not what clients send
  EXPECT_FALSE(base64_decode("Zm9vY", &out));
}
