#include "http/self_signed.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "system/digest.h"
#include "virt/files.h"

namespace cloudlet::http {
namespace {

using virt::files_write;

constexpr int kValidDays = 397;     // what browsers accept for a server certificate's lifetime
constexpr int kRenewDays = 30;      // an automatic certificate this close to its end is made again

template <typename T, void (*F)(T*)>
struct Free {
  void operator()(T* p) const { F(p); }
};
using X509Ptr = std::unique_ptr<X509, Free<X509, X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY, EVP_PKEY_free>>;

X509Ptr read_cert(const std::string& path) {
  FILE* f = fopen(path.c_str(), "re");
  if (!f) return nullptr;
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  fclose(f);
  return X509Ptr(x);
}

std::string fingerprint_of(X509* x) {
  unsigned char* der = nullptr;
  int n = i2d_X509(x, &der);
  if (n <= 0) return {};
  std::string fp = sha256_hex(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(n)));
  OPENSSL_free(der);
  return fp;
}

std::string not_after_of(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  if (!b) return {};
  ASN1_TIME_print(b, X509_get0_notAfter(x));
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string out(p ? p : "", n > 0 ? static_cast<size_t>(n) : 0);
  BIO_free(b);
  return out;
}

bool add_ext(X509* x, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!e) return false;
  bool ok = X509_add_ext(x, e, -1) == 1;
  X509_EXTENSION_free(e);
  return ok;
}

template <typename W>
std::string pem(W write) {
  BIO* b = BIO_new(BIO_s_mem());
  if (!b) return {};
  std::string out;
  if (write(b)) {
    char* p = nullptr;
    long n = BIO_get_mem_data(b, &p);
    if (n > 0) out.assign(p, static_cast<size_t>(n));
  }
  BIO_free(b);
  return out;
}

}  // namespace

bool host_is_loopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Status self_signed_ensure(const std::string& cert_path, const std::string& key_path, const std::string& common_name,
                          const std::vector<std::string>& dns_names, const std::vector<std::string>& ip_addresses,
                          SelfSigned* out) {
  *out = SelfSigned{cert_path, key_path, false, {}, {}};
  struct stat sb;
  if (X509Ptr old = read_cert(cert_path); old && stat(key_path.c_str(), &sb) == 0) {
    time_t soon = time(nullptr) + kRenewDays * 86400;
    if (X509_cmp_time(X509_get0_notAfter(old.get()), &soon) > 0) {
      out->fingerprint = fingerprint_of(old.get());
      out->not_after = not_after_of(old.get());
      return {};
    }
  }
  KeyPtr key(EVP_EC_gen("P-256"));
  X509Ptr x(X509_new());
  if (!key || !x) return Status::io("OpenSSL could not make a key");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return Status::io("no randomness for a certificate serial");
  serial[0] &= 0x7f;  // a positive serial
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get())) != nullptr;
  BN_free(bn);
  ok = ok && X509_set_version(x.get(), 2) == 1;
  ok = ok && X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) != nullptr;  // clocks disagree a little
  ok = ok && X509_gmtime_adj(X509_getm_notAfter(x.get()), static_cast<long>(kValidDays) * 86400) != nullptr;
  ok = ok && X509_set_pubkey(x.get(), key.get()) == 1;
  X509_NAME* name = X509_get_subject_name(x.get());
  std::string cn = common_name.empty() ? "cloudletd" : common_name.substr(0, 64);
  ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("cloudletd"),
                                        -1, -1, 0) == 1;
  ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()),
                                        -1, -1, 0) == 1;
  ok = ok && X509_set_issuer_name(x.get(), name) == 1;
  std::string san;
  for (const auto& d : dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  ok = ok && add_ext(x.get(), NID_basic_constraints, "critical,CA:FALSE");
  ok = ok && add_ext(x.get(), NID_key_usage, "critical,digitalSignature");
  ok = ok && add_ext(x.get(), NID_ext_key_usage, "serverAuth");
  ok = ok && add_ext(x.get(), NID_subject_key_identifier, "hash");
  ok = ok && (san.empty() || add_ext(x.get(), NID_subject_alt_name, san));
  ok = ok && X509_sign(x.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) return Status::io("OpenSSL could not make the certificate");
  std::string key_pem =
      pem([&](BIO* b) { return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1; });
  std::string cert_pem = pem([&](BIO* b) { return PEM_write_bio_X509(b, x.get()) == 1; });
  if (key_pem.empty() || cert_pem.empty()) return Status::io("OpenSSL could not write the certificate");
  // The key first: a certificate on disk always has its key.
  if (Status s = files_write(key_path, key_pem, 0600); !s.ok()) return s;
  if (Status s = files_write(cert_path, cert_pem, 0644); !s.ok()) return s;
  out->made = true;
  out->fingerprint = fingerprint_of(x.get());
  out->not_after = not_after_of(x.get());
  return {};
}

}  // namespace cloudlet::http
