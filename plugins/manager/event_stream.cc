// Live events for browsers: GET /manager/api/events streams the core's event bus as Server-Sent Events.
//
//   GET /manager/api/events?topics=instance.*,job.*     (default: every topic)
//   -> event: instance.state
//      data: {"id":"...","state":"running"}
//
// Each stream subscribes for its topics and ends when the client leaves, when the server begins to stop (the
// core's "server.stopping" event: a stream would otherwise hold its connection until the drain deadline) or
// at unload. A comment line every 15 s keeps proxies from timing the stream out and lets a dead client be
// noticed. Streams are capped (503 beyond max_event_streams) so a page open in many tabs cannot exhaust the
// server.
#include <string>
#include <vector>

#include "json/json.h"
#include "plugin.h"

namespace cloudlet::manager {

struct EventStream {
  Manager* m;
  cl_request_t* req;
  std::vector<cl_sub_id_t> subs;
};

namespace {

constexpr uint64_t kHeartbeatMs = 15000;
constexpr size_t kMaxTopics = 16;

void stream_end(EventStream* s) {
  Manager& m = *s->m;
  for (cl_sub_id_t id : s->subs) m.host.event_unsubscribe(id);
  m.streams.erase(s);
  cl::Request(m.host, s->req).end();  // complete: its close callback can no longer run
  delete s;
  if (m.streams.empty() && m.heartbeat) {
    m.host.timer_stop(m.heartbeat);
    m.heartbeat = 0;
  }
}

void on_event(void* ud, cl_str_t topic, cl_str_t payload) {
  auto* s = static_cast<EventStream*>(ud);
  if (cl::Request(s->m->host, s->req).sse_send(cl::view(topic), cl::view(payload)) == CL_ECLOSING) stream_end(s);
}

void on_client_gone(void* ud, cl_request_t*) { stream_end(static_cast<EventStream*>(ud)); }

void on_heartbeat(void* ud, cl_timer_id_t) {
  auto* m = static_cast<Manager*>(ud);
  static const char ping[] = ": ping\n\n";
  std::vector<EventStream*> all(m->streams.begin(), m->streams.end());
  for (EventStream* s : all) {
    if (cl::Request(m->host, s->req).write(std::string_view(ping, sizeof ping - 1)) == CL_ECLOSING) stream_end(s);
  }
}

void on_server_stopping(void* ud, cl_str_t, cl_str_t) { event_streams_end_all(*static_cast<Manager*>(ud)); }

cl_status_t on_events_request(void* ud, cl_request_t* r) noexcept {
  return cl::guarded([&] {
    Manager& m = *static_cast<Manager*>(ud);
    cl::Request req(m.host, r);
    if (m.streams.size() >= m.max_event_streams) {
      req.add_header("Retry-After", "5");
      return req.send_json(503, json::error_object("too many event streams open"));
    }
    std::vector<std::string> topics;
    std::string_view list = req.param("topics").value_or("");
    while (!list.empty()) {
      size_t comma = list.find(',');
      topics.emplace_back(list.substr(0, comma));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    }
    if (topics.empty()) topics.push_back("*");
    if (topics.size() > kMaxTopics) return req.send_json(400, json::error_object("too many topics"));
    auto* s = new EventStream{&m, r, {}};
    for (const auto& t : topics) {
      cl_sub_id_t id = 0;
      if (m.host.event_subscribe(t, on_event, s, &id) != CL_OK) {
        for (cl_sub_id_t sub : s->subs) m.host.event_unsubscribe(sub);
        delete s;
        return req.send_json(400, json::error_object("invalid topic: " + t));
      }
      s->subs.push_back(id);
    }
    m.streams.insert(s);
    m.host.api()->req_on_close(r, on_client_gone, s);
    req.sse_start();
    req.sse_send("hello", "{}");  // lets the page know the stream is live
    if (!m.heartbeat) m.host.timer_start(kHeartbeatMs, kHeartbeatMs, on_heartbeat, &m, &m.heartbeat);
    return CL_OK;
  });
}

}  // namespace

cl_status_t event_stream_add(Manager& m) {
  cl_status_t st = m.host.event_subscribe("server.stopping", on_server_stopping, &m, &m.stopping_sub);
  if (st != CL_OK) return st;
  return manager_route_add(m, "GET", "/manager/api/events", 0, on_events_request, &m);
}

void event_streams_end_all(Manager& m) {
  while (!m.streams.empty()) stream_end(*m.streams.begin());
}

}  // namespace cloudlet::manager
