// One conformance suite for the plugin ABI, run against the real host (test_plugin_conformance_real) and the
// fake host (test_plugin_conformance_fake). The conformance plugin (tests/fixtures/conformance.cc) exercises
// the slots and reports what it saw; every expectation here is what abi/cloudlet_plugin.h promises, so a host
// that passes behaves as the header says. Slots added later get their scenario in the plugin and their
// expectations here, and both hosts must pass them.
#include <strings.h>

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "../http/client/fetch_server.h"
#include "conformance_host.h"

namespace cloudlet::test {

std::string ConfResponse::header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
  }
  return "";
}

namespace {

std::string fixture() { return std::string(getenv("CLOUDLET_BUILD_DIR")) + "/tests/fixtures/fixture_conformance.so"; }

// A flat report ({"key": number|bool|string}) from the conformance plugin.
class Report {
 public:
  explicit Report(const std::string& json) : text_(json) { doc_.Parse(json.c_str(), json.size()); }
  bool ok() const { return !doc_.HasParseError() && doc_.IsObject(); }
  long long num(const char* k) const {
    auto it = doc_.FindMember(k);
    return it != doc_.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : -999999;
  }
  bool flag(const char* k) const {
    auto it = doc_.FindMember(k);
    return it != doc_.MemberEnd() && it->value.IsBool() && it->value.GetBool();
  }
  std::string text(const char* k) const {
    auto it = doc_.FindMember(k);
    return it != doc_.MemberEnd() && it->value.IsString() ? it->value.GetString() : "<absent>";
  }
  const std::string& str() const { return text_; }
  // A nested object, as a Report of its own (empty when absent).
  Report sub(const char* k) const {
    auto it = doc_.FindMember(k);
    if (it == doc_.MemberEnd()) return Report("{}");
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    it->value.Accept(w);
    return Report(std::string(buf.GetString(), buf.GetSize()));
  }

 private:
  std::string text_;
  rapidjson::Document doc_;
};

class Conformance : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = make_conformance_host();
    host_->provide("host.fake", [](const std::string& args) {
      rapidjson::Document d;
      d.Parse(args.c_str(), args.size());
      return "{\"fake\":" + std::to_string(d.IsObject() && d.HasMember("a") ? d["a"].GetInt() : -1) + "}";
    });
    // The plugin's files: www/ (served by static_add), and out -> a directory outside (refused).
    files_ = std::filesystem::temp_directory_path() /
             ("cl-conf-files-" + std::to_string(getpid()) + "-" + std::to_string(++files_seq_));
    std::filesystem::remove_all(files_);
    std::filesystem::create_directories(files_ / "www" / "sub");
    std::filesystem::create_directories(files_.string() + "-outside");
    write(files_ / "www" / "hello.txt", "hello static\n");
    write(files_ / "www" / "index.html", "<p>index</p>\n");
    write(files_.string() + "-outside/secret.txt", "secret\n");
    std::filesystem::create_directory_symlink(files_.string() + "-outside", files_ / "out");
    std::filesystem::create_symlink(files_.string() + "-outside/secret.txt", files_ / "www" / "leak.txt");
    host_->configure(files_.string());
    // Privileged operations of the host: one granted to the plugin, one not.
    host_->provide("host.granted", [](const std::string&) { return "{\"granted\":true}"; }, CL_OP_F_PRIVILEGED);
    host_->provide("host.secret", [](const std::string&) { return "{\"secret\":true}"; }, CL_OP_F_PRIVILEGED);
    std::string error;
    ASSERT_EQ(host_->load(fixture(), {"host.granted"}, &error), CL_OK) << error;
  }

  void TearDown() override {
    host_.reset();
    std::filesystem::remove_all(files_);
    std::filesystem::remove_all(files_.string() + "-outside");
  }

  static void write(const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }

  Report run(const std::string& op) { return run_with(op, "{}"); }
  Report run_with(const std::string& op, const std::string& args) {
    auto [st, out] = host_->call(op, args);
    EXPECT_EQ(st, CL_OK) << op << ": " << out;
    Report r(out);
    EXPECT_TRUE(r.ok()) << op << ": " << out;
    return r;
  }

  std::unique_ptr<ConformanceHost> host_;
  std::filesystem::path files_;
  static inline int files_seq_ = 0;
};

TEST_F(Conformance, Timers) {
  Report r = run("conf.timers");
  EXPECT_EQ(r.num("null_cb"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("stop_unknown"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("oneshot"), 1) << r.str();
  EXPECT_EQ(r.num("oneshot_stop_in_cb"), CL_ENOENT) << r.str();  // forgotten before its callback
  EXPECT_EQ(r.num("repeat"), 3) << r.str();                      // stopped in its third call: no fourth
  EXPECT_EQ(r.num("repeat_stop"), CL_OK) << r.str();
}

TEST_F(Conformance, PostsFromAnotherThreadArriveOnceInOrderOnTheLoop) {
  Report r = run("conf.post");
  EXPECT_EQ(r.num("null_cb"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("accepted"), 1000) << r.str();
  EXPECT_EQ(r.num("delivered"), 1000) << r.str();
  EXPECT_TRUE(r.flag("in_order")) << r.str();
  EXPECT_TRUE(r.flag("on_loop")) << r.str();
}

TEST_F(Conformance, WorkRunsOffTheLoopAndCompletesExactlyOnce) {
  Report r = run("conf.work");
  EXPECT_EQ(r.num("null_work"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("cancel_unknown"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("first_status"), CL_OK) << r.str();
  EXPECT_EQ(r.num("done"), 33) << r.str();
  EXPECT_EQ(r.num("twice"), 0) << r.str();
  EXPECT_TRUE(r.flag("cancel_ok_is_canceled")) << r.str();  // each successful cancel: done(CL_ECANCELED)
  EXPECT_TRUE(r.flag("off_loop")) << r.str();
  EXPECT_TRUE(r.flag("done_on_loop")) << r.str();
}

TEST_F(Conformance, FdWatches) {
  Report r = run("conf.io");
  EXPECT_EQ(r.num("bad_fd"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("start"), CL_OK) << r.str();
  EXPECT_EQ(r.num("dup"), CL_EEXIST) << r.str();
  EXPECT_EQ(r.num("update_unknown"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("status"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("readable")) << r.str();
  EXPECT_EQ(r.num("stop"), CL_OK) << r.str();
  EXPECT_EQ(r.num("stop_again"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("calls"), 1) << r.str();
  EXPECT_EQ(r.num("after_stop"), 0) << r.str();
}

TEST_F(Conformance, Events) {
  Report r = run("conf.events");
  EXPECT_EQ(r.num("bad_pattern"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("subscribe"), CL_OK) << r.str();
  EXPECT_EQ(r.num("bad_topic"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("not_object"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("not_json"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("publish"), CL_OK) << r.str();
  EXPECT_EQ(r.num("got"), 1) << r.str();
  EXPECT_TRUE(r.flag("async")) << r.str();  // never inside event_publish
  EXPECT_EQ(r.text("topic"), "conf.a") << r.str();
  EXPECT_TRUE(r.flag("payload_ok")) << r.str();
  EXPECT_EQ(r.num("unsubscribe"), CL_OK) << r.str();
  EXPECT_EQ(r.num("unsubscribe_again"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("after_unsub"), 0) << r.str();
}

TEST_F(Conformance, EventsFromTheHost) {
  host_->publish("host.ping", "{\"k\":1}");
  host_->publish("other.ping", "{\"k\":2}");  // not subscribed
  host_->run_for(20);
  auto [st, out] = host_->call("conf.host_events");
  EXPECT_EQ(st, CL_OK);
  EXPECT_EQ(out, "{\"events\":[{\"topic\":\"host.ping\",\"payload\":{\"k\":1}}]}");
}

TEST_F(Conformance, Operations) {
  Report r = run("conf.ops");
  EXPECT_EQ(r.num("bad_name"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("dup"), CL_EEXIST) << r.str();
  EXPECT_EQ(r.num("null_cb"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("unknown"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("not_object"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("echo"), CL_OK) << r.str();
  EXPECT_EQ(r.num("echo_status"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("echo_result")) << r.str();
  EXPECT_TRUE(r.flag("async")) << r.str();  // results never arrive inside op_call
  EXPECT_EQ(r.num("refuse_status"), CL_EPERM) << r.str();
  EXPECT_TRUE(r.flag("refuse_error_object")) << r.str();
  EXPECT_EQ(r.num("twice_status"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("twice_first")) << r.str();
  EXPECT_EQ(r.num("second_reply"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("fake_status"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("fake_result")) << r.str();
  // The host calling the plugin's operation: an operation that refuses answers with its status.
  auto [st, out] = host_->call("conf.refuse");
  EXPECT_EQ(st, CL_EPERM);
  EXPECT_NE(out.find("\"error\""), std::string::npos) << out;
}

TEST_F(Conformance, Store) {
  Report r = run("conf.store");
  EXPECT_EQ(r.num("get_missing"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("get_bad_coll"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("begin"), CL_OK) << r.str();
  EXPECT_EQ(r.num("second_begin"), CL_EBUSY) << r.str();
  EXPECT_EQ(r.num("put"), CL_OK) << r.str();
  EXPECT_EQ(r.num("put_bad_json"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("put_bad_coll"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("put_empty_key"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("txn_get"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("txn_get_own_write")) << r.str();
  EXPECT_EQ(r.num("commit"), CL_OK) << r.str();
  EXPECT_EQ(r.num("durable"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("async")) << r.str();
  EXPECT_EQ(r.num("get_after"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("get_value")) << r.str();
  EXPECT_EQ(r.text("scan_keys"), "k1;k2;") << r.str();
  EXPECT_EQ(r.num("scan_stopped_at"), 1) << r.str();
  EXPECT_EQ(r.num("txn_get_deleted"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("get_after_abort"), CL_OK) << r.str();
  EXPECT_EQ(r.num("begin_after_leak"), CL_OK) << r.str();
  EXPECT_EQ(host_->log_lines_with("left open past its loop turn"), 1);
}

TEST_F(Conformance, ReadingJson) {
  Report r = run("conf.json");
  EXPECT_EQ(r.num("parse"), CL_OK) << r.str();
  EXPECT_EQ(r.text("name_value"), "bob") << r.str();
  EXPECT_EQ(r.num("n_value"), 3) << r.str();
  EXPECT_EQ(r.num("neg_value"), -7) << r.str();
  EXPECT_TRUE(r.flag("big_value")) << r.str();
  EXPECT_EQ(r.num("f_as_int"), CL_EINVAL) << r.str();
  EXPECT_TRUE(r.flag("f_value")) << r.str();
  EXPECT_EQ(r.num("e_as_int"), CL_OK) << r.str();
  EXPECT_EQ(r.num("e_value"), 1000) << r.str();
  EXPECT_TRUE(r.flag("n_num_value")) << r.str();
  EXPECT_TRUE(r.flag("b_value")) << r.str();
  EXPECT_EQ(r.num("str_as_bool"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("int_as_str"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("nul_type_value"), CL_JSON_NULL) << r.str();
  EXPECT_EQ(r.num("root_type"), CL_JSON_OBJECT) << r.str();
  EXPECT_EQ(r.num("arr_type"), CL_JSON_ARRAY) << r.str();
  EXPECT_EQ(r.num("arr_len_value"), 3) << r.str();
  EXPECT_EQ(r.num("root_len"), 12) << r.str();
  EXPECT_EQ(r.num("len_of_str"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.text("nested_value"), "v") << r.str();
  EXPECT_EQ(r.num("index_out"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("index_leading_zero"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("index_dash"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("index_on_object"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("escaped_slash"), CL_OK) << r.str();
  EXPECT_EQ(r.num("escaped_tilde"), CL_OK) << r.str();
  EXPECT_EQ(r.num("bad_escape"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("no_leading_slash"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("missing"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("missing_deep"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("esc_len"), 4) << r.str();
  EXPECT_TRUE(r.flag("esc_value")) << r.str();
  EXPECT_TRUE(r.flag("esc_nul_terminated")) << r.str();
  EXPECT_EQ(r.text("key0_value"), "name") << r.str();
  EXPECT_EQ(r.num("key_past"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("key_of_array"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("unterminated"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("trailing"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("empty"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("bad_utf8"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("depth_64"), CL_OK) << r.str();
  EXPECT_EQ(r.num("depth_65"), CL_ETOOBIG) << r.str();
  EXPECT_EQ(r.num("too_big"), CL_ETOOBIG) << r.str();
  EXPECT_TRUE(r.flag("bad_is_null")) << r.str();
  EXPECT_EQ(r.num("off_thread"), CL_OK) << r.str();
}

TEST_F(Conformance, LoopOnlySlotsRefuseOtherThreads) {
  Report r = run("conf.thread");
  EXPECT_EQ(r.num("timer_start"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("store_get"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("event_publish"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("host_get"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("now_ms"), 0) << r.str();
  EXPECT_EQ(r.num("proc_spawn"), CL_ESTATE) << r.str();
  EXPECT_TRUE(r.flag("strerror")) << r.str();
  EXPECT_EQ(host_->log_lines_with("called off the loop thread"), 6);
  EXPECT_EQ(host_->log_lines_with("logging from another thread is allowed"), 1);
}

TEST_F(Conformance, HttpRequestAndResponse) {
  ConfResponse r = host_->request("GET", "/plugins/conformance/echo?x=a%20b&y=2", "", {{"X-Test", "yes"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.header("X-Conf"), "1");
  Report e(r.body);
  EXPECT_EQ(e.text("method"), "GET") << r.body;
  EXPECT_EQ(e.text("path"), "/plugins/conformance/echo") << r.body;
  EXPECT_EQ(e.text("query"), "x=a%20b&y=2") << r.body;
  EXPECT_EQ(e.text("x"), "a b") << r.body;
  EXPECT_EQ(e.text("h"), "yes") << r.body;
  EXPECT_EQ(e.num("hdr_reserved"), CL_EINVAL) << r.body;
  EXPECT_EQ(e.num("hdr_bad"), CL_EINVAL) << r.body;

  r = host_->request("POST", "/plugins/conformance/body", "hello body");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello body");

  r = host_->request("GET", "/plugins/conformance/pass");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "second");  // the GET route declined: the next matching route answered

  EXPECT_EQ(host_->request("GET", "/plugins/conformance/nothing").status, 404);
  EXPECT_EQ(host_->request("DELETE", "/plugins/conformance/echo").status, 405);
}

TEST_F(Conformance, HttpStreamedAndEventStreamResponses) {
  ConfResponse r = host_->request("GET", "/plugins/conformance/stream");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "abcdef");
  r = host_->request("GET", "/plugins/conformance/sse");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "text/event-stream");
  EXPECT_EQ(r.body, "event: tick\ndata: a\ndata: b\n\ndata: c\n\n");
  host_->run_for(20);  // lent bytes are released from a clean stack
  Report s = run("conf.http_stats");
  EXPECT_EQ(s.num("early_write"), CL_ESTATE) << s.str();
  EXPECT_EQ(s.num("lent_done"), 2) << s.str();  // also the refused write's bytes came back, once
  EXPECT_EQ(s.num("sse_bad_event"), CL_EINVAL) << s.str();
  EXPECT_EQ(s.num("late_route"), CL_ESTATE) << s.str();
}

TEST_F(Conformance, HttpStreamedRequestBody) {
  ConfResponse r = host_->request("POST", "/plugins/conformance/upload", "streamed bytes");
  ASSERT_EQ(r.status, 200) << r.body;
  Report u(r.body);
  EXPECT_EQ(u.num("final"), CL_OK) << r.body;
  EXPECT_EQ(u.text("data"), "streamed bytes") << r.body;
  EXPECT_TRUE(u.flag("chunked")) << r.body;
}

TEST_F(Conformance, ListenerGuardAndStaticFilesSetUpDuringInitOnly) {
  Report r = run("conf.net");
  EXPECT_EQ(r.num("guard"), CL_OK) << r.str();
  EXPECT_EQ(r.num("guard_again"), CL_EEXIST) << r.str();
  EXPECT_EQ(r.num("guard_unknown"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("guard_null"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("guard_late"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("static"), CL_OK) << r.str();
  EXPECT_EQ(r.num("static_again"), CL_EEXIST) << r.str();
  EXPECT_EQ(r.num("static_up"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("static_abs"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("static_no_slash"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("static_dots"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("static_outside"), CL_EPERM) << r.str();
  EXPECT_EQ(r.num("static_missing"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("static_listener"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("static_symlink_out"), CL_EPERM) << r.str();
  EXPECT_EQ(r.num("static_late"), CL_ESTATE) << r.str();
}

TEST_F(Conformance, ListenerGuardRefusesAnswersOrLetsThrough) {
  ConfResponse r = host_->request("GET", "/plugins/conformance/guard/deny");
  EXPECT_EQ(r.status, 401);
  r = host_->request("GET", "/plugins/conformance/guard/answer");
  EXPECT_EQ(r.status, 303);  // the guard's own answer, nothing more from the core
  EXPECT_EQ(r.header("Location"), "/login");
  EXPECT_EQ(r.body, "log in first");
  // Through the guard: the principal it set reaches the handler; nobody without X-User.
  r = host_->request("GET", "/plugins/conformance/whoami", "", {{"X-User", "ann"}});
  ASSERT_EQ(r.status, 200) << r.body;
  Report w(r.body);
  EXPECT_EQ(w.num("principal_status"), CL_OK) << r.body;
  EXPECT_EQ(w.text("principal"), "user:ann") << r.body;
  EXPECT_EQ(w.num("set_outside_guard"), CL_ESTATE) << r.body;
  EXPECT_EQ(w.num("peer_cert_status"), CL_ENOENT) << r.body;  // plain HTTP: no client certificate
  r = host_->request("GET", "/plugins/conformance/whoami");
  Report nobody(r.body);
  EXPECT_EQ(nobody.num("principal_status"), CL_ENOENT) << r.body;
  EXPECT_EQ(nobody.text("principal"), "-") << r.body;
  Report n = run("conf.net");
  EXPECT_EQ(n.num("principal_empty"), CL_EINVAL) << n.str();
  EXPECT_EQ(n.num("principal_long"), CL_EINVAL) << n.str();
  EXPECT_GE(n.num("guard_calls"), 4) << n.str();
  // The guard also sees requests no route takes.
  long long before = n.num("guard_calls");
  EXPECT_EQ(host_->request("GET", "/plugins/conformance/guard/nothing").status, 404);
  EXPECT_EQ(run("conf.net").num("guard_calls"), before + 1);
}

TEST_F(Conformance, JsonRouteRefusesOtherContentTypes) {
  ConfResponse r = host_->request("POST", "/plugins/conformance/json", "{\"a\":1}",
                                  {{"Content-Type", "application/json; charset=utf-8"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"a\":1}");
  EXPECT_EQ(host_->request("POST", "/plugins/conformance/json", "{\"a\":1}", {{"Content-Type", "text/plain"}}).status,
            415);
  EXPECT_EQ(host_->request("POST", "/plugins/conformance/json", "{\"a\":1}").status, 415);  // no Content-Type
}

TEST_F(Conformance, StaticFilesFromThePluginsDirectory) {
  ConfResponse r = host_->request("GET", "/plugins/conformance/static/hello.txt");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello static\n");
  r = host_->request("GET", "/plugins/conformance/static/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "<p>index</p>\n");
  EXPECT_EQ(host_->request("GET", "/plugins/conformance/static/missing.txt").status, 404);
  EXPECT_EQ(host_->request("GET", "/plugins/conformance/static/leak.txt").status, 404);  // symlink out
  EXPECT_EQ(host_->request("GET", "/plugins/conformance/static/%2e%2e/out/secret.txt").status, 404);
}

TEST_F(Conformance, JobsShowProgressAreCancelledAndFinishOnce) {
  Report r = run("conf.jobs");
  EXPECT_EQ(r.num("bad_kind"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("null_out"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("long_subject"), CL_EINVAL) << r.str();
  EXPECT_TRUE(r.flag("bad_is_null")) << r.str();
  EXPECT_EQ(r.num("create"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("id_ok")) << r.str();
  EXPECT_TRUE(r.flag("ids_differ")) << r.str();
  EXPECT_EQ(r.num("progress"), CL_OK) << r.str();
  EXPECT_EQ(r.num("progress_nan"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("progress_over"), CL_OK) << r.str();
  // job.get sees the plugin's job as the core's own.
  EXPECT_EQ(r.num("a_get"), CL_OK) << r.str();
  EXPECT_EQ(r.text("a_state"), "running") << r.str();
  EXPECT_EQ(r.text("a_kind"), "conf.job") << r.str();
  EXPECT_EQ(r.text("a_subject"), "s1") << r.str();
  EXPECT_EQ(r.text("a_message"), "half") << r.str();
  EXPECT_TRUE(r.flag("a_progress_half")) << r.str();
  // Cancel: not cancellable without a callback; with one, it reaches the plugin once, which finishes the job.
  EXPECT_EQ(r.num("cancel_not_cancellable"), CL_ENOTSUP) << r.str();
  EXPECT_EQ(r.num("cancel"), CL_OK) << r.str();
  EXPECT_EQ(r.num("cancel_calls"), 1) << r.str();
  EXPECT_TRUE(r.flag("cancel_job_is_a")) << r.str();
  EXPECT_EQ(r.num("finish_in_cancel"), CL_OK) << r.str();
  EXPECT_EQ(r.num("finish_again"), CL_ESTATE) << r.str();  // the handle is dead: refused, not followed
  EXPECT_EQ(r.num("progress_after"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("id_after_len"), 0) << r.str();
  EXPECT_EQ(r.num("cancel_finished"), CL_ESTATE) << r.str();
  // Results: success with a document, refused bad results (the job goes on), an error wrapped as an object.
  EXPECT_EQ(r.num("b_finish"), CL_OK) << r.str();
  EXPECT_EQ(r.text("b_state"), "done") << r.str();
  EXPECT_EQ(r.num("b_result_n"), 1) << r.str();
  EXPECT_EQ(r.num("c_finish_bad_json"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("c_finish_positive"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("c_finish"), CL_OK) << r.str();
  EXPECT_EQ(r.text("c_state"), "failed") << r.str();
  EXPECT_EQ(r.text("c_error"), "boom") << r.str();
  EXPECT_EQ(r.num("c_status"), CL_EIO) << r.str();
  EXPECT_TRUE(r.flag("c_progress_clamped")) << r.str();
  EXPECT_EQ(r.num("list"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("list_has_a")) << r.str();
  // Events: job.progress at creation and per progress report (the NaN one was refused), job.done once each.
  EXPECT_EQ(r.num("a_progress_events"), 2) << r.str();
  EXPECT_EQ(r.num("a_done_events"), 1) << r.str();
  EXPECT_EQ(r.num("done_events"), 3) << r.str();
}

TEST_F(Conformance, UnloadFinishesOpenJobsOnceWithCanceled) {
  auto [st, out] = host_->call("conf.job_open");
  ASSERT_EQ(st, CL_OK) << out;
  Report opened(out);
  std::string id = opened.text("job_id");
  ASSERT_EQ(id.rfind("job-", 0), 0u) << out;
  host_->unload();
  auto [gst, got] = host_->call("job.get", "{\"job_id\":\"" + id + "\"}");
  ASSERT_EQ(gst, CL_OK) << got;
  Report job(got);
  EXPECT_EQ(job.text("state"), "canceled") << got;
  EXPECT_EQ(job.num("status"), CL_ECANCELED) << got;
  EXPECT_EQ(host_->events_with("job.done", "\"" + id + "\""), 1);
  // fini still holds a valid handle, to a finished job: job_finish answers CL_ESTATE.
  EXPECT_EQ(host_->log_lines_with("fini: job_finish of the open job: " + std::to_string(CL_ESTATE)), 1);
  // Cancelling now reaches nobody: the job is over, and the plugin is gone.
  EXPECT_EQ(host_->call("job.cancel", "{\"job_id\":\"" + id + "\"}").first, CL_ESTATE);
  host_->run_for(20);
  EXPECT_EQ(host_->log_lines_with("open job cancel callback ran"), 0);
}

TEST_F(Conformance, ChildProcessesRunWithoutAShellAndExitOnce) {
  Report r = run("conf.procs");
  // Refused descriptions start nothing.
  for (const char* k : {"null_out", "null_desc", "null_exit", "small_struct", "empty_argv", "bad_flags",
                        "stream_without_cb", "bad_env"}) {
    EXPECT_EQ(r.num(k), CL_EINVAL) << k << ": " << r.str();
  }
  EXPECT_TRUE(r.flag("refused_is_null")) << r.str();
  // Exit code and both captured streams; the exit callback never runs from inside proc_spawn.
  EXPECT_EQ(r.num("sh_spawn"), CL_OK) << r.str();
  EXPECT_EQ(r.num("sh_status"), CL_OK) << r.str();
  EXPECT_EQ(r.num("sh_code"), 3) << r.str();
  EXPECT_EQ(r.text("sh_out"), "out") << r.str();
  EXPECT_EQ(r.text("sh_err"), "err") << r.str();
  for (const char* k : {"sh_from_spawn", "missing_from_spawn", "argv_from_spawn"}) EXPECT_FALSE(r.flag(k)) << k;
  // No shell: metacharacters are plain arguments.
  EXPECT_EQ(r.text("argv_out"), "$(id) ; rm -rf /") << r.str();
  // A program that does not exist is reported through the exit callback.
  EXPECT_EQ(r.num("missing_spawn"), CL_OK) << r.str();
  EXPECT_EQ(r.num("missing_status"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("missing_code"), -1) << r.str();
  // Deadline: SIGTERM, status CL_ETIMEDOUT.
  EXPECT_EQ(r.num("timeout_status"), CL_ETIMEDOUT) << r.str();
  EXPECT_EQ(r.num("timeout_signal"), SIGTERM) << r.str();
  // proc_kill: a signal outside the list is refused; SIGKILL ends it, and that is still a normal exit report.
  EXPECT_EQ(r.num("kill_bad_signal"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("kill"), CL_OK) << r.str();
  EXPECT_EQ(r.num("kill_status"), CL_OK) << r.str();
  EXPECT_EQ(r.num("kill_signal"), SIGKILL) << r.str();
  // Streaming delivers everything, on fd 1, before the exit callback; nothing captured.
  EXPECT_EQ(r.text("streamed"), "abcdef") << r.str();
  EXPECT_EQ(r.num("stream_fd_bad"), 0) << r.str();
  EXPECT_EQ(r.num("stream_out_len"), 0) << r.str();
  // Capture is bounded and says so.
  EXPECT_EQ(r.text("trunc_out"), "0123") << r.str();
  EXPECT_EQ(r.num("trunc_truncated"), 1) << r.str();
  // Defaults: the plugin's data directory, and an environment of PATH and LANG only.
  EXPECT_TRUE(r.flag("cwd_is_plugin_data_dir")) << r.str();
  EXPECT_TRUE(r.flag("env_has_path")) << r.str();
  EXPECT_FALSE(r.flag("env_has_home")) << r.str();
  // Nothing of the host's leaks into the child: no store file, no socket, no epoll or event descriptor (what
  // the test runner itself passed down, a log file or a pipe, may be there).
  std::string fds = r.text("fds_out");
  EXPECT_NE(fds, "<absent>") << r.str();
  for (const char* leak : {".mdb", "socket:", "anon_inode:"}) EXPECT_EQ(fds.find(leak), std::string::npos) << fds;
  // stdin: lent and copied writes arrive in order, end of input once; lent bytes come back exactly once.
  EXPECT_EQ(r.num("write_lent"), CL_OK) << r.str();
  EXPECT_EQ(r.num("write_copied"), CL_OK) << r.str();
  EXPECT_EQ(r.num("write_null"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("close_stdin"), CL_OK) << r.str();
  EXPECT_EQ(r.num("close_stdin_again"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("write_after_close"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.text("stdin_out"), "15") << r.str();
  EXPECT_EQ(r.num("lent_done"), 1) << r.str();
  EXPECT_EQ(r.num("write_without_pipe"), CL_ESTATE) << r.str();
  // A handle whose exit callback returned is refused, not followed.
  EXPECT_EQ(r.num("write_after_exit"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("kill_after_exit"), CL_ESTATE) << r.str();
}

TEST_F(Conformance, UnloadKillsRunningProcessesAndReportsThemBeforeFini) {
  ASSERT_EQ(host_->call("conf.proc_open").first, CL_OK);
  host_->unload();
  EXPECT_EQ(host_->log_lines_with("open process exit: " + std::to_string(CL_ECANCELED) + " signal " +
                                  std::to_string(SIGTERM)),
            1);
  EXPECT_EQ(host_->log_lines_with("fini: open process ended before fini: yes"), 1);
}

// WebSockets (1.1): /plugins/conformance/ws echoes text (copied) and binary (lent), and closes with 4001 "bye"
// when asked; conf.ws_stats reports what its callbacks saw.
TEST_F(Conformance, WebSocketsEchoCopiedAndLentMessagesAndCloseWithThePluginsCode) {
  int status = 0;
  auto ws = host_->websocket("/plugins/conformance/ws", &status);
  ASSERT_TRUE(ws) << status;
  EXPECT_EQ(status, 101);
  ws->send(CL_WS_TEXT, "h\xC3\xA9llo");
  auto f = ws->next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, CL_WS_TEXT);
  EXPECT_EQ(f->data, "h\xC3\xA9llo");
  std::string big(60000, '\0');
  for (size_t i = 0; i < big.size(); i++) big[i] = static_cast<char>(i * 7 + i / 251);
  ws->send(CL_WS_BINARY, big);
  f = ws->next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, CL_WS_BINARY);
  EXPECT_TRUE(f->data == big) << f->data.size();
  ws->send(CL_WS_TEXT, "close please");
  f = ws->next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->code, 4001u);
  EXPECT_EQ(f->type, 0);
  EXPECT_EQ(f->data, "bye");
  ws->close(4001);  // the client's answer
  for (int i = 0; i < 100 && run("conf.ws_stats").num("closes") != 1; i++) host_->run_for(20);
  Report r = run("conf.ws_stats");
  EXPECT_EQ(r.num("open"), 1) << r.str();
  EXPECT_EQ(r.num("closes"), 1) << r.str();
  EXPECT_EQ(r.num("messages"), 3) << r.str();
  EXPECT_EQ(r.num("lent_done"), 1) << r.str();
  EXPECT_EQ(r.num("status"), CL_OK) << r.str();
  EXPECT_EQ(r.num("code"), 4001) << r.str();
  EXPECT_EQ(r.num("send_in_close"), CL_ECLOSING) << r.str();  // the handle lives through its close callback
}

TEST_F(Conformance, WebSocketMessagesOverTheLimitCloseWith1009) {
  int status = 0;
  auto ws = host_->websocket("/plugins/conformance/ws", &status);
  ASSERT_TRUE(ws) << status;
  ws->send(CL_WS_BINARY, std::string(100001, 'x'));  // the fixture's max_message is 100000
  auto f = ws->next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, 0);
  EXPECT_EQ(f->code, 1009u);
  ws->close(1009);
  for (int i = 0; i < 100 && run("conf.ws_stats").num("closes") != 1; i++) host_->run_for(20);
  Report r = run("conf.ws_stats");
  EXPECT_EQ(r.num("messages"), 0) << r.str();
  EXPECT_EQ(r.num("status"), CL_ETOOBIG) << r.str();
  EXPECT_EQ(r.num("code"), 1009) << r.str();
}

TEST_F(Conformance, APlainRequestToAWebSocketRouteIsStillThePluginsToAnswer) {
  ConfResponse r = host_->request("GET", "/plugins/conformance/ws");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "not a WebSocket request");
  EXPECT_EQ(run("conf.ws_stats").num("refused"), CL_EINVAL);
}

TEST_F(Conformance, UnloadClosesOpenWebSocketsWithGoingAwayBeforeFini) {
  int status = 0;
  auto ws = host_->websocket("/plugins/conformance/ws", &status);
  ASSERT_TRUE(ws) << status;
  host_->unload();
  auto f = ws->next();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, 0);
  EXPECT_EQ(f->code, 1001u);
  EXPECT_EQ(host_->log_lines_with("ws close: " + std::to_string(CL_ECANCELED) + " code 1001"), 1);
}

// The loopback server of the fetch scenarios: /echo answers with the request line and body, /hang never
// answers (it holds the connection until the client leaves).
void fetch_script(fetchtest::Conn& c) {
  std::string head, body;
  if (!c.read_request(&head, &body)) return;
  if (head.find(" /hang ") != std::string::npos) {
    char buf[16];
    c.read_some(buf, sizeof buf);
    return;
  }
  std::string out = head.substr(0, head.find("\r\n")) + "\n" + body;
  c.write("HTTP/1.1 200 OK\r\nX-Echo: " + std::string(head.find("\r\nX-Conf: 1\r\n") != std::string::npos ? "conf" : "none") +
          "\r\nContent-Length: " + std::to_string(out.size()) + "\r\n\r\n" + out);
}

TEST_F(Conformance, OutboundRequestsStreamBothWaysAndEndOnce) {
  fetchtest::Server server(fetch_script);
  Report r = run_with("conf.fetch", "{\"base\":\"http://127.0.0.1:" + std::to_string(server.port()) + "\"}");
  // Refused descriptions start nothing.
  for (const char* k : {"null_out", "null_desc", "null_body_cb", "small_struct", "bad_flags", "no_url", "bad_scheme",
                        "header_crlf", "bad_method"}) {
    EXPECT_EQ(r.num(k), CL_EINVAL) << k << ": " << r.str();
  }
  EXPECT_TRUE(r.flag("refused_is_null")) << r.str();
  // GET: the head once (headers from on_response on; no certificate on plain http), the body, one final call;
  // nothing from inside fetch_start.
  EXPECT_EQ(r.num("get_start"), CL_OK) << r.str();
  EXPECT_EQ(r.num("header_before_response"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("write_without_body"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("get_status"), 200) << r.str();
  EXPECT_EQ(r.num("get_header"), CL_OK) << r.str();
  EXPECT_EQ(r.text("get_header_value"), "conf") << r.str();
  EXPECT_EQ(r.num("get_header_missing"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.num("get_peer_cert"), CL_ENOENT) << r.str();
  EXPECT_EQ(r.text("get_body"), "GET /echo HTTP/1.1|") << r.str();
  EXPECT_TRUE(r.flag("get_chunked_body")) << r.str();
  EXPECT_EQ(r.num("get_final"), CL_OK) << r.str();
  for (const char* k : {"get_response_from_start", "get_final_from_start", "refused_final_from_start",
                        "cancel_final_from_start"}) {
    EXPECT_FALSE(r.flag(k)) << k << ": " << r.str();
  }
  // A chunked upload: lent and copied writes in order, one end; lent bytes come back exactly once.
  EXPECT_EQ(r.num("write_lent"), CL_OK) << r.str();
  EXPECT_EQ(r.num("write_copied"), CL_OK) << r.str();
  EXPECT_EQ(r.num("write_null"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("end"), CL_OK) << r.str();
  EXPECT_EQ(r.num("end_again"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("write_after_end"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.text("post_body"), "POST /echo HTTP/1.1|lent,copied") << r.str();
  EXPECT_EQ(r.num("post_final"), CL_OK) << r.str();
  EXPECT_EQ(r.num("lent_done"), 1) << r.str();
  // Nothing listening: CL_EUNAVAIL, no head.
  EXPECT_EQ(r.num("refused_final"), CL_EUNAVAIL) << r.str();
  EXPECT_EQ(r.num("refused_status"), -999999) << r.str();
  // Cancel: once, then CL_ESTATE; the final call says CL_ECANCELED.
  EXPECT_EQ(r.num("cancel"), CL_OK) << r.str();
  EXPECT_EQ(r.num("cancel_again"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("cancel_final"), CL_ECANCELED) << r.str();
  // A handle whose final call returned is refused, not followed.
  EXPECT_EQ(r.num("write_after_final"), CL_ESTATE) << r.str();
  EXPECT_EQ(r.num("cancel_after_final"), CL_ESTATE) << r.str();
}

TEST_F(Conformance, UnloadCancelsOpenRequestsBeforeFini) {
  fetchtest::Server server(fetch_script);
  auto [st, out] = host_->call("conf.fetch_open", "{\"base\":\"http://127.0.0.1:" + std::to_string(server.port()) + "\"}");
  ASSERT_EQ(st, CL_OK) << out;
  host_->run_for(100);  // connected and waiting for an answer that never comes
  host_->unload();
  EXPECT_EQ(host_->log_lines_with("open fetch final: " + std::to_string(CL_ECANCELED)), 1);
  EXPECT_EQ(host_->log_lines_with("fini: open fetch ended before fini: yes"), 1);
}

TEST_F(Conformance, CallersAndPrivilegedOperations) {
  Report r = run("conf.callers");
  EXPECT_EQ(r.num("bad_flags"), CL_EINVAL) << r.str();
  // A plugin calling for itself.
  EXPECT_EQ(r.num("self_call"), CL_OK) << r.str();
  Report self = r.sub("self");
  EXPECT_EQ(self.num("null_out"), CL_EINVAL) << self.str();
  EXPECT_EQ(self.num("zero_size"), CL_EINVAL) << self.str();
  EXPECT_EQ(self.num("status"), CL_OK) << self.str();
  EXPECT_EQ(self.num("size"), static_cast<long long>(sizeof(cl_caller_t))) << self.str();
  EXPECT_EQ(self.num("kind"), CL_CALLER_PLUGIN) << self.str();
  EXPECT_EQ(self.text("plugin"), "conformance") << self.str();
  EXPECT_EQ(self.text("principal"), "") << self.str();
  EXPECT_TRUE(self.flag("hpp_agrees")) << self.str();
  // A plugin calling on behalf of a principal it authenticated.
  EXPECT_EQ(r.num("as_call"), CL_OK) << r.str();
  Report as = r.sub("as");
  EXPECT_EQ(as.num("kind"), CL_CALLER_AGENT) << as.str();
  EXPECT_EQ(as.text("plugin"), "conformance") << as.str();
  EXPECT_EQ(as.text("principal"), "user:admin") << as.str();
  EXPECT_EQ(r.num("as_empty"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("as_long"), CL_EINVAL) << r.str();
  EXPECT_EQ(r.num("as_max"), CL_OK) << r.str();
  EXPECT_EQ(r.num("as_max_status"), CL_OK) << r.str();
  // Privileged: refused without a grant (also the plugin's own operation, also for a principal); granted works.
  EXPECT_EQ(r.num("priv_self"), CL_EPERM) << r.str();
  EXPECT_EQ(r.num("secret"), CL_EPERM) << r.str();
  EXPECT_EQ(r.num("secret_as"), CL_EPERM) << r.str();
  EXPECT_EQ(r.num("granted_call"), CL_OK) << r.str();
  EXPECT_EQ(r.num("granted_status"), CL_OK) << r.str();
  EXPECT_TRUE(r.flag("granted_result")) << r.str();
  // The core calling: CL_CALLER_CORE, no plugin, no principal, and privileged operations are open to it.
  auto [st, out] = host_->call("conf.whoami");
  ASSERT_EQ(st, CL_OK) << out;
  Report core(out);
  EXPECT_EQ(core.num("kind"), CL_CALLER_CORE) << out;
  EXPECT_EQ(core.text("plugin"), "") << out;
  EXPECT_EQ(core.text("principal"), "") << out;
  auto [pst, pout] = host_->call("conf.priv");
  EXPECT_EQ(pst, CL_OK) << pout;
  EXPECT_EQ(pout, "{\"priv\":true}");
}

TEST_F(Conformance, UnloadStopsNewCalls) {
  host_->unload();
  EXPECT_NE(host_->call("conf.echo").first, CL_OK);  // operations are gone
  // Its listener had the plugin's guard: with the guard gone it refuses (fails closed), it does not open.
  EXPECT_EQ(host_->request("GET", "/plugins/conformance/echo").status, 503);
}

}  // namespace
}  // namespace cloudlet::test
