/*
 * mailbox_poster: a test fixture plugin for the offload API's integration tests. Nothing outside the core posts
 * device messages yet (migration will), so this exposes the real core operation message.post on the manager
 * listener: POST /plugins/mailbox_poster/post with the operation's JSON arguments as the body.
 */
#include <stdlib.h>
#include <string.h>

#include "cloudlet_plugin.h"

typedef struct poster_s {
  cl_host_t *h;
  const cl_host_api_t *api;
} poster_t;

typedef struct pending_s {
  const cl_host_api_t *api;
  cl_request_t *req;
} pending_t;

static void on_posted(void *ud, cl_status_t status, cl_str_t result) {
  pending_t *p = ud;
  p->api->resp_send(p->req, status == CL_OK ? 200 : 400, CL_STR_LIT("application/json"), result);
  free(p);
}

static cl_status_t on_post(void *ud, cl_request_t *req) {
  poster_t *st = ud;
  pending_t *p = malloc(sizeof *p);
  cl_status_t rc;
  if (!p) return CL_ENOMEM;
  p->api = st->api;
  p->req = req;
  rc = st->api->op_call(st->h, CL_STR_LIT("message.post"), st->api->req_body(req), on_posted, p);
  if (rc != CL_OK) free(p);
  return rc;
}

static cl_status_t poster_init(cl_host_t *h, const cl_host_api_t *api, cl_str_t config, void **state) {
  poster_t *st = calloc(1, sizeof *st);
  cl_route_desc_t route;
  cl_status_t rc;
  (void)config;
  if (!st) return CL_ENOMEM;
  st->h = h;
  st->api = api;
  memset(&route, 0, sizeof route);
  route.struct_size = sizeof route;
  route.listener = "manager";
  route.method = "POST";
  route.pattern = "/plugins/mailbox_poster/post";
  route.handler = on_post;
  route.ud = st;
  rc = api->route_add(h, &route);
  if (rc != CL_OK) {
    free(st);
    return rc;
  }
  *state = st;
  return CL_OK;
}

static void poster_fini(cl_host_t *h, void *state) {
  (void)h;
  free(state);
}

static const cl_plugin_desc_t poster_desc = {
    sizeof(cl_plugin_desc_t), CL_ABI_MAJOR, CL_ABI_MINOR, "mailbox_poster", "1.0.0", 0, poster_init, poster_fini, {0}};

CL_PLUGIN_DEFINE(poster_desc)
