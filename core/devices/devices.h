// Paired devices and their authorization, and the per-device mailbox.
//
// A device pairs once and gets a random per-device secret (`device_key`, 32 random bytes as 64 hex chars,
// returned only at pairing and never stored). Its API password is the lowercase hex SHA-256 of device_key —
// what phones derive from their device.key file — and the encrypted tunnel's AES key is SHA-256 of that password.
// Only the password is kept (it is the shared secret the tunnel needs). pycloud instead derived every device's key
// from one master secret that it handed to every device.
//
// Authorization is a window (start, duration) plus a revoked flag. When a window ends or a device is revoked,
// the instances it uses are left on its behalf (`instance.stop` with its device_id, so shared instances only
// lose one user); a timer per device does this, re-armed at start-up from the store.
//
// Operations: device.pair, device.list, device.get, device.revoke, device.unpair, device.auth, device.attach,
// one method each; the mailbox's message.post and message.fetch are in mailbox.h (see core/ops/README.md).
// pair, revoke, unpair and auth are privileged (CL_OP_F_PRIVILEGED: plugins need a grant). Manager routes:
// POST/GET /manager/api/devices, POST /manager/api/devices/{id}/revoke, DELETE /manager/api/devices/{id}.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.h"
#include "devices/mailbox.h"
#include "ops/operations.h"

namespace cloudlet {

class Loop;
class EventBus;

class Devices {
 public:
  Devices(Loop& loop, Store& store, Operations& ops, EventBus& events);
  ~Devices();

  // Registers the operations, re-arms expiry timers from the store (leaving instances of devices whose window
  // ended while the server was down). Call once after the store is open.
  void start();
  void stop();

  static bool valid_device_id(std::string_view id);
  static bool valid_service_id(std::string_view id);

 private:
  // The operations (arguments and results: core/ops/README.md).
  void pair(std::string_view args, Operations::Reply reply);
  void list(std::string_view args, Operations::Reply reply);
  void get(std::string_view args, Operations::Reply reply);
  void auth(std::string_view args, Operations::Reply reply);
  void revoke(std::string_view args, Operations::Reply reply);
  void unpair(std::string_view args, Operations::Reply reply);
  void attach(std::string_view args, Operations::Reply reply);

  void arm(const std::string& device_id, int64_t end_ms);
  void disarm(const std::string& device_id);
  void leave_instances(const std::string& device_id, const std::vector<std::string>& instances, const char* why);
  void on_instance_state(std::string_view payload);

  Loop& loop_;
  Store& store_;
  Operations& ops_;
  EventBus& events_;
  std::map<std::string, uint64_t> timers_;  // device id -> expiry timer
  uint64_t sub_ = 0;
  Mailbox mailbox_;
};

}  // namespace cloudlet
