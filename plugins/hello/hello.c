/*
 * hello: the smallest complete cloudletd plugin. Copy this file to start your own.
 *
 * It shows each kind of thing a plugin does, in plain C99 against abi/cloudlet_plugin.h only:
 *   - a route:      GET /plugins/hello/greet?name=X   -> {"greeting":"hello, X","count":N}
 *   - an operation: "hello.greet" {"name":"X"}        -> the same JSON (other plugins and front ends call it)
 *   - the store:    a per-name greeting counter in the plugin's private collection "greetings", answered only
 *                   once the new count is durable (the pattern for anything a client must be able to trust)
 *   - an event:     "hello.greeted" {"name":"X","count":N} after each greeting
 *   - a timer:      a log line every `heartbeat_s` seconds when configured (config {"heartbeat_s": N})
 *   - JSON input:   arguments and configuration read with the host's json_* slots (ABI 1.1)
 *   - a WebSocket:  GET /plugins/hello/echo (upgrade) echoes each message back (ABI 1.1 ws_* slots)
 *
 * Rules worth copying: keep `h` and `api` in your state (no globals); every hook runs on the loop thread;
 * never block (use work_queue for slow work); copy anything borrowed you want to keep.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloudlet_plugin.h"

typedef struct hello_s {
  cl_host_t *h;
  const cl_host_api_t *api;
  cl_timer_id_t heartbeat;
} hello_t;

/* Names go into JSON and store keys: accept a conservative alphabet instead of escaping. */
static int valid_name(cl_str_t n) {
  size_t i;
  if (n.len == 0 || n.len > 64) return 0;
  for (i = 0; i < n.len; i++) {
    char c = n.ptr[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
          c == '.'))
      return 0;
  }
  return 1;
}

/* One greeting in flight: the reply waits until the new count is durable, so a greeting acknowledged to the
 * client survives a crash (even kill -9 or power loss) right after it. Either req or call is set. */
typedef struct greeting_s {
  hello_t *st;
  cl_request_t *req;
  cl_op_call_t *call;
  long count;
  size_t name_len;
  char name[64];
} greeting_t;

static void on_durable(void *ud, cl_status_t status) {
  greeting_t *g = ud;
  const cl_host_api_t *api = g->st->api;
  char body[160];
  int n = snprintf(body, sizeof body, "{\"greeting\":\"hello, %.*s\",\"count\":%ld}", (int)g->name_len, g->name,
                   g->count);
  if (status == CL_OK) {
    char event[128];
    int m = snprintf(event, sizeof event, "{\"name\":\"%.*s\",\"count\":%ld}", (int)g->name_len, g->name, g->count);
    api->event_publish(g->st->h, CL_STR_LIT("hello.greeted"), (cl_str_t){event, (size_t)m});
  }
  if (g->req) {
    if (status == CL_OK) {
      api->resp_send(g->req, 200, CL_STR_LIT("application/json"), (cl_str_t){body, (size_t)n});
    } else {
      api->resp_send(g->req, 503, CL_STR_LIT("text/plain"), CL_STR_LIT("could not store the greeting\n"));
    }
  } else {
    api->op_reply(g->call, status, status == CL_OK ? (cl_str_t){body, (size_t)n}
                                                   : CL_STR_LIT("{\"error\":\"could not store the greeting\"}"));
  }
  free(g);
}

/* Counts one greeting for `name` (read-modify-write in one transaction); the answer follows in on_durable. */
static cl_status_t greet(hello_t *st, cl_str_t name, cl_request_t *req, cl_op_call_t *call) {
  const cl_host_api_t *api = st->api;
  cl_txn_t *txn;
  cl_buf_t old;
  char value[32];
  cl_status_t rc;
  int n;
  greeting_t *g = calloc(1, sizeof *g);
  if (!g) return CL_ENOMEM;
  g->st = st;
  g->req = req;
  g->call = call;
  g->name_len = name.len;
  memcpy(g->name, name.ptr, name.len); /* valid_name() bounds it to 64 */

  rc = api->txn_begin(st->h, &txn);
  if (rc != CL_OK) {
    free(g);
    return rc;
  }
  if (api->txn_get(txn, CL_STR_LIT("greetings"), name, &old) == CL_OK) {
    g->count = strtol(old.ptr, NULL, 10); /* core buffers are NUL-terminated */
    api->buf_free(st->h, &old);
  }
  g->count++;
  n = snprintf(value, sizeof value, "%ld", g->count);
  rc = api->txn_put(txn, CL_STR_LIT("greetings"), name, (cl_str_t){value, (size_t)n});
  if (rc == CL_OK) {
    rc = api->txn_commit(txn, on_durable, g); /* visible at once; on_durable runs once it is on disk */
  } else {
    api->txn_abort(txn);
  }
  if (rc != CL_OK) free(g);
  return rc;
}

static cl_status_t on_greet_route(void *ud, cl_request_t *req) {
  hello_t *st = ud;
  cl_str_t name;
  if (st->api->req_param(req, CL_STR_LIT("name"), &name) != CL_OK) name = CL_STR_LIT("world");
  if (!valid_name(name)) {
    return st->api->resp_send(req, 400, CL_STR_LIT("text/plain"), CL_STR_LIT("name must be [A-Za-z0-9._-]{1,64}\n"));
  }
  return greet(st, name, req, NULL); /* on error the core answers with the matching HTTP status */
}

/* Operation "hello.greet": args {"name": "X"} (name optional). Arguments are read with the host's JSON
 * slots: parse once, read by path, free. No hand-written parser, whatever the spacing or escaping. */
static cl_status_t on_greet_op(void *ud, cl_op_call_t *call, cl_str_t args) {
  hello_t *st = ud;
  const cl_host_api_t *api = st->api;
  cl_json_t *doc;
  cl_str_t name = CL_STR_LIT("world");
  cl_status_t rc = api->json_parse(st->h, args, &doc);
  if (rc != CL_OK) return rc;
  rc = api->json_get_str(doc, CL_STR_LIT("/name"), &name); /* borrowed from doc until json_free */
  if (rc == CL_ENOENT) {
    name = CL_STR_LIT("world");
    rc = CL_OK;
  }
  if (rc == CL_OK && !valid_name(name)) rc = CL_EINVAL;
  if (rc == CL_OK) rc = greet(st, name, NULL, call); /* greet copies the name */
  api->json_free(st->h, doc);
  return rc;
}

/* WebSocket echo: each message goes back as it came (copied: the bytes are borrowed only for the call).
 * The core does ping/pong, fragments, masking, UTF-8 checks and the closing handshake. */
static void on_echo_message(void *ud, cl_ws_t *ws, int32_t type, cl_str_t data) {
  hello_t *st = ud;
  st->api->ws_send(ws, type, data.ptr, data.len, NULL, NULL);
}

static void on_echo_close(void *ud, cl_ws_t *ws, cl_status_t status, uint32_t code, cl_str_t reason) {
  hello_t *st = ud;
  char line[200];
  cl_str_t msg;
  int n;
  (void)ws;
  n = snprintf(line, sizeof line, "echo socket closed: %s, code %u, reason \"%.*s\"", st->api->strerror(status),
               (unsigned)code, (int)(reason.len > 123 ? 123 : reason.len), reason.ptr ? reason.ptr : "");
  msg.ptr = line;
  msg.len = n < 0 ? 0 : ((size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
  st->api->log(st->h, CL_LOG_INFO, msg);
}

static cl_status_t on_echo_route(void *ud, cl_request_t *req) {
  hello_t *st = ud;
  cl_ws_desc_t desc;
  cl_ws_t *ws;
  cl_status_t rc;
  memset(&desc, 0, sizeof desc);
  desc.struct_size = sizeof desc;
  desc.max_message = 64 * 1024;
  rc = st->api->ws_accept(req, &desc, on_echo_message, on_echo_close, st, &ws);
  if (rc == CL_EINVAL) {
    return st->api->resp_send(req, 400, CL_STR_LIT("text/plain"), CL_STR_LIT("this is a WebSocket endpoint\n"));
  }
  return rc;
}

static void on_heartbeat(void *ud, cl_timer_id_t id) {
  hello_t *st = ud;
  (void)id;
  st->api->log(st->h, CL_LOG_INFO, CL_STR_LIT("still here"));
}

static cl_status_t hello_init(cl_host_t *h, const cl_host_api_t *api, cl_str_t config, void **state) {
  hello_t *st;
  cl_route_desc_t route;
  cl_status_t rc;
  cl_json_t *cfg;
  int64_t heartbeat_s = 0;

  st = calloc(1, sizeof *st);
  if (!st) return CL_ENOMEM;
  st->h = h;
  st->api = api;

  memset(&route, 0, sizeof route);
  route.struct_size = sizeof route;
  route.listener = "manager";
  route.method = "GET";
  route.pattern = "/plugins/hello/greet";
  route.handler = on_greet_route;
  route.ud = st;
  rc = api->route_add(h, &route);
  if (rc == CL_OK) rc = api->op_register(h, CL_STR_LIT("hello.greet"), on_greet_op, st);
  if (rc == CL_OK && CL_HAS(api, ws_accept)) { /* an older core has no WebSockets: greet anyway */
    route.pattern = "/plugins/hello/echo";
    route.handler = on_echo_route;
    rc = api->route_add(h, &route);
  }
  if (rc != CL_OK) {
    free(st); /* the core removes whatever was registered */
    return rc;
  }

  /* Optional heartbeat: config {"heartbeat_s": N}. */
  rc = api->json_parse(h, config, &cfg);
  if (rc == CL_OK) {
    rc = api->json_get_int(cfg, CL_STR_LIT("/heartbeat_s"), &heartbeat_s);
    api->json_free(h, cfg);
  }
  if (rc == CL_ENOENT) {
    heartbeat_s = 0; /* not configured */
  } else if (rc != CL_OK || heartbeat_s < 0 || heartbeat_s > 86400) {
    api->log(h, CL_LOG_ERROR, CL_STR_LIT("config: heartbeat_s must be an integer number of seconds (0..86400)"));
    free(st); /* the core removes the route and operation registered above */
    return CL_EINVAL;
  }
  if (heartbeat_s > 0) {
    api->timer_start(h, (uint64_t)heartbeat_s * 1000, (uint64_t)heartbeat_s * 1000, on_heartbeat, st, &st->heartbeat);
  }
  api->log(h, CL_LOG_INFO, CL_STR_LIT("ready: GET /plugins/hello/greet?name=you"));
  *state = st;
  return CL_OK;
}

static void hello_fini(cl_host_t *h, void *state) {
  hello_t *st = state;
  if (st->heartbeat) st->api->timer_stop(h, st->heartbeat);
  free(st);
}

static const cl_plugin_desc_t hello_desc = {
    sizeof(cl_plugin_desc_t), CL_ABI_MAJOR, CL_ABI_MINOR, "hello", "1.1.0", 0, hello_init, hello_fini, {0}};

CL_PLUGIN_DEFINE(hello_desc)
