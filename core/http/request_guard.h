// What a listener refuses before routing: Host names it does not serve (DNS rebinding: a page on a name the
// attacker controls, resolved to this listener's address, would otherwise talk to it with the user's
// browser) and requests another site's page makes the browser send (CSRF). OWASP's guidance: check Host
// against the names served; for state-changing methods require Origin to match Host and refuse
// Sec-Fetch-Site cross-site/same-site (same-site includes every other port of localhost); for the rest,
// refuse cross-site requests that are not top-level navigations (images, scripts, EventSource, fetch from
// another site), so links into the manager still work.
//
// Clients that are not browsers (phones, curl) send no Origin or Sec-Fetch-* headers and pass.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "http/options.h"

struct cl_request_s;

namespace cloudlet::http {

struct Refusal {
  uint32_t status = 0;  // 0: allowed
  std::string message;
};

// Host check for a request on a listener with options o (an IP literal is compared with the address the
// client connected to, looked up only then). 400 for a missing (HTTP/1.1) or malformed Host, 421 for a name
// the listener does not serve.
Refusal check_host(const ListenerOptions& o, ::cl_request_s& r);

// Cross-site check (Origin, Sec-Fetch-Site, Sec-Fetch-Mode): 403 when refused. Origin is compared with the
// Host by name and port (a Host without a port has the Origin scheme's default port, as behind a TLS proxy).
Refusal check_cross_site(const ::cl_request_s& r);

// True for methods that must not change state (RFC 9110 9.2.1).
bool safe_method(std::string_view method);

}  // namespace cloudlet::http
