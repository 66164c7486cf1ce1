// Other cloudlets seen by browsing, kept current. Avahi reports one browse item per (name, interface,
// protocol); a peer is one (name, interface) with the addresses of all its resolved items. The table turns
// item events into peer changes: found or changed (present = true) and lost (present = false).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cloudlet {

struct Peer {
  std::string name;                    // service instance name, e.g. "lab-cloudlet"
  std::string host;                    // host name (fqdn), e.g. "lab-cloudlet.local"
  std::vector<std::string> addresses;  // IPv4 before IPv6
  uint16_t port = 0;
  bool encryption = false;  // TXT encryption=enabled
  std::string interface;    // interface it was seen on, e.g. "eth0"

  bool operator==(const Peer&) const = default;
};

// One resolved browse item.
struct PeerRecord {
  std::string host;
  std::string address;
  uint16_t port = 0;
  bool encryption = false;
};

class PeerTable {
 public:
  // present = true: the peer is new or its data changed; false: it is gone (the last data is passed).
  using Change = std::function<void(const Peer&, bool present)>;

  explicit PeerTable(Change on_change) : on_change_(std::move(on_change)) {}

  // An item was resolved, or resolved again with new data. `protocol` orders addresses (lower first).
  void resolved(const std::string& name, int ifindex, const std::string& ifname, int protocol, PeerRecord record);
  // An item disappeared or its resolution failed.
  void unresolved(const std::string& name, int ifindex, int protocol);
  // Everything is gone (the avahi client was lost): each present peer is reported lost, if `report`.
  void clear(bool report = true);

  std::vector<Peer> list() const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string ifname;
    std::map<int, PeerRecord> records;  // by protocol
    int latest = 0;                     // protocol of the most recently resolved record: host, port, TXT
    std::optional<Peer> reported;
  };
  using Key = std::pair<std::string, int>;  // (name, ifindex)

  void settle(const Key& key);

  Change on_change_;
  std::map<Key, Entry> entries_;
};

}  // namespace cloudlet
