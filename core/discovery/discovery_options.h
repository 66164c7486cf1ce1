// What the discovery subsystem publishes and browses, and the checks on it (config values are input).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "system/status.h"

namespace cloudlet {

struct DiscoveryOptions {
  bool enabled = true;  // false: no avahi client at all
  bool publish = true;  // advertise _cloudlet._tcp
  bool browse = true;   // track other cloudlets
  // Service instance name. Empty means the host name. Phones take the LAST space-separated word as the
  // cloudlet's name and look up their pairing credentials by it, so it should have no spaces.
  std::string name;
  uint16_t port = 9999;    // the api listener's port
  bool encrypted = false;  // API mode: TXT "encryption=enabled" or "encryption=disabled"
  // More TXT strings ("key=value"). Off by default: phones read one arbitrary TXT entry, so any extra
  // entry can make them misread the encryption mode.
  std::vector<std::string> extra_txt;
  // Reconnect back-off when the D-Bus system bus is unreachable (a missing avahi-daemon on a running bus is
  // noticed at once through the bus, without polling).
  uint32_t retry_min_ms = 1000;
  uint32_t retry_max_ms = 5000;
};

// The service type, as phones and pycloud browse it.
inline constexpr const char* kCloudletServiceType = "_cloudlet._tcp";

// Limits on configured TXT extras (a DNS TXT string holds 255 bytes; the record must fit one packet).
inline constexpr size_t kMaxExtraTxt = 16;
inline constexpr size_t kMaxTxtString = 255;

// Success if the options are usable; otherwise CL_EINVAL with one message naming the bad value.
Status discovery_options_check(const DiscoveryOptions& options);

// The name published when none is configured: the host name (gethostname), cut to 63 bytes on a UTF-8
// boundary; "cloudlet" if the host name is unusable.
std::string discovery_default_name();

// True if `name` can be a DNS-SD instance name: 1..63 bytes of UTF-8 without control characters.
bool discovery_name_valid(const std::string& name);

// Text from the network (peer names, host names) made safe to log and to put in JSON: every byte that is
// not part of valid UTF-8, and every control character, becomes '?'.
std::string discovery_clean_text(std::string_view text);

// The TXT strings to publish: "encryption=enabled|disabled" first, then the extras in order.
std::vector<std::string> discovery_txt(bool encrypted, const std::vector<std::string>& extra);

}  // namespace cloudlet
