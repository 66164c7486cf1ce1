# cmake -DINPUT=<file.json> -DOUTPUT=<file.cc> -DNAMESPACE=<ns> -DFUNCTION=<name> -P embed_json.cmake
# Writes a C++ source whose <ns>::<name>() returns the bytes of a JSON file (std::string_view), so that a plugin
# serves a document without reading files at run time. Fails the build if the file is not a JSON object.
file(READ "${INPUT}" text)
string(JSON type ERROR_VARIABLE error TYPE "${text}")
if(error)
  message(FATAL_ERROR "${INPUT}: not valid JSON: ${error}")
endif()
if(NOT type STREQUAL "OBJECT")
  message(FATAL_ERROR "${INPUT}: not a JSON object (${type})")
endif()
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REPEAT "0x..," 16 row)
string(REGEX REPLACE "(${row})" "\\1\n    " bytes "${bytes}")
get_filename_component(name "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp" "// Generated from ${name} by cmake/embed_json.cmake: do not edit.
#include <string_view>

namespace ${NAMESPACE} {

std::string_view ${FUNCTION}();

namespace {
const unsigned char kBytes[] = {
    ${bytes}};
}  // namespace

std::string_view ${FUNCTION}() { return {reinterpret_cast<const char*>(kBytes), sizeof kBytes}; }

}  // namespace ${NAMESPACE}
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
