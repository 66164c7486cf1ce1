// abi/cloudlet_plugin.hpp against the fake host: the RAII owners release what the core handed out, the
// completion helpers run each callable exactly once (and never when the slot refused), exceptions stop in
// cl::guarded, and Host::has sees the slots of a shorter (older) table as absent.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "../unit/core/http/client/fetch_server.h"
#include "cloudlet_plugin.hpp"
#include "fakehost.h"

using cloudlet::test::FakeHost;

namespace {

cl_status_t noop_init(cl_host_t*, const cl_host_api_t*, cl_str_t, void** state) {
  *state = nullptr;
  return CL_OK;
}
const cl_plugin_desc_t kDesc = {sizeof(cl_plugin_desc_t), CL_ABI_MAJOR, CL_ABI_MINOR, "hpp", "1", 0, noop_init,
                                nullptr, {nullptr, nullptr, nullptr, nullptr}};

class Hpp : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(fh_.init(&kDesc), CL_OK); }
  FakeHost fh_;
  cl::Host host_{fh_.host(), fh_.api()};
};

TEST_F(Hpp, StringsConvertWithoutCopies) {
  std::string s = "abc";
  cl_str_t c = cl::str(s);
  EXPECT_EQ(c.ptr, s.data());
  EXPECT_EQ(c.len, 3u);
  EXPECT_EQ(cl::view(c), "abc");
  EXPECT_EQ(cl::view(cl_str_t{nullptr, 0}), "");
}

TEST_F(Hpp, HasSeesSlotsOfTheTable) {
  EXPECT_TRUE(host_.has(&cl_host_api_t::json_parse));
  EXPECT_TRUE(host_.has(&cl_host_api_t::log));
  cl_host_api_t old = *fh_.api();
  old.struct_size = offsetof(cl_host_api_t, json_parse);  // a 1.0 core
  cl::Host older(fh_.host(), &old);
  EXPECT_FALSE(older.has(&cl_host_api_t::json_parse));
  EXPECT_TRUE(older.has(&cl_host_api_t::sse_send));
  cl::Json doc;
  EXPECT_EQ(cl::Json::parse(older, "{}", &doc), CL_ENOTSUP);
}

TEST_F(Hpp, JsonReadsByPathAndFreesItsDocument) {
  {
    cl::Json doc;
    ASSERT_EQ(cl::Json::parse(host_, "{\"name\": \"bob\", \"n\": 2, \"ok\": false, \"a\": [1, 2.5]}", &doc), CL_OK);
    EXPECT_EQ(doc.string("/name").value_or(""), "bob");
    EXPECT_EQ(doc.integer("/n").value_or(-1), 2);
    EXPECT_EQ(doc.boolean("/ok").value_or(true), false);
    EXPECT_EQ(doc.number("/a/1").value_or(0), 2.5);
    EXPECT_FALSE(doc.string("/n"));       // wrong type
    EXPECT_FALSE(doc.integer("/absent"));  // absent
    std::string_view s;
    EXPECT_EQ(doc.get("/n", &s), CL_EINVAL);
    EXPECT_EQ(doc.get("/absent", &s), CL_ENOENT);
    size_t n = 0;
    EXPECT_EQ(doc.size("/a", &n), CL_OK);
    EXPECT_EQ(n, 2u);
    EXPECT_EQ(doc.key_at("", 3, &s), CL_OK);
    EXPECT_EQ(s, "a");
    cl::Json moved = std::move(doc);
    EXPECT_FALSE(doc);
    EXPECT_TRUE(moved);
  }
  EXPECT_EQ(fh_.unload(), 0u);  // every document was freed
}

TEST_F(Hpp, BufReleasesAndTxnAbortsUnlessCommitted) {
  cl::Buf buf(host_);
  ASSERT_EQ(fh_.api()->host_get(fh_.host(), cl::str("cloudlet_name"), buf.out()), CL_OK);
  EXPECT_EQ(buf.view(), "testlet");
  EXPECT_STREQ(buf.c_str(), "testlet");
  {
    cl::Txn t;
    ASSERT_EQ(cl::Txn::begin(host_, &t), CL_OK);
    EXPECT_EQ(t.put("c", "k", "1"), CL_OK);
  }  // aborted
  cl::Txn t2;
  ASSERT_EQ(cl::Txn::begin(host_, &t2), CL_OK);  // the first one is gone
  EXPECT_EQ(t2.get("c", "k", &buf), CL_ENOENT);
  int durable = 0;
  EXPECT_EQ(t2.put("c", "k", "2"), CL_OK);
  EXPECT_EQ(cl::commit(t2, [&](cl_status_t st) { durable += st == CL_OK; }), CL_OK);
  EXPECT_EQ(t2.handle(), nullptr);
  ASSERT_TRUE(fh_.run_until([&] { return durable > 0; }));
  fh_.run_for(10);
  EXPECT_EQ(durable, 1);
  EXPECT_EQ(fh_.store["c"]["k"], "2");
}

TEST_F(Hpp, CompletionsRunExactlyOnce) {
  std::atomic<int> posted{0};
  std::thread([&] { EXPECT_EQ(cl::post(host_, [&] { posted++; }), CL_OK); }).join();
  int worked = 0, done = 0;
  cl_status_t done_status = CL_EIO;
  EXPECT_EQ(cl::queue_work(host_, [&] { worked++; }, [&](cl_status_t st) {
              done++;
              done_status = st;
            }),
            CL_OK);
  fh_.provide("other.op", [](const std::string& args, std::function<void(cl_status_t, std::string)> reply) {
    reply(CL_OK, args);
  });
  int answered = 0;
  std::string result;
  EXPECT_EQ(cl::op_call(host_, "other.op", "{\"a\":1}", [&](cl_status_t, std::string_view r) {
              answered++;
              result = r;
            }),
            CL_OK);
  // A refused slot never runs (and frees) its callable.
  int never = 0;
  EXPECT_EQ(cl::op_call(host_, "no.such.op", "{}", [&](cl_status_t, std::string_view) { never++; }), CL_ENOENT);
  ASSERT_TRUE(fh_.run_until([&] { return posted == 1 && done == 1 && answered == 1; }));
  fh_.run_for(20);
  EXPECT_EQ(posted, 1);
  EXPECT_EQ(worked, 1);
  EXPECT_EQ(done, 1);
  EXPECT_EQ(done_status, CL_OK);
  EXPECT_EQ(answered, 1);
  EXPECT_EQ(result, "{\"a\":1}");
  EXPECT_EQ(never, 0);
}

TEST_F(Hpp, GuardedTurnsExceptionsIntoStatuses) {
  EXPECT_EQ(cl::guarded([]() -> cl_status_t { return CL_EBUSY; }), CL_EBUSY);
  EXPECT_EQ(cl::guarded([]() -> cl_status_t { throw std::runtime_error("x"); }), CL_EIO);
  EXPECT_EQ(cl::guarded([]() -> cl_status_t { throw std::bad_alloc(); }), CL_ENOMEM);
  bool reached = false;
  cl::guarded_void([&] {
    reached = true;
    throw 42;
  });
  EXPECT_TRUE(reached);
}

// A Job finishes exactly once: by finish, from its own cancel callable, or by its destructor (CL_ECANCELED).
TEST_F(Hpp, JobOwnsItsCancelAndFinishesOnce) {
  auto state_of = [&](std::string_view id) {
    auto [st, out] = fh_.call("job.get", "{\"job_id\":\"" + std::string(id) + "\"}");
    EXPECT_EQ(st, CL_OK) << out;
    size_t p = out.find("\"state\":\"");
    return p == std::string::npos ? std::string() : out.substr(p + 9, out.find('"', p + 9) - p - 9);
  };
  std::string cancelled_id, dropped_id;
  int cancels = 0;
  {
    cl::Job job;
    ASSERT_EQ(cl::Job::create(host_, "hpp.task", "s",
                              [&] {
                                cancels++;
                                // Finishing from inside the callable releases it only after it returns.
                                EXPECT_EQ(job.finish(CL_ECANCELED, "stopped"), CL_OK);
                                EXPECT_FALSE(job);
                              },
                              &job),
              CL_OK);
    cancelled_id = std::string(job.id());
    EXPECT_EQ(job.progress(0.5, "half"), CL_OK);
    EXPECT_EQ(fh_.call("job.cancel", "{\"job_id\":\"" + cancelled_id + "\"}").first, CL_OK);
    ASSERT_TRUE(fh_.run_until([&] { return cancels == 1; }));
    EXPECT_EQ(job.finish(CL_OK, "{}"), CL_ESTATE);  // already finished
    EXPECT_EQ(job.progress(1, "late"), CL_ESTATE);

    cl::Job dropped;
    ASSERT_EQ(cl::Job::create(host_, "hpp.task", "", &dropped), CL_OK);
    dropped_id = std::string(dropped.id());
    EXPECT_EQ(dropped.finish(CL_OK, "{not json"), CL_EINVAL);  // refused: the job goes on
    EXPECT_TRUE(dropped);
    cl::Job moved = std::move(dropped);
    EXPECT_FALSE(dropped);
    EXPECT_EQ(moved.id(), dropped_id);
  }
  EXPECT_EQ(cancels, 1);
  EXPECT_EQ(state_of(cancelled_id), "canceled");
  EXPECT_EQ(state_of(dropped_id), "canceled");  // the destructor finished it
  // An older core has no jobs.
  cl_host_api_t old = *fh_.api();
  old.struct_size = offsetof(cl_host_api_t, job_create);
  cl::Job none;
  EXPECT_EQ(cl::Job::create(cl::Host(fh_.host(), &old), "hpp.task", "", [] {}, &none), CL_ENOTSUP);
  EXPECT_FALSE(none);
  EXPECT_EQ(fh_.unload(), 0u);
}

// Host::caller and cl::op_call_as: who called, as the handler sees it.
TEST_F(Hpp, SpawnRunsTheExitCallableOnceAndStreamsOutput) {
  int exits = 0;
  std::string streamed, captured_err;
  cl::ProcExit seen{};
  cl::ProcSpec spec;
  spec.argv = {"/bin/sh", "-c", "printf hello; printf oops >&2; exit 2"};
  spec.flags = CL_PROC_F_STREAM_STDOUT | CL_PROC_F_CAPTURE_STDERR;
  ASSERT_EQ(cl::spawn(
                host_, spec,
                [&](const cl::ProcExit& e) {
                  exits++;
                  seen = e;
                  captured_err = std::string(e.err);  // borrowed for the call only
                },
                [&](int32_t fd, std::string_view chunk) {
                  EXPECT_EQ(fd, 1);
                  streamed += chunk;
                }),
            CL_OK);
  ASSERT_TRUE(fh_.run_until([&] { return exits > 0; }));
  fh_.run_for(20);
  EXPECT_EQ(exits, 1);
  EXPECT_EQ(seen.status, CL_OK);
  EXPECT_EQ(seen.exit_code, 2);
  EXPECT_FALSE(seen.ok());
  EXPECT_EQ(streamed, "hello");
  EXPECT_EQ(captured_err, "oops");
  // A refused spec frees the callable without calling it.
  cl::ProcSpec empty;
  EXPECT_EQ(cl::spawn(host_, empty, [&](const cl::ProcExit&) { exits++; }), CL_EINVAL);
  fh_.run_for(20);
  EXPECT_EQ(exits, 1);
}

// cl::fetch: the body callable gets the chunks, then one final call; the response callable sees the head.
TEST_F(Hpp, FetchRunsTheBodyCallableToOneFinalCall) {
  fetchtest::Server server([](fetchtest::Conn& c) {
    std::string head, body;
    if (!c.read_request(&head, &body)) return;
    c.write("HTTP/1.1 202 Accepted\r\nX-Got: " + body + "\r\nContent-Length: 5\r\n\r\nfetch");
  });
  int finals = 0;
  cl_status_t final_status = 1;
  uint32_t status = 0;
  std::string body, got;
  cl::FetchSpec spec;
  spec.method = "PUT";
  spec.url = server.url("/x");
  spec.body_length = 3;
  cl_fetch_t* f = nullptr;
  ASSERT_EQ(cl::fetch(
                host_, spec,
                [&](cl_status_t st, std::string_view chunk) {
                  if (st == CL_OK && !chunk.empty()) {
                    body += chunk;
                    return;
                  }
                  finals++;
                  final_status = st;
                },
                [&](cl_fetch_t* h, uint32_t s) {
                  status = s;
                  cl_str_t v{};
                  if (host_.api()->fetch_header(h, cl::str("x-got"), &v) == CL_OK) got = std::string(cl::view(v));
                },
                &f),
            CL_OK);
  ASSERT_EQ(host_.api()->fetch_write(f, "abc", 3, nullptr, nullptr), CL_OK);
  ASSERT_TRUE(fh_.run_until([&] { return finals > 0; }));
  fh_.run_for(20);
  EXPECT_EQ(finals, 1);
  EXPECT_EQ(final_status, CL_OK);
  EXPECT_EQ(status, 202u);
  EXPECT_EQ(got, "abc");
  EXPECT_EQ(body, "fetch");
  // A refused spec frees the callable without calling it.
  cl::FetchSpec bad;
  bad.url = "gopher://127.0.0.1/";
  EXPECT_EQ(cl::fetch(host_, bad, [&](cl_status_t, std::string_view) { finals++; }), CL_EINVAL);
  fh_.run_for(20);
  EXPECT_EQ(finals, 1);
}

TEST_F(Hpp, CallerAndCallAs) {
  static cl::Host* host = nullptr;
  host = &host_;
  ASSERT_EQ(host_.op_register_ex(
                "hpp.who", 0,
                [](void*, cl_op_call_t* call, cl_str_t) -> cl_status_t {
                  cl::Caller c;
                  cl_status_t st = host->caller(call, &c);
                  if (st != CL_OK) return st;
                  std::string out = std::to_string(c.kind) + "/" + std::string(c.plugin) + "/" + std::string(c.principal);
                  return host->reply(call, CL_OK, "{\"who\":\"" + out + "\"}");
                },
                nullptr),
            CL_OK);
  std::string as, self;
  ASSERT_EQ(cl::op_call_as(host_, "hpp.who", "{}", "user:admin", [&](cl_status_t, std::string_view r) { as = r; }),
            CL_OK);
  ASSERT_EQ(cl::op_call(host_, "hpp.who", "{}", [&](cl_status_t, std::string_view r) { self = r; }), CL_OK);
  EXPECT_EQ(cl::op_call_as(host_, "hpp.who", "{}", "", [](cl_status_t, std::string_view) {}), CL_EINVAL);
  ASSERT_TRUE(fh_.run_until([&] { return !as.empty() && !self.empty(); }));
  EXPECT_EQ(as, "{\"who\":\"2/hpp/user:admin\"}");
  EXPECT_EQ(self, "{\"who\":\"1/hpp/\"}");
  EXPECT_EQ(fh_.call("hpp.who").second, "{\"who\":\"0//\"}");
  cl_host_api_t old = *fh_.api();
  old.struct_size = offsetof(cl_host_api_t, job_create);
  EXPECT_EQ(cl::op_call_as(cl::Host(fh_.host(), &old), "hpp.who", "{}", "u", [](cl_status_t, std::string_view) {}),
            CL_ENOTSUP);
  EXPECT_EQ(cl::Host(fh_.host(), &old).op_register_ex("hpp.x", 0, nullptr, nullptr), CL_ENOTSUP);
}

}  // namespace

// The 1.1 request helpers (principal, set_principal, peer_cert) and Host::listener_guard_set, on the fake host.
namespace net {
cl::Host host;

cl_status_t guard(void*, cl_request_t* r) {
  cl::Request req(host, r);
  if (auto user = req.header("x-user")) return req.set_principal("user:" + std::string(*user));
  return CL_EUNAUTH;
}

cl_status_t whoami(void*, cl_request_t* r) {
  cl::Request req(host, r);
  std::string out = std::string(req.principal().value_or("-")) + " " + std::string(req.peer_cert().value_or("-")) +
                    " " + std::to_string(req.set_principal("user:late"));
  return req.send(200, "text/plain", out);
}

cl_status_t init(cl_host_t* h, const cl_host_api_t* api, cl_str_t, void** state) {
  *state = nullptr;
  host = cl::Host(h, api);
  cl_status_t st = host.listener_guard_set("manager", guard, nullptr);
  if (st != CL_OK) return st;
  cl_route_desc_t d{};
  d.struct_size = sizeof d;
  d.listener = "manager";
  d.method = "GET";
  d.pattern = "/plugins/hppnet/whoami";
  d.handler = whoami;
  return api->route_add(h, &d);
}
const cl_plugin_desc_t kDesc = {sizeof(cl_plugin_desc_t), CL_ABI_MAJOR, CL_ABI_MINOR, "hppnet", "1", 0, init, nullptr,
                                {nullptr, nullptr, nullptr, nullptr}};
}  // namespace net

TEST(HppNet, GuardPrincipalAndPeerCertificate) {
  FakeHost fh("hppnet");
  fh.guards = {"manager"};
  fh.peer_cert = std::string(64, 'a');
  ASSERT_EQ(fh.init(&net::kDesc), CL_OK);
  EXPECT_EQ(fh.request("manager", "GET", "/plugins/hppnet/whoami").status, 401u);
  FakeHost::Response r = fh.request("manager", "GET", "/plugins/hppnet/whoami", "", {{"X-User", "ann"}});
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, "user:ann " + std::string(64, 'a') + " " + std::to_string(CL_ESTATE));
  fh.peer_cert.clear();
  EXPECT_EQ(fh.request("manager", "GET", "/plugins/hppnet/whoami", "", {{"X-User", "bo"}}).body,
            "user:bo - " + std::to_string(CL_ESTATE));
  fh.unload();
  EXPECT_EQ(fh.request("manager", "GET", "/plugins/hppnet/whoami", "", {{"X-User", "bo"}}).status, 503u);
}

TEST(HppNet, AGuardNeedsItsGrant) {
  FakeHost fh("hppnet");  // no guards granted
  EXPECT_EQ(fh.init(&net::kDesc), CL_EPERM);
}
