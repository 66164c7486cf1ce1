// The JSON-reading slots (json_parse ... json_key_at, ABI 1.1): documents parsed once and read by JSON Pointer.
//
// Pure functions over the ABI's cl_json_t, shared by the real host (host_api.cc) and tests/fakehost, so both
// read JSON the same way. Safe on any thread; one document is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cloudlet_plugin.h"

namespace cloudlet::plugin_json {

// Bounds on what json_parse accepts (the header promises them): larger or deeper input is CL_ETOOBIG.
constexpr size_t kMaxBytes = 16u << 20;
constexpr int kMaxDepth = 64;

cl_status_t parse(std::string_view text, cl_json_t** out);
void free(cl_json_t* doc);
cl_status_t type(const cl_json_t* doc, std::string_view path, int32_t* out);
cl_status_t get_str(const cl_json_t* doc, std::string_view path, cl_str_t* out);
cl_status_t get_int(const cl_json_t* doc, std::string_view path, int64_t* out);
cl_status_t get_num(const cl_json_t* doc, std::string_view path, double* out);
cl_status_t get_bool(const cl_json_t* doc, std::string_view path, int* out);
cl_status_t get_len(const cl_json_t* doc, std::string_view path, size_t* out);
cl_status_t key_at(const cl_json_t* doc, std::string_view path, size_t index, cl_str_t* out);

}  // namespace cloudlet::plugin_json
