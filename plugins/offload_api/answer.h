// Sends a command's Answer: as is on the open routes, or through the tunnel (a 200 body encrypted with a fresh
// IV; errors in clear, because the phone never decrypts them, and with fixed texts, because the protocol has no
// MAC: a command forged from a captured one must not get its decrypted bytes quoted back).
#pragma once

#include "cloudlet_plugin.h"
#include "commands.h"
#include "tunnel.h"

namespace cloudlet::offload {

struct Plugin;

// The largest APK sent through the tunnel (it is read and encrypted in memory on a worker thread).
constexpr uint64_t kMaxSealedFileBytes = 64ull << 20;

void answer_send(Plugin& p, cl_request_t* req, Answer a);
// Errors go in clear, and those without fixed_text get sealed_error_text(status) instead of their own text.
void answer_send_sealed(Plugin& p, cl_request_t* req, Answer a, const TunnelKey& key);

// The fixed text of a tunnel error for its status: never a byte of the command.
const char* sealed_error_text(uint32_t status);

}  // namespace cloudlet::offload
