#include "plugin/fetch_slots.h"

#include <cstddef>

namespace cloudlet {
namespace {

constexpr size_t kMaxHeaders = 256;
constexpr uint64_t kMaxHeaderBytes = 1 << 20;

std::string str(cl_str_t s) { return s.ptr ? std::string(s.ptr, s.len) : std::string(); }

}  // namespace

cl_status_t fetch_options(const cl_fetch_desc_t* desc, http::FetchOptions* out) {
  if (!desc || desc->struct_size < offsetof(cl_fetch_desc_t, max_header_bytes) + sizeof desc->max_header_bytes) {
    return CL_EINVAL;
  }
  if ((desc->flags & ~CL_FETCH_F_PIN_ONLY) != 0 || !desc->url || desc->header_count > kMaxHeaders ||
      (desc->header_count > 0 && !desc->headers) || desc->max_header_bytes > kMaxHeaderBytes) {
    return CL_EINVAL;
  }
  http::FetchOptions o;
  o.method = desc->method ? desc->method : "GET";
  o.url = desc->url;
  for (size_t i = 0; i < desc->header_count; i++) {
    o.headers.emplace_back(str(desc->headers[i].name), str(desc->headers[i].value));
  }
  o.body_length = desc->body_length;
  o.ca_file = desc->ca_file ? desc->ca_file : "";
  o.cert_file = desc->cert_file ? desc->cert_file : "";
  o.key_file = desc->key_file ? desc->key_file : "";
  o.pin_sha256 = desc->pin_sha256 ? desc->pin_sha256 : "";
  o.pin_only = desc->flags & CL_FETCH_F_PIN_ONLY;
  if (desc->connect_timeout_ms) o.connect_timeout_ms = desc->connect_timeout_ms;
  if (desc->idle_timeout_ms) o.idle_timeout_ms = desc->idle_timeout_ms;
  if (desc->max_header_bytes) o.max_header_bytes = static_cast<size_t>(desc->max_header_bytes);
  *out = std::move(o);
  return CL_OK;
}

cl_status_t fetch_header_of(const http::Fetch* f, cl_str_t name, cl_str_t* out) {
  if (!out || (!name.ptr && name.len)) return CL_EINVAL;
  *out = cl_str_t{nullptr, 0};
  if (!f->has_response()) return CL_ESTATE;
  const std::string* v = f->header(std::string_view(name.ptr ? name.ptr : "", name.len));
  if (!v) return CL_ENOENT;
  *out = cl_str_t{v->data(), v->size()};
  return CL_OK;
}

cl_status_t fetch_peer_cert_of(const http::Fetch* f, cl_str_t* out) {
  if (!out) return CL_EINVAL;
  *out = cl_str_t{nullptr, 0};
  if (!f->has_response()) return CL_ESTATE;
  if (!f->tls()) return CL_ENOENT;
  const std::string& fp = f->peer_fingerprint();
  *out = cl_str_t{fp.data(), fp.size()};
  return CL_OK;
}

}  // namespace cloudlet
