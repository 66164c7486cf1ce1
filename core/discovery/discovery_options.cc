#include "discovery/discovery_options.h"

#include <fmt/format.h>
#include <unistd.h>

#include <climits>
#include <set>

#include "text/utf8.h"

namespace cloudlet {

namespace {

constexpr size_t kMaxLabel = 63;  // one DNS label
constexpr uint32_t kMaxRetryMs = 3600 * 1000;

std::string txt_key(const std::string& entry) { return entry.substr(0, entry.find('=')); }

std::string lower(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace

bool discovery_name_valid(const std::string& name) {
  if (name.empty() || name.size() > kMaxLabel) return false;
  for (size_t i = 0; i < name.size();) {
    auto c = static_cast<unsigned char>(name[i]);
    if (c < 0x20 || c == 0x7F) return false;
    size_t n = cloudlet::text::utf8_sequence_length(name, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string discovery_default_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "cloudlet";
  std::string name(buf);
  // Cut on a character boundary so a long UTF-8 host name stays valid.
  size_t end = 0;
  for (size_t i = 0; i < name.size();) {
    size_t n = cloudlet::text::utf8_sequence_length(name, i);
    if (n == 0 || i + n > kMaxLabel) break;
    i += n;
    end = i;
  }
  name.resize(end);
  return discovery_name_valid(name) ? name : "cloudlet";
}

Status discovery_options_check(const DiscoveryOptions& o) {
  auto fail = [](std::string msg) { return Status::invalid(std::move(msg)); };
  if (!o.name.empty() && !discovery_name_valid(o.name))
    return fail("discovery name must be 1..63 bytes of UTF-8 without control characters");
  if (o.port == 0) return fail("discovery port must be 1..65535");
  if (o.retry_min_ms == 0 || o.retry_max_ms < o.retry_min_ms || o.retry_max_ms > kMaxRetryMs)
    return fail(fmt::format("discovery retry delays must satisfy 0 < retry_min_ms <= retry_max_ms <= {}", kMaxRetryMs));
  if (o.extra_txt.size() > kMaxExtraTxt) return fail(fmt::format("at most {} extra TXT entries", kMaxExtraTxt));
  std::set<std::string> keys{"encryption"};
  for (const auto& entry : o.extra_txt) {
    if (entry.size() > kMaxTxtString)
      return fail(fmt::format("TXT entry longer than {} bytes: '{}...'", kMaxTxtString, entry.substr(0, 32)));
    std::string key = txt_key(entry);
    if (key.empty()) return fail(fmt::format("TXT entry '{}' has no key", entry));
    // RFC 6763 6.4: keys are printable US-ASCII without '='.
    for (char c : key)
      if (c < 0x20 || c > 0x7E) return fail(fmt::format("TXT key '{}' must be printable ASCII", key));
    if (entry.find('=') == std::string::npos) return fail(fmt::format("TXT entry '{}' must be key=value", entry));
    if (!keys.insert(lower(key)).second)
      return fail(lower(key) == "encryption"
                      ? std::string("TXT key 'encryption' is set from the API mode and cannot be configured")
                      : fmt::format("TXT key '{}' appears twice", key));
  }
  return Status();
}

std::string discovery_clean_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    size_t n = cloudlet::text::utf8_sequence_length(text, i);
    if (n == 0 || c < 0x20 || c == 0x7F) {
      out += '?';
      i += 1;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

std::vector<std::string> discovery_txt(bool encrypted, const std::vector<std::string>& extra) {
  std::vector<std::string> txt{encrypted ? "encryption=enabled" : "encryption=disabled"};
  txt.insert(txt.end(), extra.begin(), extra.end());
  return txt;
}

}  // namespace cloudlet
