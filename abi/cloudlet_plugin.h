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
 * Within major version 1 this file only grows: new slots are appended at the end of the struct only (never
 * between existing slots), new fields at the end of their struct and new constants after the existing ones,
 * each marked "since 1.N", and each addition bumps CL_ABI_MINOR. Nothing is removed, reordered or retyped.
 *
 * Lifecycle of a plugin, which the callback rules below refer to:
 *   init -> running -> UNLOADING -> fini -> unmapped.
 * Unloading begins at shutdown (or when init fails). From then on the core makes no new calls into the
 * plugin: timers, fd watches, event deliveries, route handlers and operation handlers stop. What the plugin
 * already started still completes, before fini: running work, posts, lent writes and commits are waited for;
 * queued work, operation results and body streams still pending get CL_ECANCELED, child processes are killed
 * and their exit callback gets CL_ECANCELED, WebSockets are closed (1001) and their close callback gets
 * CL_ECANCELED, outbound requests are abandoned and their final body callback gets CL_ECANCELED. Slots that
 * would start something new (timer_start, work_queue, io_start, event_subscribe, op_register, op_call,
 * req_body_read, proc_spawn, ws_accept, fetch_start, and post once fini is near) return CL_ECANCELED
 * while unloading. After fini returns nothing is ever called again.
 * A failed init goes through the same steps without fini.
 */
#ifndef CLOUDLET_PLUGIN_H
#define CLOUDLET_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CL_ABI_MAJOR 1
#define CL_ABI_MINOR 1

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

/* One per loaded plugin. Core-owned; valid from init() until fini() returns (after a failed init: until its
 * last completion returned). */
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
 * Two kinds (rule E2 in abi/README.md):
 *   - completions (cl_free_cb, cl_post_cb, cl_done_cb, cl_op_done_cb, cl_body_cb's final call, cl_commit_cb):
 *     if the slot that took the callback returned CL_OK, it runs exactly once, before fini;
 *   - notifications (cl_timer_cb, cl_io_cb, cl_event_cb, cl_op_cb, cl_route_cb, cl_req_close_cb): they run
 *     zero or more times, until the matching stop slot returns or unloading begins.
 * ---------------------------------------------------------------------------------------------------------- */

/* Releases memory the plugin lent to the core (see resp_write). Completion. */
typedef void (*cl_free_cb)(void *ptr, void *hint);
/* A timer fired (see timer_start). Notification. */
typedef void (*cl_timer_cb)(void *ud, cl_timer_id_t id);
/* A posted item (see post). Completion. */
typedef void (*cl_post_cb)(void *ud);
/* Runs on a worker thread. It may call only the slots marked "any thread". */
typedef void (*cl_work_cb)(void *ud);
/* Completion on the loop thread: status CL_OK, or CL_ECANCELED if the work never ran. */
typedef void (*cl_done_cb)(void *ud, cl_status_t status);
/* Readiness of a file descriptor. status is CL_OK or an error; events is a mask of CL_IO_*. Notification. */
typedef void (*cl_io_cb)(void *ud, cl_io_id_t id, cl_status_t status, uint32_t events);
/* An event published on a topic; payload is JSON text. Notification. */
typedef void (*cl_event_cb)(void *ud, cl_str_t topic, cl_str_t payload_json);
/* An operation invocation. Return CL_OK to accept (then call op_reply exactly once, now or later); any
 * other return value is the operation's status and op_reply must not be called. */
typedef cl_status_t (*cl_op_cb)(void *ud, cl_op_call_t *call, cl_str_t args_json);
/* The result of op_call. result_json is a JSON document; on error it is {"error": "<message>"}. Completion. */
typedef void (*cl_op_done_cb)(void *ud, cl_status_t status, cl_str_t result_json);
/* A route handler. Return CL_OK when the request is (or will be) answered, CL_EDECLINED to pass it on, or
 * another error to have the core answer with the matching HTTP status. */
typedef cl_status_t (*cl_route_cb)(void *ud, cl_request_t *req);
/* A chunk of a streamed request body. chunk.len == 0 with status CL_OK marks the end; an error status ends
 * the stream too (CL_ECLOSING client gone, CL_ETOOBIG size limit, CL_EINVAL malformed body, CL_ECANCELED
 * plugin unloading). The final call is a completion (see req_body_read). */
typedef void (*cl_body_cb)(void *ud, cl_request_t *req, cl_status_t status, cl_str_t chunk);
/* The client went away before the response was complete (see req_on_close). Notification. */
typedef void (*cl_req_close_cb)(void *ud, cl_request_t *req);
/* One stored document during a scan. Return 0 to continue, non-zero to stop. Runs inside store_scan. */
typedef int (*cl_scan_cb)(void *ud, cl_str_t key, cl_str_t value_json);
/* A commit is durable (CL_OK) or failed (nothing of the transaction was written). Completion. */
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

/* ---- since 1.1: JSON documents (json_* slots) ---- */

/* A parsed JSON document. The core allocates it (json_parse); the plugin owns the handle until json_free. */
typedef struct cl_json_s cl_json_t;

/* Value types reported by json_type. SINCE: 1.1 */
#define CL_JSON_NULL 1
#define CL_JSON_BOOL 2
#define CL_JSON_NUMBER 3
#define CL_JSON_STRING 4
#define CL_JSON_ARRAY 5
#define CL_JSON_OBJECT 6

/* ---- since 1.1: jobs, callers, listener guards ---- */

/* A route flag (cl_route_desc_t.flags). SINCE: 1.1 */
#define CL_ROUTE_F_JSON 4u /* the body is JSON: a body whose Content-Type is not application/json (or a
                              +json type; parameters allowed) is refused with 415 before the handler runs */

/* A job this plugin created (job_create). Core-owned; valid until job_finish returns, or until fini returns for
 * a job the plugin never finished (the core finishes it with CL_ECANCELED when unloading begins). */
typedef struct cl_job_s cl_job_t;
/* Asks a job to stop early (job.cancel from the manager or another plugin). The plugin stops what it does and
 * still ends the job with job_finish (usually with CL_ECANCELED). Notification. */
typedef void (*cl_job_cancel_cb)(void *ud, cl_job_t *job);

/* Who called an operation (op_caller). kind is one of CL_CALLER_*. SINCE: 1.1 */
#define CL_CALLER_CORE 0u   /* the core itself (its own front ends, timers, reconciliation) */
#define CL_CALLER_PLUGIN 1u /* a plugin, for itself (op_call) */
#define CL_CALLER_AGENT 2u  /* a plugin acting for an authenticated principal (op_call_as: a front end) */
typedef struct cl_caller_s {
  uint32_t struct_size; /* = sizeof(cl_caller_t) */
  uint32_t kind;        /* CL_CALLER_* */
  cl_str_t plugin;      /* the calling plugin's name; empty for the core */
  cl_str_t principal;   /* whom a front end authenticated ("user:admin", "token:backup", "device:phone-1",
                           "peer:<fingerprint>"); empty when none */
} cl_caller_t;

/* Operation flags (op_register_ex). SINCE: 1.1 */
#define CL_OP_F_PRIVILEGED 1u /* only the core and plugins granted this operation in the configuration
                                 ("grants") may call it; others get CL_EPERM (op_call and op_call_as return
                                 it, and their callback is not called) */

/* A listener's guard (listener_guard_set): runs before every request on that listener (routes of every plugin,
 * the core's routes and static files), once its headers have arrived and before its body is read (req_body is
 * empty there), so a refused client uploads nothing. Return CL_OK to let the request through (after
 * req_set_principal when it authenticated someone); any other status refuses it: if the guard answered the
 * request itself (resp_send, e.g. a redirect to a login page) the core sends nothing more, else the core
 * answers with the status's HTTP code. Runs synchronously on the loop: keep it fast (no KDF here). */
typedef cl_status_t (*cl_guard_cb)(void *ud, cl_request_t *req);

/* ---- since 1.1: child processes ---- */

/* A child process (proc_spawn). Core-owned; valid until its exit callback returns. */
typedef struct cl_proc_s cl_proc_t;

/* Process flags (cl_proc_desc_t.flags). SINCE: 1.1 */
#define CL_PROC_F_CAPTURE_STDOUT 1u /* keep stdout (up to max_capture bytes) for the exit callback */
#define CL_PROC_F_CAPTURE_STDERR 2u /* keep stderr (up to max_capture bytes) for the exit callback */
#define CL_PROC_F_STREAM_STDOUT 4u  /* deliver stdout as it arrives to the output callback */
#define CL_PROC_F_STREAM_STDERR 8u  /* deliver stderr as it arrives to the output callback */
#define CL_PROC_F_STDIN_PIPE 16u    /* stdin is a pipe fed with proc_write (else /dev/null) */

/* How to start a process. Never through a shell: argv is passed as is. OWNERSHIP: every string is copied by
 * proc_spawn; the struct may be freed when it returns. SINCE: 1.1 */
typedef struct cl_proc_desc_s {
  uint32_t struct_size;      /* = sizeof(cl_proc_desc_t) */
  uint32_t flags;            /* CL_PROC_F_* */
  const char *const *argv;   /* NULL-terminated, at most 4096 entries; argv[0] is an absolute path or a name
                                looked up in the child's PATH */
  const char *const *env;    /* NULL-terminated "NAME=value" strings, at most 4096; NULL = PATH and LANG only */
  const char *cwd;           /* working directory; NULL = the plugin's data directory (host fact
                                "plugin_data_dir") */
  uint64_t timeout_ms;       /* 0 = none; when it passes: SIGTERM, SIGKILL 2 s later, status CL_ETIMEDOUT */
  uint64_t max_capture;      /* per captured stream; 0 = 1 MiB; more is dropped and `truncated` is set */
} cl_proc_desc_t;

/* How a process ended (the exit callback). OWNERSHIP: borrowed for the callback. SINCE: 1.1 */
typedef struct cl_proc_exit_s {
  uint32_t struct_size; /* = sizeof(cl_proc_exit_t) */
  cl_status_t status;   /* CL_OK when it ran and exited (any code, or a signal proc_kill sent), CL_ETIMEDOUT,
                           CL_ECANCELED (killed because the plugin is unloading), CL_ENOENT (program not found),
                           CL_EPERM (not executable), CL_EIO (could not start) */
  int64_t exit_code;    /* exit status when it exited normally, else -1 */
  int32_t term_signal;  /* the signal that ended it, else 0 */
  uint32_t truncated;   /* a mask: 1 stdout capture truncated, 2 stderr capture truncated */
  cl_str_t out;         /* captured stdout (CL_PROC_F_CAPTURE_STDOUT), else empty */
  cl_str_t err;         /* captured stderr (CL_PROC_F_CAPTURE_STDERR), else empty */
} cl_proc_exit_t;

/* Output of a streamed stream: fd is 1 (stdout) or 2 (stderr); chunk borrowed for the call. Notification (not
 * after the exit callback). */
typedef void (*cl_proc_output_cb)(void *ud, cl_proc_t *p, int32_t fd, cl_str_t chunk);
/* The process ended (or never started): after it exited and its output was read to the end. Completion:
 * exactly once when proc_spawn returned CL_OK, never from inside proc_spawn. */
typedef void (*cl_proc_exit_cb)(void *ud, cl_proc_t *p, const cl_proc_exit_t *exit);

/* ---- since 1.1: WebSocket ---- */

/* An accepted WebSocket (ws_accept). Core-owned; valid until its close callback returns. */
typedef struct cl_ws_s cl_ws_t;

/* WebSocket message types. SINCE: 1.1 */
#define CL_WS_TEXT 1
#define CL_WS_BINARY 2

/* How to accept a WebSocket. OWNERSHIP: copied by ws_accept; the struct may be freed when it returns.
 * SINCE: 1.1 */
typedef struct cl_ws_desc_s {
  uint32_t struct_size;      /* = sizeof(cl_ws_desc_t) */
  uint32_t flags;            /* none yet: 0 */
  cl_str_t subprotocol;      /* the Sec-WebSocket-Protocol to answer (one the client offered), or empty */
  uint64_t max_message;      /* 0 = 1 MiB, at most 64 MiB: a longer message closes the socket with 1009 */
  uint64_t ping_interval_ms; /* 0 = 30 s, at least 100: the core pings, and drops a peer silent for two
                                intervals (close callback: CL_ETIMEDOUT, 1006) */
} cl_ws_desc_t;

/* A complete message (fragments are joined by the core; control frames are the core's). type is CL_WS_TEXT
 * (valid UTF-8) or CL_WS_BINARY; data borrowed for the call. Notification (not while paused, not once
 * unloading began, never after the close callback). */
typedef void (*cl_ws_message_cb)(void *ud, cl_ws_t *ws, int32_t type, cl_str_t data);
/* The socket is closed. status: CL_OK after a closing handshake (either side began it); CL_ECLOSING when
 * the peer left without one (code 1006) or the server shut down (1001); CL_EINVAL or CL_ETOOBIG when the peer
 * broke the protocol (1002, 1007) or max_message (1009); CL_ETIMEDOUT for a silent peer or a close the peer
 * never answered; CL_ECANCELED when the plugin is unloading (1001). code and reason: the peer's close frame
 * when one came (1005 when it had no code), else the core's. Completion: exactly once when ws_accept
 * returned CL_OK, from a clean stack, before fini. */
typedef void (*cl_ws_close_cb)(void *ud, cl_ws_t *ws, cl_status_t status, uint32_t code, cl_str_t reason);

/* ---- since 1.1: outbound HTTP(S) ---- */

/* An outbound HTTP(S) exchange (fetch_start). Core-owned; valid until its final body callback returns. */
typedef struct cl_fetch_s cl_fetch_t;

/* A header name and value. OWNERSHIP: stated where it is passed. SINCE: 1.1 */
typedef struct cl_header_s {
  cl_str_t name;
  cl_str_t value;
} cl_header_t;

/* Fetch flags (cl_fetch_desc_t.flags). SINCE: 1.1 */
#define CL_FETCH_F_PIN_ONLY 1u /* with pin_sha256: trust the pinned certificate alone (no CA chain or name check) */

/* An outbound request. OWNERSHIP: every string and header is copied by fetch_start (files are read by it);
 * the struct may be freed when it returns. SINCE: 1.1 */
typedef struct cl_fetch_desc_s {
  uint32_t struct_size;        /* = sizeof(cl_fetch_desc_t) */
  uint32_t flags;              /* CL_FETCH_F_* */
  const char *method;          /* "GET", "POST", ...: an RFC 9110 token; NULL = "GET" */
  const char *url;             /* "http://host[:port]/path?query" or "https://..."; host a name, an IPv4 literal
                                  or [IPv6]; no user info; printable ASCII only (percent-encode the rest) */
  const cl_header_t *headers;  /* request headers, sent in order; Host, Content-Length, Transfer-Encoding and
                                  Connection are the core's; no CR, LF or NUL anywhere */
  size_t header_count;         /* at most 256 */
  int64_t body_length;         /* 0: no body; > 0: exactly that many bytes follow through fetch_write; -1: a
                                  body of unknown length (sent chunked) ended by fetch_end */
  const char *ca_file;         /* https: PEM CA bundle to verify the server with; NULL = the system's */
  const char *cert_file;       /* https: PEM client certificate (chain) for mutual TLS, or NULL */
  const char *key_file;        /* https: its PEM private key; NULL = in cert_file */
  const char *pin_sha256;      /* https: hex SHA-256 of the server certificate's DER that must match, or NULL */
  uint64_t connect_timeout_ms; /* 0 = 10 s: name lookup, connect and TLS handshake */
  uint64_t idle_timeout_ms;    /* 0 = 60 s: longest pause without progress in either direction (not counted
                                  while paused by fetch_pause) */
  uint64_t max_header_bytes;   /* 0 = 64 KiB, at most 1 MiB: the response's status line and headers */
} cl_fetch_desc_t;

/* The response's status line and headers arrived (read them with fetch_header). Runs at most once, before
 * any body chunk (1xx heads are skipped); not at all when the exchange fails first. Notification (not once
 * unloading began). */
typedef void (*cl_fetch_response_cb)(void *ud, cl_fetch_t *f, uint32_t http_status);
/* A chunk of the response body (status CL_OK, chunk not empty; at most 64 KiB; borrowed for the call, not
 * while paused), then the final call: CL_OK with an empty chunk once the whole body came, or an error:
 * CL_ETIMEDOUT (connect or idle timeout), CL_EUNAVAIL (no address, nothing listening), CL_EPERM (server
 * certificate refused: chain, name or pin), CL_EIO (TLS or socket failure), CL_EINVAL (malformed response, or
 * its head longer than max_header_bytes), CL_ECLOSING (the server closed before the end), CL_ECANCELED
 * (fetch_cancel, or the plugin is unloading). The final call is a completion: exactly once when fetch_start
 * returned CL_OK, from a clean stack, after every fetch_write done, before fini. */
typedef void (*cl_fetch_body_cb)(void *ud, cl_fetch_t *f, cl_status_t status, cl_str_t chunk);

/* ------------------------------------------------------------------------------------------------------------
 * The host function table. Filled by the core, handed to init(), valid until fini() returns.
 * Append-only: new slots are added at the end of the struct only; test them with CL_HAS(api, slot).
 * THREAD: "loop" slots called from any other thread do nothing but log an error and return CL_ESTATE (slots
 * returning a cl_str_t return an empty string, txn_abort returns). "any thread" slots may be called from
 * worker functions and the plugin's own threads.
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
   * OWNERSHIP: nothing is passed. THREAD: any thread. SINCE: 1.0 */
  int (*log_enabled)(cl_host_t *h, int32_t level);

  /** @return a static, human-readable name for a status code ("invalid argument"). Never NULL.
   * OWNERSHIP: static storage. THREAD: any thread. SINCE: 1.0 */
  const char *(*strerror)(cl_status_t status);

  /** Releases a cl_buf_t the core allocated (store_get, host_get, ...). Safe on a zeroed buffer; the buffer
   * is zeroed afterwards. OWNERSHIP: buf->ptr is the core's again (freed). THREAD: any thread. SINCE: 1.0 */
  void (*buf_free)(cl_host_t *h, cl_buf_t *buf);

  /** Reads a host fact. Keys: "version" (cloudletd version), "data_dir" (absolute data directory),
   * "plugin_data_dir" (this plugin's own directory under the data directory, created on demand),
   * "cloudlet_name" (the name phones see), "api_mode" ("open", "encrypted" or "both"); since 1.1
   * "plugin_files_dir" (this plugin's own files, read-only: see static_add), "listener_tls.<listener>" ("true"
   * when that listener serves HTTPS, else "false"; CL_ENOENT for no such listener).
   * @param [out] out the value. @return CL_OK, or CL_ENOENT for an unknown key.
   * OWNERSHIP: key borrowed; *out belongs to the plugin (buf_free). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*host_get)(cl_host_t *h, cl_str_t key, cl_buf_t *out);

  /** @return the loop's cached monotonic time in milliseconds (cheap; updated once per loop turn); 0 when
   * called off the loop thread. OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.0 */
  uint64_t (*now_ms)(cl_host_t *h);

  /* ---- since 1.0: loop services ---- */

  /** Starts a timer: cb after timeout_ms, then every repeat_ms if repeat_ms > 0 (a notification).
   * @param [out] out the timer's id (for timer_stop). @return CL_OK, CL_EINVAL (cb NULL), CL_ECANCELED
   * (unloading). OWNERSHIP: ud stays the plugin's and must stay valid until timer_stop returns, the one-shot
   * callback ran, or unloading began. A one-shot timer is forgotten before its callback; stopping it
   * afterwards returns CL_ENOENT. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*timer_start)(cl_host_t *h, uint64_t timeout_ms, uint64_t repeat_ms, cl_timer_cb cb, void *ud,
                             cl_timer_id_t *out);

  /** Stops a timer; its callback will not run again. @return CL_OK or CL_ENOENT.
   * OWNERSHIP: the timer's ud may be freed when this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*timer_stop)(cl_host_t *h, cl_timer_id_t id);

  /** Runs cb(ud) on the loop thread, soon. Every accepted post (CL_OK) is delivered exactly once, in order
   * per calling thread (posts never coalesce), and before fini: the core waits for accepted posts before it
   * calls fini. @return CL_OK; CL_EINVAL (cb NULL); CL_ECANCELED once the plugin is about to be finalised
   * (its threads get this while fini stops them); CL_ECLOSING if the loop is closing. On error cb never runs.
   * OWNERSHIP: ud stays the plugin's until cb returns. THREAD: any thread (this is the way back from a worker
   * or a plugin's own thread). SINCE: 1.0 */
  cl_status_t (*post)(cl_host_t *h, cl_post_cb cb, void *ud);

  /** Runs work(ud) on a worker thread, then done(ud, status) on the loop (a completion: exactly once, before
   * fini; CL_OK after work ran, CL_ECANCELED if it was cancelled before it started, by work_cancel or by
   * unloading). Use it for anything slower than about a millisecond (disk, hashing, external processes).
   * done may be NULL. @param [out] out the job's id (may be NULL). @return CL_OK, CL_EINVAL (work NULL),
   * CL_ECANCELED (unloading); on error no callback runs. OWNERSHIP: ud stays the plugin's and must stay valid
   * until done returns (or, with done NULL, until work returns; work never runs if cancelled).
   * THREAD: loop (work runs on a worker and may call only "any thread" slots). SINCE: 1.0 */
  cl_status_t (*work_queue)(cl_host_t *h, cl_work_cb work, cl_done_cb done, void *ud, cl_work_id_t *out);

  /** Cancels queued work that has not started; done then gets CL_ECANCELED. @return CL_OK, CL_ENOENT (not
   * this plugin's pending work), or CL_EBUSY if it is already running (done still runs normally).
   * OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*work_cancel)(cl_host_t *h, cl_work_id_t id);

  /** Watches a file descriptor the plugin owns (a socket, libusb's descriptors): cb is a notification.
   * @param [in] events CL_IO_READABLE | CL_IO_WRITABLE. @param [out] out the watch's id.
   * @return CL_OK, CL_EINVAL (bad fd), CL_EEXIST (fd already watched by this plugin), CL_ECANCELED
   * (unloading). OWNERSHIP: the fd stays the plugin's; stop the watch before closing it. ud must stay valid
   * until io_stop returns or unloading began. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*io_start)(cl_host_t *h, int fd, uint32_t events, cl_io_cb cb, void *ud, cl_io_id_t *out);

  /** Changes the events of a watch. @return CL_OK or CL_ENOENT. OWNERSHIP: nothing is passed.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*io_update)(cl_host_t *h, cl_io_id_t id, uint32_t events);

  /** Stops a watch; its callback will not run again. @return CL_OK or CL_ENOENT.
   * OWNERSHIP: the watch's ud may be freed when this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*io_stop)(cl_host_t *h, cl_io_id_t id);

  /* ---- since 1.0: events (publish/subscribe) ---- */

  /** Subscribes to a topic: an exact name ("instance.state"), a prefix ending in ".*" ("instance.*"), or "*".
   * Events are delivered asynchronously (never inside event_publish), in publication order.
   * @param [out] out the subscription's id. @return CL_OK, CL_EINVAL (bad pattern, cb NULL), CL_ECANCELED
   * (unloading). OWNERSHIP: topic is copied; ud must stay valid until event_unsubscribe returns or unloading
   * began. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*event_subscribe)(cl_host_t *h, cl_str_t topic, cl_event_cb cb, void *ud, cl_sub_id_t *out);

  /** Ends a subscription; no further deliveries. @return CL_OK or CL_ENOENT.
   * OWNERSHIP: the subscription's ud may be freed when this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*event_unsubscribe)(cl_host_t *h, cl_sub_id_t id);

  /** Publishes an event. @param [in] payload_json a JSON object (validated; CL_EINVAL if not one, or if the
   * topic is not [a-z0-9_.-]+). OWNERSHIP: topic and payload are copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*event_publish)(cl_host_t *h, cl_str_t topic, cl_str_t payload_json);

  /* ---- since 1.0: named operations (JSON in, JSON out) ---- */

  /** Registers an operation ("app.list"). Names are [a-z0-9_.-]+, unique across the core and all plugins.
   * @return CL_OK, CL_EINVAL (bad name), CL_EEXIST (taken). Operations are removed when unloading begins
   * (callers then get CL_ENOENT). OWNERSHIP: name is copied; ud must stay valid until fini.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*op_register)(cl_host_t *h, cl_str_t name, cl_op_cb cb, void *ud);

  /** Calls an operation of the core or of any plugin. cb is a completion: called exactly once,
   * asynchronously, before fini; with CL_ECANCELED if unloading begins before the result arrives.
   * @param [in] args_json a JSON object (empty means "{}"). @return CL_OK, CL_ENOENT (no such operation),
   * CL_EINVAL (args not a JSON object, cb NULL), CL_ECANCELED (unloading); on error cb is not called.
   * OWNERSHIP: name and args are copied; result_json given to cb is borrowed for the callback; ud must stay
   * valid until cb returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*op_call)(cl_host_t *h, cl_str_t name, cl_str_t args_json, cl_op_done_cb cb, void *ud);

  /** Answers an invocation accepted by a cl_op_cb. Exactly once per accepted call; calls still unanswered
   * after fini are answered by the core with CL_ECANCELED.
   * @param [in] status CL_OK, or the error. @param [in] result_json a JSON document; for errors,
   * {"error": "<message>"} (the core wraps a non-JSON or empty result into that shape).
   * @return CL_OK, or CL_ESTATE if the call was already answered. OWNERSHIP: result is copied; `call` is dead
   * after this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*op_reply)(cl_op_call_t *call, cl_status_t status, cl_str_t result_json);

  /* ---- since 1.0: the store (LMDB; JSON documents in named collections) ----
   * Collections a plugin names are private to it (the core prefixes them with the plugin's name). Reads see
   * every committed transaction, including ones whose disk flush is still in progress. Collection names are
   * [a-z0-9_.-]{1,64}; keys are 1..400 bytes without NUL; values are JSON text. */

  /** Reads one document. @param [out] out its JSON text. @return CL_OK, CL_ENOENT, CL_EINVAL (bad collection).
   * OWNERSHIP: collection and key borrowed; *out belongs to the plugin (buf_free). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*store_get)(cl_host_t *h, cl_str_t collection, cl_str_t key, cl_buf_t *out);

  /** Calls cb for every document whose key starts with prefix, in key order (synchronously, inside this
   * call). OWNERSHIP: key and value are borrowed for each callback; ud only for this call. The callback must
   * not write to the store. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*store_scan)(cl_host_t *h, cl_str_t collection, cl_str_t prefix, cl_scan_cb cb, void *ud);

  /** Starts a write transaction. Only one is open at a time per host; it must be committed or aborted before
   * control returns to the loop (else the core aborts it and logs), which makes read-modify-write atomic.
   * @return CL_OK or CL_EBUSY. OWNERSHIP: *out is the core's until txn_commit/txn_abort.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_begin)(cl_host_t *h, cl_txn_t **out);

  /** Reads through a transaction (sees its own writes). Same contract as store_get.
   * OWNERSHIP: *out belongs to the plugin (buf_free). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_get)(cl_txn_t *txn, cl_str_t collection, cl_str_t key, cl_buf_t *out);

  /** Writes a document (replacing any). value_json must be valid JSON (CL_EINVAL otherwise).
   * OWNERSHIP: collection, key and value are copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_put)(cl_txn_t *txn, cl_str_t collection, cl_str_t key, cl_str_t value_json);

  /** Deletes a document. @return CL_OK (also when it did not exist). OWNERSHIP: copied. THREAD: loop.
   * SINCE: 1.0 */
  cl_status_t (*txn_del)(cl_txn_t *txn, cl_str_t collection, cl_str_t key);

  /** Commits: the writes become visible to reads at once, all or nothing, and durable on disk before cb runs
   * (a completion, before fini: the core waits for it; cb may be NULL; called from fini, the commit happens
   * and cb is not called). @return CL_OK, or an error (nothing written, cb not called). OWNERSHIP: txn is dead after this returns, also on error; ud must stay valid
   * until cb returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*txn_commit)(cl_txn_t *txn, cl_commit_cb cb, void *ud);

  /** Discards a transaction. OWNERSHIP: txn is dead after this returns. THREAD: loop (from another thread it
   * only logs; the transaction is aborted at the end of its loop turn). SINCE: 1.0 */
  void (*txn_abort)(cl_txn_t *txn);

  /* ---- since 1.0: HTTP ----
   * A cl_request_t is valid from the handler call until the response is complete (resp_send, resp_file, or
   * resp_end after resp_start/sse_start). Every request gets exactly one response, even when the client has
   * gone (writes then return CL_ECLOSING and the request is freed once the response is ended); requests a
   * plugin still holds after fini are answered by the core (503, or the end of a started response). Routes may
   * be added only during init(). Responses always carry Content-Length when their length is known. */

  /** Adds a route. Patterns must lie inside the prefixes the configuration grants the plugin (by default
   * "/plugins/<name>/"). The handler is called for matching requests until unloading begins.
   * @return CL_OK, CL_EINVAL, CL_ENOENT (no such listener), CL_EPERM (prefix not granted),
   * CL_EEXIST (same method and pattern taken), CL_ESTATE (called after init).
   * OWNERSHIP: see cl_route_desc_t; desc->ud must stay valid until fini. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*route_add)(cl_host_t *h, const cl_route_desc_t *desc);

  /** @return the request method ("GET"). OWNERSHIP: borrowed until the request ends. THREAD: loop.
   * SINCE: 1.0 */
  cl_str_t (*req_method)(cl_request_t *r);

  /** @return the percent-decoded path, without the query string. OWNERSHIP: borrowed until the request ends.
   * THREAD: loop. SINCE: 1.0 */
  cl_str_t (*req_path)(cl_request_t *r);

  /** @return the raw query string, without '?' (empty if none). OWNERSHIP: borrowed until the request ends.
   * THREAD: loop. SINCE: 1.0 */
  cl_str_t (*req_query)(cl_request_t *r);

  /** Looks up a request header (case-insensitive; the first one if repeated).
   * @return CL_OK or CL_ENOENT. OWNERSHIP: name borrowed; *out borrowed until the request ends.
   * THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_header)(cl_request_t *r, cl_str_t name, cl_str_t *out);

  /** Looks up a parameter: path parameters first, then the query string, then form fields (CL_ROUTE_F_FORM),
   * all percent-decoded ('+' is a space in query and form). @return CL_OK or CL_ENOENT.
   * OWNERSHIP: name borrowed; *out borrowed until the request ends. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_param)(cl_request_t *r, cl_str_t name, cl_str_t *out);

  /** Enumerates query and form parameters in arrival order. @return CL_OK or CL_ENOENT past the end.
   * OWNERSHIP: *name and *value borrowed until the request ends. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_param_at)(cl_request_t *r, size_t index, cl_str_t *name, cl_str_t *value);

  /** The buffered body of a route without CL_ROUTE_F_STREAM_BODY (empty for form routes, whose fields are
   * parameters). OWNERSHIP: borrowed until the request ends. THREAD: loop. SINCE: 1.0 */
  cl_str_t (*req_body)(cl_request_t *r);

  /** Streams the body of a CL_ROUTE_F_STREAM_BODY route: cb gets each chunk, then exactly one final call (an
   * empty chunk with CL_OK at the end, or an error status; see cl_body_cb), before fini. If the plugin
   * completes the response first, no more body callbacks run: completing the response ends the stream.
   * @return CL_OK, CL_ESTATE (not a streaming route, or already reading), CL_ECANCELED (unloading).
   * OWNERSHIP: chunks are borrowed for each call; ud must stay valid until the final call returns or the
   * response is complete. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_body_read)(cl_request_t *r, cl_body_cb cb, void *ud);

  /** Pauses (paused != 0) or resumes delivery of body chunks, for back-pressure. @return CL_OK or CL_ESTATE.
   * OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_body_pause)(cl_request_t *r, int paused);

  /** Describes the index-th uploaded file of a CL_ROUTE_F_FORM request. @return CL_OK or CL_ENOENT.
   * OWNERSHIP: see cl_file_info_t. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_file_at)(cl_request_t *r, size_t index, cl_file_info_t *out);

  /** Moves the index-th uploaded file to dest, a path relative to the plugin's data directory (parent
   * directories are created; no "..", no absolute paths). The move is a rename on the same filesystem.
   * @return CL_OK, CL_ENOENT, CL_EINVAL (bad dest), CL_EEXIST (dest exists), CL_EIO.
   * OWNERSHIP: dest is copied; the moved file is the plugin's. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_file_take)(cl_request_t *r, size_t index, cl_str_t dest);

  /** The local address the client connected to (what the client used to reach this server), as text, and
   * the port. @return CL_OK or CL_ECLOSING (client gone before the address was read).
   * OWNERSHIP: *ip borrowed until the request ends. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_local_addr)(cl_request_t *r, cl_str_t *ip, uint16_t *port);

  /** The client's address and port. @return CL_OK or CL_ECLOSING.
   * OWNERSHIP: *ip borrowed until the request ends. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*req_peer_addr)(cl_request_t *r, cl_str_t *ip, uint16_t *port);

  /** Registers cb (a notification) to run at most once, when the client disconnects before the response is
   * complete (typical for SSE streams). It never runs after the response is complete or once unloading
   * began. One callback per request (a second call replaces it). @return CL_OK.
   * OWNERSHIP: ud must stay valid until cb ran, the response is complete, or fini. THREAD: loop.
   * SINCE: 1.0 */
  cl_status_t (*req_on_close)(cl_request_t *r, cl_req_close_cb cb, void *ud);

  /** Adds a response header before the response starts. Content-Length, Transfer-Encoding, Connection and
   * Date are the core's and are refused (CL_EINVAL). @return CL_OK, CL_EINVAL, CL_ESTATE (started).
   * OWNERSHIP: copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*resp_header_add)(cl_request_t *r, cl_str_t name, cl_str_t value);

  /** Sends a complete response with Content-Length. content_type may be empty (then none is sent).
   * @return CL_OK, CL_ESTATE (already started), CL_ECLOSING (client gone; the request is still finished).
   * OWNERSHIP: body copied; the request is dead after this returns (unless CL_ESTATE). THREAD: loop.
   * SINCE: 1.0 */
  cl_status_t (*resp_send)(cl_request_t *r, uint32_t status, cl_str_t content_type, cl_str_t body);

  /** Starts a streamed response. content_length >= 0 is sent as Content-Length and must match the bytes
   * written; -1 means unknown (chunked for HTTP/1.1 clients). Add Content-Type with resp_header_add first.
   * @return CL_OK, CL_EINVAL, CL_ESTATE, CL_ECLOSING. OWNERSHIP: nothing is passed. THREAD: loop.
   * SINCE: 1.0 */
  cl_status_t (*resp_start)(cl_request_t *r, uint32_t status, int64_t content_length);

  /** Writes response body bytes. If done is NULL the bytes are copied now; otherwise they are lent to the core
   * until done(ptr, hint) runs: a completion, always exactly once (also on error), on the loop thread from a
   * clean stack, before fini (the core waits for lent writes). Completion is the back-pressure signal. Called
   * from fini, the bytes are copied and done is not called (nothing is called after fini).
   * @return CL_OK, CL_ESTATE (not started), CL_ECLOSING (client gone; done still runs), CL_EINVAL.
   * OWNERSHIP: lent bytes stay the plugin's but must not change or be freed until done runs; hint is passed
   * back untouched. THREAD: loop (from another thread: CL_ESTATE, and done is not called). SINCE: 1.0 */
  cl_status_t (*resp_write)(cl_request_t *r, const void *ptr, size_t len, cl_free_cb done, void *hint);

  /** Ends a response started with resp_start or sse_start. @return CL_OK or CL_ESTATE.
   * OWNERSHIP: the request is dead after this returns. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*resp_end)(cl_request_t *r);

  /** Sends a file as the complete response (HEAD, Range, ETag handled). path must be absolute and inside the
   * data directory or the webroot. @return CL_OK (request dead afterwards), CL_ENOENT, CL_EPERM.
   * OWNERSHIP: path and content_type copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*resp_file)(cl_request_t *r, cl_str_t path, cl_str_t content_type);

  /** Starts a Server-Sent Events stream (200, text/event-stream, no caching). @return as resp_start.
   * OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*sse_start)(cl_request_t *r);

  /** Sends one SSE event. event may be empty (then the browser's "message" event). data may contain
   * newlines; they are framed correctly. @return CL_OK, CL_EINVAL, CL_ESTATE, CL_ECLOSING.
   * OWNERSHIP: copied. THREAD: loop. SINCE: 1.0 */
  cl_status_t (*sse_send)(cl_request_t *r, cl_str_t event, cl_str_t data);

  /* ---- since 1.1: reading JSON ----
   * Parse once, then read values by path. Paths are JSON Pointers (RFC 6901): "" is the whole document,
   * "/name" a member, "/items/0" an array element; "~1" and "~0" stand for '/' and '~' in member names.
   * Getters return CL_ENOENT when nothing is at the path and CL_EINVAL for a malformed path or a value of
   * another type, so "absent" (use a default) and "wrong" (refuse the input) stay apart. A document may be
   * used by one thread at a time. */

  /** Parses JSON text (at most 16 MiB and 64 levels of nesting) into a document.
   * @param [out] out the document. @return CL_OK, CL_EINVAL (not JSON, or trailing bytes), CL_ETOOBIG (over a
   * limit), CL_ENOMEM. OWNERSHIP: text is borrowed for the call (the document copies what it needs); *out
   * belongs to the plugin until json_free. THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_parse)(cl_host_t *h, cl_str_t text, cl_json_t **out);

  /** Releases a document (NULL is ignored). OWNERSHIP: every string read from it dies with it.
   * THREAD: any thread. SINCE: 1.1 */
  void (*json_free)(cl_host_t *h, cl_json_t *doc);

  /** The type of the value at path. @param [out] out CL_JSON_*. @return CL_OK, CL_ENOENT, CL_EINVAL.
   * OWNERSHIP: path borrowed. THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_type)(const cl_json_t *doc, cl_str_t path, int32_t *out);

  /** A string value, unescaped (it may contain NUL bytes; a NUL follows it, not counted in len).
   * @return CL_OK, CL_ENOENT, CL_EINVAL (not a string). OWNERSHIP: path borrowed; *out is borrowed from the
   * document until json_free. THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_get_str)(const cl_json_t *doc, cl_str_t path, cl_str_t *out);

  /** An integer value: a number without fraction that fits int64_t (2, -7, 1e3; not 1.5).
   * @return CL_OK, CL_ENOENT, CL_EINVAL (not an integer). OWNERSHIP: path borrowed. THREAD: any thread.
   * SINCE: 1.1 */
  cl_status_t (*json_get_int)(const cl_json_t *doc, cl_str_t path, int64_t *out);

  /** Any number, as a double. @return CL_OK, CL_ENOENT, CL_EINVAL (not a number). OWNERSHIP: path borrowed.
   * THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_get_num)(const cl_json_t *doc, cl_str_t path, double *out);

  /** A boolean, as 0 or 1. @return CL_OK, CL_ENOENT, CL_EINVAL (not true/false). OWNERSHIP: path borrowed.
   * THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_get_bool)(const cl_json_t *doc, cl_str_t path, int *out);

  /** The number of elements of an array or members of an object. @return CL_OK, CL_ENOENT, CL_EINVAL (neither
   * array nor object). OWNERSHIP: path borrowed. THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_get_len)(const cl_json_t *doc, cl_str_t path, size_t *out);

  /** The name of the index-th member of the object at path, in document order (to walk an object).
   * @return CL_OK, CL_ENOENT (no such member), CL_EINVAL (not an object). OWNERSHIP: path borrowed; *out is
   * borrowed from the document until json_free. THREAD: any thread. SINCE: 1.1 */
  cl_status_t (*json_key_at)(const cl_json_t *doc, cl_str_t path, size_t index, cl_str_t *out);


  /* ---- since 1.1: jobs ----
   * Long work (an import, a migration) as a job: it appears in job.list/job.get, publishes job.progress and
   * job.done on the event bus (so the manager's live pages show it), and can be cancelled by job.cancel. */

  /** Creates a running job. @param [in] kind what it is ("service.import"); [a-z0-9_.-]{1,64}.
   * @param [in] subject what it is about (a service id, an instance id; may be empty). @param [in] cancel asked
   * to stop it early (NULL: the job cannot be cancelled; job.cancel then answers CL_ENOTSUP).
   * @param [out] out the job. @return CL_OK, CL_EINVAL (bad kind, subject over 1024 bytes, out NULL),
   * CL_ECANCELED (unloading). OWNERSHIP: kind and subject copied; ud must stay valid until job_finish returns or
   * unloading began; *out see cl_job_t. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*job_create)(cl_host_t *h, cl_str_t kind, cl_str_t subject, cl_job_cancel_cb cancel, void *ud,
                            cl_job_t **out);

  /** The job's id ("job-42"), for replies such as {"job_id": ...}. OWNERSHIP: borrowed until the job ends.
   * THREAD: loop. SINCE: 1.1 */
  cl_str_t (*job_id)(cl_job_t *job);

  /** Reports progress: fraction in [0, 1] (clamped) and a short text ("copying disk: 1.2 of 4 GiB").
   * @return CL_OK, CL_EINVAL (fraction NaN, message over 1024 bytes), CL_ESTATE (already finished),
   * CL_ECANCELED (unloading). OWNERSHIP: message copied. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*job_progress)(cl_job_t *job, double fraction, cl_str_t message);

  /** Ends the job with its result (a JSON document; for errors {"error": "<message>"}, wrapped by the core
   * like op_reply; an empty success is {}). @return CL_OK, CL_EINVAL (status positive, or CL_OK with a result
   * that is not JSON; the job goes on), CL_ESTATE (already finished). OWNERSHIP: result copied; the job is dead
   * after this returns CL_OK. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*job_finish)(cl_job_t *job, cl_status_t status, cl_str_t result_json);

  /* ---- since 1.1: callers and privileged operations ---- */

  /** Registers an operation like op_register, with flags (CL_OP_F_PRIVILEGED).
   * @return as op_register; CL_EINVAL also for an unknown flag. OWNERSHIP: as op_register. THREAD: loop.
   * SINCE: 1.1 */
  cl_status_t (*op_register_ex)(cl_host_t *h, cl_str_t name, uint32_t flags, cl_op_cb cb, void *ud);

  /** Who made this call. @param [out] out filled (the plugin zero-fills it and sets struct_size first).
   * @return CL_OK, CL_EINVAL. OWNERSHIP: the strings in *out are borrowed until op_reply. THREAD: loop.
   * SINCE: 1.1 */
  cl_status_t (*op_caller)(cl_op_call_t *call, cl_caller_t *out);

  /** Calls an operation like op_call, on behalf of a principal this plugin authenticated (a front end: the
   * manager for its logged-in user, the offload API for a paired device). The callee sees CL_CALLER_AGENT with
   * this plugin's name and the principal; privileges are still this plugin's grants.
   * @return as op_call, CL_EINVAL (principal empty or over 256 bytes), CL_EPERM (see CL_OP_F_PRIVILEGED).
   * OWNERSHIP: as op_call; principal copied. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*op_call_as)(cl_host_t *h, cl_str_t name, cl_str_t args_json, cl_str_t principal,
                            cl_op_done_cb cb, void *ud);

  /* ---- since 1.1: listener guards, principals, static files, peer certificates ---- */

  /** Installs the guard of a listener (one per listener; the configuration must grant it to this plugin with
   * "guards": ["manager"]). From then on every request on that listener passes the guard first.
   * @return CL_OK, CL_EINVAL (cb NULL), CL_ENOENT (no such listener), CL_EPERM (not granted), CL_EEXIST
   * (already guarded), CL_ESTATE (called after init). Once the plugin unloads (or its init fails after this call) the listener
   * fails closed: every request on it gets 503, none goes unguarded. OWNERSHIP: listener copied; ud must stay
   * valid until fini. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*listener_guard_set)(cl_host_t *h, cl_str_t listener, cl_guard_cb cb, void *ud);

  /** Records whom the guard authenticated for this request ("user:admin"); only from inside a guard.
   * @return CL_OK, CL_EINVAL (empty or over 256 bytes), CL_ESTATE (not inside the guard). OWNERSHIP: copied.
   * THREAD: loop. SINCE: 1.1 */
  cl_status_t (*req_set_principal)(cl_request_t *r, cl_str_t principal);

  /** Whom the listener's guard authenticated for this request. @return CL_OK or CL_ENOENT (nobody).
   * OWNERSHIP: *out borrowed until the request ends. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*req_principal)(cl_request_t *r, cl_str_t *out);

  /** The hex SHA-256 of the client certificate's DER, on a listener that asks for client certificates
   * (mutual TLS: the listener's "tls_client_certs"). The core accepts any certificate whose key the client
   * proved it holds: authorise clients by this fingerprint. @return CL_OK or CL_ENOENT (no certificate).
   * OWNERSHIP: *out borrowed until the request ends. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*req_peer_cert)(cl_request_t *r, cl_str_t *out);

  /** Serves the files of a directory under url_prefix with the core's static file handler (ETag, Range, MIME,
   * HEAD, no traversal, no symlinks out of it). dir is relative to the plugin's files directory (host fact
   * "plugin_files_dir": the source tree's plugins/<name>/ in development, /usr/share/cloudletd/plugins/<name>/
   * when installed). url_prefix ends with '/' and must lie inside a granted prefix; "index.html" answers for
   * the prefix itself; GET and HEAD only. dir names a subdirectory ("www", "ui/dist"), never "." or "..": in
   * development the files directory is the plugin's source tree.
   * @return CL_OK, CL_EINVAL, CL_ENOENT (no such listener or directory), CL_EPERM, CL_EEXIST, CL_ESTATE (called
   * after init). OWNERSHIP: copied. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*static_add)(cl_host_t *h, cl_str_t listener, cl_str_t url_prefix, cl_str_t dir);

  /* ---- since 1.1: child processes ---- */

  /** Starts a program (never through a shell) and watches it on the loop: output callbacks while it runs,
   * then exactly one exit callback. The child gets its own process group, default signal handling, the
   * environment of desc->env only, and descriptors 0-2 (the core opens all of its own close-on-exec; open the
   * plugin's own with O_CLOEXEC too, or the child inherits them). Processes still running when unloading begins are
   * killed (SIGTERM, SIGKILL 2 s later) and their exit callback gets CL_ECANCELED, before fini.
   * @param [out] out the process. @return CL_OK, CL_EINVAL (no argv, bad flags, too many strings),
   * CL_ECANCELED (unloading); a program that cannot be started is reported through the exit callback
   * (CL_ENOENT, CL_EPERM, CL_EIO). OWNERSHIP: desc copied; ud must stay valid until the exit callback returns.
   * THREAD: loop. SINCE: 1.1 */
  cl_status_t (*proc_spawn)(cl_host_t *h, const cl_proc_desc_t *desc, cl_proc_output_cb on_output,
                            cl_proc_exit_cb on_exit, void *ud, cl_proc_t **out);

  /** Writes to the process's stdin (CL_PROC_F_STDIN_PIPE). done NULL copies the bytes now; else they are lent
   * until done(ptr, hint) runs: a completion, exactly once when this returns CL_OK or CL_ECLOSING (also when
   * the child stops reading), on the loop from a clean stack, before fini. Completion is the back-pressure
   * signal. @return CL_OK, CL_EINVAL, CL_ESTATE (no stdin pipe, closed by proc_close_stdin, or a handle whose
   * exit callback returned), CL_ECLOSING (the process has exited). OWNERSHIP: lent bytes must not change or be
   * freed until done runs. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*proc_write)(cl_proc_t *p, const void *ptr, size_t len, cl_free_cb done, void *hint);

  /** Closes the process's stdin (end of input) once what was written is sent. @return CL_OK or CL_ESTATE.
   * OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*proc_close_stdin)(cl_proc_t *p);

  /** Sends a signal (SIGTERM, SIGKILL, SIGHUP, SIGINT) to the process's group. @return CL_OK, CL_EINVAL
   * (another signal), CL_ESTATE (already exited). OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*proc_kill)(cl_proc_t *p, int32_t signum);

  /* ---- since 1.1: WebSocket (RFC 6455, over the request's HTTP/1.1 connection, TLS included) ---- */

  /** Accepts a WebSocket upgrade for a GET request that asked for one (Upgrade: websocket, Connection:
   * Upgrade, Sec-WebSocket-Key, version 13), now or later (after an operation call): the core answers 101,
   * the request is complete (dead once this returns CL_OK) and the socket lives on. Frames the client sent
   * before the accept are delivered after it. Ping/pong, fragmentation, masking, UTF-8 checks and the
   * closing handshake are the core's; the listener's guard and the Host and cross-site checks ran on the
   * request as on any other. Sockets still open when unloading begins are closed with 1001 and their close
   * callback gets CL_ECANCELED, before fini.
   * @param [out] out the socket. @return CL_OK; CL_EINVAL (not a valid upgrade request, a subprotocol the
   * client did not offer, or a bad desc: the request is still the plugin's to answer, e.g. with 400);
   * CL_ESTATE (response already started, or the client left); CL_ECANCELED (unloading).
   * OWNERSHIP: desc copied; ud must stay valid until the close callback returns. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*ws_accept)(cl_request_t *r, const cl_ws_desc_t *desc, cl_ws_message_cb on_message,
                           cl_ws_close_cb on_close, void *ud, cl_ws_t **out);

  /** Sends one message (type CL_WS_TEXT, valid UTF-8, or CL_WS_BINARY). As resp_write: done NULL copies now
   * (a client that lets copied messages pile up unread is dropped), else the bytes are lent until done runs:
   * a completion, exactly once (also on error), from a clean stack, before fini; it is the back-pressure
   * signal. @return CL_OK, CL_EINVAL (bad type, text not UTF-8), CL_ECLOSING (closing or closed), CL_ESTATE (a
   * handle whose close callback returned; done is not called). OWNERSHIP: lent bytes must not change or be
   * freed until done runs; hint is passed back untouched. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*ws_send)(cl_ws_t *ws, int32_t type, const void *ptr, size_t len, cl_free_cb done, void *hint);

  /** Pauses (paused != 0) or resumes delivery of messages; the socket is not read while paused.
   * @return CL_OK, CL_ECLOSING, CL_ESTATE (stale handle). OWNERSHIP: nothing is passed. THREAD: loop.
   * SINCE: 1.1 */
  cl_status_t (*ws_pause)(cl_ws_t *ws, int paused);

  /** Starts the closing handshake with code (1000-1003, 1007-1014 or 3000-4999) and a reason (at most 123
   * bytes of UTF-8); the close callback follows once the peer answers (or after 5 s). @return CL_OK,
   * CL_EINVAL, CL_ECLOSING (already closing), CL_ESTATE (stale handle). OWNERSHIP: reason copied.
   * THREAD: loop. SINCE: 1.1 */
  cl_status_t (*ws_close)(cl_ws_t *ws, uint32_t code, cl_str_t reason);

  /* ---- since 1.1: outbound HTTP(S) (one HTTP/1.1 connection per request, no redirects) ---- */

  /** Starts a request to another server (a peer cloudlet, the app store). Name lookup runs on a worker;
   * connect, TLS (1.2+, the server checked against ca_file or the system's CA store and the URL's host name
   * or IP, SNI, an optional client certificate, an optional pin) and the exchange run on the loop.
   * on_response runs once the response head arrived; on_body gets the body in chunks, then its final call.
   * A request body (body_length != 0) is sent with fetch_write and, for -1, fetch_end. Requests still open
   * when unloading begins end with CL_ECANCELED, before fini.
   * @param [out] out the exchange. @return CL_OK, CL_EINVAL (bad URL, method, header, flags, bound, pin, or
   * a TLS file that does not load), CL_ECANCELED (unloading). OWNERSHIP: desc copied; ud must stay valid until
   * the final body call returns. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_start)(cl_host_t *h, const cl_fetch_desc_t *desc, cl_fetch_response_cb on_response,
                             cl_fetch_body_cb on_body, void *ud, cl_fetch_t **out);

  /** Sends request body bytes (queued until connected). done NULL copies them now (CL_EBUSY past 1 MiB of
   * copies not yet sent); else they are lent until done(ptr, hint) runs: a completion, exactly once when this
   * returns CL_OK or CL_ECLOSING, once the bytes were handed to the socket (or the exchange ended), from a
   * clean stack, before the final body call. Completion is the back-pressure signal: keep a bounded number
   * of writes outstanding. An empty write sends nothing. @return CL_OK, CL_EINVAL, CL_EBUSY, CL_ESTATE (no
   * body declared, more than body_length, after fetch_end, or a stale handle; done is not called),
   * CL_ECLOSING (the exchange ended). OWNERSHIP: lent bytes must not change or be freed until done runs;
   * hint is passed back untouched. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_write)(cl_fetch_t *f, const void *ptr, size_t len, cl_free_cb done, void *hint);

  /** Ends a request body of unknown length (body_length -1). @return CL_OK or CL_ESTATE (another body
   * length, ended already, or a stale handle). OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_end)(cl_fetch_t *f);

  /** Looks up a response header (case-insensitive; the first if repeated), from on_response on.
   * @return CL_OK, CL_ENOENT, CL_EINVAL, CL_ESTATE (no response yet, or a stale handle). OWNERSHIP: name
   * borrowed; *out borrowed until the final body call returns. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_header)(cl_fetch_t *f, cl_str_t name, cl_str_t *out);

  /** The hex SHA-256 of the server certificate's DER (https, from on_response on): how a plugin learns a
   * peer's fingerprint to pin it later. @return CL_OK, CL_EINVAL, CL_ENOENT (plain http), CL_ESTATE (no
   * response yet, or a stale handle). OWNERSHIP: *out borrowed until the final body call returns.
   * THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_peer_cert)(cl_fetch_t *f, cl_str_t *out);

  /** Pauses (paused != 0) or resumes delivery of body chunks: the socket is not read while paused (the
   * server's writes block: back-pressure), and the idle timeout does not run. @return CL_OK or CL_ESTATE
   * (ended, or a stale handle). OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_pause)(cl_fetch_t *f, int paused);

  /** Abandons the exchange at any point: the connection is closed and the final body call follows with
   * CL_ECANCELED, from a clean stack (no body chunk in between). @return CL_OK or CL_ESTATE (already ended:
   * its final call is still to come or has run). OWNERSHIP: nothing is passed. THREAD: loop. SINCE: 1.1 */
  cl_status_t (*fetch_cancel)(cl_fetch_t *f);

  /* New slots are appended here, at the end of the struct only, in a group marked "since 1.N". */
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
   * @return CL_OK, or an error: the core then unloads the plugin without calling fini (completions of what
   * init started are still delivered, see the lifecycle at the top), logs the error and goes on without it.
   * OWNERSHIP: config borrowed for the call; h and api valid until fini returns (after a failed init: until
   * the last completion returned). THREAD: loop. SINCE: 1.0 */
  cl_status_t (*init)(cl_host_t *h, const cl_host_api_t *api, cl_str_t config, void **state);

  /** Tears the plugin down at shutdown: stop threads (join them), release state. When fini runs, unloading
   * has stopped timers, watches, subscriptions, routes and operations, and every completion (work, posts,
   * lent writes, commits, operation results, body streams) has been delivered; post now returns
   * CL_ECANCELED. Requests and operation calls still unanswered are answered by the core after fini returns.
   * Nothing is called after fini. May be NULL. THREAD: loop. SINCE: 1.0 */
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
