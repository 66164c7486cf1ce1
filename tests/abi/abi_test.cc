// Layout and compatibility guards for abi/cloudlet_plugin.h (rule V6 in abi/README.md).
#include <openssl/evp.h>

#include <gtest/gtest.h>

#include <dirent.h>

#include <cstddef>
#include <cstdio>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "cloudlet_plugin.h"
#include "events/bus.h"
#include "http/server.h"
#include "loop/loop.h"
#include "ops/operations.h"
#include "plugin/host.h"

extern "C" int abi_c99_probe(const cl_host_api_t* api);
int abi_cxx_probe(const cl_host_api_t* api);

namespace {

// The 1.0 table, frozen: slot i sits at 8 + 8*i on LP64 (x86_64, aarch64). Appending is fine; changing any
// line below is an ABI break.
TEST(Abi, HostTableLayoutIsFrozen) {
  static_assert(sizeof(void*) == 8, "layout table assumes LP64");
  EXPECT_EQ(offsetof(cl_host_api_t, struct_size), 0u);
  EXPECT_EQ(offsetof(cl_host_api_t, abi_major), 4u);
  EXPECT_EQ(offsetof(cl_host_api_t, abi_minor), 6u);
#define SLOT(name, i) EXPECT_EQ(offsetof(cl_host_api_t, name), 8u + 8u * (i)) << #name;
  SLOT(log, 0)
  SLOT(log_enabled, 1)
  SLOT(strerror, 2)
  SLOT(buf_free, 3)
  SLOT(host_get, 4)
  SLOT(now_ms, 5)
  SLOT(timer_start, 6)
  SLOT(timer_stop, 7)
  SLOT(post, 8)
  SLOT(work_queue, 9)
  SLOT(work_cancel, 10)
  SLOT(io_start, 11)
  SLOT(io_update, 12)
  SLOT(io_stop, 13)
  SLOT(event_subscribe, 14)
  SLOT(event_unsubscribe, 15)
  SLOT(event_publish, 16)
  SLOT(op_register, 17)
  SLOT(op_call, 18)
  SLOT(op_reply, 19)
  SLOT(store_get, 20)
  SLOT(store_scan, 21)
  SLOT(txn_begin, 22)
  SLOT(txn_get, 23)
  SLOT(txn_put, 24)
  SLOT(txn_del, 25)
  SLOT(txn_commit, 26)
  SLOT(txn_abort, 27)
  SLOT(route_add, 28)
  SLOT(req_method, 29)
  SLOT(req_path, 30)
  SLOT(req_query, 31)
  SLOT(req_header, 32)
  SLOT(req_param, 33)
  SLOT(req_param_at, 34)
  SLOT(req_body, 35)
  SLOT(req_body_read, 36)
  SLOT(req_body_pause, 37)
  SLOT(req_file_at, 38)
  SLOT(req_file_take, 39)
  SLOT(req_local_addr, 40)
  SLOT(req_peer_addr, 41)
  SLOT(req_on_close, 42)
  SLOT(resp_header_add, 43)
  SLOT(resp_send, 44)
  SLOT(resp_start, 45)
  SLOT(resp_write, 46)
  SLOT(resp_end, 47)
  SLOT(resp_file, 48)
  SLOT(sse_start, 49)
  SLOT(sse_send, 50)
  // since 1.1
  SLOT(json_parse, 51)
  SLOT(json_free, 52)
  SLOT(json_type, 53)
  SLOT(json_get_str, 54)
  SLOT(json_get_int, 55)
  SLOT(json_get_num, 56)
  SLOT(json_get_bool, 57)
  SLOT(json_get_len, 58)
  SLOT(json_key_at, 59)
  SLOT(job_create, 60)
  SLOT(job_id, 61)
  SLOT(job_progress, 62)
  SLOT(job_finish, 63)
  SLOT(op_register_ex, 64)
  SLOT(op_caller, 65)
  SLOT(op_call_as, 66)
  SLOT(listener_guard_set, 67)
  SLOT(req_set_principal, 68)
  SLOT(req_principal, 69)
  SLOT(req_peer_cert, 70)
  SLOT(static_add, 71)
  SLOT(proc_spawn, 72)
  SLOT(proc_write, 73)
  SLOT(proc_close_stdin, 74)
  SLOT(proc_kill, 75)
  SLOT(ws_accept, 76)
  SLOT(ws_send, 77)
  SLOT(ws_pause, 78)
  SLOT(ws_close, 79)
  SLOT(fetch_start, 80)
  SLOT(fetch_write, 81)
  SLOT(fetch_end, 82)
  SLOT(fetch_header, 83)
  SLOT(fetch_peer_cert, 84)
  SLOT(fetch_pause, 85)
  SLOT(fetch_cancel, 86)
#undef SLOT
  EXPECT_EQ(sizeof(cl_host_api_t), 8u + 8u * 87);
}

TEST(Abi, StructLayoutsAreFrozen) {
  EXPECT_EQ(sizeof(cl_str_t), 16u);
  EXPECT_EQ(sizeof(cl_buf_t), 16u);
  EXPECT_EQ(offsetof(cl_route_desc_t, struct_size), 0u);
  EXPECT_EQ(offsetof(cl_route_desc_t, flags), 4u);
  EXPECT_EQ(offsetof(cl_route_desc_t, listener), 8u);
  EXPECT_EQ(offsetof(cl_route_desc_t, method), 16u);
  EXPECT_EQ(offsetof(cl_route_desc_t, pattern), 24u);
  EXPECT_EQ(offsetof(cl_route_desc_t, max_body), 32u);
  EXPECT_EQ(offsetof(cl_route_desc_t, handler), 40u);
  EXPECT_EQ(offsetof(cl_route_desc_t, ud), 48u);
  EXPECT_EQ(offsetof(cl_file_info_t, field), 8u);
  EXPECT_EQ(offsetof(cl_file_info_t, size), 72u);
  // since 1.1
  EXPECT_EQ(offsetof(cl_caller_t, kind), 4u);
  EXPECT_EQ(offsetof(cl_caller_t, plugin), 8u);
  EXPECT_EQ(offsetof(cl_caller_t, principal), 24u);
  EXPECT_EQ(sizeof(cl_caller_t), 40u);
  EXPECT_EQ(offsetof(cl_proc_desc_t, flags), 4u);
  EXPECT_EQ(offsetof(cl_proc_desc_t, argv), 8u);
  EXPECT_EQ(offsetof(cl_proc_desc_t, env), 16u);
  EXPECT_EQ(offsetof(cl_proc_desc_t, cwd), 24u);
  EXPECT_EQ(offsetof(cl_proc_desc_t, timeout_ms), 32u);
  EXPECT_EQ(offsetof(cl_proc_desc_t, max_capture), 40u);
  EXPECT_EQ(sizeof(cl_proc_desc_t), 48u);
  EXPECT_EQ(offsetof(cl_proc_exit_t, status), 4u);
  EXPECT_EQ(offsetof(cl_proc_exit_t, exit_code), 8u);
  EXPECT_EQ(offsetof(cl_proc_exit_t, term_signal), 16u);
  EXPECT_EQ(offsetof(cl_proc_exit_t, truncated), 20u);
  EXPECT_EQ(offsetof(cl_proc_exit_t, out), 24u);
  EXPECT_EQ(offsetof(cl_proc_exit_t, err), 40u);
  EXPECT_EQ(sizeof(cl_proc_exit_t), 56u);
  EXPECT_EQ(offsetof(cl_ws_desc_t, flags), 4u);
  EXPECT_EQ(offsetof(cl_ws_desc_t, subprotocol), 8u);
  EXPECT_EQ(offsetof(cl_ws_desc_t, max_message), 24u);
  EXPECT_EQ(offsetof(cl_ws_desc_t, ping_interval_ms), 32u);
  EXPECT_EQ(sizeof(cl_ws_desc_t), 40u);
  EXPECT_EQ(offsetof(cl_header_t, value), 16u);
  EXPECT_EQ(sizeof(cl_header_t), 32u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, flags), 4u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, method), 8u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, url), 16u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, headers), 24u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, header_count), 32u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, body_length), 40u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, ca_file), 48u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, cert_file), 56u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, key_file), 64u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, pin_sha256), 72u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, connect_timeout_ms), 80u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, idle_timeout_ms), 88u);
  EXPECT_EQ(offsetof(cl_fetch_desc_t, max_header_bytes), 96u);
  EXPECT_EQ(sizeof(cl_fetch_desc_t), 104u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, abi_major), 4u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, abi_minor), 6u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, name), 8u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, version), 16u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, flags), 24u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, init), 32u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, fini), 40u);
  EXPECT_EQ(offsetof(cl_plugin_desc_t, reserved), 48u);
}

TEST(Abi, StatusCodesAreFrozen) {
  EXPECT_EQ(CL_OK, 0);
  EXPECT_EQ(CL_EINVAL, -1);
  EXPECT_EQ(CL_ENOMEM, -2);
  EXPECT_EQ(CL_ENOTSUP, -3);
  EXPECT_EQ(CL_EBUSY, -4);
  EXPECT_EQ(CL_ENOENT, -5);
  EXPECT_EQ(CL_ECANCELED, -6);
  EXPECT_EQ(CL_ECLOSING, -7);
  EXPECT_EQ(CL_EEXIST, -8);
  EXPECT_EQ(CL_EIO, -9);
  EXPECT_EQ(CL_EDECLINED, -10);
  EXPECT_EQ(CL_ETIMEDOUT, -11);
  EXPECT_EQ(CL_EPERM, -12);
  EXPECT_EQ(CL_ETOOBIG, -13);
  EXPECT_EQ(CL_ESTATE, -14);
  EXPECT_EQ(CL_EUNAUTH, -15);
  EXPECT_EQ(CL_EUNAVAIL, -16);
  EXPECT_EQ(CL_JSON_NULL, 1);
  EXPECT_EQ(CL_JSON_BOOL, 2);
  EXPECT_EQ(CL_JSON_NUMBER, 3);
  EXPECT_EQ(CL_JSON_STRING, 4);
  EXPECT_EQ(CL_JSON_ARRAY, 5);
  EXPECT_EQ(CL_JSON_OBJECT, 6);
  EXPECT_EQ(CL_CALLER_CORE, 0u);
  EXPECT_EQ(CL_CALLER_PLUGIN, 1u);
  EXPECT_EQ(CL_CALLER_AGENT, 2u);
  EXPECT_EQ(CL_OP_F_PRIVILEGED, 1u);
}

// Every slot of the core's table is filled, and CL_HAS sees them (from C and from C++).
TEST(Abi, CoreFillsEverySlot) {
  const cl_host_api_t* api = cloudlet::host_api_table();
  EXPECT_EQ(api->struct_size, sizeof(cl_host_api_t));
  EXPECT_EQ(api->abi_major, CL_ABI_MAJOR);
  EXPECT_EQ(api->abi_minor, CL_ABI_MINOR);
  auto* slots = reinterpret_cast<void* const*>(reinterpret_cast<const char*>(api) + 8);
  size_t n = (sizeof(cl_host_api_t) - 8) / sizeof(void*);
  for (size_t i = 0; i < n; i++) EXPECT_NE(slots[i], nullptr) << "slot " << i;
  EXPECT_EQ(abi_c99_probe(api), 1);
  EXPECT_EQ(abi_cxx_probe(api), 1);
  // A short table (an older core) reports newer slots as absent.
  cl_host_api_t old = *api;
  old.struct_size = offsetof(cl_host_api_t, sse_send);
  EXPECT_FALSE(CL_HAS(&old, sse_send));
  EXPECT_TRUE(CL_HAS(&old, sse_start));
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; i++) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

std::string slurp(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Tripwire: the header changed. If you appended slots: bump CL_ABI_MINOR, add a line to abi/CHANGES, add the
// slots to the layout test above, then record the new hash: sha256sum abi/cloudlet_plugin.h. If you changed
// anything else in an incompatible way: that needs a new major (abi/README.md, rule V2).
TEST(Abi, HeaderHashIsRecorded) {
  std::string recorded = slurp(ABI_HASH_FILE);
  std::string actual = sha256_hex(slurp(ABI_HEADER));
  EXPECT_EQ(recorded.substr(0, 64), actual) << "abi/cloudlet_plugin.h changed: see the comment above this test";
  std::ostringstream minor;
  minor << "CL_ABI_MINOR " << CL_ABI_MINOR;
  EXPECT_NE(recorded.find(minor.str()), std::string::npos) << "abi/cloudlet_plugin.h.sha256 names another minor";
}

// Every slot's comment states who owns what (OWNERSHIP), which threads may call it (THREAD) and since when it
// exists (SINCE), as abi/README.md promises.
TEST(Abi, EverySlotDocumentsOwnershipThreadAndSince) {
  std::string h = slurp(ABI_HEADER);
  size_t begin = h.find("typedef struct cl_host_api_s {");
  size_t end = h.find("} cl_host_api_t;");
  ASSERT_NE(begin, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  std::string table = h.substr(begin, end - begin);
  std::regex slot(R"(\(\*(\w+)\)\()");
  size_t comment_from = table.find("abi_minor;");
  int slots = 0;
  for (auto it = std::sregex_iterator(table.begin(), table.end(), slot); it != std::sregex_iterator(); ++it) {
    size_t at = static_cast<size_t>(it->position(0));
    std::string comment = table.substr(comment_from, at - comment_from);
    std::string name = (*it)[1];
    EXPECT_NE(comment.find("OWNERSHIP:"), std::string::npos) << name << " has no OWNERSHIP tag";
    EXPECT_NE(comment.find("THREAD:"), std::string::npos) << name << " has no THREAD tag";
    EXPECT_NE(comment.find("SINCE: 1."), std::string::npos) << name << " has no SINCE tag";
    comment_from = table.find(';', at) + 1;
    slots++;
  }
  EXPECT_EQ(static_cast<size_t>(slots), (sizeof(cl_host_api_t) - 8) / sizeof(void*));  // every slot was read
}

// The growth rule is the one a function table allows (SQLite's): new slots at the end of the struct only.
TEST(Abi, GrowthRuleIsAppendAtTheEndOfTheStruct) {
  std::string h = slurp(ABI_HEADER);
  EXPECT_NE(h.find("appended at the end of the struct only"), std::string::npos);
  EXPECT_EQ(h.find("end of their group"), std::string::npos);
  std::string readme = slurp(ABI_README);
  EXPECT_NE(readme.find("appended at the end of the struct only"), std::string::npos);
  EXPECT_EQ(readme.find("end of their group"), std::string::npos);
}

// The dynamic symbol table of every plugin holds cloudlet_plugin_v1 alone (the version script of
// cloudlet_add_plugin): no typeinfo, no template instances, nothing another plugin could bind to.
TEST(Abi, EveryPluginExportsOnlyItsEntry) {
  std::string build = getenv("CLOUDLET_BUILD_DIR");
  std::vector<std::string> files;
  for (std::string dir : {build + "/plugins", build + "/tests/fixtures"}) {
    DIR* d = opendir(dir.c_str());
    ASSERT_NE(d, nullptr) << dir;
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 3 && n.compare(n.size() - 3, 3, ".so") == 0) files.push_back(dir + "/" + n);
    }
    closedir(d);
  }
  ASSERT_GE(files.size(), 10u);
  for (const auto& f : files) {
    FILE* p = popen(("nm -D --defined-only '" + f + "' 2>&1").c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::set<std::string> symbols;
    char line[1024];
    while (fgets(line, sizeof line, p)) {
      std::istringstream fields(line);
      std::string addr, type, name;
      if (fields >> addr >> type >> name) symbols.insert(name);
    }
    EXPECT_EQ(pclose(p), 0) << f;
    std::set<std::string> want{"cloudlet_plugin_v1"};
    if (f.find("fixture_no_entry.so") != std::string::npos) want.clear();  // it exports nothing on purpose
    std::string got;
    for (const auto& s : symbols) got += s + " ";
    EXPECT_EQ(symbols, want) << f << " exports: " << got;
  }
}

// A plugin built against the frozen 1.0 header loads into today's core and works.
TEST(Abi, FrozenOneZeroPluginStillLoads) {
  cloudlet::Loop loop;
  cloudlet::Operations ops(loop);
  cloudlet::EventBus events(loop);
  cloudlet::http::Server server(loop, "/tmp");
  cloudlet::HostServices svc{loop, server, nullptr, ops, events, "test", "/tmp", "t", "open", nullptr};
  {
    cloudlet::PluginManager pm(svc);
    cloudlet::PluginSpec spec;
    spec.name = "frozen_1_0";
    spec.path = std::string(getenv("CLOUDLET_BUILD_DIR")) + "/tests/fixtures/frozen_1_0.so";
    std::string error;
    ASSERT_EQ(pm.load(spec, &error), CL_OK) << error;
    std::string result;
    ASSERT_EQ(ops.call("frozen.ping", "{}", [&](cl_status_t, std::string_view r) { result = r; }), CL_OK);
    loop.run();
    EXPECT_EQ(result, "{\"pong\":true}");
    bool unloaded = false;
    pm.unload_all(true, [&] { unloaded = true; });
    loop.run();
    EXPECT_TRUE(unloaded);
  }
  EXPECT_EQ(loop.close(), 0);
}

}  // namespace
