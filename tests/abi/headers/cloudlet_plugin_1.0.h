/*
 * cloudlet_plugin.h -- the cloudletd plugin ABI, version 1.
 *
 * This header is the whole contract between cloudletd (the "core") and a plugin (a shared object loaded with
 * dlopen). It is plain C99 and depends only on <stddef.h> and <stdint.h>, so plugins can be written in C, C++,
 * Rust or Go. Rules (versioning, ownership, errors, threads, loading) are in abi/README.md; every slot below
 * states its own OWNERSHIP, THREAD and SINCE.
 *
 * Shape: the plugin exports one symbol, cloudlet_plugin_v1(), returning a static descriptor. The core calls
 * the descriptor's init() with a per-plugin host handle and a table of host functions (cl_host_api_t). The
 * plugin keeps both in its own state; it never links against the core.
 *
 * Within major version 1 this file only grows: new slots, fields and constants are appended at the end of
 * their group, marked "since 1.N", and bump CL_ABI_MINOR. Nothing is removed, reordered or retyped.
 */
#ifndef CLOUDLET_PLUGIN_H
#define CLOUDLET_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CL_ABI_MAJOR 1
#define CL_ABI_MINOR 0

#if defined(__GNUC__) || defined(__clang__)
#define CL_EXPORT __attribute__((visibility("default")))
#else
#define CL_EXPORT
#endif

/* ------------------------------------------------------------------------------------------------------------
 * Status codes. Frozen: values never change meaning. 0 is success, every error is negative. No enum types
 * cross the boundary (their width and out-of-range behaviour are not portable).
 * ---------------------------------------------------------------------------------------------------------- */
typedef int32_t cl_status_t;

#define CL_OK 0
#define CL_EINVAL -1     /* an argument is invalid (HTTP 400) */
#define CL_ENOMEM -2     /* out of memory (HTTP 503) */
#define CL_ENOTSUP -3    /* not supported by this core or this object (HTTP 501) */
#define CL_EBUSY -4      /* resource busy or capacity reached; retry later (HTTP 409) */
#define CL_ENOENT -5     /* no such object: operation, key, route, service... (HTTP 404) */
#define CL_ECANCELED -6  /* the operation was cancelled, or its plugin is unloading */
#define CL_ECLOSING -7   /* the object is closing: peer gone, server shutting down */
#define CL_EEXIST -8     /* the object already exists (HTTP 409) */
#define CL_EIO -9        /* input/output or internal failure (HTTP 500) */
#define CL_EDECLINED -10 /* a route handler passes the request to the next matching route */
#define CL_ETIMEDOUT -11 /* a deadline passed (HTTP 504) */
#define CL_EPERM -12     /* not permitted: forbidden, revoked, outside a granted prefix (HTTP 403) */
#define CL_ETOOBIG -13   /* a size limit was exceeded (HTTP 413) */
#define CL_ESTATE -14    /* the call is not valid in the object's current state (HTTP 409) */
#define CL_EUNAUTH -15   /* authentication required or unknown caller (HTTP 401) */
#define CL_EUNAVAIL -16  /* a dependency (hypervisor, peer, plugin) is unavailable (HTTP 503) */

/* Log levels, for cl_host_api_t.log. */
#define CL_LOG_ERROR 0
#define CL_LOG_WARN 1
#define CL_LOG_INFO 2
#define CL_LOG_DEBUG 3
#define CL_LOG_TRACE 4

/* ------------------------------------------------------------------------------------------------------------
 * Handles and plain types.
 * ---------------------------------------------------------------------------------------------------------- */

/* One per loaded plugin. Core-owned; valid from init() until fini() returns. */
typedef struct cl_host_s cl_host_t;
/* One HTTP exchange. Core-owned; lifetime in the "HTTP" group below. */
typedef struct cl_request_s cl_request_t;
/* One store write transaction. Core-owned; ends with txn_commit or txn_abort. */
typedef struct cl_txn_s cl_txn_t;
/* One pending invocation of an operation this plugin registered. Core-owned; ends with op_reply. */
typedef struct cl_op_call_s cl_op_call_t;

/* Ids for things the plugin starts. 0 is never a valid id. */
typedef uint64_t cl_timer_id_t;
typedef uint64_t cl_io_id_t;
typedef uint64_t cl_sub_id_t;
typedef uint64_t cl_work_id_t;

/* A borrowed byte string, not NUL-terminated (ptr may be NULL when len is 0). Who owns the bytes and for how
 * long is stated wherever a cl_str_t is passed. */
typedef struct cl_str_s {
  const char *ptr;
  size_t len;
} cl_str_t;

/* A byte string the core allocated for the plugin. The plugin owns it after the call returns and releases it
 * with buf_free. The core always adds a terminating NUL after len bytes (not counted in len). */
typedef struct cl_buf_s {
  char *ptr;
  size_t len;
} cl_buf_t;

/* ------------------------------------------------------------------------------------------------------------
 * Callback types. Unless stated otherwise, every callback runs on the loop thread, never re-entrantly from
 * inside the call that registered it, and pointers passed to it are borrowed until it returns.
 * ---------------------------------------------------------------------------------------------------------- */

/* Releases memory the plugin lent to the core (see resp_write). Called exactly once, on the loop thread. */
typedef void (*cl_free_cb)(void *ptr, void *hint);
typedef void (*cl_timer_cb)(void *ud, cl_timer_id_t id);
typedef void (*cl_post_cb)(void *ud);
/* Runs on a worker thread. It may call only the slots marked "any thread". */
typedef void (*cl_work_cb)(void *ud);
/* Completion on the loop thread: status CL_OK, or CL_ECANCELED if the work never ran. */
typedef void (*cl_done_cb)(void *ud, cl_status_t status);
/* Readiness of a file descriptor. status is CL_OK or an error; events is a mask of CL_IO_*. */
typedef void (*cl_io_cb)(void *ud, cl_io_id_t id, cl_status_t status, uint32_t events);
/* An event published on a topic; payload is JSON text. */
typedef void (*cl_event_cb)(void *ud, cl_str_t topic, cl_str_t payload_json);
/* An operation invocation. Return CL_OK to accept (then call op_reply exactly once, now or later); any
 * other return value is the operation's status and op_reply must not be called. */
typedef cl_status_t (*cl_op_cb)(void *ud, cl_op_call_t *call, cl_str_t args_json);
/* The result of op_call. result_json is a JSON document; on error it is {"error": "<message>"}. */
typedef void (*cl_op_done_cb)(void *ud, cl_status_t status, cl_str_t result_json);
/* A route handler. Return CL_OK when the request is (or will be) answered, CL_EDECLINED to pass it on, or
 * another error to have the core answer with the matching HTTP status. */
typedef cl_status_t (*cl_route_cb)(void *ud, cl_request_t *req);
/* A chunk of a streamed request body. chunk.len == 0 with status CL_OK marks the end; an error status ends
 * the stream too (client gone, timeout, size limit). */
typedef void (*cl_body_cb)(void *ud, cl_request_t *req, cl_status_t status, cl_str_t chunk);
/* The client went away or the exchange is over (see req_on_close). */
typedef void (*cl_req_close_cb)(void *ud, cl_request_t *req);
/* One stored document during a scan. Return 0 to continue, non-zero to stop. */
typedef int (*cl_scan_cb)(void *ud, cl_str_t key, cl_str_t value_json);
/* A commit is durable (CL_OK) or failed (nothing of the transaction was written). */
typedef void (*cl_commit_cb)(void *ud, cl_status_t status);

/* Events for io_start. */
#define CL_IO_READABLE 1u
#define CL_IO_WRITABLE 2u
#define CL_IO_DISCONNECT 4u

/* ------------------------------------------------------------------------------------------------------------
 * Structs that cross the boundary. Each starts with struct_size; the writer zero-fills it first, the reader
 * ignores fields it does not know and treats missing ones as zero.
 * ---------------------------------------------------------------------------------------------------------- */

/* Route flags (cl_route_desc_t.flags). */
#define CL_ROUTE_F_STREAM_BODY 1u /* body is not buffered: read it with req_body_read */
#define CL_ROUTE_F_FORM 2u        /* parse x-www-form-urlencoded and multipart/form-data bodies: fields become
                                     parameters, file parts are streamed to files under the data directory */

/* A route. OWNERSHIP: the strings are copied by route_add; the struct may be freed when it returns. */
typedef struct cl_route_desc_s {
  uint32_t struct_size; /* = sizeof(cl_route_desc_t) */
  uint32_t flags;       /* CL_ROUTE_F_* */
  const char *listener; /* "api", "manager", ...: a listener name from the configuration */
  const char *method;   /* "GET", "POST", ...; NULL matches any method (HEAD is served by a GET route) */
  const char *pattern;  /* "/api/services", "/things/{id}", "/files/{*rest}": {name} matches one segment,
                           {*name} the rest of the path; both become parameters */
  uint64_t max_body;    /* request body limit in bytes; 0 = the listener's limit */
  cl_route_cb handler;
  void *ud;
} cl_route_desc_t;

/* An uploaded file of a CL_ROUTE_F_FORM request. OWNERSHIP: every cl_str_t is borrowed from the request and
 * valid until the request ends; the file at `path` is deleted when the request ends unless req_file_take
 * moved it. */
typedef struct cl_file_info_s {
  uint32_t struct_size;  /* = sizeof(cl_file_info_t) */
  uint32_t reserved0;
  cl_str_t field;        /* form field name */
  cl_str_t filename;     /* file name as sent by the client: untrusted, never use it as a path */
  cl_str_t content_type; /* as sent by the client */
  cl_str_t path;         /* absolute path of the spooled file (inside the data directory) */
  uint64_t size;         /* bytes */
} cl_file_info_t;

/* ------------------------------------------------------------------------------------------------------------
 * The host function table. Filled by the core, handed to init(), valid until fini() returns.
 * Append-only: test optional slots with CL_HAS(api, slot).
 * THREAD: every slot is loop-thread-only except those marked "any thread".
 * ---------------------------------------------------------------------------------------------------------- */
typedef struct cl_host_api_s {
  uint32_t struct_size; /* sizeof(cl_host_api_t) as compiled into the core */
  uint16_t abi_major;   /* CL_ABI_MAJOR of the core */
  uint16_t abi_minor;   /* CL_ABI_MINOR of the core */

  /* ---- since 1.0: diagnostics and memory ---- */

  /** Writes one log line, prefixed by the time, the level and the plugin's name.
   * @param [in] level CL_LOG_*. @param [in] msg the text, without a trailing newline.
   * OWNERSHIP: msg is borrowed for the call. THREAD: any thread. SINCE: 1.0 */
  void (*log)(cl_host_t *h, int32_t level, cl_str_t msg);

  /** @return non-zero if a line at `level` would be written (skip formatting otherwise).
   * THREAD: any thread. SINCE: 1.0 */
  int (*log_enabled)(cl_host_t *h, int32_t level);

  /** @return a static, human-readable name for a status code ("invalid argument"). Never NULL.
   * OWNERSHIP: static storage. THREAD: any thread. SINCE: 1.0 */
  const char *(*strerror)(cl_status_t status);

  /** Releases a cl_buf_t the core allocated (store_get, host_get, ...). Safe on a zeroed buffer; the buffer
   * is zeroed afterwards. THREAD: any thread. SINCE: 1.0 */
  void (*buf_free)(cl_host_t *h, cl_buf_t *buf);

  /** Reads a host fact. Keys: "version" (cloudletd version), "data_dir" (absolute data directory),
   * "plugin_data_dir" (this plugin's own directory under the data directory, created on demand),
   * "cloudlet_name" (the name phones see), "api_mode" ("open", "encrypted" or "both").
   * @param [out] out the value. @return CL_OK, or CL_ENOENT for an unknown key.
   * OWNERSHIP: *out belongs to the plugin (buf_free). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*host_get)(cl_host_t *h, cl_str_t key, cl_buf_t *out);

  /** @return the loop's cached monotonic time in milliseconds (cheap; updated once per loop turn).
   * THREAD: loop. SINCE: 1.0 */
  uint64_t (*now_ms)(cl_host_t *h);

  /* ---- since 1.0: loop services ---- */

  /** Starts a timer: cb after timeout_ms, then every repeat_ms if repeat_ms > 0.
   * @param [out] out the timer's id (for timer_stop). @return CL_OK or CL_EINVAL (cb NULL).
   * OWNERSHIP: ud stays the plugin's; the core never frees it. A one-shot timer is forgotten after its
   * callback; stopping it afterwards returns CL_ENOENT. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*timer_start)(cl_host_t *h, uint64_t timeout_ms, uint64_t repeat_ms, cl_timer_cb cb, void *ud,
                             cl_timer_id_t *out);

  /** Stops a timer; its callback will not run again. @return CL_OK or CL_ENOENT.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*timer_stop)(cl_host_t *h, cl_timer_id_t id);

  /** Runs cb(ud) on the loop thread, soon. Every successful post is delivered exactly once and in order per
   * calling thread (posts never coalesce), unless the plugin is unloaded first (then cb is not called).
   * @return CL_OK, or CL_ECLOSING if the server is shutting down (cb will not be called).
   * OWNERSHIP: ud stays the plugin's. THREAD: any thread (this is the way back from a worker or a plugin's own
   * thread). SINCE: 1.0 */
  cl_status_t (*post)(cl_host_t *h, cl_post_cb cb, void *ud);

  /** Runs work(ud) on a worker thread, then done(ud, status) on the loop. Use it for anything slower than
   * about a millisecond (disk, hashing, external processes).
   * @param [out] out the job's id (may be NULL). @return CL_OK or CL_ECLOSING; on error no callback runs.
   * THREAD: loop (work runs on a worker). SINCE: 1.0 */
  cl_status_t (*work_queue)(cl_host_t *h, cl_work_cb work, cl_done_cb done, void *ud, cl_work_id_t *out);

  /** Cancels queued work that has not started; done then gets CL_ECANCELED. @return CL_OK, or CL_EBUSY if it
   * is already running (done still runs normally). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*work_cancel)(cl_host_t *h, cl_work_id_t id);

  /** Watches a file descriptor the plugin owns (a socket, libusb's descriptors).
   * @param [in] events CL_IO_READABLE | CL_IO_WRITABLE. @param [out] out the watch's id.
   * @return CL_OK, CL_EINVAL (bad fd), CL_EEXIST (fd already watched by this plugin).
   * OWNERSHIP: the fd stays the plugin's; stop the watch before closing it. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*io_start)(cl_host_t *h, int fd, uint32_t events, cl_io_cb cb, void *ud, cl_io_id_t *out);

  /** Changes the events of a watch. @return CL_OK or CL_ENOENT. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*io_update)(cl_host_t *h, cl_io_id_t id, uint32_t events);

  /** Stops a watch; its callback will not run again. @return CL_OK or CL_ENOENT. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*io_stop)(cl_host_t *h, cl_io_id_t id);

  /* ---- since 1.0: events (publish/subscribe) ---- */

  /** Subscribes to a topic: an exact name ("instance.state"), a prefix ending in ".*" ("instance.*"), or "*".
   * Events are delivered asynchronously, in publication order.
   * @param [out] out the subscription's id. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*event_subscribe)(cl_host_t *h, cl_str_t topic, cl_event_cb cb, void *ud, cl_sub_id_t *out);

  /** Ends a subscription; no further deliveries. @return CL_OK or CL_ENOENT. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*event_unsubscribe)(cl_host_t *h, cl_sub_id_t id);

  /** Publishes an event. @param [in] payload_json a JSON object (validated; CL_EINVAL if not JSON).
   * OWNERSHIP: topic and payload are copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*event_publish)(cl_host_t *h, cl_str_t topic, cl_str_t payload_json);

  /* ---- since 1.0: named operations (JSON in, JSON out) ---- */

  /** Registers an operation ("app.list"). Names are [a-z0-9_.-]+, unique across the core and all plugins.
   * @return CL_OK, CL_EINVAL (bad name), CL_EEXIST (taken). Operations are removed when the plugin unloads.
   * OWNERSHIP: name is copied; ud stays the plugin's. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*op_register)(cl_host_t *h, cl_str_t name, cl_op_cb cb, void *ud);

  /** Calls an operation of the core or of any plugin. cb is always called exactly once, asynchronously, when
   * the call returned CL_OK. @param [in] args_json a JSON object ("{}" when there are no arguments).
   * @return CL_OK, CL_ENOENT (no such operation), CL_EINVAL (args not a JSON object); on error cb is not
   * called. OWNERSHIP: name and args are copied; result_json given to cb is borrowed for the callback.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*op_call)(cl_host_t *h, cl_str_t name, cl_str_t args_json, cl_op_done_cb cb, void *ud);

  /** Answers an invocation accepted by a cl_op_cb. Exactly once per accepted call.
   * @param [in] status CL_OK, or the error. @param [in] result_json a JSON document; for errors,
   * {"error": "<message>"} (the core wraps a non-JSON or empty result into that shape).
   * @return CL_OK, or CL_ESTATE if the call was already answered. OWNERSHIP: result is copied; `call` is dead
   * after this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*op_reply)(cl_op_call_t *call, cl_status_t status, cl_str_t result_json);

  /* ---- since 1.0: the store (LMDB; JSON documents in named collections) ----
   * Collections a plugin names are private to it (the core prefixes them with the plugin's name). Reads see
   * every committed transaction, including ones whose disk flush is still in progress. Collection names are
   * [a-z0-9_.-]{1,64}; keys are 1..400 bytes without NUL; values are JSON text. */

  /** Reads one document. @param [out] out its JSON text. @return CL_OK or CL_ENOENT.
   * OWNERSHIP: *out belongs to the plugin (buf_free). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*store_get)(cl_host_t *h, cl_str_t collection, cl_str_t key, cl_buf_t *out);

  /** Calls cb for every document whose key starts with prefix, in key order (synchronously).
   * OWNERSHIP: key and value are borrowed for each callback. The callback must not write to the store.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*store_scan)(cl_host_t *h, cl_str_t collection, cl_str_t prefix, cl_scan_cb cb, void *ud);

  /** Starts a write transaction. Only one is open at a time per host; it must be committed or aborted before
   * control returns to the loop, which makes read-modify-write atomic. @return CL_OK or CL_EBUSY.
   * OWNERSHIP: *out is the core's until txn_commit/txn_abort. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_begin)(cl_host_t *h, cl_txn_t **out);

  /** Reads through a transaction (sees its own writes). Same contract as store_get. SINCE: 1.0 */
  cl_status_t (*txn_get)(cl_txn_t *txn, cl_str_t collection, cl_str_t key, cl_buf_t *out);

  /** Writes a document (replacing any). value_json must be valid JSON (CL_EINVAL otherwise).
   * OWNERSHIP: copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_put)(cl_txn_t *txn, cl_str_t collection, cl_str_t key, cl_str_t value_json);

  /** Deletes a document. @return CL_OK (also when it did not exist). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_del)(cl_txn_t *txn, cl_str_t collection, cl_str_t key);

  /** Commits: the writes become visible to reads at once, all or nothing, and durable on disk before cb runs
   * (cb may be NULL). @return CL_OK, or an error (nothing written, cb not called).
   * OWNERSHIP: txn is dead after this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_commit)(cl_txn_t *txn, cl_commit_cb cb, void *ud);

  /** Discards a transaction. OWNERSHIP: txn is dead after this returns. THREAD: loop. SINCE: 1.0 */
  void (*txn_abort)(cl_txn_t *txn);

  /* ---- since 1.0: HTTP ----
   * A cl_request_t is valid from the handler call until the response is complete (resp_send, resp_file, or
   * resp_end after resp_start/sse_start). Every request gets exactly one response, even when the client has
   * gone (writes then return CL_ECLOSING and the request is freed once the response is ended). Routes may be
   * added only during init(). Responses always carry Content-Length when their length is known. */

  /** Adds a route. Patterns must lie inside the prefixes the configuration grants the plugin (by default
   * "/plugins/<name>/"). @return CL_OK, CL_EINVAL, CL_ENOENT (no such listener), CL_EPERM (prefix not granted),
   * CL_EEXIST (same method and pattern taken), CL_ESTATE (called after init). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*route_add)(cl_host_t *h, const cl_route_desc_t *desc);

  /** @return the request method ("GET"). OWNERSHIP: borrowed until the request ends. SINCE: 1.0 */
  cl_str_t (*req_method)(cl_request_t *r);

  /** @return the percent-decoded path, without the query string. OWNERSHIP: borrowed. SINCE: 1.0 */
  cl_str_t (*req_path)(cl_request_t *r);

  /** @return the raw query string, without '?' (empty if none). OWNERSHIP: borrowed. SINCE: 1.0 */
  cl_str_t (*req_query)(cl_request_t *r);

  /** Looks up a request header (case-insensitive; the first one if repeated).
   * @return CL_OK or CL_ENOENT. OWNERSHIP: *out borrowed until the request ends. SINCE: 1.0 */
  cl_status_t (*req_header)(cl_request_t *r, cl_str_t name, cl_str_t *out);

  /** Looks up a parameter: path parameters first, then the query string, then form fields (CL_ROUTE_F_FORM),
   * all percent-decoded ('+' is a space in query and form). @return CL_OK or CL_ENOENT.
   * OWNERSHIP: *out borrowed until the request ends. SINCE: 1.0 */
  cl_status_t (*req_param)(cl_request_t *r, cl_str_t name, cl_str_t *out);

  /** Enumerates query and form parameters in arrival order. @return CL_OK or CL_ENOENT past the end.
   * OWNERSHIP: borrowed until the request ends. SINCE: 1.0 */
  cl_status_t (*req_param_at)(cl_request_t *r, size_t index, cl_str_t *name, cl_str_t *value);

  /** The buffered body of a route without CL_ROUTE_F_STREAM_BODY (empty for form routes, whose fields are
   * parameters). OWNERSHIP: borrowed until the request ends. SINCE: 1.0 */
  cl_str_t (*req_body)(cl_request_t *r);

  /** Streams the body of a CL_ROUTE_F_STREAM_BODY route: cb gets each chunk, then an empty chunk at the end.
   * @return CL_OK, CL_ESTATE (not a streaming route, or already reading). SINCE: 1.0 */
  cl_status_t (*req_body_read)(cl_request_t *r, cl_body_cb cb, void *ud);

  /** Pauses (paused != 0) or resumes delivery of body chunks, for back-pressure. SINCE: 1.0 */
  cl_status_t (*req_body_pause)(cl_request_t *r, int paused);

  /** Describes the index-th uploaded file of a CL_ROUTE_F_FORM request. @return CL_OK or CL_ENOENT.
   * OWNERSHIP: see cl_file_info_t. SINCE: 1.0 */
  cl_status_t (*req_file_at)(cl_request_t *r, size_t index, cl_file_info_t *out);

  /** Moves the index-th uploaded file to dest, a path relative to the plugin's data directory (parent
   * directories are created; no "..", no absolute paths). The move is a rename on the same filesystem.
   * @return CL_OK, CL_ENOENT, CL_EINVAL (bad dest), CL_EEXIST (dest exists), CL_EIO. SINCE: 1.0 */
  cl_status_t (*req_file_take)(cl_request_t *r, size_t index, cl_str_t dest);

  /** The local address the client connected to (what the client used to reach this server), as text, and
   * the port. OWNERSHIP: *ip borrowed until the request ends. SINCE: 1.0 */
  cl_status_t (*req_local_addr)(cl_request_t *r, cl_str_t *ip, uint16_t *port);

  /** The client's address and port. OWNERSHIP: *ip borrowed until the request ends. SINCE: 1.0 */
  cl_status_t (*req_peer_addr)(cl_request_t *r, cl_str_t *ip, uint16_t *port);

  /** Registers cb to run once when the client disconnects before the response is complete (typical for SSE
   * streams). It never runs after the response is complete. One callback per request (a second call
   * replaces it). SINCE: 1.0 */
  cl_status_t (*req_on_close)(cl_request_t *r, cl_req_close_cb cb, void *ud);

  /** Adds a response header before the response starts. Content-Length, Transfer-Encoding, Connection and
   * Date are the core's and are refused (CL_EINVAL). OWNERSHIP: copied. SINCE: 1.0 */
  cl_status_t (*resp_header_add)(cl_request_t *r, cl_str_t name, cl_str_t value);

  /** Sends a complete response with Content-Length. content_type may be empty (then none is sent).
   * @return CL_OK, CL_ESTATE (already started), CL_ECLOSING (client gone; the request is still finished).
   * OWNERSHIP: body copied; the request is dead after this returns. SINCE: 1.0 */
  cl_status_t (*resp_send)(cl_request_t *r, uint32_t status, cl_str_t content_type, cl_str_t body);

  /** Starts a streamed response. content_length >= 0 is sent as Content-Length and must match the bytes
   * written; -1 means unknown (chunked for HTTP/1.1 clients). Add Content-Type with resp_header_add first.
   * SINCE: 1.0 */
  cl_status_t (*resp_start)(cl_request_t *r, uint32_t status, int64_t content_length);

  /** Writes response body bytes. If done is NULL the bytes are copied now; otherwise they are lent to the core
   * until done(ptr, hint) runs (always exactly once, also on error; completion is the back-pressure signal).
   * @return CL_OK, CL_ESTATE (not started), CL_ECLOSING (client gone; done still runs). SINCE: 1.0 */
  cl_status_t (*resp_write)(cl_request_t *r, const void *ptr, size_t len, cl_free_cb done, void *hint);

  /** Ends a response started with resp_start or sse_start. OWNERSHIP: the request is dead after this returns.
   * SINCE: 1.0 */
  cl_status_t (*resp_end)(cl_request_t *r);

  /** Sends a file as the complete response (HEAD, Range, ETag handled). path must be absolute and inside the
   * data directory or the webroot. @return CL_OK (request dead afterwards), CL_ENOENT, CL_EPERM.
   * SINCE: 1.0 */
  cl_status_t (*resp_file)(cl_request_t *r, cl_str_t path, cl_str_t content_type);

  /** Starts a Server-Sent Events stream (200, text/event-stream, no caching). SINCE: 1.0 */
  cl_status_t (*sse_start)(cl_request_t *r);

  /** Sends one SSE event. event may be empty (then the browser's "message" event). data may contain
   * newlines; they are framed correctly. @return CL_OK, CL_ESTATE, CL_ECLOSING. OWNERSHIP: copied.
   * SINCE: 1.0 */
  cl_status_t (*sse_send)(cl_request_t *r, cl_str_t event, cl_str_t data);

  /* Append new slots below this line only, in groups marked "since 1.N". */
} cl_host_api_t;

/* Non-zero when the core's table has `slot` and it is not NULL. Use it for any slot added after 1.0. */
#define CL_HAS(api, slot)                                                                                  \
  ((api)->struct_size >= offsetof(cl_host_api_t, slot) + sizeof((api)->slot) && (api)->slot != NULL)

/* ------------------------------------------------------------------------------------------------------------
 * The plugin descriptor.
 * ---------------------------------------------------------------------------------------------------------- */

#define CL_PLUGIN_F_NO_UNLOAD 1u /* never dlclose this plugin (threads, TLS destructors, unique symbols) */

typedef struct cl_plugin_desc_s {
  uint32_t struct_size; /* = sizeof(cl_plugin_desc_t) */
  uint16_t abi_major;   /* CL_ABI_MAJOR the plugin was built with: must equal the core's */
  uint16_t abi_minor;   /* CL_ABI_MINOR the plugin was built with: must be <= the core's */
  const char *name;     /* unique, [a-z0-9_]{1,32}; static storage */
  const char *version;  /* the plugin's own version; static storage */
  uint32_t flags;       /* CL_PLUGIN_F_* */

  /** Sets the plugin up: register routes, operations and subscriptions; keep h and api in *state.
   * @param [in] config this plugin's "config" object from the server configuration, as JSON text ("{}" if
   * none). @param [out] state the plugin's state, handed back to fini.
   * @return CL_OK, or an error: the core then undoes everything the plugin registered, logs the error and
   * goes on without the plugin. OWNERSHIP: config borrowed for the call; h and api valid until fini returns.
   * THREAD: loop. */
  cl_status_t (*init)(cl_host_t *h, const cl_host_api_t *api, cl_str_t config, void **state);

  /** Tears the plugin down at shutdown: stop threads (join them), release state. In-flight requests have been
   * answered or aborted by then; leftover timers, watches, subscriptions and work are cancelled by the core.
   * THREAD: loop. */
  void (*fini)(cl_host_t *h, void *state);

  void *reserved[4]; /* must be NULL */
} cl_plugin_desc_t;

/* The one symbol a plugin exports. */
typedef const cl_plugin_desc_t *(*cl_plugin_entry_v1_fn)(void);
#define CL_PLUGIN_ENTRY_V1 "cloudlet_plugin_v1"

#ifdef __cplusplus
#define CL_EXTERN_C extern "C"
#else
#define CL_EXTERN_C
#endif

/* Defines the entry symbol for a descriptor: CL_PLUGIN_DEFINE(my_desc) at file scope (C or C++). */
#define CL_PLUGIN_DEFINE(desc)                                                                             \
  CL_EXTERN_C CL_EXPORT const cl_plugin_desc_t *cloudlet_plugin_v1(void);                                 \
  CL_EXTERN_C CL_EXPORT const cl_plugin_desc_t *cloudlet_plugin_v1(void) { return &(desc); }

#ifndef __cplusplus
/* A cl_str_t from a string literal (C only; C++ code uses abi/cloudlet_plugin.hpp). */
#define CL_STR_LIT(s) ((cl_str_t){(s), sizeof(s) - 1})
#endif

#ifdef __cplusplus
}
#endif

#endif /* CLOUDLET_PLUGIN_H */
