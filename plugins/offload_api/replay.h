// Refusing replayed tunnel commands. The protocol (mobile-clients.md 1.3) has no MAC, nonce or timestamp, but
// client-lib encrypts every command with a fresh random IV, so the ciphertext blocks of honest commands never
// repeat. Whoever captured a command can send it again (a replay), flip bits of its IV to turn its first block
// into another command (same ciphertext blocks), or start from one of its later blocks behind an IV of their
// choosing (a first block they control, the rest of the captured text after it). All of these reuse ciphertext
// blocks the device already sent, so this cache remembers, per device, the blocks of the commands it accepted
// and refuses any command that reuses one of them.
//
// Bounded in count and memory: at most max_blocks_per_device blocks per device (a command has 2-6 blocks, so
// the device's last ~1,000 commands), max_blocks in all (about 48 bytes each: 3 MiB by default), and
// max_devices devices (least recently used forgotten first). The oldest blocks go first; when the total is full
// the device holding the most gives up its oldest, so a device sending many commands pushes out its own history
// before anyone else's. A device's entries are dropped when its key changes (re-paired: captures made under the
// old key no longer decrypt). A capture older than what the cache holds can be replayed; README.md ("The
// tunnel") lists this and the protocol's other limits.
//
// Loop thread only (the tunnel route runs there).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace cloudlet::offload {

class ReplayCache {
 public:
  static constexpr size_t kMaxBlocksPerDevice = 4096;
  static constexpr size_t kMaxBlocks = 65536;
  static constexpr size_t kMaxDevices = 1024;

  explicit ReplayCache(size_t max_blocks_per_device = kMaxBlocksPerDevice, size_t max_blocks = kMaxBlocks,
                       size_t max_devices = kMaxDevices);

  // ciphertext: a decrypted command's blocks after its IV (whole 16-byte blocks); key_id: tunnel_key_id of the
  // device's key. True when none of the blocks was seen from this device under this key; they are then
  // remembered. False, changing nothing, when the command reuses one.
  bool admit(const std::string& device, uint64_t key_id, std::string_view ciphertext);

  size_t blocks() const { return blocks_; }
  size_t devices() const { return devices_.size(); }
  size_t blocks_of(const std::string& device) const;

 private:
  struct Device {
    uint64_t key_id = 0;
    uint64_t last_use = 0;
    std::deque<uint64_t> order;          // fingerprints, oldest first
    std::unordered_set<uint64_t> seen;   // the same fingerprints, for lookup
  };
  void drop_oldest(Device& d);
  Device* largest(Device* preferred);
  void forget_least_recent();

  size_t max_per_device_, max_blocks_, max_devices_;
  std::unordered_map<std::string, Device> devices_;
  size_t blocks_ = 0;
  uint64_t clock_ = 0;
};

}  // namespace cloudlet::offload
