// core/http/self_signed.cc: a listener's own certificate, made once, kept, renewed near its end; and which
// bind addresses count as loopback.
#include "http/self_signed.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

using cloudlet::http::host_is_loopback;
using cloudlet::http::self_signed_ensure;
using cloudlet::http::SelfSigned;

namespace {

std::string temp_dir() {
  char dir[] = "/tmp/cl-selfsigned-XXXXXX";
  return mkdtemp(dir) ? dir : "";
}

// What `openssl x509 -text` says about a certificate (the independent reader).
std::string openssl_text(const std::string& cert) {
  std::string cmd = "openssl x509 -noout -text -in " + cert + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (p) pclose(p);
  return out;
}

}  // namespace

TEST(SelfSigned, MadeOnceWithTheNamesAndKeptAfterwards) {
  std::string dir = temp_dir();
  ASSERT_FALSE(dir.empty());
  SelfSigned first;
  ASSERT_TRUE(self_signed_ensure(dir + "/m.crt", dir + "/m.key", "cloudlet-1", {"cloudlet-1.local", "localhost"},
                                 {"127.0.0.1", "::1"}, &first)
                  .ok());
  EXPECT_TRUE(first.made);
  EXPECT_EQ(first.fingerprint.size(), 64u);
  struct stat st;
  ASSERT_EQ(stat((dir + "/m.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string text = openssl_text(dir + "/m.crt");
  for (const char* want : {"CN = cloudlet-1", "DNS:cloudlet-1.local", "DNS:localhost", "IP Address:127.0.0.1",
                           "IP Address:0:0:0:0:0:0:0:1", "CA:FALSE", "TLS Web Server Authentication",
                           "prime256v1", "ecdsa-with-SHA256"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << " in\n" << text;
  }
  SelfSigned second;
  ASSERT_TRUE(self_signed_ensure(dir + "/m.crt", dir + "/m.key", "cloudlet-1", {}, {}, &second).ok());
  EXPECT_FALSE(second.made);
  EXPECT_EQ(second.fingerprint, first.fingerprint);
}

TEST(SelfSigned, ACertificateNearItsEndOrWithoutItsKeyIsMadeAgain) {
  std::string dir = temp_dir();
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 10 -subj /CN=old "
                    "-keyout " + dir + "/m.key -out " + dir + "/m.crt 2>/dev/null";
  ASSERT_EQ(system(cmd.c_str()), 0);
  SelfSigned r;
  ASSERT_TRUE(self_signed_ensure(dir + "/m.crt", dir + "/m.key", "new", {}, {}, &r).ok());
  EXPECT_TRUE(r.made) << "10 days left is within the 30-day renewal window";
  EXPECT_NE(openssl_text(dir + "/m.crt").find("CN = new"), std::string::npos);
  ASSERT_EQ(unlink((dir + "/m.key").c_str()), 0);
  SelfSigned again;
  ASSERT_TRUE(self_signed_ensure(dir + "/m.crt", dir + "/m.key", "new", {}, {}, &again).ok());
  EXPECT_TRUE(again.made);
  EXPECT_NE(again.fingerprint, r.fingerprint);
}

TEST(SelfSigned, AnUnwritableDirectoryIsAClearError) {
  SelfSigned r;
  auto s = self_signed_ensure("/nonexistent/dir/m.crt", "/nonexistent/dir/m.key", "x", {}, {}, &r);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/dir/m.key"), std::string::npos) << s.message();
}

TEST(SelfSigned, LoopbackHosts) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "::1", "localhost"}) EXPECT_TRUE(host_is_loopback(h)) << h;
  for (const char* h : {"0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.org", "", "128.0.0.1"}) {
    EXPECT_FALSE(host_is_loopback(h)) << h;
  }
}
