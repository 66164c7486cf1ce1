// The WebSocket decoder (core/http/websocket.h) on arbitrary client bytes. Beyond "no crash": decoding the
// input whole and in small pieces gives the same events (reads split frames anywhere), text messages are
// valid UTF-8, no message exceeds the bound, control payloads stay within 125 bytes, nothing follows the
// final close or error, and every error carries a code a server may send.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "http/websocket.h"
#include "text/utf8.h"

namespace ws = cloudlet::http::ws;
using Event = ws::Decoder::Event;

namespace {

constexpr uint64_t kMax = 4096;

void check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "websocket_fuzz: %s\n", what);
    abort();
  }
}

std::vector<Event> decode(std::string_view bytes, size_t piece) {
  ws::Decoder d(kMax);
  std::vector<Event> out;
  auto emit = [&](Event&& e) {
    check(!d.done() || e.kind == Event::close || e.kind == Event::error, "event after the end");
    out.push_back(std::move(e));
  };
  for (size_t i = 0; i < bytes.size(); i += piece) d.feed(bytes.substr(i, piece), emit);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t piece = 1 + data[0] % 7;  // the first byte chooses how reads split the rest
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<Event> whole = decode(bytes, bytes.size() + 1);
  std::vector<Event> split = decode(bytes, piece);
  check(whole.size() == split.size(), "split reads change the number of events");
  for (size_t i = 0; i < whole.size(); i++) {
    const Event& a = whole[i];
    const Event& b = split[i];
    check(a.kind == b.kind && a.type == b.type && a.data == b.data && a.code == b.code,
          "split reads change an event");
    switch (a.kind) {
      case Event::message:
        check(a.data.size() <= kMax, "message over the bound");
        check(a.type != ws::kText || cloudlet::text::utf8_valid(a.data), "text message not UTF-8");
        break;
      case Event::ping:
      case Event::pong:
        check(a.data.size() <= ws::kMaxControlPayload, "control payload over 125 bytes");
        break;
      case Event::close:
        check(i + 1 == whole.size(), "an event after close");
        check(a.code == ws::kNoStatus || ws::close_code_valid(a.code), "close with an invalid code");
        break;
      case Event::error:
        check(i + 1 == whole.size(), "an event after an error");
        check(a.code == ws::kProtocolError || a.code == ws::kInvalidData || a.code == ws::kTooBig,
              "error with an unexpected close code");
        break;
    }
  }
  return 0;
}
