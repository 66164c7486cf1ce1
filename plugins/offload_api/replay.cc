#include "replay.h"

#include <cstring>
#include <vector>

namespace cloudlet::offload {

namespace {

constexpr size_t kBlock = 16;

// A block's 64-bit fingerprint. Ciphertext blocks of honest commands are uniformly random under the key, so a
// false match between two of them is a 2^-64 event; a reused block always matches itself.
uint64_t fingerprint(const char* block) {
  uint64_t a, b;
  std::memcpy(&a, block, 8);
  std::memcpy(&b, block + 8, 8);
  return a ^ (b * 0x9e3779b97f4a7c15ull);
}

}  // namespace

ReplayCache::ReplayCache(size_t max_blocks_per_device, size_t max_blocks, size_t max_devices)
    : max_per_device_(max_blocks_per_device ? max_blocks_per_device : 1),
      max_blocks_(max_blocks ? max_blocks : 1),
      max_devices_(max_devices ? max_devices : 1) {}

size_t ReplayCache::blocks_of(const std::string& device) const {
  auto it = devices_.find(device);
  return it == devices_.end() ? 0 : it->second.order.size();
}

void ReplayCache::drop_oldest(Device& d) {
  d.seen.erase(d.order.front());
  d.order.pop_front();
  blocks_--;
}

ReplayCache::Device* ReplayCache::largest(Device* preferred) {
  Device* best = preferred;
  for (auto& [id, d] : devices_) {
    if (!best || d.order.size() > best->order.size()) best = &d;
  }
  return best;
}

void ReplayCache::forget_least_recent() {
  auto victim = devices_.begin();
  for (auto it = devices_.begin(); it != devices_.end(); ++it) {
    if (it->second.last_use < victim->second.last_use) victim = it;
  }
  blocks_ -= victim->second.order.size();
  devices_.erase(victim);
}

bool ReplayCache::admit(const std::string& device, uint64_t key_id, std::string_view ciphertext) {
  std::vector<uint64_t> prints;
  prints.reserve(ciphertext.size() / kBlock);
  for (size_t at = 0; at + kBlock <= ciphertext.size(); at += kBlock) prints.push_back(fingerprint(&ciphertext[at]));

  auto it = devices_.find(device);
  if (it != devices_.end() && it->second.key_id != key_id) {  // re-paired: the old captures no longer decrypt
    blocks_ -= it->second.order.size();
    devices_.erase(it);
    it = devices_.end();
  }
  if (it != devices_.end()) {
    for (uint64_t p : prints) {
      if (it->second.seen.count(p)) return false;
    }
  } else {
    if (devices_.size() >= max_devices_) forget_least_recent();
    it = devices_.emplace(device, Device{}).first;
    it->second.key_id = key_id;
  }
  Device& d = it->second;
  d.last_use = ++clock_;
  for (uint64_t p : prints) {
    if (!d.seen.insert(p).second) continue;  // repeated within this command
    d.order.push_back(p);
    blocks_++;
    if (d.order.size() > max_per_device_) drop_oldest(d);
    if (blocks_ > max_blocks_) drop_oldest(*largest(&d));
  }
  return true;
}

}  // namespace cloudlet::offload
