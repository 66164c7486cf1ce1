// A small XML DOM for libvirt's domain XML: parse, edit, serialize with escaping.
//
// Why not libxml2: the project's dependency list is fixed and libvirt's XML is plain (no DTD, no entities
// beyond the five predefined ones). The parser is strict: it rejects DOCTYPE (no entity expansion), unknown
// entities, mismatched tags, and bounds input size and nesting depth. Whitespace text is kept, so a parsed
// document serializes back to the same markup except for attribute quoting and entity spelling.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "system/status.h"

namespace cloudlet::virt::xml {

struct Node {
  enum class Kind { element, text, cdata, comment, pi };

  Kind kind = Kind::element;
  std::string name;  // element name as written (with any prefix), or a processing instruction's target
  std::vector<std::pair<std::string, std::string>> attrs;  // decoded values, in document order
  std::string text;  // decoded content of text, cdata, comment and pi nodes
  std::vector<std::unique_ptr<Node>> children;

  // Element helpers (nullptr / empty when absent).
  Node* child(std::string_view element_name) const;
  std::vector<Node*> children_named(std::string_view element_name) const;
  const std::string* attr(std::string_view attr_name) const;
  void set_attr(std::string_view attr_name, std::string_view value);
  bool remove_attr(std::string_view attr_name);
  // Concatenated text of the direct text/cdata children.
  std::string text_content() const;
  // Replaces all children with one text node.
  void set_text(std::string_view value);
  Node* append_element(std::string_view element_name);
  // Appends a text node (used for indentation when building).
  void append_text(std::string_view value);
  // Removes the direct child `node`; false if it is not a child.
  bool remove_child(const Node* node);
};

struct Document {
  std::unique_ptr<Node> root;
};

struct Limits {
  size_t max_bytes = 4 << 20;
  int max_depth = 64;
};

// Parses one document (optional XML declaration, comments and processing instructions around one root element).
// CL_EINVAL with a message naming the offset on any error.
Status parse(std::string_view text, Document* out, Limits limits = {});

// Serializes; attribute values are written in single quotes (as libvirt does).
std::string serialize(const Document& doc);
std::string serialize(const Node& node);

std::string escape_text(std::string_view s);
std::string escape_attr(std::string_view s);

// The namespace prefix bound to `uri` by an xmlns:PREFIX attribute on `element`, or "" if none.
std::string prefix_for(const Node& element, std::string_view uri);

}  // namespace cloudlet::virt::xml
