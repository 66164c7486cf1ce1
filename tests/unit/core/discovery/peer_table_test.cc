#include "discovery/peer_table.h"

#include <gtest/gtest.h>

#include <vector>

using cloudlet::Peer;
using cloudlet::PeerRecord;
using cloudlet::PeerTable;

namespace {

constexpr int kV4 = 0, kV6 = 1;  // avahi's AVAHI_PROTO_INET / AVAHI_PROTO_INET6

struct Event {
  Peer peer;
  bool present;
};

PeerRecord rec(std::string address, uint16_t port = 9999, bool encryption = false, std::string host = "b.local") {
  return PeerRecord{std::move(host), std::move(address), port, encryption};
}

}  // namespace

TEST(PeerTable, FoundChangedAndLost) {
  std::vector<Event> events;
  PeerTable table([&](const Peer& p, bool present) { events.push_back({p, present}); });

  table.resolved("lab", 3, "veth0", kV4, rec("10.0.0.2"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].present);
  EXPECT_EQ(events[0].peer.name, "lab");
  EXPECT_EQ(events[0].peer.host, "b.local");
  EXPECT_EQ(events[0].peer.addresses, std::vector<std::string>{"10.0.0.2"});
  EXPECT_EQ(events[0].peer.port, 9999);
  EXPECT_FALSE(events[0].peer.encryption);
  EXPECT_EQ(events[0].peer.interface, "veth0");

  // The same data again (avahi re-reports on cache refresh): no event.
  table.resolved("lab", 3, "veth0", kV4, rec("10.0.0.2"));
  EXPECT_EQ(events.size(), 1u);

  // IPv6 arrives first in time but sorts after IPv4.
  table.resolved("lab", 3, "veth0", kV6, rec("fe80::1"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].peer.addresses, (std::vector<std::string>{"10.0.0.2", "fe80::1"}));

  // TXT change: encryption turned on.
  table.resolved("lab", 3, "veth0", kV4, rec("10.0.0.2", 9999, true));
  ASSERT_EQ(events.size(), 3u);
  EXPECT_TRUE(events[2].peer.encryption);
  EXPECT_TRUE(events[2].present);

  table.unresolved("lab", 3, kV6);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[3].peer.addresses, std::vector<std::string>{"10.0.0.2"});
  EXPECT_EQ(table.list().size(), 1u);

  table.unresolved("lab", 3, kV4);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_FALSE(events[4].present);
  EXPECT_EQ(events[4].peer.name, "lab");
  EXPECT_TRUE(table.list().empty());
  EXPECT_EQ(table.size(), 0u);
}

TEST(PeerTable, SameNameOnTwoInterfacesIsTwoPeers) {
  int found = 0;
  PeerTable table([&](const Peer&, bool present) { found += present; });
  table.resolved("lab", 3, "eth0", kV4, rec("10.0.0.2"));
  table.resolved("lab", 4, "wlan0", kV4, rec("192.168.1.2"));
  EXPECT_EQ(found, 2);
  auto peers = table.list();
  ASSERT_EQ(peers.size(), 2u);
  EXPECT_NE(peers[0].interface, peers[1].interface);
}

TEST(PeerTable, UnknownItemsAndUnresolvedNeverReport) {
  int calls = 0;
  PeerTable table([&](const Peer&, bool) { calls++; });
  table.unresolved("ghost", 1, kV4);
  EXPECT_EQ(calls, 0);
  table.clear();
  EXPECT_EQ(calls, 0);
}

TEST(PeerTable, ClearReportsEveryPeerLostAndListIsCurrentInCallbacks) {
  std::vector<std::string> lost;
  PeerTable* t = nullptr;
  PeerTable table([&](const Peer& p, bool present) {
    if (!present) {
      lost.push_back(p.name);
      EXPECT_TRUE(t->list().empty());
    }
  });
  t = &table;
  table.resolved("a", 1, "e", kV4, rec("10.0.0.2"));
  table.resolved("b", 1, "e", kV4, rec("10.0.0.3"));
  table.clear();
  EXPECT_EQ(lost, (std::vector<std::string>{"a", "b"}));
}

TEST(PeerTable, NetworkNamesAreCleaned) {
  std::vector<Event> events;
  PeerTable table([&](const Peer& p, bool present) { events.push_back({p, present}); });
  table.resolved("evil\nname\xff", 1, "e", kV4, rec("10.0.0.2", 9999, false, "h\x1b.local"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].peer.name, "evil?name?");
  EXPECT_EQ(events[0].peer.host, "h?.local");
  table.unresolved("evil\nname\xff", 1, kV4);  // still keyed by the raw name
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[1].present);
}

TEST(PeerTable, ClearWithoutReportIsSilent) {
  int calls = 0;
  PeerTable table([&](const Peer&, bool present) { calls += present ? 0 : 1; });
  table.resolved("a", 1, "e", kV4, rec("10.0.0.2"));
  table.clear(false);
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(table.list().empty());
}

TEST(PeerTable, PortAndHostFollowTheLatestResolution) {
  std::vector<Event> events;
  PeerTable table([&](const Peer& p, bool present) { events.push_back({p, present}); });
  table.resolved("lab", 1, "e", kV4, rec("10.0.0.2", 9999));
  table.resolved("lab", 1, "e", kV4, rec("10.0.0.2", 10000, false, "b2.local"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].peer.port, 10000);
  EXPECT_EQ(events[1].peer.host, "b2.local");
}
