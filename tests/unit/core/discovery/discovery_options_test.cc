#include "discovery/discovery_options.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <string>

using cloudlet::DiscoveryOptions;
using cloudlet::discovery_default_name;
using cloudlet::discovery_name_valid;
using cloudlet::discovery_options_check;
using cloudlet::discovery_txt;

// Phones read one arbitrary TXT entry: by default there must be exactly one, and it must be this one.
TEST(DiscoveryOptions, TxtIsExactlyTheEncryptionStringByDefault) {
  DiscoveryOptions o;
  EXPECT_TRUE(o.extra_txt.empty());
  EXPECT_EQ(discovery_txt(false, o.extra_txt), std::vector<std::string>{"encryption=disabled"});
  EXPECT_EQ(discovery_txt(true, o.extra_txt), std::vector<std::string>{"encryption=enabled"});
  EXPECT_EQ(discovery_txt(true, {"version=2", "a=b"}),
            (std::vector<std::string>{"encryption=enabled", "version=2", "a=b"}));
}

TEST(DiscoveryOptions, DefaultsAreValid) {
  DiscoveryOptions o;
  EXPECT_TRUE(o.enabled);
  EXPECT_TRUE(o.publish);
  EXPECT_TRUE(o.browse);
  EXPECT_TRUE(discovery_options_check(o).ok());
}

TEST(DiscoveryOptions, DefaultNameIsTheHostName) {
  char host[HOST_NAME_MAX + 1] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  std::string name = discovery_default_name();
  EXPECT_TRUE(discovery_name_valid(name));
  if (discovery_name_valid(host)) {
    EXPECT_EQ(name, host);
  }
  EXPECT_EQ(name.find(' '), std::string::npos);  // host names have no spaces: phones use the last word
}

TEST(DiscoveryOptions, NamesMustBeOneDnsLabelOfUtf8) {
  EXPECT_TRUE(discovery_name_valid("lab"));
  EXPECT_TRUE(discovery_name_valid("Cloudlet Lab #2"));
  EXPECT_TRUE(discovery_name_valid("caf\xc3\xa9"));
  EXPECT_TRUE(discovery_name_valid(std::string(63, 'a')));
  EXPECT_FALSE(discovery_name_valid(""));
  EXPECT_FALSE(discovery_name_valid(std::string(64, 'a')));
  EXPECT_FALSE(discovery_name_valid("bad\nname"));
  EXPECT_FALSE(discovery_name_valid("bad\x7f"));
  EXPECT_FALSE(discovery_name_valid("\xc3"));          // truncated sequence
  EXPECT_FALSE(discovery_name_valid("\xc0\xaf"));      // overlong
  EXPECT_FALSE(discovery_name_valid("\xed\xa0\x80"));  // surrogate
  DiscoveryOptions o;
  o.name = std::string(64, 'x');
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
}

TEST(DiscoveryOptions, NetworkTextIsCleaned) {
  using cloudlet::discovery_clean_text;
  EXPECT_EQ(discovery_clean_text("lab #2"), "lab #2");
  EXPECT_EQ(discovery_clean_text("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(discovery_clean_text("a\nb\x1b[31m"), "a?b?[31m");
  EXPECT_EQ(discovery_clean_text("x\xc3"), "x?");
  EXPECT_EQ(discovery_clean_text("\xff\xfe"), "??");
  EXPECT_EQ(discovery_clean_text(std::string("a\0b", 3)), "a?b");
}

TEST(DiscoveryOptions, ExtraTxtIsChecked) {
  DiscoveryOptions o;
  o.extra_txt = {"version=2"};
  EXPECT_TRUE(discovery_options_check(o).ok());
  o.extra_txt = {"encryption=enabled"};  // only the API mode sets it
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt = {"Encryption=x"};
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt = {"=value"};
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt = {"novalue"};
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt = {"a=1", "a=2"};
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt = {"k\x01y=1"};
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt = {"k=" + std::string(253, 'v')};  // 255 bytes: the largest TXT string
  EXPECT_TRUE(discovery_options_check(o).ok());
  o.extra_txt = {"k=" + std::string(254, 'v')};
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt.clear();
  for (int i = 0; i < 17; i++) o.extra_txt.push_back("k" + std::to_string(i) + "=v");
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.extra_txt.pop_back();
  EXPECT_TRUE(discovery_options_check(o).ok());
}

TEST(DiscoveryOptions, PortAndRetryAreChecked) {
  DiscoveryOptions o;
  o.port = 0;
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.port = 9999;
  o.retry_min_ms = 0;
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.retry_min_ms = 2000;
  o.retry_max_ms = 1000;
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
  o.retry_max_ms = 4000000000u;
  EXPECT_EQ(discovery_options_check(o).code(), CL_EINVAL);
}
