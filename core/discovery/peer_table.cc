#include "discovery/peer_table.h"

#include "discovery/discovery_options.h"

namespace cloudlet {

void PeerTable::resolved(const std::string& name, int ifindex, const std::string& ifname, int protocol,
                         PeerRecord record) {
  Key key{name, ifindex};
  Entry& e = entries_[key];
  e.ifname = ifname;
  e.records[protocol] = std::move(record);
  e.latest = protocol;
  settle(key);
}

void PeerTable::unresolved(const std::string& name, int ifindex, int protocol) {
  Key key{name, ifindex};
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.records.erase(protocol);
  settle(key);
}

void PeerTable::clear(bool report) {
  auto gone = std::move(entries_);
  entries_.clear();
  if (!report || !on_change_) return;
  for (auto& [key, e] : gone)
    if (e.reported) on_change_(*e.reported, false);
}

std::vector<Peer> PeerTable::list() const {
  std::vector<Peer> out;
  for (const auto& [key, e] : entries_)
    if (e.reported) out.push_back(*e.reported);
  return out;
}

// Recomputes the peer of one key from its records and reports a difference.
void PeerTable::settle(const Key& key) {
  auto it = entries_.find(key);
  Entry& e = it->second;
  if (e.records.empty()) {
    std::optional<Peer> last = std::move(e.reported);
    entries_.erase(it);  // before the callback, so list() inside it is already current
    if (last && on_change_) on_change_(*last, false);
    return;
  }
  auto latest = e.records.find(e.latest);
  const PeerRecord& main = latest != e.records.end() ? latest->second : e.records.begin()->second;
  Peer peer;
  // Names come from the network: keep them printable and valid UTF-8 for logs and JSON.
  peer.name = discovery_clean_text(key.first);
  peer.host = discovery_clean_text(main.host);
  peer.port = main.port;
  peer.encryption = main.encryption;
  peer.interface = e.ifname;
  for (const auto& [protocol, r] : e.records)
    if (!r.address.empty()) peer.addresses.push_back(r.address);
  if (e.reported && *e.reported == peer) return;
  e.reported = peer;
  if (on_change_) on_change_(peer, true);
}

}  // namespace cloudlet
