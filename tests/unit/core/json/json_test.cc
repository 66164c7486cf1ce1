// core/json: the depth limit and iterative parsing every JSON input goes through, and the iterative stringify.
#include "json/json.h"

#include <gtest/gtest.h>

#include <string>

namespace json = cloudlet::json;

namespace {

std::string repeat(std::string_view piece, size_t n) {
  std::string out;
  out.reserve(piece.size() * n);
  for (size_t i = 0; i < n; i++) out += piece;
  return out;
}

// depth levels of arrays, closed: [[[...]]]
std::string arrays(int depth) { return repeat("[", depth) + repeat("]", depth); }
// depth levels of objects, closed: {"a":{"a":...{}}}
std::string objects(int depth) { return repeat("{\"a\":", depth - 1) + "{}" + repeat("}", depth - 1); }

constexpr size_t kAttackBytes = 140 * 1024;  // the issue's body: at the edge of an 8 MiB stack (-O2)
constexpr size_t kBodyLimit = 1024 * 1024;    // the largest buffered body: far beyond it (always crashed)

}  // namespace

// The issue's attack: a body of '[' or of {"a": overflowed the stack (segfault) before the fix.
TEST(Json, DeepInputIsRefusedWithTheReasonInsteadOfCrashing) {
  for (const std::string& text : {repeat("[", kAttackBytes), repeat("{\"a\":", kAttackBytes / 5),
                                  repeat("[", kBodyLimit), repeat("{\"a\":", kBodyLimit / 5),
                                  arrays(100000), repeat("[{\"a\":", 30000)}) {
    for (bool comments : {false, true}) {
      json::Document d;
      std::string err;
      EXPECT_FALSE(json::parse(text, &d, &err, comments));
      EXPECT_NE(err.find("nesting deeper than 128"), std::string::npos) << err;
      EXPECT_EQ(err.rfind("line 1 column ", 0), 0u) << err;
      EXPECT_TRUE(d.IsNull());
    }
    EXPECT_FALSE(json::valid(text));
    EXPECT_FALSE(json::is_object(text));
  }
}

TEST(Json, TheLimitIsExactlyKMaxDepth) {
  ASSERT_EQ(json::kMaxDepth, 128);
  for (auto make : {arrays, objects}) {
    json::Document d;
    std::string err;
    EXPECT_TRUE(json::parse(make(json::kMaxDepth), &d, &err)) << err;
    EXPECT_TRUE(json::valid(make(json::kMaxDepth)));
    EXPECT_FALSE(json::parse(make(json::kMaxDepth + 1), &d, &err));
    EXPECT_NE(err.find("nesting deeper than 128"), std::string::npos) << err;
    EXPECT_FALSE(json::valid(make(json::kMaxDepth + 1)));
  }
  EXPECT_TRUE(json::is_object(objects(json::kMaxDepth)));
  EXPECT_FALSE(json::is_object(objects(json::kMaxDepth + 1)));
  // Depth counts nesting, not the number of containers: wide documents are fine.
  std::string wide = "[" + repeat("[[]],", 10000) + "[]]";
  EXPECT_TRUE(json::valid(wide));
}

TEST(Json, ParseKeepsItsErrorsAndTypes) {
  json::Document d;
  std::string err;
  ASSERT_TRUE(json::parse(R"({"s":"x\u00e9\n","i":-3,"u":4294967296,"f":1.5,"b":true,"n":null,"a":[1,{}]})", &d,
                          &err))
      << err;
  EXPECT_EQ(json::get_string(d, "s").value(), "x\xc3\xa9\n");
  EXPECT_EQ(json::get_int(d, "i").value(), -3);
  EXPECT_EQ(json::get_int(d, "u").value(), 4294967296LL);
  EXPECT_TRUE(d["f"].IsDouble());
  EXPECT_EQ(json::get_bool(d, "b").value(), true);
  EXPECT_TRUE(d["n"].IsNull());
  EXPECT_EQ(d["a"].Size(), 2u);

  EXPECT_FALSE(json::parse("{\n  \"a\": 1,\n  \"b\" 2\n}", &d, &err));
  EXPECT_EQ(err, "line 3 column 7: Missing a colon after a name of object member.");
  EXPECT_TRUE(d.IsNull());  // nothing half-parsed is left behind
  EXPECT_FALSE(json::parse("", &d, &err));
  EXPECT_FALSE(json::parse("[1] [2]", &d, &err));
  EXPECT_FALSE(json::parse("[1,]", &d, &err));
  EXPECT_FALSE(json::parse("// c\n[1]", &d, &err));
  // Config files: comments and trailing commas (the iterative parser supports both).
  EXPECT_TRUE(json::parse("// c\n{\"a\": [1, 2, ], /* x */ \"b\": {},}", &d, &err, true)) << err;
  EXPECT_EQ(d["a"].Size(), 2u);
  // A document is reusable after a failure.
  EXPECT_TRUE(json::parse("[true]", &d, &err));
  EXPECT_TRUE(d[0].GetBool());
}

// Found by fuzz_json: RapidJSON 1.1 read some numbers beyond a double's range as infinity (no error), which
// stringify then could not write, so a stored document came back as invalid JSON.
TEST(Json, NumbersBeyondADoubleAreRefused) {
  for (const char* text : {"[92233720361.5e300]", "[1e309]", "[-1.5e400]", "{\"a\":123456789.0e305}"}) {
    json::Document d;
    std::string err;
    EXPECT_FALSE(json::parse(text, &d, &err)) << text << " -> " << json::stringify(d);
    EXPECT_NE(err.find("Number too big"), std::string::npos) << err;
    EXPECT_FALSE(json::valid(text)) << text;
  }
  json::Document d;
  ASSERT_TRUE(json::parse("[1.7976931348623157e308,-1.7976931348623157e308,1e-400]", &d, nullptr));
  std::string out = json::stringify(d);
  EXPECT_TRUE(json::parse(out, &d, nullptr)) << out;
}

TEST(Json, ValidAndIsObject) {
  EXPECT_TRUE(json::valid("1"));
  EXPECT_TRUE(json::valid(" \"s\" "));
  EXPECT_TRUE(json::valid("[]"));
  EXPECT_FALSE(json::valid(""));
  EXPECT_FALSE(json::valid("{"));
  EXPECT_FALSE(json::valid("{} x"));
  EXPECT_FALSE(json::valid(std::string_view("[1]\0", 4)));  // RapidJSON alone reads NUL as the end
  EXPECT_FALSE(json::is_object(std::string_view("{}\0{", 4)));
  json::Document d;
  std::string err;
  EXPECT_FALSE(json::parse(std::string_view("{\"a\":\n1}\0x", 10), &d, &err));
  EXPECT_EQ(err, "line 2 column 3: a NUL byte");
  EXPECT_TRUE(json::is_object("{}"));
  EXPECT_TRUE(json::is_object(R"( {"a":[{"b":1}]} )"));
  EXPECT_FALSE(json::is_object("[{}]"));
  EXPECT_FALSE(json::is_object("\"{}\""));
  EXPECT_FALSE(json::is_object("null"));
  EXPECT_FALSE(json::is_object("{} {}"));
  // Only the view's bytes are read (no terminating NUL needed).
  std::string buf = "{}garbage";
  EXPECT_TRUE(json::is_object(std::string_view(buf).substr(0, 2)));
}

TEST(Json, ParseObject) {
  json::Document d;
  std::string err;
  EXPECT_TRUE(json::parse_object(R"({"a":1})", &d, &err));
  EXPECT_FALSE(json::parse_object("[1]", &d, &err));
  EXPECT_EQ(err, "not a JSON object");
  EXPECT_TRUE(d.IsNull());
  EXPECT_FALSE(json::parse_object(repeat("{\"a\":", 1000), &d, &err));
  EXPECT_NE(err.find("nesting deeper than 128"), std::string::npos) << err;
}

TEST(Json, StringifyRoundTripsLikeRapidJson) {
  const char* text = R"({"s":"q\"\\\u0001é","i":-3,"u":18446744073709551615,"f":0.25,"b":false,"n":null,)"
                     R"("a":[[],{},[1,[2,{"x":[3]}]]],"o":{"k":{"k":"v"}}})";
  json::Document d;
  ASSERT_TRUE(json::parse(text, &d, nullptr));
  rapidjson::StringBuffer b;
  json::Writer w(b);
  d.Accept(w);
  EXPECT_EQ(json::stringify(d), std::string(b.GetString(), b.GetSize()));
  EXPECT_EQ(json::stringify(d["a"]), R"([[],{},[1,[2,{"x":[3]}]]])");
  EXPECT_EQ(json::stringify(d["i"]), "-3");
  EXPECT_EQ(json::stringify(json::Value()), "null");
}

// A value built in code is not bounded by the parser: stringify must not recurse on it.
TEST(Json, StringifyOfAVeryDeepValueDoesNotRecurse) {
  constexpr int kDepth = 200000;
  json::Document d;
  auto& al = d.GetAllocator();
  d.SetArray();
  json::Value* at = &d;
  for (int i = 1; i < kDepth; i++) {
    if (i % 2) {
      at->PushBack(json::Value(rapidjson::kObjectType), al);
      at = &(*at)[at->Size() - 1];
    } else {
      at->AddMember("k", json::Value(rapidjson::kArrayType), al);
      at = &(*at)["k"];
    }
  }
  std::string out = json::stringify(d);
  // Every array "[]"; every object {"k":} but the innermost, which is "{}".
  EXPECT_EQ(out.size(), 2u * kDepth + 4u * (kDepth / 2 - 1));
  EXPECT_EQ(out.substr(0, 12), R"([{"k":[{"k":)");
  // And what it wrote is refused on the way back in, with the reason.
  std::string err;
  json::Document back;
  EXPECT_FALSE(json::parse(out, &back, &err));
  EXPECT_NE(err.find("nesting deeper than"), std::string::npos);
}
