// HTTP server: streamed request bodies (CL_ROUTE_F_STREAM_BODY), streamed responses with lent buffers,
// Server-Sent Events, and clients that leave while a handler still owns their request.
#include "server_test_util.h"

using namespace httptest;

namespace {

// One streamed upload (loop thread only, except `seen`).
struct Upload {
  Harness* h = nullptr;
  Request* req = nullptr;
  uint64_t hash = 1469598103934665603ull;
  uint64_t size = 0;
  int chunks = 0;
  int ends = 0;
  int errors = 0;
  cl_status_t last_error = CL_OK;
  bool paused = false;
  int chunks_while_paused = 0;
  int chunks_after_answer = 0;
  int close_calls = 0;
  bool answered = false;
  cl_status_t answer_status = 1;          // what the answer returned (1: never answered)
  std::atomic<uint64_t>* seen = nullptr;  // bytes received by all uploads, readable by the client thread
  // Behaviour knobs.
  bool pause_first = false;   // pause on the first chunk, resume 200 ms later
  bool answer_early = false;  // answer 403 on the first chunk
  int attach_delay_ms = 0;    // call read_body this long after the handler ran
  bool watch_close = false;   // register a close callback
};

void on_chunk(void* ud, cl_request_t* r, cl_status_t st, cl_str_t chunk) {
  auto* u = static_cast<Upload*>(ud);
  EXPECT_EQ(r, u->req);
  if (u->answered) {
    u->chunks_after_answer++;  // the request is dead after the answer: this must never happen
    return;
  }
  if (st != CL_OK) {
    u->errors++;
    u->last_error = st;
    u->answered = true;
    u->answer_status = r->send_error(st == CL_ETOOBIG ? 413 : st == CL_EINVAL ? 400 : 500, "upload failed");
    return;
  }
  if (u->paused) u->chunks_while_paused++;
  if (chunk.len == 0) {
    u->ends++;
    u->answered = true;
    u->answer_status = r->send(200, "text/plain", std::to_string(u->size) + ":" + std::to_string(u->hash));
    return;
  }
  u->chunks++;
  u->size += chunk.len;
  if (u->seen) *u->seen += chunk.len;
  u->hash = fnv(std::string_view(chunk.ptr, chunk.len), u->hash);
  if (u->answer_early) {
    u->answered = true;
    u->answer_status = r->send(403, "text/plain", "no thanks");
    return;
  }
  if (u->pause_first && u->chunks == 1) {
    u->paused = true;
    EXPECT_EQ(r->pause_body(true), CL_OK);
    u->h->loop.timer_start(200, 0, [u] {
      u->paused = false;
      EXPECT_EQ(u->req->pause_body(false), CL_OK);
    });
  }
}

// POST /upload, a streaming route; each request gets a fresh Upload configured from `config`.
struct UploadRoute {
  Harness& h;
  std::function<void(Upload&)> config = [](Upload&) {};
  std::vector<std::unique_ptr<Upload>> uploads;  // loop thread until run() returns
  std::atomic<int> started{0};
  std::atomic<uint64_t> seen{0};

  explicit UploadRoute(Harness& harness, uint64_t max_body = 0) : h(harness) {
    h.route(
        "POST", "/upload",
        [this](Request& r) {
          uploads.push_back(std::make_unique<Upload>());
          Upload* u = uploads.back().get();
          u->h = &h;
          u->req = &r;
          u->seen = &seen;
          config(*u);
          if (u->watch_close) {
            r.close_cb = [](void* ud, cl_request_t*) { static_cast<Upload*>(ud)->close_calls++; };
            r.close_ud = u;
          }
          started++;
          if (u->attach_delay_ms == 0) {
            EXPECT_EQ(r.read_body(on_chunk, u), CL_OK);
            EXPECT_EQ(r.read_body(on_chunk, u), CL_ESTATE);  // one reader per request
          } else {
            h.loop.timer_start(u->attach_delay_ms, 0, [u] { EXPECT_EQ(u->req->read_body(on_chunk, u), CL_OK); });
          }
          return CL_OK;
        },
        CL_ROUTE_F_STREAM_BODY, max_body);
  }
};

std::string digest(const std::string& body) { return std::to_string(body.size()) + ":" + std::to_string(fnv(body)); }

std::string upload_head(size_t length) {
  return "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n";
}
const std::string kChunkedUploadHead = "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";

}  // namespace

TEST(HttpServerStream, StreamedRequestBodyWithLengthAndChunked) {
  Harness h;
  UploadRoute up(h);
  h.route("POST", "/buffered", [](Request& r) {
    EXPECT_EQ(r.read_body(on_chunk, nullptr), CL_ESTATE);  // not a streaming route
    EXPECT_EQ(r.pause_body(true), CL_ESTATE);
    return r.send(200, "text/plain", std::to_string(r.body.size()));
  });
  std::string body = pattern_bytes(3 << 20, 7);
  std::string body2 = pattern_bytes(2 << 20, 8);
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.send(upload_head(body.size())));
    for (size_t off = 0; off < body.size(); off += 777777) ASSERT_TRUE(c.send(body.substr(off, 777777)));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, digest(body));
    // The same connection, chunked.
    std::vector<std::string> pieces;
    for (size_t off = 0; off < body2.size(); off += 300001) pieces.push_back(body2.substr(off, 300001));
    r = c.roundtrip(kChunkedUploadHead + chunked(pieces));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, digest(body2));
    r = c.roundtrip(post("/buffered", "12345"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "5");
  });
  ASSERT_EQ(up.uploads.size(), 2u);
  for (auto& u : up.uploads) {
    EXPECT_EQ(u->ends, 1);
    EXPECT_EQ(u->errors, 0);
    EXPECT_EQ(u->answer_status, CL_OK);
  }
}

TEST(HttpServerStream, PausedReaderGetsNothingUntilResumedAndLateReaderGetsEverything) {
  Harness h;
  UploadRoute up(h);
  std::string body = pattern_bytes(3 << 20, 9);
  up.config = [](Upload& u) { u.pause_first = true; };
  h.run([&] {
    Client c(h.port);
    auto t0 = Clock::now();
    auto r = c.roundtrip(upload_head(body.size()) + body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, digest(body));
    EXPECT_GE(ms_since(t0), 190);  // the reader's pause held the upload back
    ASSERT_TRUE(h.on_loop([&] { up.config = [](Upload& u) { u.attach_delay_ms = 150; }; }));
    r = c.roundtrip(kChunkedUploadHead + chunked({body.substr(0, 1 << 20), body.substr(1 << 20)}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, digest(body));
  });
  ASSERT_EQ(up.uploads.size(), 2u);
  EXPECT_EQ(up.uploads[0]->chunks_while_paused, 0);
  EXPECT_GT(up.uploads[0]->chunks, 1);
  EXPECT_EQ(up.uploads[1]->ends, 1);
}

TEST(HttpServerStream, EarlyAnswerBeforeTheBodyEnds) {
  Harness h;
  UploadRoute up(h);
  up.config = [](Upload& u) { u.answer_early = true; };
  std::string body = pattern_bytes(1 << 20, 3);
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.send(upload_head(body.size()) + body.substr(0, 100000)));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403);
    EXPECT_EQ(r->body, "no thanks");
    EXPECT_TRUE(r->closes()) << "the unread body makes the connection unusable";
    // The client finishes sending (as curl does); the server discards it and closes, well before the 3 s
    // body timeout.
    c.send(body.substr(100000));
    auto t0 = Clock::now();
    EXPECT_TRUE(c.wait_closed(2500));
    EXPECT_LT(ms_since(t0), 1000);
  });
  ASSERT_EQ(up.uploads.size(), 1u);
  EXPECT_EQ(up.uploads[0]->answer_status, CL_OK);
  EXPECT_EQ(up.uploads[0]->chunks_after_answer, 0);
  EXPECT_EQ(up.uploads[0]->errors, 0);
}

TEST(HttpServerStream, StreamedBodyOverTheRouteLimit) {
  Harness h;
  UploadRoute up(h, 100000);
  h.run([&] {
    {
      // Chunked: the reader learns it with CL_ETOOBIG and answers 413.
      Client c(h.port);
      c.send(kChunkedUploadHead + chunked({std::string(60000, 'a'), std::string(60000, 'b')}));
      auto r = c.read_response();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 413);
      EXPECT_TRUE(r->closes());
      EXPECT_TRUE(c.wait_closed(2500));
    }
    {
      // Content-Length: refused before the handler runs.
      Client c(h.port);
      c.send(upload_head(200000));
      auto r = c.read_response();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 413);
      EXPECT_TRUE(c.wait_closed(2500));
    }
  });
  ASSERT_EQ(up.uploads.size(), 1u);
  EXPECT_EQ(up.uploads[0]->errors, 1);
  EXPECT_EQ(up.uploads[0]->last_error, CL_ETOOBIG);
  EXPECT_EQ(up.uploads[0]->chunks_after_answer, 0);
}

TEST(HttpServerStream, MalformedStreamedBodyEndsTheReaderWithAnError) {
  Harness h;
  UploadRoute up(h);
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.send(kChunkedUploadHead + "5\r\nhello\r\n"));
    ASSERT_TRUE(wait_for([&] { return up.seen >= 5; }, 3000));
    ASSERT_TRUE(c.send("not-hex\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);  // the handler's answer to CL_EINVAL
    EXPECT_TRUE(r->closes());
    auto t0 = Clock::now();
    EXPECT_TRUE(c.wait_closed(2500));
    EXPECT_LT(ms_since(t0), 1000);
  });
  ASSERT_EQ(up.uploads.size(), 1u);
  EXPECT_EQ(up.uploads[0]->errors, 1);
  EXPECT_EQ(up.uploads[0]->last_error, CL_EINVAL);
  EXPECT_EQ(up.uploads[0]->answer_status, CL_OK);
}

TEST(HttpServerStream, BodilessRequestsOnAStreamingRouteKeepTheConnection) {
  Harness h;
  int ends = 0;
  h.route(
      "", "/s",
      [&](Request& r) {
        if (r.method == "GET") return r.send(200, "text/plain", "answered in the handler");
        // A reader attached to a request without a body gets the end at once.
        EXPECT_EQ(r.read_body(
                      [](void* ud, cl_request_t* req, cl_status_t st, cl_str_t chunk) {
                        EXPECT_EQ(st, CL_OK);
                        EXPECT_EQ(chunk.len, 0u);
                        ++*static_cast<int*>(ud);
                        req->send(200, "text/plain", "empty body");
                      },
                      &ends),
                  CL_OK);
        return CL_OK;
      },
      CL_ROUTE_F_STREAM_BODY);
  h.run([&] {
    Client c(h.port);
    for (int i = 0; i < 3; i++) {
      auto r = c.roundtrip(get("/s"));
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "answered in the handler");
      EXPECT_FALSE(r->closes());
      r = c.roundtrip("DELETE /s HTTP/1.1\r\nHost: t\r\n\r\n");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->body, "empty body");
      EXPECT_FALSE(r->closes());
    }
  });
  EXPECT_EQ(h.stats.accepted, 1u);
  EXPECT_EQ(ends, 3);
}

TEST(HttpServerStream, ClientLeavingMidUploadEndsTheBodyWithAnError) {
  Harness h;
  UploadRoute up(h);
  up.config = [](Upload& u) { u.watch_close = true; };
  h.run([&] {
    Client c(h.port);
    c.send(upload_head(1 << 20) + std::string(50000, 'x'));
    ASSERT_TRUE(wait_for([&] { return up.seen >= 50000; }, 3000));
    c.reset();
    // Let the server notice before the shutdown.
    sleep_ms(100);
  });
  ASSERT_EQ(up.uploads.size(), 1u);
  Upload& u = *up.uploads[0];
  EXPECT_EQ(u.errors, 1);
  EXPECT_EQ(u.last_error, CL_ECLOSING);
  EXPECT_EQ(u.answer_status, CL_ECLOSING);  // answered into the void; the request is freed (ASan: no leak)
  EXPECT_EQ(u.close_calls, 0) << "the response was complete when the close callback would have run";
}

// ---- streamed responses -------------------------------------------------------------------------------------

namespace {
struct Lent {
  std::string data;
  int done_calls = 0;
};
void lent_done(void* ptr, void* hint) {
  auto* l = static_cast<Lent*>(hint);
  EXPECT_EQ(ptr, l->data.data());
  l->done_calls++;
}
}  // namespace

TEST(HttpServerStream, StreamedResponsesWithKnownLengthAndChunked) {
  Harness h;
  std::vector<std::unique_ptr<Lent>> lent;  // loop thread
  auto lend = [&](std::string data) {
    lent.push_back(std::make_unique<Lent>(Lent{std::move(data)}));
    return lent.back().get();
  };
  std::string known = pattern_bytes(30000, 4);
  std::string big = pattern_bytes(100000, 5);
  cl_status_t before_start = 1, over_length = 1;
  h.route("GET", "/known", [&](Request& r) {
    Lent* early = lend("early");
    before_start = r.write(early->data.data(), early->data.size(), lent_done, early);
    EXPECT_EQ(r.add_header("Content-Type", "application/octet-stream"), CL_OK);
    EXPECT_EQ(r.start(200, static_cast<int64_t>(known.size())), CL_OK);
    EXPECT_EQ(r.start(200, 1), CL_ESTATE);
    EXPECT_EQ(r.add_header("X-Late", "1"), CL_ESTATE);
    for (size_t off = 0; off < known.size(); off += 10000) {
      Lent* l = lend(known.substr(off, 10000));
      EXPECT_EQ(r.write(l->data.data(), l->data.size(), lent_done, l), CL_OK);
    }
    Lent* extra = lend("x");
    over_length = r.write(extra->data.data(), 1, lent_done, extra);
    return r.end();
  });
  h.route("GET", "/chunked", [&](Request& r) {
    EXPECT_EQ(r.start(200, -1), CL_OK);
    EXPECT_EQ(r.write("hello ", 6, nullptr, nullptr), CL_OK);
    Lent* empty = lend("");
    EXPECT_EQ(r.write(empty->data.data(), 0, lent_done, empty), CL_OK);  // no chunk: it would end the body
    Lent* l = lend(big);
    EXPECT_EQ(r.write(l->data.data(), l->data.size(), lent_done, l), CL_OK);
    EXPECT_EQ(r.write(" end", 4, nullptr, nullptr), CL_OK);
    return r.end();
  });
  h.route("GET", "/short", [&](Request& r) {
    r.start(200, 100);
    r.write("0123456789", 10, nullptr, nullptr);
    return r.end();  // promised 100 bytes, sent 10: only closing the connection ends this response
  });
  h.run([&] {
    Client c(h.port);
    auto r = c.roundtrip(get("/known"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->framing, Framing::length);
    EXPECT_TRUE(r->body == known);
    EXPECT_EQ(r->header("content-type"), "application/octet-stream");
    EXPECT_FALSE(r->has("x-late"));

    r = c.roundtrip(get("/chunked"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->framing, Framing::chunked);
    EXPECT_FALSE(r->has("content-length"));
    EXPECT_TRUE(r->body == "hello " + big + " end");

    // HTTP/1.0 cannot do chunked: the body ends with the connection.
    Client c10(h.port);
    r = c10.roundtrip("GET /chunked HTTP/1.0\r\n\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->framing, Framing::close);
    EXPECT_TRUE(r->body == "hello " + big + " end");

    Client cs(h.port);
    ASSERT_TRUE(cs.send(get("/short")));
    r = cs.read_head();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("content-length"), "100");
    std::string rest;
    EXPECT_TRUE(cs.wait_closed(2000, &rest));
    EXPECT_EQ(rest, "0123456789");
  });
  EXPECT_EQ(before_start, CL_ESTATE);
  EXPECT_EQ(over_length, CL_EINVAL);
  for (auto& l : lent)
    EXPECT_EQ(l->done_calls, 1) << "a lent buffer's done must run exactly once: '" << l->data.substr(0, 8) << "'";
}

TEST(HttpServerStream, LargeLentResponseToASlowReader) {
  Harness h;
  Lent big{pattern_bytes(8 << 20, 6)};
  h.route("GET", "/big", [&](Request& r) {
    r.start(200, static_cast<int64_t>(big.data.size()));
    EXPECT_EQ(r.write(big.data.data(), big.data.size(), lent_done, &big), CL_OK);
    return r.end();
  });
  h.run([&] {
    Client c(h.port, 32 * 1024);
    ASSERT_TRUE(c.send(get("/big")));
    sleep_ms(200);  // let the server fill the socket and queue the rest
    auto r = c.read_response(false, 15000);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body.size(), big.data.size());
    EXPECT_TRUE(r->body == big.data);
  });
  EXPECT_EQ(big.done_calls, 1);
}

TEST(HttpServerStream, ClientLeavingDuringALentStreamReleasesEveryBuffer) {
  Harness h;
  std::vector<std::unique_ptr<Lent>> lent;
  std::atomic<bool> queued{false};
  int close_calls = 0;
  cl_status_t after_close_write = 1, after_close_end = 1;
  h.route("GET", "/stream", [&](Request& r) {
    for (int i = 0; i < 16; i++) lent.push_back(std::make_unique<Lent>(Lent{pattern_bytes(1 << 20, 10 + i)}));
    r.start(200, 17 << 20);
    for (auto& l : lent) EXPECT_EQ(r.write(l->data.data(), l->data.size(), lent_done, l.get()), CL_OK);
    struct Ctx {
      std::vector<std::unique_ptr<Lent>>* buffers;
      int* close_calls;
      cl_status_t* w;
      cl_status_t* e;
    };
    static Ctx ctx;
    ctx = Ctx{&lent, &close_calls, &after_close_write, &after_close_end};
    r.close_ud = &ctx;
    r.close_cb = [](void* ud, cl_request_t* req) {
      auto* x = static_cast<Ctx*>(ud);
      (*x->close_calls)++;
      x->buffers->push_back(std::make_unique<Lent>(Lent{"late"}));
      Lent* l = x->buffers->back().get();
      *x->w = req->write(l->data.data(), l->data.size(), lent_done, l);
      *x->e = req->end();  // the request is valid until here, and freed by it
    };
    queued = true;
    return CL_OK;
  });
  h.run([&] {
    Client c(h.port, 16 * 1024);
    ASSERT_TRUE(c.send(get("/stream")));
    ASSERT_TRUE(wait_for([&] { return queued.load(); }, 3000));
    c.read_raw(100000, 3000);
    c.reset();
    sleep_ms(100);
  });
  EXPECT_EQ(close_calls, 1);
  EXPECT_EQ(after_close_write, CL_ECLOSING);
  EXPECT_EQ(after_close_end, CL_OK);
  ASSERT_EQ(lent.size(), 17u);
  for (auto& l : lent) EXPECT_EQ(l->done_calls, 1);
}

// ---- Server-Sent Events -------------------------------------------------------------------------------------

TEST(HttpServerStream, ServerSentEventsFramingAndDisconnect) {
  Harness h;
  struct State {
    Harness* h;
    Request* req = nullptr;
    int close_calls = 0;
    cl_status_t late_send = 1, late_end = 1;
  } s{&h};
  std::atomic<bool> streaming{false};
  h.route("GET", "/events", [&](Request& r) {
    EXPECT_EQ(r.sse_send("", "too early"), CL_ESTATE);
    EXPECT_EQ(r.sse_start(), CL_OK);
    EXPECT_EQ(r.sse_send("update", "line1\nline2\r\nline3"), CL_OK);
    EXPECT_EQ(r.sse_send("", "hello"), CL_OK);
    EXPECT_EQ(r.sse_send("", ""), CL_OK);
    EXPECT_EQ(r.sse_send("tick", "a\n"), CL_OK);
    EXPECT_EQ(r.sse_send("bad\nevent", "x"), CL_EINVAL);
    s.req = &r;
    r.close_ud = &s;
    r.close_cb = [](void* ud, cl_request_t* req) {
      auto* st = static_cast<State*>(ud);
      st->close_calls++;
      EXPECT_EQ(req, st->req);
      // The request stays valid until end(): use it a little later.
      st->h->loop.timer_start(50, 0, [st] {
        st->late_send = st->req->sse_send("", "anyone?");
        st->late_end = st->req->end();
      });
    };
    streaming = true;
    return CL_OK;
  });
  h.route("GET", "/notsse", [](Request& r) {
    r.start(200, -1);
    EXPECT_EQ(r.sse_send("", "x"), CL_ESTATE);
    return r.end();
  });
  h.run([&] {
    Client c(h.port);
    ASSERT_TRUE(c.send(get("/events")));
    auto r = c.read_head();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-type"), "text/event-stream");
    EXPECT_EQ(r->header("cache-control"), "no-cache");
    EXPECT_EQ(lower(r->header("transfer-encoding")), "chunked");
    EXPECT_FALSE(r->has("content-length"));
    const std::string expected =
        "event: update\ndata: line1\ndata: line2\ndata: line3\n\n"
        "data: hello\n\n"
        "data: \n\n"
        "event: tick\ndata: a\ndata: \n\n";
    std::string got;
    while (got.size() < expected.size()) {
      auto chunk = c.read_chunk(3000);
      ASSERT_TRUE(chunk);
      ASSERT_FALSE(chunk->empty()) << "the stream ended early";
      got += *chunk;
    }
    EXPECT_EQ(got, expected);
    c.close();
    ASSERT_TRUE(wait_for(
        [&] {
          bool done = false;
          h.on_loop([&] { done = s.late_end != 1; });
          return done;
        },
        3000));

    Client c2(h.port);
    auto r2 = c2.roundtrip(get("/notsse"));
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->status, 200);
  });
  EXPECT_TRUE(streaming);
  EXPECT_EQ(s.close_calls, 1);
  EXPECT_EQ(s.late_send, CL_ECLOSING);
  EXPECT_EQ(s.late_end, CL_OK);
}

// ---- clients that leave while the handler owns the request --------------------------------------------------

TEST(HttpServerStream, AsyncAnswerAfterTheClientLeft) {
  Harness h;
  struct Result {
    cl_status_t send = 1, start = 1, write = 1, end = 1;
    int done_calls = 0;
  } res;
  std::atomic<int> dispatched{0};
  h.route("GET", "/async", [&](Request& r) {
    Request* req = &r;
    dispatched++;
    h.loop.timer_start(300, 0, [&, req] { res.send = req->send(200, "text/plain", "too late"); });
    return CL_OK;
  });
  Lent late{"late bytes"};
  h.route("GET", "/async-stream", [&](Request& r) {
    Request* req = &r;
    dispatched++;
    h.loop.timer_start(300, 0, [&, req] {
      res.start = req->start(200, 10);
      res.write = req->write(late.data.data(), late.data.size(), lent_done, &late);
      res.end = req->end();
    });
    return CL_OK;
  });
  h.run([&] {
    {
      Client c(h.port);
      c.send(get("/async"));
      ASSERT_TRUE(wait_for([&] { return dispatched == 1; }, 3000));
      c.close();
    }
    {
      Client c(h.port);
      c.send(get("/async-stream"));
      ASSERT_TRUE(wait_for([&] { return dispatched == 2; }, 3000));
      c.reset();
    }
    sleep_ms(400);  // the timers fire after the server saw both clients leave
  });
  EXPECT_EQ(res.send, CL_ECLOSING);
  EXPECT_EQ(res.start, CL_ECLOSING);
  EXPECT_EQ(res.write, CL_ECLOSING);
  EXPECT_EQ(res.end, CL_OK);
  EXPECT_EQ(late.done_calls, 1);
}

TEST(HttpServerStream, CloseCallbackMayEndTheResponse) {
  Harness h;
  struct State {
    int close_calls = 0;
    cl_status_t send = 1;
  } s;
  std::atomic<bool> held{false};
  h.route("GET", "/held", [&](Request& r) {
    r.close_ud = &s;
    r.close_cb = [](void* ud, cl_request_t* req) {
      auto* st = static_cast<State*>(ud);
      st->close_calls++;
      st->send = req->send(200, "text/plain", "bye");  // frees the request
    };
    held = true;
    return CL_OK;
  });
  h.run([&] {
    Client c(h.port);
    c.send(get("/held"));
    ASSERT_TRUE(wait_for([&] { return held.load(); }, 3000));
    c.close();
    sleep_ms(100);
  });
  EXPECT_EQ(s.close_calls, 1);
  EXPECT_EQ(s.send, CL_ECLOSING);
}

// The handler answers synchronously while the client has already reset the connection: the failed write must
// not free the request under the handler's feet (the close callback runs later, from a clean stack).
TEST(HttpServerStream, AnswerToAResetPeerInsideTheHandler) {
  Harness h;
  std::atomic<int> in_handler{0};
  std::atomic<int> reset_done{0};
  struct State {
    int close_calls = 0;
    cl_status_t send = 1, start = 1, write = 1, end = 1;
  } s;
  Lent lent{pattern_bytes(256 * 1024, 12)};
  auto wait_reset = [&](int n) {
    in_handler = n;
    // Blocks the loop briefly, on purpose: this is the state "client already gone, server not told yet".
    wait_for([&] { return reset_done >= n; }, 3000);
    sleep_ms(50);
  };
  auto on_close = [](void* ud, cl_request_t*) { static_cast<State*>(ud)->close_calls++; };
  h.route("GET", "/sync", [&](Request& r) {
    wait_reset(1);
    r.close_ud = &s;
    r.close_cb = on_close;
    s.send = r.send(200, "application/octet-stream", lent.data);
    return CL_OK;
  });
  h.route("GET", "/sync-stream", [&](Request& r) {
    wait_reset(2);
    r.close_ud = &s;
    r.close_cb = on_close;
    s.start = r.start(200, static_cast<int64_t>(lent.data.size()) * 2);
    s.write = r.write(lent.data.data(), lent.data.size(), lent_done, &lent);
    cl_status_t again = r.write(lent.data.data(), lent.data.size(), nullptr, nullptr);
    EXPECT_EQ(again, CL_ECLOSING);
    s.end = r.end();
    return CL_OK;
  });
  h.run([&] {
    for (int n : {1, 2}) {
      Client c(h.port);
      c.send(get(n == 1 ? "/sync" : "/sync-stream"));
      ASSERT_TRUE(wait_for([&] { return in_handler >= n; }, 3000));
      c.reset();
      reset_done = n;
      sleep_ms(150);
    }
  });
  EXPECT_EQ(s.send, CL_ECLOSING);
  EXPECT_EQ(s.write, CL_ECLOSING);
  EXPECT_EQ(s.end, CL_OK);
  EXPECT_EQ(lent.done_calls, 1);
  EXPECT_EQ(s.close_calls, 0) << "the responses were complete before the server closed the connections";
}
