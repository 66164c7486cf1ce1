// The HTTP/1.1 server: named listeners (plain or TLS), connections, timeouts, connection caps, shutdown.
//
// Everything runs on the loop thread. Timeouts are kept in per-listener lists, one per phase (header, body,
// idle, write): every list has one timeout value, so appending on activity keeps each list sorted by deadline
// and a single sweep timer only ever looks at list heads (O(1) per event, whatever the connection count).
#pragma once

#include <uv.h>

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
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
  // One list per timed phase; see the file comment.
  std::list<Connection*> header_list, body_list, idle_list, write_list;
  std::list<Connection*>* list_for(Phase p);
  uint32_t timeout_for(Phase p) const;
};

struct ServerStats {
  uint64_t accepted = 0;
  uint64_t rejected_over_cap = 0;
  uint64_t requests = 0;
  uint64_t timed_out = 0;
};

class Server {
 public:
  // spool_dir: where form uploads are written (the data directory's tmp/).
  Server(Loop& loop, std::string spool_dir);
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
  void connection_closed(Connection* c);
  void note_request() { stats_.requests++; }
  // A 64 KiB read buffer shared by all connections (reads are processed synchronously).
  char* read_buffer() { return read_buf_.get(); }
  static constexpr size_t kReadBufferSize = 64 * 1024;
  // "Date: ..." value cached per second.
  std::string_view date();

 private:
  static void on_connection(uv_stream_t* server, int status);
  void sweep();
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
  StaticFiles files_;
  std::string date_;
  uint64_t date_second_ = 0;
};

}  // namespace cloudlet::http
