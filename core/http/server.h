// The HTTP/1.1 server: named listeners (plain or TLS), connections, timeouts, connection caps, shutdown.
//
// Everything runs on the loop thread. Timeouts are kept in per-listener lists, one per phase (header, body,
// idle, write), plus one for whole-request deadlines: every list has one timeout value, so appending on
// activity keeps each list sorted by deadline and a single sweep timer only ever looks at list heads (O(1)
// per event, whatever the connection count).
//
// Memory held for clients is counted: every connection's unsent response bytes (one total across the
// server: beyond it, connections with unsent bytes stop reading and parsing) and request bodies buffered in
// memory (another total: beyond it, new bodies are refused with 503). Connections per client address are
// capped per listener, with a reserved share for addresses that hold few.
#pragma once

#include <uv.h>

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cloudlet_plugin.h"
#include "http/options.h"
#include "http/router.h"
#include "http/static_files.h"
#include "http/tls.h"

namespace cloudlet {
class Loop;
}

namespace cloudlet::http {

class Connection;
class Server;

enum class Phase { none, header, body, idle, write };

struct Listener {
  ListenerOptions options;
  Router router;
  std::unique_ptr<TlsContext> tls;
  Server* server = nullptr;
  uv_tcp_t tcp;
  bool open = false;
  uint16_t bound_port = 0;
  size_t connections = 0;
  // Open connections per client address key (see address_key in server.cc).
  std::unordered_map<std::string, uint32_t> per_address;
  // One list per timed phase; see the file comment.
  std::list<Connection*> header_list, body_list, idle_list, write_list;
  // Connections whose request is still arriving, by whole-request deadline (request_timeout_ms).
  std::list<Connection*> request_list;
  // The listener's guard (a plugin's: listener_guard_set), run when a request's headers have arrived, before
  // routing, for every request (plugin routes, core routes, static files). CL_OK lets a request through.
  // Once set (or expected: Server::expect_guard) the listener stays guarded: while `guard` is empty (not installed
  // yet, or its owner went) requests get 503.
  std::function<cl_status_t(Request&)> guard;
  void* guard_owner = nullptr;
  bool guarded = false;
  std::list<Connection*>* list_for(Phase p);
  uint32_t timeout_for(Phase p) const;
};

struct ServerStats {
  uint64_t accepted = 0;
  uint64_t rejected_over_cap = 0;
  uint64_t rejected_per_address = 0;  // the client's address held its share (of those over_cap counts too)
  uint64_t requests = 0;
  uint64_t timed_out = 0;
};

class Server {
 public:
  // spool_dir: where form uploads are written (the data directory's tmp/).
  Server(Loop& loop, std::string spool_dir);

  // Server-wide bounds on memory held for clients (see the file comment).
  void set_totals(const Totals& t) { totals_ = t; }
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts a listener. Returns CL_OK, or an error with *error set (address in use, bad TLS files).
  cl_status_t listen(const ListenerOptions& options, std::string* error);

  Listener* listener(std::string_view name);
  Router* router(std::string_view name);
  std::vector<std::string> listener_names() const;
  // Removes every route an owner (plugin host) added, on all listeners.
  void remove_routes(void* owner);
  // Installs a listener's guard (see Listener::guard). CL_ENOENT (no such listener), CL_EEXIST (guarded).
  cl_status_t set_guard(std::string_view listener, void* owner, std::function<cl_status_t(Request&)> guard);
  // Marks a listener as guarded before its guard exists (the configuration grants the guard to a plugin): it
  // refuses every request (503) until that plugin installs the guard, so a plugin that fails to load leaves it
  // closed, never open. CL_ENOENT (no such listener).
  cl_status_t expect_guard(std::string_view listener);
  // Removes the guards an owner set: those listeners then refuse every request (503) instead of opening.
  void remove_guards(void* owner);

  // Stops accepting, closes idle connections, lets in-flight requests finish until deadline_ms, then closes
  // what is left. done() runs once every listener and connection handle is closed.
  void shutdown(uint64_t deadline_ms, std::function<void()> done);
  bool shutting_down() const { return shutting_down_; }

  size_t connection_count() const { return connections_; }
  const ServerStats& stats() const { return stats_; }
  Loop& loop() { return loop_; }
  const std::string& spool_dir() const { return spool_dir_; }
  StaticFiles& files() { return files_; }

  // Used by connections.
  void set_phase(Connection* c, Phase p);
  void touch(Connection* c);  // activity within the current phase: push its deadline back
  // Whole-request deadline: (re)starts a request_timeout_ms window, or stops the clock.
  void request_clock_start(Connection* c);
  void request_clock_stop(Connection* c);
  void connection_closed(Connection* c);
  // Unsent response bytes: every connection reports its changes; over the total, connections that have
  // unsent bytes stop reading and parsing until theirs drain.
  void add_unsent(int64_t delta) {
    unsent_total_ = static_cast<uint64_t>(static_cast<int64_t>(unsent_total_) + delta);
    if (unsent_total_ + body_total_ > held_peak_) held_peak_ = unsent_total_ + body_total_;
  }
  bool unsent_over_total() const { return unsent_total_ > totals_.max_unsent_bytes; }
  uint64_t unsent_total() const { return unsent_total_; }
  // Buffered request bodies: false (nothing reserved) when n more bytes would pass the total.
  bool body_reserve(uint64_t n);
  void body_release(uint64_t n);
  uint64_t body_total() const { return body_total_; }
  void note_request() { stats_.requests++; }
  // A 64 KiB read buffer shared by all connections (reads are processed synchronously).
  char* read_buffer() { return read_buf_.get(); }
  static constexpr size_t kReadBufferSize = 64 * 1024;
  // "Date: ..." value cached per second.
  std::string_view date();

 private:
  static void on_connection(uv_stream_t* server, int status);
  // False (and counted) when the connection's address holds its share of the listener.
  bool admit_address(Listener& l, Connection* c);
  void sweep();
  // After large frees, hands free heap memory back to the system (glibc keeps it otherwise).
  void maybe_trim();
  void maybe_finish_shutdown();

  Loop& loop_;
  std::string spool_dir_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_set<Connection*> all_;
  size_t open_listeners_ = 0;
  size_t connections_ = 0;
  uint64_t sweep_timer_ = 0;
  bool shutting_down_ = false;
  uint64_t force_timer_ = 0;
  std::function<void()> shutdown_done_;
  std::unique_ptr<char[]> read_buf_;
  ServerStats stats_;
  Totals totals_;
  uint64_t unsent_total_ = 0;
  uint64_t body_total_ = 0;
  uint64_t held_peak_ = 0;  // highest unsent_total_ + body_total_ since the last trim
  StaticFiles files_;
  std::string date_;
  uint64_t date_second_ = 0;
};

}  // namespace cloudlet::http
