#include "adb/host_key.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "adb/message.h"
#include "adb/reactor.h"

namespace cloudlet::adb {

namespace {

constexpr size_t kModulusBytes = kRsaBits / 8;
constexpr size_t kModulusWords = kModulusBytes / 4;
constexpr size_t kMaxKeyFile = 64 * 1024;

std::string ssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;

// mkdir -p, new components with mode 0700 (key material lives below).
bool dir_make(const std::string& dir, std::string* err) {
  if (dir.empty()) {
    *err = "empty key directory";
    return false;
  }
  std::string path;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    path = dir.substr(0, pos);
    if (path.empty()) continue;
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      *err = fmt::format("cannot create {}: {}", path, std::strerror(errno));
      return false;
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *err = fmt::format("{} is not a directory", dir);
    return false;
  }
  return true;
}

// Reads a small regular file (no symlinks). Returns false with errno_out = ENOENT when it does not exist.
bool file_read(const std::string& path, std::string* out, int* errno_out, std::string* err, mode_t* mode) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    *errno_out = errno;
    *err = fmt::format("cannot open {}: {}", path, std::strerror(errno));
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > off_t(kMaxKeyFile)) {
    close(fd);
    *errno_out = EINVAL;
    *err = fmt::format("{} is not a regular file of at most {} bytes", path, kMaxKeyFile);
    return false;
  }
  if (mode) *mode = st.st_mode & 07777;
  out->assign(size_t(st.st_size), '\0');
  size_t got = 0;
  while (got < out->size()) {
    ssize_t n = read(fd, out->data() + got, out->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += size_t(n);
  }
  close(fd);
  out->resize(got);
  *errno_out = 0;
  return true;
}

// Writes a file atomically (temporary file, fsync, rename) with an exact mode.
bool file_write_atomic(const std::string& path, const std::string& data, mode_t mode, std::string* err) {
  std::string tmp = fmt::format("{}.tmp{}", path, getpid());
  unlink(tmp.c_str());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    *err = fmt::format("cannot create {}: {}", tmp, std::strerror(errno));
    return false;
  }
  bool ok = fchmod(fd, mode) == 0;  // the umask must not widen or narrow the mode
  size_t off = 0;
  while (ok && off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ok = false;
    else off += size_t(n);
  }
  if (ok && fsync(fd) != 0) ok = false;
  int saved = errno;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    unlink(tmp.c_str());
    *err = fmt::format("cannot write {}: {}", path, std::strerror(saved));
    return false;
  }
  return true;
}

bool rsa2048_check(EVP_PKEY* key, std::string* err) {
  if (!EVP_PKEY_is_a(key, "RSA")) {
    *err = "not an RSA key";
    return false;
  }
  if (EVP_PKEY_get_bits(key) != int(kRsaBits)) {
    *err = fmt::format("an RSA-{} key; ADB needs RSA-{}", EVP_PKEY_get_bits(key), kRsaBits);
    return false;
  }
  return true;
}

bool comment_check(const std::string& c, std::string* err) {
  if (c.empty() || c.size() > 256) {
    *err = "the key comment must be 1..256 characters";
    return false;
  }
  for (unsigned char ch : c) {
    if (ch < 0x20 || ch == 0x7f) {
      *err = "the key comment must not contain control characters";
      return false;
    }
  }
  return true;
}

}  // namespace

HostKey::~HostKey() { EVP_PKEY_free(pkey_); }

bool pubkey_encode(EVP_PKEY* key, std::string* b64, std::string* err) {
  if (!rsa2048_check(key, err)) return false;
  BIGNUM* n_raw = nullptr;
  BIGNUM* e_raw = nullptr;
  if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n_raw) ||
      !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e_raw)) {
    BN_free(n_raw);
    BN_free(e_raw);
    *err = "cannot read the RSA modulus: " + ssl_error();
    return false;
  }
  Bn n(n_raw), e(e_raw);
  if (BN_num_bytes(e.get()) > 4) {
    *err = "RSA exponent does not fit in 32 bits";
    return false;
  }
  uint8_t blob[kAndroidPubkeySize] = {};
  put_le32(blob, kModulusWords);

  // n0inv = -1/n mod 2^32 from the lowest modulus word. Newton's iteration x <- x(2 - n0 x) doubles the
  // number of correct low bits each step (3 -> 6 -> ... -> 96), and unsigned arithmetic keeps it in 32 bits.
  uint8_t mod_le[kModulusBytes];
  if (BN_bn2lebinpad(n.get(), mod_le, int(kModulusBytes)) != int(kModulusBytes)) {
    *err = "modulus does not fit in 2048 bits";
    return false;
  }
  uint32_t n0 = get_le32(mod_le);
  uint32_t inv = n0;  // correct to 3 bits for odd n0
  for (int i = 0; i < 5; i++) inv *= 2u - n0 * inv;
  put_le32(blob + 4, 0u - inv);
  std::memcpy(blob + 8, mod_le, kModulusBytes);

  // rr = (2^2048)^2 mod n, the Montgomery constant.
  Bn rr(BN_new()), r(BN_new());
  BN_CTX* ctx = BN_CTX_new();
  bool ok = rr && r && ctx && BN_set_bit(r.get(), int(kRsaBits * 2)) && BN_mod(rr.get(), r.get(), n.get(), ctx) &&
            BN_bn2lebinpad(rr.get(), blob + 8 + kModulusBytes, int(kModulusBytes)) == int(kModulusBytes);
  BN_CTX_free(ctx);
  if (!ok) {
    *err = "cannot compute rr: " + ssl_error();
    return false;
  }
  put_le32(blob + 8 + 2 * kModulusBytes, uint32_t(BN_get_word(e.get())));

  std::string out(4 * ((kAndroidPubkeySize + 2) / 3) + 1, '\0');
  int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), blob, int(sizeof blob));
  out.resize(size_t(len));
  *b64 = std::move(out);
  return true;
}

bool pubkey_decode(std::string_view line, EVP_PKEY** out, std::string* err) {
  *out = nullptr;
  while (!line.empty() && (line.back() == '\0' || line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  size_t sp = line.find(' ');
  std::string_view b64 = line.substr(0, sp);
  size_t expect_b64 = 4 * ((kAndroidPubkeySize + 2) / 3);
  if (b64.size() != expect_b64) {
    *err = fmt::format("public key is {} base64 characters, expected {}", b64.size(), expect_b64);
    return false;
  }
  uint8_t blob[kAndroidPubkeySize + 3];
  int got = EVP_DecodeBlock(blob, reinterpret_cast<const unsigned char*>(b64.data()), int(b64.size()));
  size_t pad = (b64.size() >= 1 && b64[b64.size() - 1] == '=') + (b64.size() >= 2 && b64[b64.size() - 2] == '=');
  if (got < 0 || size_t(got) - pad != kAndroidPubkeySize) {
    *err = "public key is not valid base64 of a 524-byte structure";
    return false;
  }
  if (get_le32(blob) != kModulusWords) {
    *err = fmt::format("public key has {} modulus words, expected {}", get_le32(blob), kModulusWords);
    return false;
  }
  Bn n(BN_lebin2bn(blob + 8, int(kModulusBytes), nullptr));
  Bn rr(BN_lebin2bn(blob + 8 + kModulusBytes, int(kModulusBytes), nullptr));
  uint32_t exponent = get_le32(blob + 8 + 2 * kModulusBytes);
  if (!n || !rr || BN_num_bits(n.get()) != int(kRsaBits) || !BN_is_odd(n.get())) {
    *err = "public key modulus is not an odd 2048-bit number";
    return false;
  }
  if (exponent != 3 && exponent != 65537) {
    *err = fmt::format("public key exponent {} is neither 3 nor 65537", exponent);
    return false;
  }
  uint32_t n0 = get_le32(blob + 8);
  if (uint32_t(n0 * get_le32(blob + 4)) != 0xffffffffu) {
    *err = "public key n0inv is not -1/n mod 2^32";
    return false;
  }
  Bn want(BN_new()), r(BN_new());
  BN_CTX* ctx = BN_CTX_new();
  bool rr_ok = want && r && ctx && BN_set_bit(r.get(), int(kRsaBits * 2)) && BN_mod(want.get(), r.get(), n.get(), ctx) &&
               BN_cmp(want.get(), rr.get()) == 0;
  BN_CTX_free(ctx);
  if (!rr_ok) {
    *err = "public key rr is not 2^4096 mod n";
    return false;
  }

  Bn e(BN_new());
  BN_set_word(e.get(), exponent);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n.get()) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e.get()) &&
            (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr &&
            (pctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr)) != nullptr &&
            EVP_PKEY_fromdata_init(pctx) > 0 && EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params) > 0;
  EVP_PKEY_CTX_free(pctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  if (!ok) {
    EVP_PKEY_free(*out);
    *out = nullptr;
    *err = "cannot build the RSA key: " + ssl_error();
    return false;
  }
  return true;
}

bool signature_verify(EVP_PKEY* key, const uint8_t* token, size_t token_len, const uint8_t* sig,
                      size_t sig_len) {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(key, nullptr);
  bool ok = ctx && EVP_PKEY_verify_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
            EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha1()) > 0 &&
            EVP_PKEY_verify(ctx, sig, sig_len, token, token_len) == 1;
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

bool HostKey::sign(const uint8_t* token, size_t len, std::vector<uint8_t>* sig) const {
  // The token stands in for a SHA-1 digest, so it must be exactly that long.
  if (len != kAuthTokenSize) return false;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(pkey_, nullptr);
  size_t sig_len = 0;
  bool ok = ctx && EVP_PKEY_sign_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0 &&
            EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha1()) > 0 &&
            EVP_PKEY_sign(ctx, nullptr, &sig_len, token, len) > 0;
  if (ok) {
    sig->resize(sig_len);
    ok = EVP_PKEY_sign(ctx, sig->data(), &sig_len, token, len) > 0;
    sig->resize(sig_len);
  }
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  return ok;
}

std::shared_ptr<const HostKey> HostKey::load_or_create(const std::string& dir, const std::string& comment,
                                                       Error* err) {
  std::string msg;
  if (!comment_check(comment, &msg) || !dir_make(dir, &msg)) {
    *err = Error(Errc::invalid, msg);
    return nullptr;
  }
  std::shared_ptr<HostKey> key(new HostKey);
  key->private_path_ = dir + "/adbkey";
  key->public_path_ = dir + "/adbkey.pub";

  std::string pem;
  int eno = 0;
  mode_t mode = 0;
  if (file_read(key->private_path_, &pem, &eno, &msg, &mode)) {
    BIO* bio = BIO_new_mem_buf(pem.data(), int(pem.size()));
    key->pkey_ = bio ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(bio);
    OPENSSL_cleanse(pem.data(), pem.size());
    if (!key->pkey_) {
      *err = Error(Errc::local_io, fmt::format("{} is not a PEM private key ({}); move it away to generate a new "
                                               "key (phones that trusted it must then be authorized again)",
                                               key->private_path_, ssl_error()));
      return nullptr;
    }
    if (!rsa2048_check(key->pkey_, &msg)) {
      *err = Error(Errc::local_io, fmt::format("{} is {}", key->private_path_, msg));
      return nullptr;
    }
    // A private key readable by others is a leak waiting to happen: tighten it rather than refuse it.
    if ((mode & 077) != 0 && chmod(key->private_path_.c_str(), 0600) != 0) {
      *err = Error(Errc::local_io, fmt::format("cannot make {} private (mode 0600): {}", key->private_path_,
                                               std::strerror(errno)));
      return nullptr;
    }
  } else if (eno == ENOENT) {
    key->pkey_ = EVP_RSA_gen(kRsaBits);
    if (!key->pkey_) {
      *err = Error(Errc::local_io, "RSA key generation failed: " + ssl_error());
      return nullptr;
    }
    BIO* bio = BIO_new(BIO_s_mem());
    char* data = nullptr;
    long len = 0;
    if (!bio || !PEM_write_bio_PrivateKey(bio, key->pkey_, nullptr, nullptr, 0, nullptr, nullptr) ||
        (len = BIO_get_mem_data(bio, &data)) <= 0) {
      BIO_free(bio);
      *err = Error(Errc::local_io, "cannot encode the private key: " + ssl_error());
      return nullptr;
    }
    std::string text(data, size_t(len));
    BIO_free(bio);
    bool ok = file_write_atomic(key->private_path_, text, 0600, &msg);
    OPENSSL_cleanse(text.data(), text.size());
    if (!ok) {
      *err = Error(Errc::local_io, msg);
      return nullptr;
    }
  } else {
    *err = Error(Errc::local_io, msg);
    return nullptr;
  }

  std::string b64;
  if (!pubkey_encode(key->pkey_, &b64, &msg)) {
    *err = Error(Errc::local_io, "cannot encode the public key: " + msg);
    return nullptr;
  }
  key->public_key_ = b64 + " " + comment;
  std::string current;
  if (!file_read(key->public_path_, &current, &eno, &msg, nullptr) || current != key->public_key_) {
    if (!file_write_atomic(key->public_path_, key->public_key_, 0644, &msg)) {
      *err = Error(Errc::local_io, msg);
      return nullptr;
    }
  }
  *err = Error();
  return key;
}

void host_key_load(Reactor& reactor, std::string dir, std::string comment,
                   std::function<void(Error, std::shared_ptr<const HostKey>)> cb) {
  struct State {
    std::string dir, comment;
    Error err;
    std::shared_ptr<const HostKey> key;
  };
  auto st = std::make_shared<State>();
  st->dir = std::move(dir);
  st->comment = std::move(comment);
  bool queued = reactor.work_queue([st] { st->key = HostKey::load_or_create(st->dir, st->comment, &st->err); },
                                   [st, cb](bool cancelled) {
                                     if (cancelled) cb(Error(Errc::cancelled, "key loading was cancelled"), nullptr);
                                     else cb(st->err, st->key);
                                   });
  if (!queued) {
    auto fn = std::move(cb);
    reactor.post([fn] { fn(Error(Errc::cancelled, "the loop is closing"), nullptr); });
  }
}

}  // namespace cloudlet::adb
