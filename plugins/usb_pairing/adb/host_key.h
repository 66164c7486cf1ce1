// The host's ADB identity: an RSA-2048 key pair kept in a directory (the plugin passes
// <data_dir>/credentials/adb/), as adb itself keeps it:
//   adbkey      the private key, PEM (PKCS#8), mode 0600
//   adbkey.pub  the public key in Android's format: base64 of the 524-byte RSAPublicKey structure, a space and
//               a comment ("user@host"), no trailing newline
// A phone that ticked "Always allow from this computer" remembers the public key, so the pair is created once
// and reused; it is never regenerated behind the caller's back.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "adb/error.h"

namespace cloudlet::adb {

class Reactor;

// Android's RSAPublicKey: word count (64), n0inv = -1/n mod 2^32, modulus (64 little-endian words), rr =
// 2^4096 mod n (64 words), exponent. Every field has a fixed width (pycloud's bug B-ADB let n0inv grow to 8
// bytes, and phones rejected about half of its keys).
constexpr size_t kAndroidPubkeySize = 524;
constexpr size_t kRsaBits = 2048;

class HostKey {
 public:
  ~HostKey();
  HostKey(const HostKey&) = delete;
  HostKey& operator=(const HostKey&) = delete;

  // Loads <dir>/adbkey, creating the directory (0700) and a new key pair when there is no key yet, and
  // rewrites <dir>/adbkey.pub when it is missing or does not match the private key. A private key that is
  // unreadable or not RSA-2048 is an error (never silently replaced: phones may trust it).
  // Blocking (key generation takes tens of milliseconds): call it from a worker, or use host_key_load().
  static std::shared_ptr<const HostKey> load_or_create(const std::string& dir, const std::string& comment,
                                                       Error* err);

  // The adbkey.pub text: "<base64> <comment>".
  const std::string& public_key() const { return public_key_; }
  const std::string& private_path() const { return private_path_; }
  const std::string& public_path() const { return public_path_; }

  // Signs an AUTH token the way adbd checks it: PKCS#1 v1.5 over the token taken as a SHA-1 digest.
  // Blocking (~1 ms for RSA-2048): call it from a worker. Thread-safe.
  bool sign(const uint8_t* token, size_t len, std::vector<uint8_t>* sig) const;

  EVP_PKEY* pkey() const { return pkey_; }

 private:
  HostKey() = default;
  EVP_PKEY* pkey_ = nullptr;
  std::string public_key_, private_path_, public_path_;
};

// Loads (or creates) the key on a worker and calls cb on the loop.
void host_key_load(Reactor& reactor, std::string dir, std::string comment,
                   std::function<void(Error, std::shared_ptr<const HostKey>)> cb);

// Encodes the public half of an RSA-2048 key as Android's base64 RSAPublicKey (without a comment).
bool pubkey_encode(EVP_PKEY* key, std::string* b64, std::string* err);

// Decodes one adbkey.pub / adb_keys line ("<base64> [comment]", a trailing NUL or newline allowed) into a
// public key. Strict: the size, the word count, n0inv and rr must all be what the modulus implies.
// On success *out is a new reference the caller frees with EVP_PKEY_free.
bool pubkey_decode(std::string_view line, EVP_PKEY** out, std::string* err);

// Checks an AUTH signature over token with a public key (what a device does). Used by the test peer.
bool signature_verify(EVP_PKEY* key, const uint8_t* token, size_t token_len, const uint8_t* sig,
                      size_t sig_len);

}  // namespace cloudlet::adb
