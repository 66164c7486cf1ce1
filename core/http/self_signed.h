// A listener's own certificate when TLS is on and the operator gave none (`"tls": true` without tls_cert and
// tls_key): made once with OpenSSL (ECDSA P-256, SHA-256, valid 397 days), kept in the data directory and
// reused by later starts. Browsers warn about a self-signed certificate until the operator installs one made
// with tls/ (or by a real CA); the fingerprint logged at start lets them check what they accept.
#pragma once

#include <string>
#include <vector>

#include "system/status.h"

namespace cloudlet::http {

struct SelfSigned {
  std::string cert_path;  // PEM certificate (0644)
  std::string key_path;   // PEM private key (0600)
  bool made = false;      // made now (else an existing pair was kept)
  std::string fingerprint;  // hex SHA-256 of the certificate (DER)
  std::string not_after;    // its expiry, as OpenSSL prints it
};

// Makes cert_path/key_path unless both exist, or when the existing certificate expires within 30 days. The
// subject is common_name; subjectAltName lists dns_names and ip_addresses (text form, v4 or v6). Files are
// written to temporary names and renamed into place, so a crash leaves either no pair or a whole one.
// Blocking, a few milliseconds: called at start-up, before the loop runs.
Status self_signed_ensure(const std::string& cert_path, const std::string& key_path, const std::string& common_name,
                          const std::vector<std::string>& dns_names, const std::vector<std::string>& ip_addresses,
                          SelfSigned* out);

// Whether host (a listener's bind address) reaches only this machine: 127.0.0.0/8, ::1 or "localhost".
bool host_is_loopback(const std::string& host);

}  // namespace cloudlet::http
