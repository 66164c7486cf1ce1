// TLS for listeners and for outbound requests (core/http/client.h): OpenSSL over memory BIOs, so the socket
// stays a plain libuv stream and the loop never blocks. One TlsContext per listener (certificate + key) or per
// outbound request (trust anchors, optional client certificate), one TlsSession per connection.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "http/options.h"

namespace cloudlet::http {

class TlsContext {
 public:
  // Loads a PEM certificate chain and private key; TLS 1.2+ only. client_certs: whether clients are asked for
  // a certificate (see ClientCerts). Returns nullptr with *error set on failure.
  static std::unique_ptr<TlsContext> create(const std::string& cert_file, const std::string& key_file,
                                            ClientCerts client_certs, std::string* error);
  // Client side: TLS 1.2+, the peer verified against ca_file (PEM; "" = the system's trust store) unless
  // verify_chain is false (a caller that pins the certificate instead), and a client certificate chain and
  // key when cert_file is set. Returns nullptr with *error set on failure.
  static std::unique_ptr<TlsContext> create_client(const std::string& ca_file, const std::string& cert_file,
                                                   const std::string& key_file, bool verify_chain,
                                                   std::string* error);
  ~TlsContext();
  SSL_CTX* ctx() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class TlsSession {
 public:
  // Server side.
  explicit TlsSession(SSL_CTX* ctx);
  // Client side: host (a DNS name or an IP literal) is sent as SNI (names only) and, when the context
  // verifies the chain, must match the certificate. Call start() for the first handshake records.
  TlsSession(SSL_CTX* ctx, const std::string& host);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Feeds bytes received from the socket. Decrypted application data is appended to *plain; bytes that must
  // be sent to the peer (handshake records, alerts) are appended to *wire. Returns false on a fatal TLS error
  // (the connection must be closed; *wire may hold an alert worth sending first).
  bool receive(std::string_view data, std::string* plain, std::string* wire);
  // Encrypts application data, appending records to *wire.
  bool send(std::string_view plain, std::string* wire);
  // Appends a close_notify alert to *wire.
  void shutdown(std::string* wire);
  bool established() const;
  // Client side: appends the ClientHello to *wire. false on a fatal error.
  bool start(std::string* wire);
  // Whether the handshake failed because the peer's certificate was refused (chain or name).
  bool verify_failed() const;
  std::string last_error() const { return error_; }
  // Hex SHA-256 of the client certificate's DER once the handshake is done; "" when the client sent none (or
  // the listener asks for none). Computed once per session.
  const std::string& peer_fingerprint();

 private:
  void drain(std::string* wire);
  SSL* ssl_;
  BIO* in_;   // socket -> OpenSSL
  BIO* out_;  // OpenSSL -> socket
  std::string error_;
  std::string peer_fp_;
  bool peer_fp_known_ = false;
};

}  // namespace cloudlet::http
