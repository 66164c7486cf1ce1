// Zeroconf on the core loop: publishes this cloudlet as _cloudlet._tcp through avahi-daemon and tracks the
// other cloudlets on the network.
//
// Phones parse the record strictly (see ../shared/reference/mobile-clients.md 2.2): the instance name's last
// space-separated word is the cloudlet's name, and the TXT record must hold exactly one string,
// "encryption=enabled" or "encryption=disabled". Extra TXT strings are published only when configured.
//
// Robustness: a missing avahi-daemon or D-Bus never stops cloudletd. The client waits for the daemon
// (AVAHI_CLIENT_NO_FAIL), reconnects when it restarts and publishes again; a name taken on the network is
// replaced by avahi's alternative ("name #2") and logged.
//
// Blocking note: avahi-client makes its method calls (entry group, browser, resolver create/free) as
// synchronous D-Bus round trips to the local daemon, typically well under a millisecond; slow answers are
// logged. There is no asynchronous variant of these calls in avahi-client.
//
// Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "discovery/avahi_poll.h"
#include "discovery/discovery_options.h"
#include "discovery/peer_table.h"
#include "loop/loop.h"

struct AvahiClient;
struct AvahiEntryGroup;
struct AvahiStringList;
struct AvahiServiceBrowser;
struct AvahiServiceResolver;

namespace cloudlet {

// The TXT record as published: discovery_txt(encrypted, extra) as an Avahi string list, "encryption=..." first
// on the wire whatever the extras (phones that read one TXT string split the first on '='). The caller frees it
// with avahi_string_list_free.
AvahiStringList* discovery_txt_record(bool encrypted, const std::vector<std::string>& extra);

class Discovery {
 public:
  // present = true: a peer appeared or its data changed; false: it disappeared.
  using PeerChange = std::function<void(const Peer& peer, bool present)>;

  Discovery(Loop& loop, DiscoveryOptions options);
  // Without a completed stop(): withdraws and frees everything synchronously (never call it from inside a
  // Discovery callback); the handles finish closing on the loop (Loop::close()).
  ~Discovery();
  Discovery(const Discovery&) = delete;
  Discovery& operator=(const Discovery&) = delete;

  // Checks the options and starts publishing/browsing. Fails (CL_EINVAL) only for bad options: an absent
  // avahi-daemon or system bus is not an error, it is retried. Does nothing if disabled.
  Status start();

  // Withdraws the service, stops browsing, frees the avahi client, then calls done() once every handle has
  // closed. No peer callbacks are made after stop() is called. Safe from inside a peer callback.
  void stop(std::function<void()> done);

  // The API mode changed: publishes the new "encryption=" TXT string.
  void set_encrypted(bool encrypted);

  // Called on the loop for every peer change. peers() is already current when it runs.
  void on_peer_change(PeerChange cb) { on_peer_ = std::move(cb); }
  std::vector<Peer> peers() const { return peers_.list(); }

  // The instance name being published: the configured (or default) one, or its alternative after a collision.
  const std::string& name() const { return name_; }
  // True while avahi-daemon confirms the service is registered on the network.
  bool published() const { return published_; }
  const DiscoveryOptions& options() const { return options_; }

 private:
  struct Item;  // one browse result being resolved
  using ItemKey = std::tuple<std::string, std::string, int, int>;  // name, domain, interface, protocol

  struct Glue;  // the avahi C callbacks (defined with avahi's types in discovery.cc)

  void client_state(AvahiClient* c, int state);
  void group_state(int state);
  void connect();
  void reconnect_later(uint32_t delay_ms);
  void drop_client();
  void publish();
  bool add_service();
  void rename();
  void browse();
  void resolve(Item& item);
  void resolve_later();
  void item_remove(const ItemKey& key);
  void after_call(uint64_t started_ns, const char* what);
  // Runs fn on a clean stack later, unless this object is gone or stopping by then.
  void later(std::function<void()> fn);

  Loop& loop_;
  DiscoveryOptions options_;
  std::string name_;
  std::unique_ptr<AvahiUvPoll> poll_;
  AvahiClient* client_ = nullptr;
  AvahiEntryGroup* group_ = nullptr;
  bool group_filled_ = false;
  AvahiServiceBrowser* browser_ = nullptr;
  std::map<ItemKey, std::unique_ptr<Item>> items_;
  PeerTable peers_;
  PeerChange on_peer_;
  std::vector<std::function<void()>> stop_waiters_;
  bool started_ = false;
  bool stopping_ = false;
  bool published_ = false;
  bool connected_once_ = false;
  bool bus_warned_ = false;     // logged once until connected again
  bool daemon_warned_ = false;
  bool items_full_warned_ = false;
  uint32_t retry_ms_ = 0;
  Loop::TimerId retry_timer_ = 0;
  Loop::TimerId resolve_timer_ = 0;
  uint64_t start_ms_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace cloudlet
