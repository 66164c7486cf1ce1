#include "params.h"

#include <gtest/gtest.h>

using namespace cloudlet::offload;

TEST(Params, UrlencodedAnyOrderDecoded) {
  Params p;
  parse_urlencoded("join=true&serviceId=edu.cmu.sei%2Eams&tags=speech%2Ctest+x&flag&=v&&", &p);
  ASSERT_NE(p.get("serviceId"), nullptr);
  EXPECT_EQ(*p.get("serviceId"), "edu.cmu.sei.ams");
  EXPECT_EQ(*p.get("join"), "true");
  EXPECT_EQ(*p.get("tags"), "speech,test x");
  EXPECT_EQ(*p.get("flag"), "");
  EXPECT_EQ(p.get("missing"), nullptr);
}

TEST(Params, PercentDecodeKeepsMalformedEscapes) {
  EXPECT_EQ(percent_decode("a%2Bb%2", true), "a+b%2");
  EXPECT_EQ(percent_decode("%zz+", true), "%zz ");
  EXPECT_EQ(percent_decode("%zz+", false), "%zz+");
  EXPECT_EQ(percent_decode("%41%42", false), "AB");
}

TEST(Params, CommandSplitsOnFirstEqualsAndKeepsValuesVerbatim) {
  std::string path, error;
  Params p;
  ASSERT_TRUE(parse_command("/servicevm/start&join=true&serviceId=a=b&x=%41&&", &path, &p, &error));
  EXPECT_EQ(path, "/servicevm/start");
  EXPECT_EQ(*p.get("serviceId"), "a=b");
  EXPECT_EQ(*p.get("x"), "%41");
  EXPECT_EQ(*p.get("join"), "true");
  Params q;
  ASSERT_TRUE(parse_command("/services", &path, &q, &error));
  EXPECT_EQ(path, "/services");
  EXPECT_EQ(q.size(), 0u);
  Params r;
  EXPECT_FALSE(parse_command("/services/get&serviceId", &path, &r, &error));
  EXPECT_FALSE(error.empty());
  EXPECT_FALSE(parse_command("/services/get&=x", &path, &r, &error));
  Params s;
  ASSERT_TRUE(parse_command("/x&k=1&k=2", &path, &s, &error));
  EXPECT_EQ(*s.get("k"), "2");  // a later duplicate wins, as in pycloud
}

TEST(Params, TruthyIsPycloudsSet) {
  for (const char* t : {"T", "t", "TRUE", "true", "True", "Y", "y", "YES", "yes", " yes "}) {
    std::string v(t);
    EXPECT_TRUE(truthy(&v)) << t;
  }
  for (const char* f : {"", "false", "F", "1", "on", "no", "N", "truee", "yess"}) {
    std::string v(f);
    EXPECT_FALSE(truthy(&v)) << f;
  }
  EXPECT_FALSE(truthy(nullptr));
}

TEST(Params, TagsAndIds) {
  EXPECT_EQ(split_tags("speech, test,,  x "), (std::vector<std::string>{"speech", "test", "x"}));
  EXPECT_TRUE(split_tags(" , ").empty());
  EXPECT_TRUE(valid_id("edu.cmu.sei-ams_1", 128));
  EXPECT_FALSE(valid_id("", 128));
  EXPECT_FALSE(valid_id("a b", 128));
  EXPECT_FALSE(valid_id("a/b", 128));
  EXPECT_FALSE(valid_id(std::string(129, 'a'), 128));
  EXPECT_FALSE(valid_id("dev:1", 128));
  EXPECT_TRUE(valid_id("dev:1", 128, ":"));
  EXPECT_EQ(quote_safe("a#b\nc"), "a?b?c");
  EXPECT_EQ(quote_safe(std::string(200, 'x'), 10), std::string(10, 'x') + "...");
}
