#include "virt/xml.h"

#include <gtest/gtest.h>

#include "test_util.h"

using namespace cloudlet::virt;

TEST(Xml, ParsesAndSerializesBack) {
  const std::string text =
      "<?xml version='1.0'?>\n<!-- c -->\n<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
      "  <name>a&amp;b</name>\n  <empty/>\n  <cmd><![CDATA[x<y]]></cmd>\n</domain>";
  xml::Document doc;
  ASSERT_TRUE(vt::ok(xml::parse(text, &doc)));
  EXPECT_EQ(doc.root->name, "domain");
  EXPECT_EQ(*doc.root->attr("type"), "qemu");
  EXPECT_EQ(doc.root->child("name")->text_content(), "a&b");
  EXPECT_EQ(doc.root->child("cmd")->text_content(), "x<y");
  EXPECT_EQ(xml::prefix_for(*doc.root, "http://libvirt.org/schemas/domain/qemu/1.0"), "qemu");
  std::string out = xml::serialize(doc);
  EXPECT_NE(out.find("<name>a&amp;b</name>"), std::string::npos) << out;
  EXPECT_NE(out.find("\n  <empty/>\n"), std::string::npos) << out;  // whitespace kept
  xml::Document again;
  ASSERT_TRUE(vt::ok(xml::parse(out, &again)));
  EXPECT_EQ(xml::serialize(again), out);  // stable
}

TEST(Xml, DecodesReferencesAndEscapesOnOutput) {
  xml::Document doc;
  ASSERT_TRUE(vt::ok(xml::parse("<a v=\"&lt;&gt;&quot;&apos;&#65;&#x263A;\">&#10;t</a>", &doc)));
  EXPECT_EQ(*doc.root->attr("v"), "<>\"'A\xE2\x98\xBA");
  doc.root->set_attr("w", "it's <\"x\"> & \n");
  std::string out = xml::serialize(doc);
  xml::Document back;
  ASSERT_TRUE(vt::ok(xml::parse(out, &back))) << out;
  EXPECT_EQ(*back.root->attr("w"), "it's <\"x\"> & \n");
  EXPECT_EQ(back.root->text_content(), "\nt");
}

TEST(Xml, RejectsBadInput) {
  const char* bad[] = {
      "",                                     // no root
      "<a>",                                  // unterminated
      "<a></b>",                              // mismatched
      "<a x='1' x='2'/>",                     // duplicate attribute
      "<a>&unknown;</a>",                     // unknown entity
      "<a>&#0;</a>",                          // forbidden character
      "<a>&#x110000;</a>",                    // out of range
      "<!DOCTYPE a [<!ENTITY e 'x'>]><a/>",   // no DTDs (no entity expansion)
      "<a/><b/>",                             // two roots
      "text<a/>",                             // text outside
      "<a x=1/>",                             // unquoted
      "<a x='<'/>",                           // '<' in attribute
      "<a><!-- open </a>",                    // unterminated comment
      "<a x='1'y='2'/>",                      // attributes run together
  };
  for (const char* b : bad) {
    xml::Document doc;
    EXPECT_TRUE(vt::fails(xml::parse(b, &doc), CL_EINVAL, "XML error at offset")) << b;
  }
  std::string nul("<a>\0</a>", 8);
  xml::Document doc;
  EXPECT_TRUE(vt::fails(xml::parse(nul, &doc), CL_EINVAL, "NUL"));
}

TEST(Xml, BoundsSizeAndDepth) {
  std::string deep;
  for (int i = 0; i < 100; i++) deep += "<a>";
  for (int i = 0; i < 100; i++) deep += "</a>";
  xml::Document doc;
  EXPECT_TRUE(vt::fails(xml::parse(deep, &doc), CL_EINVAL, "deeper"));
  xml::Limits small;
  small.max_bytes = 10;
  EXPECT_TRUE(vt::fails(xml::parse("<abcdefghijkl/>", &doc, small), CL_EINVAL, "larger"));
}

TEST(Xml, EditHelpers) {
  xml::Document doc;
  ASSERT_TRUE(vt::ok(xml::parse("<r><x a='1'>t</x><x/><y/></r>", &doc)));
  EXPECT_EQ(doc.root->children_named("x").size(), 2u);
  auto* x = doc.root->child("x");
  x->set_text("new & <text>");
  EXPECT_TRUE(x->remove_attr("a"));
  EXPECT_FALSE(x->remove_attr("a"));
  EXPECT_TRUE(doc.root->remove_child(doc.root->child("y")));
  EXPECT_EQ(xml::serialize(*doc.root), "<r><x>new &amp; &lt;text&gt;</x><x/></r>");
}
