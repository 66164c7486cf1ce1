// Live events for browsers: GET /manager/api/events streams the event bus as Server-Sent Events.
//
//   GET /manager/api/events?topics=instance.*,job.*     (default: every topic)
//   -> event: instance.state
//      data: {"id":"...","state":"running"}
//
// Each stream subscribes to the bus for its topics and ends when the client leaves or the server shuts down
// (close_all). A comment line every 15 s keeps proxies from timing the stream out and lets a dead client be
// noticed. Streams are capped (503 beyond the cap) so a page opened in many tabs cannot exhaust the server.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>

struct cl_request_s;

namespace cloudlet {

class Loop;
class EventBus;
namespace http {
class Server;
}

class EventStreams {
 public:
  EventStreams(Loop& loop, EventBus& bus, size_t max_streams = 64);
  ~EventStreams();
  // Adds the route on the listener named `listener` (when it exists).
  void add_route(http::Server& server, const char* listener = "manager");
  // Ends every open stream (graceful shutdown: a stream would otherwise hold its connection open).
  void close_all();
  size_t open_streams() const { return streams_.size(); }

 private:
  struct Stream;
  void end(Stream* s);
  Loop& loop_;
  EventBus& bus_;
  size_t max_;
  std::set<Stream*> streams_;
  uint64_t heartbeat_ = 0;
};

}  // namespace cloudlet
