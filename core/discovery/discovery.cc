#include "discovery/discovery.h"

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/address.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>
#include <net/if.h>

#include <cstring>

#include "log/log.h"

namespace cloudlet {

namespace {

constexpr const char* kLog = "discovery";
constexpr size_t kMaxItems = 256;            // browse results tracked at once; a network rarely has more
constexpr int kMaxLocalRenames = 32;         // alternatives tried for names taken on this very host
constexpr uint64_t kSlowCallMs = 20;         // a D-Bus round trip to avahi-daemon slower than this is logged
constexpr uint64_t kResolveRetryMs = 5000;   // re-resolve items whose resolution failed
constexpr uint64_t kRepublishRetryMs = 2000; // after a failed registration

std::string interface_name(AvahiIfIndex index) {
  char buf[IF_NAMESIZE] = {};
  if (index >= 0 && if_indextoname(static_cast<unsigned>(index), buf)) return buf;
  return std::to_string(index);
}

// The value of the "encryption" TXT key is "enabled" (what phones check; anything else means off).
bool txt_encryption(AvahiStringList* txt) {
  AvahiStringList* item = avahi_string_list_find(txt, "encryption");
  if (!item) return false;
  char* key = nullptr;
  char* value = nullptr;
  if (avahi_string_list_get_pair(item, &key, &value, nullptr) < 0) return false;
  bool on = value && std::strcmp(value, "enabled") == 0;
  avahi_free(key);
  avahi_free(value);
  return on;
}

const char* client_error(AvahiClient* c) { return avahi_strerror(avahi_client_errno(c)); }

}  // namespace

AvahiStringList* discovery_txt_record(bool encrypted, const std::vector<std::string>& extra) {
  std::vector<std::string> txt = discovery_txt(encrypted, extra);
  std::vector<const char*> ptrs;
  for (const auto& s : txt) ptrs.push_back(s.c_str());
  // Avahi keeps string lists newest first and reverses them when it serialises the record (and the client
  // library when it sends them to the daemon), so the array's order is the order on the wire.
  return avahi_string_list_new_from_array(ptrs.data(), static_cast<int>(ptrs.size()));
}

struct Discovery::Item {
  Discovery* owner;
  ItemKey key;
  AvahiServiceResolver* resolver = nullptr;
};

struct Discovery::Glue {
  static void client(AvahiClient* c, AvahiClientState state, void* self) {
    static_cast<Discovery*>(self)->client_state(c, state);
  }
  static void group(AvahiEntryGroup*, AvahiEntryGroupState state, void* self) {
    static_cast<Discovery*>(self)->group_state(state);
  }
  static void browse(AvahiServiceBrowser*, AvahiIfIndex interface, AvahiProtocol protocol, AvahiBrowserEvent event,
                     const char* name, const char* type, const char* domain, AvahiLookupResultFlags flags,
                     void* userdata);
  static void resolve(AvahiServiceResolver* r, AvahiIfIndex interface, AvahiProtocol protocol,
                      AvahiResolverEvent event, const char* name, const char* type, const char* domain,
                      const char* host, const AvahiAddress* address, uint16_t port, AvahiStringList* txt,
                      AvahiLookupResultFlags flags, void* item);
};

Discovery::Discovery(Loop& loop, DiscoveryOptions options)
    : loop_(loop),
      options_(std::move(options)),
      peers_([this](const Peer& peer, bool present) {
        if (present)
          log::info(kLog, "peer '{}' at {} ({}) port {} encryption={} on {}", peer.name, peer.host,
                    fmt::join(peer.addresses, ", "), peer.port, peer.encryption ? "enabled" : "disabled",
                    peer.interface);
        else
          log::info(kLog, "peer '{}' on {} is gone", peer.name, peer.interface);
        if (on_peer_ && !stopping_) on_peer_(peer, present);
      }) {}

Discovery::~Discovery() {
  stopping_ = true;
  if (retry_timer_) loop_.timer_stop(retry_timer_);
  if (resolve_timer_) loop_.timer_stop(resolve_timer_);
  drop_client();
}

Status Discovery::start() {
  if (started_) return Status();
  if (Status problem = discovery_options_check(options_); !problem.ok()) return problem;
  started_ = true;
  if (!options_.enabled) {
    log::info(kLog, "zeroconf disabled by configuration");
    return Status();
  }
  name_ = options_.name.empty() ? discovery_default_name() : options_.name;
  if (name_.find(' ') != std::string::npos)
    log::warn(kLog, "instance name '{}' has spaces: phones take only its last word as the cloudlet's name",
              name_);
  if (options_.extra_txt.size() > 0)
    log::warn(kLog, "publishing {} extra TXT entries: phones read one arbitrary TXT entry and may misread "
              "the encryption mode", options_.extra_txt.size());
  start_ms_ = loop_.now_ms();
  retry_ms_ = options_.retry_min_ms;
  poll_ = std::make_unique<AvahiUvPoll>(loop_);
  connect();
  return Status();
}

void Discovery::stop(std::function<void()> done) {
  if (done) stop_waiters_.push_back(std::move(done));
  if (stopping_ && poll_) return;  // a teardown is already under way; done joins it
  stopping_ = true;
  if (retry_timer_) loop_.timer_stop(retry_timer_);
  if (resolve_timer_) loop_.timer_stop(resolve_timer_);
  retry_timer_ = resolve_timer_ = 0;
  // Free the client from a clean stack: stop() may run inside an avahi callback (a peer change).
  std::weak_ptr<bool> alive = alive_;
  loop_.defer([this, alive] {
    if (alive.expired()) return;
    drop_client();
    auto finish = [this, alive] {
      if (alive.expired()) return;
      auto waiters = std::move(stop_waiters_);
      stop_waiters_.clear();
      for (auto& fn : waiters) fn();
    };
    if (poll_) poll_->when_closed(finish);
    else finish();
  });
}

void Discovery::later(std::function<void()> fn) {
  std::weak_ptr<bool> alive = alive_;
  loop_.defer([this, alive, fn = std::move(fn)] {
    if (!alive.expired() && !stopping_) fn();
  });
}

void Discovery::after_call(uint64_t started_ns, const char* what) {
  uint64_t us = (uv_hrtime() - started_ns) / 1000;
  if (us >= kSlowCallMs * 1000)
    log::warn(kLog, "avahi-daemon took {} ms to answer {} (the loop waited)", us / 1000, what);
  else
    log::trace(kLog, "avahi-daemon answered {} in {} us", what, us);
}

// ---- client ------------------------------------------------------------------------------------------------

void Discovery::connect() {
  int err = 0;
  uint64_t t0 = uv_hrtime();
  AvahiClient* c = avahi_client_new(poll_->api(), AVAHI_CLIENT_NO_FAIL, Glue::client, this, &err);
  after_call(t0, "the connection");
  if (!c) {
    // Only the bus itself is missing here (a missing daemon is waited for): keep polling for it.
    client_ = nullptr;
    group_ = nullptr;
    browser_ = nullptr;
    items_.clear();
    if (!bus_warned_) {
      log::warn(kLog, "cannot reach avahi-daemon over the D-Bus system bus ({}); retrying every {}..{} ms",
                avahi_strerror(err), options_.retry_min_ms, options_.retry_max_ms);
      bus_warned_ = true;
    } else {
      log::debug(kLog, "D-Bus system bus still unreachable ({})", avahi_strerror(err));
    }
    reconnect_later(retry_ms_);
    retry_ms_ = std::min(retry_ms_ * 2, options_.retry_max_ms);
    return;
  }
  client_ = c;
}

void Discovery::reconnect_later(uint32_t delay_ms) {
  if (stopping_ || retry_timer_) return;
  retry_timer_ = loop_.timer_start(delay_ms, 0, [this] {
    retry_timer_ = 0;
    if (stopping_) return;
    drop_client();
    connect();
  });
}

// Frees the client and everything it owns. avahi-daemon withdraws the service when the group is freed.
void Discovery::drop_client() {
  for (auto& [key, item] : items_)
    if (item->resolver) avahi_service_resolver_free(item->resolver);
  items_.clear();
  if (browser_) avahi_service_browser_free(browser_);
  browser_ = nullptr;
  if (group_) {
    uint64_t t0 = uv_hrtime();
    avahi_entry_group_free(group_);
    after_call(t0, "the withdrawal");
    if (published_) log::info(kLog, "withdrew '{}'", name_);
  }
  group_ = nullptr;
  group_filled_ = false;
  published_ = false;
  if (client_) avahi_client_free(client_);
  client_ = nullptr;
  peers_.clear(/*report=*/!stopping_);  // on shutdown the peers are not gone: nothing to report
}

void Discovery::client_state(AvahiClient* c, int state) {
  // The first call can come from inside avahi_client_new(), before it returned the pointer.
  client_ = c;
  switch (state) {
    case AVAHI_CLIENT_S_RUNNING:
      retry_ms_ = options_.retry_min_ms;
      bus_warned_ = daemon_warned_ = false;
      if (!connected_once_) log::info(kLog, "connected to avahi-daemon");
      else log::info(kLog, "avahi-daemon is back; publishing again");
      connected_once_ = true;
      publish();
      browse();
      break;
    case AVAHI_CLIENT_S_REGISTERING:
    case AVAHI_CLIENT_S_COLLISION:
      // The daemon is (re)establishing its host name: our records wait until it runs again.
      if (group_ && group_filled_) avahi_entry_group_reset(group_);
      group_filled_ = false;
      published_ = false;
      browse();
      break;
    case AVAHI_CLIENT_CONNECTING:
      retry_ms_ = options_.retry_min_ms;
      bus_warned_ = false;
      if (!daemon_warned_) log::warn(kLog, "avahi-daemon is not running; waiting for it");
      daemon_warned_ = true;
      break;
    case AVAHI_CLIENT_FAILURE: {
      // The daemon went away (or the bus did). The client is dead: free it and connect a new one, which
      // waits for the daemon to come back.
      log::warn(kLog, "lost avahi-daemon ({}); reconnecting", client_error(c));
      published_ = false;
      later([this] {
        drop_client();
        connect();
      });
      break;
    }
    default:
      break;
  }
}

// ---- publishing --------------------------------------------------------------------------------------------

void Discovery::publish() {
  if (!options_.publish || stopping_ || !client_) return;
  if (avahi_client_get_state(client_) != AVAHI_CLIENT_S_RUNNING) return;
  uint64_t t0 = uv_hrtime();
  if (!group_) {
    group_ = avahi_entry_group_new(client_, Glue::group, this);
    if (!group_) {
      log::error(kLog, "cannot create an entry group: {}", client_error(client_));
      reconnect_later(kRepublishRetryMs);
      return;
    }
  }
  if (!group_filled_) {
    if (!add_service()) return;
    if (int rc = avahi_entry_group_commit(group_); rc < 0) {
      log::error(kLog, "cannot register '{}': {}", name_, avahi_strerror(rc));
      avahi_entry_group_reset(group_);
      group_filled_ = false;
      reconnect_later(kRepublishRetryMs);
      return;
    }
    log::debug(kLog, "registering '{}' ({}, port {})", name_, kCloudletServiceType, options_.port);
  }
  after_call(t0, "the registration");
}

// Adds the service to the (empty) group, renaming while the name is taken on this host.
bool Discovery::add_service() {
  AvahiStringList* txt = discovery_txt_record(options_.encrypted, options_.extra_txt);
  int rc = 0;
  for (int i = 0; i <= kMaxLocalRenames; ++i) {
    rc = avahi_entry_group_add_service_strlst(group_, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, AvahiPublishFlags(0),
                                              name_.c_str(), kCloudletServiceType, nullptr, nullptr,
                                              options_.port, txt);
    if (rc != AVAHI_ERR_COLLISION) break;
    rename();
  }
  avahi_string_list_free(txt);
  if (rc < 0) {
    log::error(kLog, "cannot add service '{}': {}", name_, avahi_strerror(rc));
    avahi_entry_group_reset(group_);
    reconnect_later(kRepublishRetryMs);
    return false;
  }
  group_filled_ = true;
  return true;
}

void Discovery::rename() {
  char* alt = avahi_alternative_service_name(name_.c_str());
  std::string next = alt ? alt : name_ + " #2";
  avahi_free(alt);
  log::warn(kLog, "service name '{}' is already taken; using '{}'", name_, next);
  name_ = std::move(next);
}

void Discovery::group_state(int state) {
  switch (state) {
    case AVAHI_ENTRY_GROUP_ESTABLISHED:
      published_ = true;
      log::info(kLog, "published '{}' ({}, port {}, encryption={}) {} ms after start", name_, kCloudletServiceType,
                options_.port, options_.encrypted ? "enabled" : "disabled", loop_.now_ms() - start_ms_);
      break;
    case AVAHI_ENTRY_GROUP_COLLISION:
      // Another host probed or owns our name: take the next alternative and register again.
      published_ = false;
      rename();
      later([this] {
        if (!group_) return;
        avahi_entry_group_reset(group_);
        group_filled_ = false;
        publish();
      });
      break;
    case AVAHI_ENTRY_GROUP_FAILURE:
      published_ = false;
      log::error(kLog, "registering '{}' failed: {}; retrying", name_, client_ ? client_error(client_) : "?");
      later([this] {
        if (!group_) return;
        avahi_entry_group_reset(group_);
        group_filled_ = false;
        reconnect_later(kRepublishRetryMs);
      });
      break;
    default:
      break;
  }
}

void Discovery::set_encrypted(bool encrypted) {
  if (options_.encrypted == encrypted) return;
  options_.encrypted = encrypted;
  if (!group_ || !group_filled_) return;  // the next registration uses the new value
  AvahiStringList* txt = discovery_txt_record(encrypted, options_.extra_txt);
  uint64_t t0 = uv_hrtime();
  int rc = avahi_entry_group_update_service_txt_strlst(group_, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
                                                       AvahiPublishFlags(0), name_.c_str(), kCloudletServiceType,
                                                       nullptr, txt);
  after_call(t0, "the TXT update");
  avahi_string_list_free(txt);
  if (rc < 0) {
    log::warn(kLog, "cannot update the TXT record ({}); registering again", avahi_strerror(rc));
    avahi_entry_group_reset(group_);
    group_filled_ = false;
    published_ = false;
    publish();
    return;
  }
  log::info(kLog, "now publishing encryption={}", encrypted ? "enabled" : "disabled");
}

// ---- browsing ----------------------------------------------------------------------------------------------

void Discovery::browse() {
  if (!options_.browse || stopping_ || browser_ || !client_) return;
  uint64_t t0 = uv_hrtime();
  browser_ = avahi_service_browser_new(client_, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, kCloudletServiceType, nullptr,
                                       AvahiLookupFlags(0), Glue::browse, this);
  after_call(t0, "the browse request");
  if (!browser_) {
    log::error(kLog, "cannot browse {}: {}", kCloudletServiceType, client_error(client_));
    reconnect_later(kRepublishRetryMs);
  }
}

void Discovery::Glue::browse(AvahiServiceBrowser*, AvahiIfIndex interface, AvahiProtocol protocol,
                             AvahiBrowserEvent event, const char* name, const char*, const char* domain,
                             AvahiLookupResultFlags flags, void* userdata) {
  auto* self = static_cast<Discovery*>(userdata);
  switch (event) {
    case AVAHI_BROWSER_NEW: {
      if (flags & AVAHI_LOOKUP_RESULT_OUR_OWN) return;  // our own record
      ItemKey key{name, domain, interface, protocol};
      if (self->items_.count(key)) return;
      if (self->items_.size() >= kMaxItems) {
        if (!self->items_full_warned_)
          log::warn(kLog, "ignoring cloudlets beyond {} records (first: '{}')", kMaxItems,
                    discovery_clean_text(name));
        self->items_full_warned_ = true;
        return;
      }
      auto item = std::make_unique<Item>(Item{self, key});
      Item& ref = *item;
      self->items_.emplace(key, std::move(item));
      self->resolve(ref);
      break;
    }
    case AVAHI_BROWSER_REMOVE:
      self->item_remove(ItemKey{name, domain, interface, protocol});
      break;
    case AVAHI_BROWSER_FAILURE:
      log::warn(kLog, "browsing failed: {}; starting again", client_error(self->client_));
      self->later([self] {
        if (self->browser_) avahi_service_browser_free(self->browser_);
        self->browser_ = nullptr;
        for (auto& [key, item] : self->items_)
          if (item->resolver) avahi_service_resolver_free(item->resolver);
        self->items_.clear();
        self->peers_.clear();
        self->reconnect_later(kRepublishRetryMs);
      });
      break;
    case AVAHI_BROWSER_ALL_FOR_NOW:
    case AVAHI_BROWSER_CACHE_EXHAUSTED:
      break;
  }
}

void Discovery::resolve(Item& item) {
  const auto& [name, domain, interface, protocol] = item.key;
  uint64_t t0 = uv_hrtime();
  // The resolver stays open: avahi reports FOUND again whenever the record changes (port, TXT, address).
  item.resolver = avahi_service_resolver_new(client_, interface, protocol, name.c_str(), kCloudletServiceType,
                                             domain.c_str(), protocol, AvahiLookupFlags(0), Glue::resolve, &item);
  after_call(t0, "the resolve request");
  if (!item.resolver) {
    log::debug(kLog, "cannot resolve '{}': {}", discovery_clean_text(name), client_error(client_));
    resolve_later();
  }
}

void Discovery::Glue::resolve(AvahiServiceResolver* r, AvahiIfIndex interface, AvahiProtocol,
                              AvahiResolverEvent event, const char*, const char*, const char*,
                              const char* host, const AvahiAddress* address, uint16_t port, AvahiStringList* txt,
                              AvahiLookupResultFlags, void* userdata) {
  auto* item = static_cast<Item*>(userdata);
  Discovery* self = item->owner;
  const auto& [key_name, domain, key_if, key_proto] = item->key;
  if (event == AVAHI_RESOLVER_FOUND) {
    PeerRecord rec;
    rec.host = host ? host : "";
    if (address) {
      char buf[AVAHI_ADDRESS_STR_MAX] = {};
      avahi_address_snprint(buf, sizeof buf, address);
      rec.address = buf;
    }
    rec.port = port;
    rec.encryption = txt_encryption(txt);
    self->peers_.resolved(key_name, key_if, interface_name(interface), key_proto, std::move(rec));
    return;
  }
  // Failure (usually a timeout: the peer went quiet). Forget its data and try again later while the
  // browser still lists it.
  log::debug(kLog, "resolving '{}' failed: {}", discovery_clean_text(key_name), client_error(self->client_));
  avahi_service_resolver_free(r);
  item->resolver = nullptr;
  self->peers_.unresolved(key_name, key_if, key_proto);
  self->resolve_later();
}

void Discovery::resolve_later() {
  if (resolve_timer_ || stopping_) return;
  resolve_timer_ = loop_.timer_start(kResolveRetryMs, 0, [this] {
    resolve_timer_ = 0;
    if (!client_ || avahi_client_get_state(client_) != AVAHI_CLIENT_S_RUNNING) return;
    for (auto& [key, item] : items_)
      if (!item->resolver) resolve(*item);
  });
}

void Discovery::item_remove(const ItemKey& key) {
  auto it = items_.find(key);
  if (it == items_.end()) return;
  if (it->second->resolver) avahi_service_resolver_free(it->second->resolver);
  auto [name, domain, interface, protocol] = key;  // a copy: key may live in the erased item
  items_.erase(it);
  if (items_.size() < kMaxItems) items_full_warned_ = false;
  peers_.unresolved(name, interface, protocol);
}

}  // namespace cloudlet
