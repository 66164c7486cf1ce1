// The per-device mailbox: messages a service (or the operator) leaves for one device's app, fetched by the phone
// (pycloud's /api/message; ../shared/reference/pycloud-security.md on the mailbox messages).
//
// Messages are stored in the "messages" collection under "<device>/<service>/<time><seq>", so a fetch returns
// them in the order they were posted. A fetch marks what it returns read in the same transaction; read messages
// are deleted a week later, by the next fetch that sees them. A message posted with "secret": true (it carries
// credentials) is only handed out on the device's authenticated channel (fetch with "secure": true, which the
// encrypted tunnel sets); the open API never sees it.
//
// Operations: message.post, message.fetch (core/ops/README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ops/operations.h"
#include "store/store.h"

namespace cloudlet {

class Mailbox {
 public:
  Mailbox(Store& store, Operations& ops) : store_(store), ops_(ops) {}
  // Registers the operations. Call once after the store is open.
  void start();

 private:
  void post(std::string_view args, Operations::Reply reply);
  void fetch(std::string_view args, Operations::Reply reply);

  Store& store_;
  Operations& ops_;
  uint64_t seq_ = 0;  // orders messages posted within one millisecond
};

// Deletes every message of a device inside txn (unpairing). Returns how many.
size_t mailbox_delete_device(Store& store, Store::Txn& txn, const std::string& device_id);

}  // namespace cloudlet
