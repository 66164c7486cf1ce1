// UTF-8 as the protocols we speak define it (RFC 3629): no overlong forms, no surrogates, nothing past
// U+10FFFF. Used for DNS-SD names (discovery) and WebSocket text (http/websocket). Any thread.
#pragma once

#include <cstddef>
#include <string_view>

namespace cloudlet::text {

// Length of the valid UTF-8 sequence starting at s[i] (i < s.size()), or 0 if none starts there.
size_t utf8_sequence_length(std::string_view s, size_t i);

// True if all of s is valid UTF-8.
bool utf8_valid(std::string_view s);

}  // namespace cloudlet::text
