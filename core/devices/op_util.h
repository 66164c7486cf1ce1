// Small helpers the device and mailbox operations share (core/devices only).
#pragma once

#include <string>
#include <string_view>

#include "json/json.h"
#include "ops/operations.h"

namespace cloudlet {

class Store;

namespace devices {

// An operation's arguments (Operations::call has already checked they are a JSON object).
json::Document args_of(std::string_view args);

// At most max bytes, no control characters.
bool printable(std::string_view s, size_t max);

// Writes one document and answers `answer` once it is durable (pairing, revocation and messages must survive a
// crash); answers the store's error otherwise.
void put_durable(Store& store, std::string_view coll, std::string_view key, const std::string& value,
                 Operations::Reply reply, std::string answer);

}  // namespace devices
}  // namespace cloudlet
