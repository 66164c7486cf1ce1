// The pure parts of the fetch_* slots (ABI 1.1), shared by the core (host_api.cc) and tests/fakehost so both
// read a cl_fetch_desc_t and answer header lookups the same way. The exchanges run in core/http/client.h.
#pragma once

#include "cloudlet_plugin.h"
#include "http/client.h"

namespace cloudlet {

// Checks a plugin's request description and turns it into options: CL_OK or CL_EINVAL (struct too small,
// unknown flags, no URL, more than 256 headers, max_header_bytes over 1 MiB). Fetch::start checks the rest.
cl_status_t fetch_options(const cl_fetch_desc_t* desc, http::FetchOptions* out);

// fetch_header: the first response header named `name`; *out borrowed from f.
cl_status_t fetch_header_of(const http::Fetch* f, cl_str_t name, cl_str_t* out);

// fetch_peer_cert: the server certificate's fingerprint; *out borrowed from f.
cl_status_t fetch_peer_cert_of(const http::Fetch* f, cl_str_t* out);

}  // namespace cloudlet
