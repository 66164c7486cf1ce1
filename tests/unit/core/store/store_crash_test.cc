// kill -9 at random moments: the store must always reopen, scan fully, hold every transaction whose durable
// callback ran, and hold a prefix of the committed history (each transaction all or nothing).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "loop/loop.h"
#include "store/store.h"
#include "store_crash_docs.h"
#include "store_test_util.h"

extern char** environ;

using cloudlet::Loop;
using cloudlet::Store;
using namespace cloudlet::test;

namespace {

std::string child_path() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path() / "store_crash_child";
}

struct Round {
  std::vector<uint64_t> durable;  // numbers the child reported durable
  int status = 0;                 // waitpid status
};

// Starts the child, lets it run for run_ms while collecting its reports, kills it with SIGKILL.
Round run_child(const std::string& dir, int run_ms) {
  Round r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << strerror(errno);
    return r;
  }
  constexpr int kChildFd = 100;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], kChildFd);  // dup2 clears O_CLOEXEC on the copy
  std::string exe = child_path(), fd_arg = std::to_string(kChildFd);
  char* argv[] = {exe.data(), const_cast<char*>(dir.c_str()), fd_arg.data(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << exe << ": " << strerror(rc);
    close(fds[0]);
    return r;
  }
  std::string buf;
  auto drain = [&](int timeout_ms) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return true;
    char tmp[65536];
    ssize_t n = read(fds[0], tmp, sizeof tmp);
    if (n <= 0) return false;  // EOF: the child is gone
    buf.append(tmp, static_cast<size_t>(n));
    return true;
  };
  auto kill_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    if (!drain(static_cast<int>(left.count()))) break;
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  // Everything the child wrote before dying is still in the pipe.
  while (drain(2000)) {
  }
  close(fds[0]);
  for (size_t off = 0; off + 8 <= buf.size(); off += 8) {
    uint64_t n;
    memcpy(&n, buf.data() + off, 8);
    r.durable.push_back(n);
  }
  EXPECT_EQ(buf.size() % 8, 0u);
  return r;
}

// Counts every key in the environment with plain LMDB: nothing may exist beyond what the checks account for.
size_t raw_key_count(const std::string& dir) {
  MDB_env* env = nullptr;
  size_t n = 0;
  if (mdb_env_create(&env) != 0) return 0;
  if (mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0600) == 0) {
    MDB_stat st;
    MDB_txn* txn = nullptr;
    MDB_dbi dbi;
    if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0 && mdb_dbi_open(txn, nullptr, 0, &dbi) == 0 &&
        mdb_stat(txn, dbi, &st) == 0)
      n = st.ms_entries;
    if (txn) mdb_txn_abort(txn);
  }
  mdb_env_close(env);
  return n;
}

TEST(StoreCrash, KillNineNeverCorruptsOrLosesDurableWrites) {
  TempDir tmp;
  const std::string dir = tmp.sub("db");
  std::random_device rd;
  const unsigned seed = rd();
  std::mt19937 rng(seed);
  RecordProperty("seed", std::to_string(seed));
  std::printf("kill -9 test seed %u\n", seed);

  constexpr int kRounds = 20;
  int64_t last = -1;
  size_t total_durable = 0;
  for (int round = 0; round < kRounds; round++) {
    // The first rounds die during start-up (opening, first commits); the rest anywhere within 1.5 s.
    int run_ms = round == 0 ? 0 : round == 1 ? 5 : round == 2 ? 30 : static_cast<int>(rng() % 1500);
    Round r = run_child(dir, run_ms);
    ASSERT_TRUE(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGKILL)
        << "round " << round << ": the child ended on its own (status " << r.status << ")";
    uint64_t max_durable = 0;
    for (size_t i = 0; i < r.durable.size(); i++) {
      max_durable = std::max(max_durable, r.durable[i]);
      if (i > 0) {
        EXPECT_EQ(r.durable[i], r.durable[i - 1] + 1) << "durable callbacks out of order";
      }
    }
    total_durable += r.durable.size();

    Loop loop;
    Store::Options o;
    o.dir = dir;
    o.map_size = 256 << 10;
    std::string err;
    auto store = Store::open(loop, o, &err);
    ASSERT_TRUE(store) << "round " << round << " (killed after " << run_ms << " ms): " << err;
    EXPECT_EQ(store->stored_schema_version(), 1);
    std::string v;
    int64_t now_last = -1;
    if (store->get("meta", "last", &v) == CL_OK) now_last = std::stoll(v);
    EXPECT_GE(now_last, last) << "committed transactions disappeared";
    if (!r.durable.empty()) {
      EXPECT_LE(static_cast<int64_t>(max_durable), now_last) << "a durable transaction is missing";
      EXPECT_EQ(static_cast<int64_t>(r.durable.front()), last + 1) << "the child did not continue after " << last;
    }
    last = now_last;

    // docs holds exactly transactions 0..last, intact.
    int64_t expect = 0;
    bool intact = true;
    ASSERT_EQ(store->scan("docs", "",
                          [&](std::string_view k, std::string_view val) {
                            if (k != crash_doc_key(expect) || val != crash_doc_value(expect)) {
                              ADD_FAILURE() << "round " << round << ": document " << expect << " is wrong (key "
                                            << k << ", " << val.size() << " bytes)";
                              intact = false;
                              return false;
                            }
                            expect++;
                            return true;
                          }),
              CL_OK);
    ASSERT_TRUE(intact);
    EXPECT_EQ(expect, last + 1) << "documents beyond the last transaction, or missing ones";
    // The ring: the 32 most recent transactions, each with its number (deletes are atomic with the rest).
    std::set<std::string> ring_expect;
    for (int64_t m = std::max<int64_t>(0, last - 31); m <= last; m++) ring_expect.insert(crash_ring_key(m % 64));
    size_t ring_n = 0;
    ASSERT_EQ(store->scan("ring", "",
                          [&](std::string_view k, std::string_view val) {
                            ring_n++;
                            EXPECT_TRUE(ring_expect.count(std::string(k))) << "stale ring entry " << k;
                            int64_t m = std::stoll(std::string(val));
                            EXPECT_EQ(crash_ring_key(m % 64), k);
                            EXPECT_GT(m, last - 32);
                            EXPECT_LE(m, last);
                            return true;
                          }),
              CL_OK);
    EXPECT_EQ(ring_n, ring_expect.size());
    store->close();
    store.reset();
    EXPECT_EQ(loop.close(), 0);
    // docs + ring + meta/last + the version record; nothing else.
    size_t keys = raw_key_count(dir);
    size_t expected_keys = static_cast<size_t>(last + 1) + ring_expect.size() + (last >= 0 ? 1 : 0) + 1;
    EXPECT_EQ(keys, expected_keys) << "round " << round;
    std::printf("round %2d: killed after %4d ms, %5zu durable reports, %7lld transactions on disk\n", round, run_ms,
                r.durable.size(), static_cast<long long>(last + 1));
    if (HasFailure()) return;
  }
  EXPECT_GT(total_durable, 0u) << "the child never got a transaction durable: the test proved nothing";
  EXPECT_GT(last, 1000) << "too few transactions to mean anything";
}

}  // namespace
