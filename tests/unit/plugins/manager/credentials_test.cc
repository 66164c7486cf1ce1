// plugins/manager/credentials.cc: password hashes, secrets, the Cookie header, names.
#include "credentials.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace cloudlet::manager;

TEST(Credentials, AHashVerifiesItsPasswordOnly) {
  std::string h = password_hash("correct horse", 1000);
  ASSERT_EQ(h.rfind("pbkdf2-sha256$1000$", 0), 0u) << h;
  EXPECT_TRUE(password_verify(h, "correct horse"));
  EXPECT_FALSE(password_verify(h, "correct hors"));
  EXPECT_FALSE(password_verify(h, ""));
  // A fresh salt each time: the same password never hashes the same.
  EXPECT_NE(password_hash("correct horse", 1000), h);
}

TEST(Credentials, TheDefaultCostIsOwasps) {
  std::string h = password_hash("x");
  EXPECT_EQ(h.rfind("pbkdf2-sha256$600000$", 0), 0u) << h;
  EXPECT_TRUE(password_verify(h, "x"));
}

TEST(Credentials, KnownAnswer) {
  // PBKDF2-HMAC-SHA256("passwd", "salt", 1000 rounds, 32 bytes), computed independently (Python's
  // hashlib.pbkdf2_hmac) and written in the stored form: salt and hash in unpadded base64url.
  std::string stored = "pbkdf2-sha256$1000$c2FsdA$-pwVjmeL_pQYmwsacHoJIWcv3J8R-peIBZad8xLCyO8";
  EXPECT_TRUE(password_verify(stored, "passwd"));
  EXPECT_FALSE(password_verify(stored, "passwe"));
  EXPECT_FALSE(password_verify("pbkdf2-sha256$1001$c2FsdA$-pwVjmeL_pQYmwsacHoJIWcv3J8R-peIBZad8xLCyO8", "passwd"));
}

TEST(Credentials, MalformedStoredHashesNeverMatch) {
  std::string good = password_hash("pw", 1000);
  for (std::string bad : {std::string(""), std::string("pbkdf2-sha256$1000$$"), std::string("sha256$1000$c2FsdA$AAAA"),
                          std::string("pbkdf2-sha256$999$c2FsdA$") + good.substr(good.rfind('$') + 1),
                          std::string("pbkdf2-sha256$99999999999$c2FsdA$") + good.substr(good.rfind('$') + 1),
                          std::string("pbkdf2-sha256$1000$c2F*dA$") + good.substr(good.rfind('$') + 1),
                          good + "$extra", good.substr(0, good.size() - 2), std::string("pbkdf2-sha256$1e3$c2FsdA$x")}) {
    EXPECT_FALSE(password_verify(bad, "pw")) << bad;
  }
  // Passwords are bounded before any hashing.
  EXPECT_EQ(password_hash(std::string(kPasswordMaxLength + 1, 'a'), 1000), "");
  EXPECT_FALSE(password_verify(good, std::string(kPasswordMaxLength + 1, 'a')));
}

TEST(Credentials, RandomTextIsUrlSafeAndDifferent) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; i++) {
    std::string t = random_text(32);
    EXPECT_EQ(t.size(), 43u);
    EXPECT_EQ(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
              std::string::npos);
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Credentials, DigestsAndComparisons) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(equal_secret("abc", "abc"));
  EXPECT_FALSE(equal_secret("abc", "abd"));
  EXPECT_FALSE(equal_secret("abc", "abcd"));
}

TEST(Credentials, CookieValues) {
  EXPECT_EQ(cookie_value("a=1; cloudletd_session=xyz; b=2", "cloudletd_session"), "xyz");
  EXPECT_EQ(cookie_value("cloudletd_session=\"q\"", "cloudletd_session"), "q");
  EXPECT_EQ(cookie_value("xcloudletd_session=1", "cloudletd_session"), std::nullopt);
  EXPECT_EQ(cookie_value("a=1;b", "b"), std::nullopt);
  EXPECT_EQ(cookie_value("", "a"), std::nullopt);
  EXPECT_EQ(cookie_value("  a = 7 ", "a"), "7");
}

TEST(Credentials, Names) {
  for (const char* ok : {"admin", "a", "ops-1", "x.y_z", "9lives"}) EXPECT_TRUE(valid_name(ok)) << ok;
  for (const char* bad : {"", "-a", ".a", "a b", "a/b", "é", "a;b"}) EXPECT_FALSE(valid_name(bad)) << bad;
  EXPECT_TRUE(valid_name(std::string(64, 'a')));
  EXPECT_FALSE(valid_name(std::string(65, 'a')));
}
