// The manager plugin's state, shared by its parts: the JSON API (api_routes.cc) and the event stream
// (event_stream.cc). One instance per load, owned by the core between init and fini; loop thread only.
#pragma once

#include <cstddef>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cloudlet_plugin.hpp"

namespace cloudlet::manager {

struct EventStream;
struct ApiRoute;

struct Manager {
  cl::Host host;
  size_t max_event_streams = 64;  // config "max_event_streams": a page open in many tabs cannot exhaust the server
  std::set<EventStream*> streams;
  cl_timer_id_t heartbeat = 0;
  cl_sub_id_t stopping_sub = 0;
  // What each JSON API route's handler gets (api_routes.cc); sized once, so the pointers stay valid.
  struct ApiEntry {
    Manager* m;
    const ApiRoute* route;
  };
  std::vector<ApiEntry> api_entries;
};

// The OpenAPI document of the JSON API (openapi.json, embedded at build time: cmake/embed_json.cmake).
std::string_view openapi_document();
// Registers the JSON API's routes on the manager listener.
cl_status_t api_routes_add(Manager& m);
// Registers GET /manager/api/events and ends its streams when the server stops.
cl_status_t event_stream_add(Manager& m);
// Ends every open stream (fini, server shutdown).
void event_streams_end_all(Manager& m);

}  // namespace cloudlet::manager
