#include "events/event_stream.h"

#include <string>
#include <vector>

#include "events/bus.h"
#include "http/request.h"
#include "http/server.h"
#include "json/json.h"
#include "loop/loop.h"

namespace cloudlet {

namespace {
constexpr uint64_t kHeartbeatMs = 15000;
constexpr size_t kMaxTopics = 16;
}  // namespace

struct EventStreams::Stream {
  EventStreams* owner;
  http::Request* req;
  std::vector<uint64_t> subs;
};

EventStreams::EventStreams(Loop& loop, EventBus& bus, size_t max_streams) : loop_(loop), bus_(bus), max_(max_streams) {}

EventStreams::~EventStreams() { close_all(); }

void EventStreams::end(Stream* s) {
  for (uint64_t id : s->subs) bus_.unsubscribe(id);
  streams_.erase(s);
  http::Request* r = s->req;
  delete s;
  r->close_cb = nullptr;
  r->end();  // frees the request (also when the client already left)
  if (streams_.empty() && heartbeat_) {
    loop_.timer_stop(heartbeat_);
    heartbeat_ = 0;
  }
}

void EventStreams::close_all() {
  while (!streams_.empty()) end(*streams_.begin());
}

void EventStreams::add_route(http::Server& server, const char* listener) {
  http::Router* router = server.router(listener);
  if (!router) return;
  http::Route route;
  route.method = "GET";
  route.pattern = "/manager/api/events";
  route.handler = [this](http::Request& r) -> cl_status_t {
    if (streams_.size() >= max_) {
      r.add_header("Retry-After", "5");
      return r.send(503, "application/json", json::error_object("too many event streams open"));
    }
    std::vector<std::string> topics;
    std::string_view list;
    if (r.param("topics", &list) == CL_OK && !list.empty()) {
      while (!list.empty()) {
        size_t comma = list.find(',');
        topics.emplace_back(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      }
    } else {
      topics.push_back("*");
    }
    if (topics.size() > kMaxTopics) return r.send(400, "application/json", json::error_object("too many topics"));
    auto* s = new Stream{this, &r, {}};
    for (const auto& t : topics) {
      uint64_t id = bus_.subscribe(t, [s](std::string_view topic, std::string_view payload) {
        s->req->sse_send(topic, payload);
      });
      if (id == 0) {
        for (uint64_t sub : s->subs) bus_.unsubscribe(sub);
        delete s;
        return r.send(400, "application/json", json::error_object("invalid topic: " + t));
      }
      s->subs.push_back(id);
    }
    streams_.insert(s);
    r.close_cb = [](void* ud, cl_request_s*) {
      auto* stream = static_cast<Stream*>(ud);
      stream->owner->end(stream);  // the client left: unsubscribe and free the request
    };
    r.close_ud = s;
    r.sse_start();
    r.sse_send("hello", "{}");  // lets the page know the stream is live
    if (!heartbeat_) {
      heartbeat_ = loop_.timer_start(kHeartbeatMs, kHeartbeatMs, [this] {
        static const char ping[] = ": ping\n\n";
        std::vector<Stream*> all(streams_.begin(), streams_.end());
        for (Stream* st : all) {
          if (st->req->write(ping, sizeof ping - 1, nullptr, nullptr) == CL_ECLOSING) end(st);
        }
      });
    }
    return CL_OK;
  };
  router->add(std::move(route));
}

}  // namespace cloudlet
