// The phones' API wire (plugins/offload_api): strict Base64 both ways, the tunnel's decryption and command
// parsing, the replay cache, and the reply shapers that turn operation results (JSON) into what phones read.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "command_path.h"
#include "params.h"
#include "replay.h"
#include "tunnel.h"
#include "wire.h"

using namespace cloudlet::offload;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "tunnel_fuzz: %s\n", what);
    abort();
  }
}

const TunnelKey& key() {
  static const TunnelKey k = tunnel_key("c93e781ffd96d3794d5e02c71a23dc824cad730b1e09d7f8c87dadc141f14632");
  return k;
}

// A command's plaintext through the tunnel's parser, as the command route does after decryption.
void parse_plaintext(std::string_view plain) {
  std::string path, error;
  Params params;
  if (parse_command(plain, &path, &params, &error)) {
    command_of(path);
    truthy(params.get("join"));
    if (const std::string* tags = params.get("tags")) split_tags(*tags);
    if (const std::string* id = params.get("serviceId")) quote_safe(*id);
  } else {
    check(!error.empty(), "a refused command without a reason");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  // Base64: strict decoding, and what decodes re-encodes to the same text (once CR/LF are dropped and a space,
  // a '+' that lost its URL encoding, is read as '+').
  std::string raw;
  if (base64_decode(in, &raw)) {
    std::string canonical;
    for (char c : in) {
      if (c != '\r' && c != '\n') canonical.push_back(c == ' ' ? '+' : c);
    }
    check(base64_encode(raw) == canonical, "Base64 decode/encode is not a round trip");
  }
  std::string again;
  check(base64_decode(base64_encode(in), &again) && again == in, "Base64 encode/decode is not a round trip");

  // The input as a captured command: decrypts or fails with a reason, never quoting anything.
  std::string plain, cipher;
  OpenError e = tunnel_open(in, key(), &plain, &cipher);
  if (e == OpenError::none) {
    check(cipher.size() % 16 == 0 && !cipher.empty(), "ciphertext not in whole blocks");
    parse_plaintext(plain);
    ReplayCache cache(64, 128, 4);
    check(cache.admit("phone", 1, cipher), "a first command refused");
    check(!cache.admit("phone", 1, cipher), "a replay admitted");
  } else {
    check(plain.empty(), "plaintext returned on a failure");
  }

  // The input as plaintext: sealing and opening is a round trip, and the parser takes whatever comes out.
  TunnelIv iv{};
  for (size_t i = 0; i < iv.size() && i < size; i++) iv[i] = data[i];
  std::string sealed = tunnel_seal(in, key(), iv);
  check(tunnel_open(sealed, key(), &plain) == OpenError::none && plain == in, "seal/open is not a round trip");
  parse_plaintext(in);

  // Query strings and form bodies (the open routes and the tunnel's form body).
  Params form;
  parse_urlencoded(in, &form);
  percent_decode(in, true);

  // Operation results (JSON) through the shapers: false or a reply, never a crash.
  std::string out, id, file, name;
  services_array(in, &out);
  service_object(in, &out);
  start_body(in, "127.0.0.1", &out, &id);
  apps_array(in, &out);
  app_file(in, &file, &name);
  std::string services = "[]", apps = "[]";
  system_body(in, &services, &apps, &out);
  messages_body(in, "phone", "svc", &out);
  op_error_message(in, CL_EINVAL);
  return 0;
}
