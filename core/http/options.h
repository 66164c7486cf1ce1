// Listener options and HTTP limits (filled from the configuration's "listeners" section).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cloudlet::http {

struct Limits {
  uint64_t max_header_bytes = 16 * 1024;      // request line + headers; beyond: 431
  uint64_t max_uri_bytes = 8 * 1024;          // request target; beyond: 414
  uint64_t max_body_bytes = 1024 * 1024;      // buffered bodies; beyond: 413
  uint64_t max_upload_bytes = 64ull << 30;    // streamed and form bodies (disk images); beyond: 413
  uint32_t header_timeout_ms = 10000;         // from a request's first byte to the end of its headers
  uint32_t body_timeout_ms = 30000;           // longest pause while a body arrives
  // The whole request (headers and body) must arrive within this many ms of its first byte, however it
  // trickles in; a body that keeps min_body_rate gets another request_timeout_ms each time it has delivered
  // min_body_rate * request_timeout_ms / 1000 bytes (so long uploads at a reasonable rate never time out).
  uint32_t request_timeout_ms = 30000;
  uint64_t min_body_rate = 64 * 1024;         // bytes per second; 0: no extension, the deadline is absolute
  uint32_t idle_timeout_ms = 30000;           // keep-alive connection with no request
  uint32_t write_timeout_ms = 60000;          // longest pause while the client does not read our response
  uint32_t max_connections = 4096;            // beyond: new connections are closed at once
  // Connections one client address may hold (IPv6 addresses count per /64). Well below max_connections, so
  // one address cannot take a listener.
  uint32_t max_connections_per_address = 128;
  // The last reserved_connections below max_connections (at most half of them) go only to addresses holding
  // fewer than kReservedPerAddress connections: an operator still gets in while many addresses fill the
  // listener.
  uint32_t reserved_connections = 256;
  // Response bytes a connection may have queued and unsent before it stops reading and parsing requests
  // (a client that pipelines and never reads). A streamed response (SSE, chunked) whose client leaves
  // kStreamUnsentFactor times this unread is closed.
  uint64_t max_unsent_bytes = 64 * 1024;
};

// Connections an address may still open once a listener is into its reserved share.
constexpr uint32_t kReservedPerAddress = 8;
constexpr uint64_t kStreamUnsentFactor = 16;

// Which Host header values a listener answers (DNS rebinding defence). Names are compared case-insensitively
// without the port.
enum class HostCheck {
  names,        // "localhost", "*.localhost", the address the client connected to, and server_names
  names_or_ip,  // the same, and any IP literal (clients that reach the listener by address, like phones)
  off,          // any Host
};

// Whether a TLS listener asks clients for a certificate (mutual TLS). Any certificate is accepted, self-signed
// included: the handshake proves the client holds its key, and whoever authorises clients (a plugin's listener
// guard, with req_peer_cert) pins it by its SHA-256 fingerprint, as device pairing does. No CA is involved.
enum class ClientCerts {
  none,      // no certificate asked for
  optional,  // asked for; a client without one still connects (req_peer_cert answers CL_ENOENT)
  require,   // a client without a certificate fails the handshake
};

// Bounds for all listeners together (memory held for clients; see server.h).
struct Totals {
  uint64_t max_unsent_bytes = 16 << 20;  // unsent response bytes of every connection together
  uint64_t max_body_bytes = 16 << 20;    // request bodies buffered in memory together; beyond: 503
};

struct ListenerOptions {
  std::string name;  // "api", "manager", ...
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port (tests)
  std::string tls_cert;  // PEM chain; TLS is on when both cert and key are set
  std::string tls_key;
  // TLS with a certificate of the server's own when tls_cert/tls_key are empty (config "tls": true; made once
  // under the data directory: http/self_signed.h). With tls_cert and tls_key set, TLS is on regardless.
  bool tls_auto = false;
  ClientCerts tls_client_certs = ClientCerts::none;  // TLS listeners only
  std::string webroot;   // static files for GET/HEAD requests no route took ("" = none)
  std::string index_file = "index.html";
  HostCheck host_check = HostCheck::names;
  std::vector<std::string> server_names;  // more names (or IP literals) accepted in Host
  Limits limits;
};

}  // namespace cloudlet::http
