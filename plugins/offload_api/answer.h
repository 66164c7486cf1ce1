// Sends a command's Answer: as is on the open routes, or through the tunnel (a 200 body encrypted with a fresh
// IV; errors in clear, because the phone never decrypts them).
#pragma once

#include "cloudlet_plugin.h"
#include "commands.h"
#include "tunnel.h"

namespace cloudlet::offload {

struct Plugin;

// The largest APK sent through the tunnel (it is read and encrypted in memory on a worker thread).
constexpr uint64_t kMaxSealedFileBytes = 64ull << 20;

void answer_send(Plugin& p, cl_request_t* req, Answer a);
void answer_send_sealed(Plugin& p, cl_request_t* req, Answer a, const TunnelKey& key);

}  // namespace cloudlet::offload
