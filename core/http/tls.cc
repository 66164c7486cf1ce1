#include "http/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "system/digest.h"

namespace cloudlet::http {

namespace {
std::string openssl_error() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}
}  // namespace

std::unique_ptr<TlsContext> TlsContext::create(const std::string& cert_file, const std::string& key_file,
                                               ClientCerts client_certs, std::string* error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    *error = openssl_error();
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);  // smaller idle connections
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    *error = "cannot load certificate " + cert_file + ": " + openssl_error();
    SSL_CTX_free(ctx);
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    *error = "cannot load private key " + key_file + ": " + openssl_error();
    SSL_CTX_free(ctx);
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    *error = "private key " + key_file + " does not match certificate " + cert_file;
    SSL_CTX_free(ctx);
    return nullptr;
  }
  if (client_certs != ClientCerts::none) {
    int mode = SSL_VERIFY_PEER | (client_certs == ClientCerts::require ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    // Any certificate passes the chain check: clients are authorised by fingerprint (options.h, ClientCerts).
    // The handshake still proves the client holds the certificate's private key.
    SSL_CTX_set_verify(ctx, mode, [](int, X509_STORE_CTX*) { return 1; });
    // Sessions that carry a client identity must name their context, or resumption fails.
    static const unsigned char kSessionContext[] = "cloudletd-mtls";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  }
  return std::unique_ptr<TlsContext>(new TlsContext(ctx));
}

std::unique_ptr<TlsContext> TlsContext::create_client(const std::string& ca_file, const std::string& cert_file,
                                                      const std::string& key_file, bool verify_chain,
                                                      std::string* error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    *error = openssl_error();
    return nullptr;
  }
  std::unique_ptr<TlsContext> owner(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  if (verify_chain) {
    int ok = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                             : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
    if (ok != 1) {
      *error = "cannot load CA file " + ca_file + ": " + openssl_error();
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    // The caller checks a pinned fingerprint once the handshake is done; the chain does not matter.
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  }
  if (!cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
      *error = "cannot load certificate " + cert_file + ": " + openssl_error();
      return nullptr;
    }
    const std::string& key = key_file.empty() ? cert_file : key_file;
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      *error = "cannot load private key " + key + ": " + openssl_error();
      return nullptr;
    }
  }
  return owner;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsSession::TlsSession(SSL_CTX* ctx) : ssl_(SSL_new(ctx)), in_(BIO_new(BIO_s_mem())), out_(BIO_new(BIO_s_mem())) {
  BIO_set_mem_eof_return(in_, -1);
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);  // ssl_ owns both BIOs now
  SSL_set_accept_state(ssl_);
}

TlsSession::TlsSession(SSL_CTX* ctx, const std::string& host) : TlsSession(ctx) {
  SSL_set_connect_state(ssl_);
  unsigned char ip[16];
  bool literal = inet_pton(AF_INET, host.c_str(), ip) == 1 || inet_pton(AF_INET6, host.c_str(), ip) == 1;
  if (!literal) SSL_set_tlsext_host_name(ssl_, host.c_str());
  if (SSL_CTX_get_verify_callback(ctx) != nullptr) return;  // pinned: no name check either
  if (literal) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str());
  } else {
    SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl_, host.c_str());
  }
}

bool TlsSession::start(std::string* wire) {
  int n = SSL_do_handshake(ssl_);
  drain(wire);
  if (n == 1) return true;
  int err = SSL_get_error(ssl_, n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return true;
  error_ = openssl_error();
  return false;
}

bool TlsSession::verify_failed() const { return SSL_get_verify_result(ssl_) != X509_V_OK; }

TlsSession::~TlsSession() { SSL_free(ssl_); }

bool TlsSession::established() const { return SSL_is_init_finished(ssl_); }

const std::string& TlsSession::peer_fingerprint() {
  if (peer_fp_known_ || !established()) return peer_fp_;
  peer_fp_known_ = true;
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (!cert) return peer_fp_;
  unsigned char* der = nullptr;
  int n = i2d_X509(cert, &der);
  if (n > 0) peer_fp_ = cloudlet::sha256_hex(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(n)));
  OPENSSL_free(der);
  X509_free(cert);
  return peer_fp_;
}

void TlsSession::drain(std::string* wire) {
  char buf[16384];
  int n;
  while ((n = BIO_read(out_, buf, sizeof buf)) > 0) wire->append(buf, static_cast<size_t>(n));
}

bool TlsSession::receive(std::string_view data, std::string* plain, std::string* wire) {
  while (!data.empty()) {
    int n = BIO_write(in_, data.data(), static_cast<int>(data.size()));
    if (n <= 0) {
      error_ = "BIO_write failed";
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  char buf[16384];
  for (;;) {
    int n = SSL_read(ssl_, buf, sizeof buf);
    if (n > 0) {
      plain->append(buf, static_cast<size_t>(n));
      continue;
    }
    int err = SSL_get_error(ssl_, n);
    drain(wire);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return true;
    if (err == SSL_ERROR_ZERO_RETURN) {
      error_ = "peer closed the TLS session";
      return false;
    }
    error_ = err == SSL_ERROR_SSL ? openssl_error() : "TLS error " + std::to_string(err);
    ERR_clear_error();
    return false;
  }
}

bool TlsSession::send(std::string_view plain, std::string* wire) {
  while (!plain.empty()) {
    int n = SSL_write(ssl_, plain.data(), static_cast<int>(plain.size()));
    if (n <= 0) {
      error_ = openssl_error();
      return false;
    }
    plain.remove_prefix(static_cast<size_t>(n));
    drain(wire);
  }
  drain(wire);
  return true;
}

void TlsSession::shutdown(std::string* wire) {
  SSL_shutdown(ssl_);
  drain(wire);
  ERR_clear_error();
}

}  // namespace cloudlet::http
