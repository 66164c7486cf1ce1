// The host key pair: created once with the right modes, reloaded unchanged, public key in Android's format
// (checked against the real `adb pubkey`), never silently replaced, and n0inv always 32 bits (pycloud B-ADB).
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <optional>

#include "adb/host_key.h"
#include "adb/message.h"
#include "adb/reactor_uv.h"
#include "support/test_support.h"

using namespace cloudlet::adb;
using namespace cloudlet::adb::test;

namespace {

mode_t mode_of(const std::string& p) {
  struct stat st {};
  stat(p.c_str(), &st);
  return st.st_mode & 07777;
}

std::string b64_decode(const std::string& b64) {
  std::string out(b64.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(b64.data()),
                          int(b64.size()));
  size_t pad = (b64.size() && b64.back() == '=') + (b64.size() > 1 && b64[b64.size() - 2] == '=');
  out.resize(n < 0 ? 0 : size_t(n) - pad);
  return out;
}

TEST(AdbHostKey, CreatedOnceWithPrivateModes) {
  TempDir tmp;
  std::string dir = tmp / "credentials/adb";
  Error err;
  auto key = HostKey::load_or_create(dir, "cloudletd@lab", &err);
  ASSERT_TRUE(key) << err.text();
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(dir + "/adbkey"), 0600u);
  EXPECT_EQ(mode_of(dir + "/adbkey.pub"), 0644u);
  EXPECT_EQ(file_read(dir + "/adbkey").rfind("-----BEGIN PRIVATE KEY-----", 0), 0u);
  std::string pub = file_read(dir + "/adbkey.pub");
  EXPECT_EQ(pub, key->public_key());
  ASSERT_EQ(pub.size(), 700u + 1 + 13);
  EXPECT_EQ(pub.substr(700), " cloudletd@lab");  // no trailing newline, like adb writes it
  EXPECT_EQ(b64_decode(pub.substr(0, 700)).size(), kAndroidPubkeySize);

  struct stat before {};
  stat((dir + "/adbkey").c_str(), &before);
  auto again = HostKey::load_or_create(dir, "cloudletd@lab", &err);
  ASSERT_TRUE(again) << err.text();
  EXPECT_EQ(again->public_key(), key->public_key());
  struct stat after {};
  stat((dir + "/adbkey").c_str(), &after);
  EXPECT_EQ(before.st_ino, after.st_ino) << "the private key must not be rewritten";
}

TEST(AdbHostKey, RepairsThePublicFileAndLoosePermissions) {
  TempDir tmp;
  Error err;
  auto key = HostKey::load_or_create(tmp.path(), "a@b", &err);
  ASSERT_TRUE(key);
  unlink((tmp / "adbkey.pub").c_str());
  chmod((tmp / "adbkey").c_str(), 0644);
  auto again = HostKey::load_or_create(tmp.path(), "a@b", &err);
  ASSERT_TRUE(again) << err.text();
  EXPECT_EQ(file_read(tmp / "adbkey.pub"), key->public_key());
  EXPECT_EQ(mode_of(tmp / "adbkey"), 0600u);
  ASSERT_TRUE(file_write(tmp / "adbkey.pub", "garbage\n"));
  ASSERT_TRUE(HostKey::load_or_create(tmp.path(), "a@b", &err));
  EXPECT_EQ(file_read(tmp / "adbkey.pub"), key->public_key());
}

TEST(AdbHostKey, BrokenOrWrongKeysAreErrorsNotReplacements) {
  TempDir tmp;
  Error err;
  ASSERT_TRUE(file_write(tmp / "adbkey", "not a key\n", 0600));
  EXPECT_FALSE(HostKey::load_or_create(tmp.path(), "a@b", &err));
  EXPECT_EQ(err.code, Errc::local_io);
  EXPECT_NE(err.message.find("not a PEM private key"), std::string::npos) << err.message;
  EXPECT_EQ(file_read(tmp / "adbkey"), "not a key\n");

  EVP_PKEY* small = EVP_RSA_gen(1024);
  ASSERT_TRUE(small);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_TRUE(PEM_write_bio_PrivateKey(bio, small, nullptr, nullptr, 0, nullptr, nullptr));
  char* pem = nullptr;
  long pem_len = BIO_get_mem_data(bio, &pem);
  ASSERT_TRUE(file_write(tmp / "adbkey", std::string(pem, size_t(pem_len)), 0600));
  BIO_free(bio);
  EVP_PKEY_free(small);
  EXPECT_FALSE(HostKey::load_or_create(tmp.path(), "a@b", &err));
  EXPECT_NE(err.message.find("RSA-1024"), std::string::npos) << err.message;

  EXPECT_FALSE(HostKey::load_or_create(tmp.path(), "bad\ncomment", &err));
  EXPECT_EQ(err.code, Errc::invalid);
}

// pycloud left n0inv unreduced about half of the time (8 bytes instead of 4). Every key must encode to the
// fixed 524-byte structure with n0inv * n0 == -1 mod 2^32; this also covers keys whose plain inverse is
// "negative" in the extended Euclid sense.
TEST(AdbHostKey, EveryKeyEncodesToTheFixedStructure) {
  // Until both halves were seen (and at least 6 keys): the chance of 32 keys all on one side is 2^-31.
  int high_bit_inverses = 0, keys = 0;
  for (int i = 0; i < 32 && (keys < 6 || high_bit_inverses == 0 || high_bit_inverses == keys); i++, keys++) {
    EVP_PKEY* k = EVP_RSA_gen(2048);
    ASSERT_TRUE(k);
    std::string b64, err;
    ASSERT_TRUE(pubkey_encode(k, &b64, &err)) << err;
    ASSERT_EQ(b64.size(), 700u);
    std::string blob = b64_decode(b64);
    ASSERT_EQ(blob.size(), kAndroidPubkeySize);
    const uint8_t* p = reinterpret_cast<const uint8_t*>(blob.data());
    EXPECT_EQ(get_le32(p), 64u);
    uint32_t n0inv = get_le32(p + 4), n0 = get_le32(p + 8);
    EXPECT_EQ(uint32_t(n0 * n0inv), 0xffffffffu);
    if (n0inv & 0x80000000u) high_bit_inverses++;
    EXPECT_EQ(get_le32(p + 520), 65537u);
    EVP_PKEY* back = nullptr;
    ASSERT_TRUE(pubkey_decode(b64 + " x@y", &back, &err)) << err;
    EXPECT_EQ(EVP_PKEY_eq(k, back), 1);
    EVP_PKEY_free(back);
    EVP_PKEY_free(k);
  }
  EXPECT_GT(high_bit_inverses, 0) << "some key must have n0inv >= 2^31";
  EXPECT_LT(high_bit_inverses, keys) << "some key must have n0inv < 2^31";
}

TEST(AdbHostKey, DecodeRejectsMalformedKeys) {
  TempDir tmp;
  Error err;
  auto key = HostKey::load_or_create(tmp.path(), "a@b", &err);
  ASSERT_TRUE(key);
  std::string b64 = key->public_key().substr(0, 700);
  std::string blob = b64_decode(b64);
  std::string msg;
  EVP_PKEY* out = nullptr;

  // pycloud's 528-byte variant (n0inv widened to 8 bytes).
  std::string wide = blob.substr(0, 4) + blob.substr(4, 4) + std::string(4, '\xff') + blob.substr(8);
  std::string wide_b64(4 * ((wide.size() + 2) / 3) + 1, '\0');
  wide_b64.resize(size_t(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(wide_b64.data()),
                                         reinterpret_cast<const unsigned char*>(wide.data()), int(wide.size()))));
  EXPECT_FALSE(pubkey_decode(wide_b64 + " a@b", &out, &msg));

  std::string bad = blob;
  bad[4] ^= 1;  // n0inv off by one bit
  std::string bad_b64(701, '\0');
  bad_b64.resize(size_t(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(bad_b64.data()),
                                        reinterpret_cast<const unsigned char*>(bad.data()), int(bad.size()))));
  EXPECT_FALSE(pubkey_decode(bad_b64, &out, &msg));
  EXPECT_NE(msg.find("n0inv"), std::string::npos) << msg;

  bad = blob;
  bad[8 + 256 + 5] ^= 1;  // rr
  bad_b64.assign(701, '\0');
  bad_b64.resize(size_t(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(bad_b64.data()),
                                        reinterpret_cast<const unsigned char*>(bad.data()), int(bad.size()))));
  EXPECT_FALSE(pubkey_decode(bad_b64, &out, &msg));
  EXPECT_NE(msg.find("rr"), std::string::npos) << msg;

  EXPECT_FALSE(pubkey_decode("", &out, &msg));
  EXPECT_FALSE(pubkey_decode(std::string(700, '!'), &out, &msg));
  EXPECT_TRUE(pubkey_decode(key->public_key() + std::string(1, '\0'), &out, &msg)) << msg;
  EVP_PKEY_free(out);
}

TEST(AdbHostKey, SignaturesVerifyLikeADeviceChecksThem) {
  TempDir tmp;
  Error err;
  auto key = HostKey::load_or_create(tmp.path(), "a@b", &err);
  ASSERT_TRUE(key);
  uint8_t token[kAuthTokenSize];
  for (size_t i = 0; i < sizeof token; i++) token[i] = uint8_t(i * 7 + 1);
  std::vector<uint8_t> sig;
  ASSERT_TRUE(key->sign(token, sizeof token, &sig));
  EXPECT_EQ(sig.size(), 256u);
  EVP_PKEY* pub = nullptr;
  std::string msg;
  ASSERT_TRUE(pubkey_decode(key->public_key(), &pub, &msg)) << msg;
  EXPECT_TRUE(signature_verify(pub, token, sizeof token, sig.data(), sig.size()));
  token[0] ^= 1;
  EXPECT_FALSE(signature_verify(pub, token, sizeof token, sig.data(), sig.size()));
  EVP_PKEY_free(pub);
  EXPECT_FALSE(key->sign(token, 19, &sig)) << "tokens are SHA-1 sized";
}

// The real adb (Debian's adb 29) derives the same adbkey.pub from our private key.
TEST(AdbHostKey, RealAdbPubkeyMatchesOurPublicKey) {
  ASSERT_EQ(access("/usr/bin/adb", X_OK), 0) << "the adb package is a test dependency (debian/control)";
  TempDir tmp;
  Error err;
  // adb builds its comment as " <LOGNAME>@<HOSTNAME>".
  auto key = HostKey::load_or_create(tmp / "keys", "cloudletd@cloudlet-test", &err);
  ASSERT_TRUE(key) << err.text();
  RunResult r = run({"adb", "pubkey", key->private_path()},
                    {{"HOME", tmp.path()}, {"LOGNAME", "cloudletd"}, {"HOSTNAME", "cloudlet-test"}, {"TMPDIR", tmp.path()}});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, file_read(key->public_path()) + "\n");
}

TEST(AdbHostKey, AsyncLoadRunsOffTheLoop) {
  TempDir tmp;
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    UvReactor reactor(&loop);
    std::optional<std::pair<Error, std::shared_ptr<const HostKey>>> got;
    host_key_load(reactor, tmp / "k", "x@y", [&](Error e, std::shared_ptr<const HostKey> k) { got.emplace(e, k); });
    ASSERT_TRUE(run_until(&loop, [&] { return got.has_value(); }, 20000));
    ASSERT_FALSE(got->first) << got->first.text();
    EXPECT_EQ(got->second->public_key(), file_read(tmp / "k/adbkey.pub"));
  }
  loop_drain(&loop);
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
