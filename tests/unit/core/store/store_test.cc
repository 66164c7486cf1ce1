#include "store/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "loop/loop.h"
#include "store_test_util.h"

using cloudlet::Loop;
using cloudlet::Store;
using cloudlet::test::pump;
using cloudlet::test::run_until;
using cloudlet::test::TempDir;

namespace {

class StoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> open(Store::Options o = {}) {
    if (o.dir.empty()) o.dir = dir.sub("db");
    std::string err;
    auto s = Store::open(loop, o, &err);
    EXPECT_TRUE(s) << err;
    return s;
  }

  // Commits one put (or delete when value is nullopt) and returns the commit status.
  cl_status_t put(Store& s, std::string_view coll, std::string_view key, std::optional<std::string> value,
                  Store::DurableFn durable = nullptr) {
    auto t = s.begin();
    if (!t) return CL_EBUSY;
    cl_status_t st = value ? t->put(coll, key, *value) : t->del(coll, key);
    if (st != CL_OK) return st;
    return s.commit(std::move(t), std::move(durable));
  }

  bool settle(Store& s) {
    return run_until(loop, [&] { return s.pending() == 0; });
  }

  std::vector<std::pair<std::string, std::string>> scan_all(Store& s, std::string_view coll,
                                                            std::string_view prefix = "") {
    std::vector<std::pair<std::string, std::string>> out;
    EXPECT_EQ(s.scan(coll, prefix,
                     [&](std::string_view k, std::string_view v) {
                       out.emplace_back(k, v);
                       return true;
                     }),
              CL_OK);
    return out;
  }

  TempDir dir;
  Loop loop;
};

using KV = std::vector<std::pair<std::string, std::string>>;

TEST_F(StoreTest, PutGetDelete) {
  auto s = open();
  std::string v;
  EXPECT_EQ(s->get("things", "a", &v), CL_ENOENT);
  ASSERT_EQ(put(*s, "things", "a", "{\"x\":1}"), CL_OK);
  ASSERT_EQ(s->get("things", "a", &v), CL_OK);
  EXPECT_EQ(v, "{\"x\":1}");
  EXPECT_EQ(s->get("things", "a", nullptr), CL_OK);
  EXPECT_EQ(s->get("other", "a", &v), CL_ENOENT);

  ASSERT_TRUE(settle(*s));
  ASSERT_EQ(s->get("things", "a", &v), CL_OK);  // now from LMDB, not the overlay
  EXPECT_EQ(v, "{\"x\":1}");

  ASSERT_EQ(put(*s, "things", "a", std::nullopt), CL_OK);
  EXPECT_EQ(s->get("things", "a", &v), CL_ENOENT);  // the overlay hides the document still on disk
  ASSERT_TRUE(settle(*s));
  EXPECT_EQ(s->get("things", "a", &v), CL_ENOENT);
  // Deleting what does not exist is fine.
  ASSERT_EQ(put(*s, "things", "never", std::nullopt), CL_OK);
  ASSERT_TRUE(settle(*s));
}

TEST_F(StoreTest, TxnSeesOwnWritesAndAbortDiscardsThem) {
  auto s = open();
  ASSERT_EQ(put(*s, "c", "old", "1"), CL_OK);
  ASSERT_EQ(put(*s, "c", "gone", "2"), CL_OK);
  {
    auto t = s->begin();
    ASSERT_TRUE(t);
    std::string v;
    EXPECT_EQ(t->get("c", "old", &v), CL_OK);
    EXPECT_EQ(v, "1");
    EXPECT_EQ(t->put("c", "old", "3"), CL_OK);
    EXPECT_EQ(t->put("c", "new", "4"), CL_OK);
    EXPECT_EQ(t->del("c", "gone"), CL_OK);
    EXPECT_EQ(t->get("c", "old", &v), CL_OK);
    EXPECT_EQ(v, "3");
    EXPECT_EQ(t->get("c", "new", &v), CL_OK);
    EXPECT_EQ(v, "4");
    EXPECT_EQ(t->get("c", "gone", &v), CL_ENOENT);
    EXPECT_EQ(t->size(), 3u);
    // Nothing is visible outside the transaction before commit.
    EXPECT_EQ(s->get("c", "old", &v), CL_OK);
    EXPECT_EQ(v, "1");
    EXPECT_EQ(s->get("c", "new", &v), CL_ENOENT);
  }  // aborted
  std::string v;
  EXPECT_EQ(s->get("c", "old", &v), CL_OK);
  EXPECT_EQ(v, "1");
  EXPECT_EQ(s->get("c", "new", &v), CL_ENOENT);
  EXPECT_EQ(s->get("c", "gone", &v), CL_OK);
  ASSERT_TRUE(settle(*s));
  s->close();
  s = open();
  EXPECT_EQ(s->get("c", "new", &v), CL_ENOENT);
  EXPECT_EQ(s->get("c", "gone", &v), CL_OK);
}

TEST_F(StoreTest, OneTransactionAtATime) {
  auto s = open();
  auto t1 = s->begin();
  ASSERT_TRUE(t1);
  cl_status_t st = CL_OK;
  EXPECT_FALSE(s->begin(&st));
  EXPECT_EQ(st, CL_EBUSY);
  t1.reset();  // abort frees the slot
  auto t2 = s->begin(&st);
  ASSERT_TRUE(t2);
  EXPECT_EQ(st, CL_OK);
  EXPECT_FALSE(s->begin());
  ASSERT_EQ(t2->put("c", "k", "v"), CL_OK);
  ASSERT_EQ(s->commit(std::move(t2), nullptr), CL_OK);
  auto t3 = s->begin();  // commit frees the slot too
  EXPECT_TRUE(t3);
  EXPECT_EQ(s->commit(nullptr, nullptr), CL_EINVAL);
}

TEST_F(StoreTest, TxnOfAnotherStoreIsRejected) {
  auto a = open();
  auto b = open({.dir = dir.sub("other")});
  auto t = b->begin();
  ASSERT_TRUE(t);
  ASSERT_EQ(t->put("c", "k", "v"), CL_OK);
  EXPECT_EQ(a->commit(std::move(t), nullptr), CL_EINVAL);
  EXPECT_TRUE(b->begin());  // the rejected transaction was destroyed, which aborted it
  std::string v;
  EXPECT_EQ(a->get("c", "k", &v), CL_ENOENT);
  EXPECT_EQ(b->get("c", "k", &v), CL_ENOENT);
}

TEST_F(StoreTest, NameAndSizeValidation) {
  auto s = open();
  std::string v;
  const std::string longest_coll(Store::kMaxCollection, 'c'), too_long_coll(Store::kMaxCollection + 1, 'c');
  const std::string longest_key(Store::kMaxKey, 'k'), too_long_key(Store::kMaxKey + 1, 'k');
  for (std::string_view bad : {std::string_view(""), std::string_view(too_long_coll), std::string_view("a b"),
                               std::string_view("a\0b", 3), std::string_view("\x01meta"), std::string_view("caf\xc3\xa9"),
                               std::string_view("a*"), std::string_view("a\\b")}) {
    EXPECT_FALSE(Store::valid_collection(bad)) << bad;
    EXPECT_EQ(s->get(bad, "k", &v), CL_EINVAL);
    EXPECT_EQ(s->scan(bad, "", [](auto, auto) { return true; }), CL_EINVAL);
    auto t = s->begin();
    ASSERT_TRUE(t);
    EXPECT_EQ(t->put(bad, "k", "1"), CL_EINVAL);
    EXPECT_EQ(t->del(bad, "k"), CL_EINVAL);
    EXPECT_EQ(t->get(bad, "k", &v), CL_EINVAL);
  }
  for (std::string_view good : {std::string_view(longest_coll), std::string_view("plugin/hello:x-y.z_1"),
                                std::string_view("A"), std::string_view("0")}) {
    EXPECT_TRUE(Store::valid_collection(good)) << good;
  }
  for (std::string_view bad : {std::string_view(""), std::string_view(too_long_key), std::string_view("a\0b", 3)}) {
    EXPECT_FALSE(Store::valid_key(bad));
    EXPECT_EQ(s->get("c", bad, &v), CL_EINVAL);
    auto t = s->begin();
    EXPECT_EQ(t->put("c", bad, "1"), CL_EINVAL);
    EXPECT_EQ(t->del("c", bad), CL_EINVAL);
  }
  // Prefixes may be empty but not longer than a key or contain NUL.
  EXPECT_EQ(s->scan("c", too_long_key, [](auto, auto) { return true; }), CL_EINVAL);
  EXPECT_EQ(s->scan("c", std::string_view("a\0", 2), [](auto, auto) { return true; }), CL_EINVAL);

  // The largest names and keys fit LMDB's key limit and round-trip.
  ASSERT_EQ(put(*s, longest_coll, longest_key, "max"), CL_OK);
  ASSERT_EQ(put(*s, "c", "\x01\xff binary key \t", "bin"), CL_OK);
  ASSERT_TRUE(settle(*s));
  EXPECT_EQ(s->get(longest_coll, longest_key, &v), CL_OK);
  EXPECT_EQ(v, "max");
  EXPECT_EQ(s->get("c", "\x01\xff binary key \t", &v), CL_OK);

  // Values and transactions are bounded.
  auto t = s->begin();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->put("c", "big", std::string(Store::kMaxValue + 1, 'x')), CL_ETOOBIG);
  EXPECT_EQ(t->size(), 0u);
  const std::string chunk(Store::kMaxValue, 'x');
  size_t accepted = 0;
  cl_status_t st = CL_OK;
  for (int i = 0; i < 10 && st == CL_OK; i++) {
    st = t->put("c", "k" + std::to_string(i), chunk);
    if (st == CL_OK) accepted++;
  }
  EXPECT_EQ(st, CL_ETOOBIG);
  EXPECT_EQ(accepted, Store::kMaxTxnBytes / Store::kMaxValue - 1);
  EXPECT_LE(t->bytes(), Store::kMaxTxnBytes);
  // Replacing a value reuses its budget.
  EXPECT_EQ(t->put("c", "k0", "small"), CL_OK);
  EXPECT_EQ(t->put("c", "k9", chunk), CL_OK);
}

TEST_F(StoreTest, PluginCollectionsArePrivate) {
  std::string c;
  ASSERT_TRUE(Store::plugin_collection("appstore", "apps", &c));
  EXPECT_EQ(c, "plugin:appstore/apps");
  EXPECT_TRUE(Store::valid_collection(c));
  // The longest plugin name and collection the ABI allows still make a valid collection.
  ASSERT_TRUE(Store::plugin_collection(std::string(32, 'p'), std::string(64, 'c'), &c));
  EXPECT_TRUE(Store::valid_collection(c));
  for (auto [plugin, coll] : std::vector<std::pair<std::string, std::string>>{{"", "x"},
                                                                             {std::string(33, 'p'), "x"},
                                                                             {"Upper", "x"},
                                                                             {"a/b", "x"},
                                                                             {"a.b", "x"},
                                                                             {"p", ""},
                                                                             {"p", std::string(65, 'c')},
                                                                             {"p", "a/b"},
                                                                             {"p", "a:b"},
                                                                             {"p", "A"}}) {
    EXPECT_FALSE(Store::plugin_collection(plugin, coll, &c)) << plugin << " " << coll;
  }
  // Two plugins with the same collection name see different documents.
  auto s = open();
  std::string a, b, v;
  ASSERT_TRUE(Store::plugin_collection("one", "items", &a));
  ASSERT_TRUE(Store::plugin_collection("one_x", "items", &b));
  ASSERT_EQ(put(*s, a, "k", "from one"), CL_OK);
  EXPECT_EQ(s->get(b, "k", &v), CL_ENOENT);
  EXPECT_EQ(scan_all(*s, b), KV{});
  EXPECT_EQ(scan_all(*s, a), (KV{{"k", "from one"}}));
}

TEST_F(StoreTest, ScanOrderAndPrefixBoundaries) {
  auto s = open();
  {
    auto t = s->begin();
    for (auto [c, k] : std::vector<std::pair<std::string, std::string>>{
             {"a", "k"}, {"a", "k1"}, {"a", "k10"}, {"a", "k2"}, {"a", "j"}, {"a", "l"}, {"ab", "k1"}, {"a.b", "k1"},
             {"a", "k1\xff"}, {"b", "k1"}, {"a/", "k1"}}) {
      ASSERT_EQ(t->put(c, k, c + "=" + k), CL_OK);
    }
    ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
  }
  for (int round = 0; round < 2; round++) {  // once from the overlay, once from LMDB
    EXPECT_EQ(scan_all(*s, "a"), (KV{{"j", "a=j"},
                                     {"k", "a=k"},
                                     {"k1", "a=k1"},
                                     {"k10", "a=k10"},
                                     {"k1\xff", "a=k1\xff"},
                                     {"k2", "a=k2"},
                                     {"l", "a=l"}}));
    EXPECT_EQ(scan_all(*s, "a", "k1"), (KV{{"k1", "a=k1"}, {"k10", "a=k10"}, {"k1\xff", "a=k1\xff"}}));
    EXPECT_EQ(scan_all(*s, "a", "k10"), (KV{{"k10", "a=k10"}}));
    EXPECT_EQ(scan_all(*s, "a", "k100"), KV{});
    EXPECT_EQ(scan_all(*s, "a", "m"), KV{});
    EXPECT_EQ(scan_all(*s, "ab"), (KV{{"k1", "ab=k1"}}));
    EXPECT_EQ(scan_all(*s, "a.b"), (KV{{"k1", "a.b=k1"}}));
    EXPECT_EQ(scan_all(*s, "a/"), (KV{{"k1", "a/=k1"}}));
    EXPECT_EQ(scan_all(*s, "c"), KV{});
    ASSERT_TRUE(settle(*s));
  }
  // Stopping early.
  int calls = 0;
  EXPECT_EQ(s->scan("a", "", [&](auto, auto) { return ++calls < 3; }), CL_OK);
  EXPECT_EQ(calls, 3);
}

// A scan merges LMDB and the overlay (pending puts and deletes), across many read chunks.
TEST_F(StoreTest, ScanMergesDiskAndOverlayAcrossChunks) {
  auto s = open();
  std::map<std::string, std::string> model;
  auto key = [](int i) {
    char buf[16];
    snprintf(buf, sizeof buf, "%06d", i);
    return std::string(buf);
  };
  {
    auto t = s->begin();
    for (int i = 0; i < 3000; i += 2) {
      ASSERT_EQ(t->put("docs", key(i), "disk" + std::to_string(i)), CL_OK);
      model[key(i)] = "disk" + std::to_string(i);
    }
    ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
  }
  ASSERT_TRUE(settle(*s));
  // Pending changes: inserts between, updates and deletes of documents on disk, a delete of a pending insert.
  auto t = s->begin();
  for (int i = 1; i < 3000; i += 6) {
    ASSERT_EQ(t->put("docs", key(i), "new" + std::to_string(i)), CL_OK);
    model[key(i)] = "new" + std::to_string(i);
  }
  for (int i = 0; i < 3000; i += 14) {
    ASSERT_EQ(t->put("docs", key(i), "upd" + std::to_string(i)), CL_OK);
    model[key(i)] = "upd" + std::to_string(i);
  }
  for (int i = 4; i < 3000; i += 22) {
    ASSERT_EQ(t->del("docs", key(i)), CL_OK);
    model.erase(key(i));
  }
  ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
  t = s->begin();
  ASSERT_EQ(t->del("docs", key(7)), CL_OK);
  model.erase(key(7));
  ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
  ASSERT_GT(s->pending(), 0u);

  KV expect(model.begin(), model.end());
  EXPECT_EQ(scan_all(*s, "docs"), expect);
  KV expect_prefix;
  for (auto& [k, v] : model)
    if (k.compare(0, 4, "0012") == 0) expect_prefix.emplace_back(k, v);
  EXPECT_EQ(scan_all(*s, "docs", "0012"), expect_prefix);
  ASSERT_TRUE(settle(*s));
  EXPECT_EQ(scan_all(*s, "docs"), expect);
}

// The callback may read and even commit while a scan is running.
TEST_F(StoreTest, ScanCallbackMayReadAndCommit) {
  auto s = open();
  {
    auto t = s->begin();
    for (int i = 0; i < 600; i++) ASSERT_EQ(t->put("q", "item" + std::to_string(1000 + i), "x"), CL_OK);
    ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
  }
  ASSERT_TRUE(settle(*s));
  int seen = 0;
  EXPECT_EQ(s->scan("q", "item",
                    [&](std::string_view k, std::string_view) {
                      std::string v;
                      EXPECT_EQ(s->get("q", k, &v), CL_OK);
                      auto t = s->begin();
                      EXPECT_TRUE(t);
                      if (!t) return false;
                      EXPECT_EQ(t->put("done", k, "1"), CL_OK);
                      EXPECT_EQ(s->commit(std::move(t), nullptr), CL_OK);
                      seen++;
                      return true;
                    }),
            CL_OK);
  EXPECT_EQ(seen, 600);
  EXPECT_EQ(scan_all(*s, "done").size(), 600u);
}

TEST_F(StoreTest, CommitIsVisibleBeforeItIsDurable) {
  auto s = open();
  ASSERT_TRUE(settle(*s));  // the fresh database's version record
  std::vector<cl_status_t> results;
  ASSERT_EQ(put(*s, "c", "k", "v1", [&](cl_status_t st) { results.push_back(st); }), CL_OK);
  // Durable callbacks come back through the loop, which has not run: the write is visible but not durable.
  std::string v;
  ASSERT_EQ(s->get("c", "k", &v), CL_OK);
  EXPECT_EQ(v, "v1");
  EXPECT_EQ(scan_all(*s, "c"), (KV{{"k", "v1"}}));
  EXPECT_TRUE(results.empty());
  EXPECT_EQ(s->pending(), 1u);
  // Read-modify-write in the same loop turn builds on the pending value.
  auto t = s->begin();
  ASSERT_EQ(t->get("c", "k", &v), CL_OK);
  ASSERT_EQ(t->put("c", "k", v + "+v2"), CL_OK);
  ASSERT_EQ(s->commit(std::move(t), [&](cl_status_t st) { results.push_back(st); }), CL_OK);
  ASSERT_EQ(s->get("c", "k", &v), CL_OK);
  EXPECT_EQ(v, "v1+v2");
  ASSERT_TRUE(run_until(loop, [&] { return results.size() == 2; }));
  EXPECT_EQ(results, (std::vector<cl_status_t>{CL_OK, CL_OK}));
  EXPECT_EQ(s->pending(), 0u);
  ASSERT_EQ(s->get("c", "k", &v), CL_OK);
  EXPECT_EQ(v, "v1+v2");
}

TEST_F(StoreTest, DurableCallbacksRunInCommitOrderAndFlushWaits) {
  auto s = open();
  std::vector<int> order;
  int flushed_after = -1, flushed_end = -1;
  for (int i = 0; i < 300; i++) {
    auto t = s->begin();
    ASSERT_EQ(t->put("seq", std::to_string(i), std::to_string(i)), CL_OK);
    if (i % 50 == 0) {
      // Sometimes an empty transaction: it still settles in order.
      t.reset();
      t = s->begin();
    }
    ASSERT_EQ(s->commit(std::move(t),
                        [&, i](cl_status_t st) {
                          EXPECT_EQ(st, CL_OK);
                          order.push_back(i);
                        }),
              CL_OK);
    if (i == 149) s->flush([&] { flushed_after = static_cast<int>(order.size()); });
    // Let the writer make progress now and then, so batches are grouped differently.
    if (i % 37 == 0) pump(loop);
  }
  s->flush([&] { flushed_end = static_cast<int>(order.size()); });
  ASSERT_TRUE(run_until(loop, [&] { return flushed_end >= 0; }));
  ASSERT_EQ(order.size(), 300u);
  for (int i = 0; i < 300; i++) EXPECT_EQ(order[i], i);
  EXPECT_GE(flushed_after, 150);
  EXPECT_EQ(flushed_end, 300);
  // With nothing pending, flush still answers (later, from the loop).
  bool idle_flush = false;
  s->flush([&] { idle_flush = true; });
  EXPECT_FALSE(idle_flush);
  ASSERT_TRUE(run_until(loop, [&] { return idle_flush; }));
}

// The loop never waits for the lock it shares with the writer thread: with the lock held elsewhere, commits
// still return at once and are visible, and settlement waits for a later loop turn, in order.
TEST_F(StoreTest, BusyWriterLockNeverBlocksTheLoop) {
  auto s = open();
  ASSERT_TRUE(settle(*s));
  std::vector<int> order;
  auto commit_n = [&](int i) {
    return put(*s, "c", std::to_string(i), std::to_string(i), [&, i](cl_status_t st) {
      EXPECT_EQ(st, CL_OK);
      order.push_back(i);
    });
  };
  // Commits while the lock is busy: visible at once, handed to the writer once it is free.
  s->test_hold_writer_lock(true);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; i++) ASSERT_EQ(commit_n(i), CL_OK);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  std::string v;
  ASSERT_EQ(s->get("c", "49", &v), CL_OK);
  for (auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
       std::chrono::steady_clock::now() < end;)
    pump(loop, 5);
  EXPECT_TRUE(order.empty());  // nothing reached the writer
  EXPECT_EQ(s->pending(), 50u);
  s->test_hold_writer_lock(false);
  for (int i = 50; i < 60; i++) ASSERT_EQ(commit_n(i), CL_OK);  // queued behind the held-back ones
  ASSERT_TRUE(run_until(loop, [&] { return order.size() == 60; }));

  // Settlement while the lock is busy: the writer has reported, the loop cannot take the report yet.
  ASSERT_EQ(commit_n(60), CL_OK);
  bool flushed = false;
  s->flush([&] { flushed = true; });
  usleep(300 * 1000);  // the writer applies batch 60 and reports (the loop is not running)
  s->test_hold_writer_lock(true);
  for (auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
       std::chrono::steady_clock::now() < end;)
    pump(loop, 5);
  EXPECT_FALSE(flushed);  // the report waits for the lock
  EXPECT_EQ(order.size(), 60u);
  s->test_hold_writer_lock(false);
  ASSERT_TRUE(run_until(loop, [&] { return flushed; }));
  ASSERT_EQ(order.size(), 61u);
  for (int i = 0; i < 61; i++) EXPECT_EQ(order[i], i);

  // close() releases the lock and still applies everything.
  s->test_hold_writer_lock(true);
  ASSERT_EQ(commit_n(61), CL_OK);
  s->close();
  EXPECT_EQ(order.size(), 62u);
  s = open();
  EXPECT_EQ(scan_all(*s, "c").size(), 62u);
}

TEST_F(StoreTest, ReadModifyWriteIsAtomicOnTheLoop) {
  auto s = open();
  for (int i = 0; i < 1000; i++) {
    auto t = s->begin();
    ASSERT_TRUE(t);
    std::string v = "0";
    cl_status_t st = t->get("counters", "n", &v);
    ASSERT_TRUE(st == CL_OK || st == CL_ENOENT);
    ASSERT_EQ(t->put("counters", "n", std::to_string(std::stoi(v) + 1)), CL_OK);
    ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
    if (i % 10 == 0) pump(loop);
  }
  s->close();
  s = open();
  std::string v;
  ASSERT_EQ(s->get("counters", "n", &v), CL_OK);
  EXPECT_EQ(v, "1000");
}

TEST_F(StoreTest, ReopenKeepsData) {
  auto s = open();
  ASSERT_EQ(put(*s, "c", "keep", "1"), CL_OK);
  ASSERT_EQ(put(*s, "c", "drop", "2"), CL_OK);
  ASSERT_EQ(put(*s, "c", "drop", std::nullopt), CL_OK);
  ASSERT_TRUE(settle(*s));
  s.reset();  // the destructor closes
  s = open();
  std::string v;
  ASSERT_EQ(s->get("c", "keep", &v), CL_OK);
  EXPECT_EQ(v, "1");
  EXPECT_EQ(s->get("c", "drop", &v), CL_ENOENT);
  EXPECT_EQ(scan_all(*s, "c"), (KV{{"keep", "1"}}));
}

TEST_F(StoreTest, CloseAppliesPendingWritesAndThenRefusesCalls) {
  auto s = open();
  int durable = 0;
  for (int i = 0; i < 500; i++) {
    ASSERT_EQ(put(*s, "c", std::to_string(i), std::string(100, 'a' + i % 26),
                  [&](cl_status_t st) {
                    EXPECT_EQ(st, CL_OK);
                    durable++;
                  }),
              CL_OK);
  }
  bool flushed = false;
  s->flush([&] { flushed = true; });
  auto open_txn = s->begin();
  ASSERT_TRUE(open_txn);
  EXPECT_EQ(open_txn->put("c", "late", "1"), CL_OK);
  EXPECT_EQ(durable, 0);
  s->close();  // without running the loop: close waits for the writer and settles everything itself
  EXPECT_EQ(durable, 500);
  EXPECT_TRUE(flushed);
  EXPECT_TRUE(s->closed());
  s->close();  // idempotent

  std::string v;
  EXPECT_EQ(s->get("c", "1", &v), CL_ECLOSING);
  EXPECT_EQ(s->scan("c", "", [](auto, auto) { return true; }), CL_ECLOSING);
  cl_status_t st = CL_OK;
  EXPECT_FALSE(s->begin(&st));
  EXPECT_EQ(st, CL_ECLOSING);
  EXPECT_EQ(open_txn->put("c", "later", "1"), CL_ECLOSING);
  EXPECT_EQ(open_txn->get("c", "1", &v), CL_ECLOSING);
  EXPECT_EQ(s->commit(std::move(open_txn), [](cl_status_t) { ADD_FAILURE() << "durable after a refused commit"; }),
            CL_ECLOSING);
  bool late_flush = false;
  s->flush([&] { late_flush = true; });
  ASSERT_TRUE(run_until(loop, [&] { return late_flush; }));

  s = open();
  for (int i = 0; i < 500; i++) {
    ASSERT_EQ(s->get("c", std::to_string(i), &v), CL_OK);
    EXPECT_EQ(v, std::string(100, 'a' + i % 26));
  }
  EXPECT_EQ(s->get("c", "late", &v), CL_ENOENT);
}

TEST_F(StoreTest, TxnMayOutliveItsStore) {
  auto s = open();
  auto t = s->begin();
  ASSERT_TRUE(t);
  s.reset();
  EXPECT_EQ(t->put("c", "k", "v"), CL_ECLOSING);
  EXPECT_EQ(t->del("c", "k"), CL_ECLOSING);
  EXPECT_EQ(t->set_schema_version(1), CL_ECLOSING);
  t.reset();
}

TEST_F(StoreTest, DurableCallbackMayCommitAndClose) {
  auto s = open();
  std::vector<std::string> events;
  ASSERT_EQ(put(*s, "c", "1", "a",
                [&](cl_status_t st) {
                  events.push_back("1:" + std::to_string(st));
                  // A commit from inside a durable callback.
                  EXPECT_EQ(put(*s, "c", "3", "c", [&](cl_status_t st3) { events.push_back("3:" + std::to_string(st3)); }),
                            CL_OK);
                }),
            CL_OK);
  ASSERT_EQ(put(*s, "c", "2", "b",
                [&](cl_status_t st) {
                  events.push_back("2:" + std::to_string(st));
                }),
            CL_OK);
  ASSERT_TRUE(run_until(loop, [&] { return events.size() == 3; }));
  EXPECT_EQ(events, (std::vector<std::string>{"1:0", "2:0", "3:0"}));

  // Closing (even destroying) the store from a durable callback settles the rest in order.
  events.clear();
  for (int i = 0; i < 20; i++) {
    ASSERT_EQ(put(*s, "c", "x" + std::to_string(i), "v",
                  [&, i](cl_status_t st) {
                    events.push_back(std::to_string(i) + ":" + std::to_string(st));
                    if (i == 0) s.reset();
                  }),
              CL_OK);
  }
  ASSERT_TRUE(run_until(loop, [&] { return events.size() == 20; }));
  for (int i = 0; i < 20; i++) EXPECT_EQ(events[i], std::to_string(i) + ":0");
  EXPECT_FALSE(s);
  s = open();
  std::string v;
  EXPECT_EQ(s->get("c", "x19", &v), CL_OK);
}

TEST_F(StoreTest, MapGrowsWhenFull) {
  Store::Options o;
  o.map_size = 256 << 10;
  auto s = open(o);
  ASSERT_TRUE(settle(*s));  // the version record
  const uint64_t initial = s->map_size();
  EXPECT_LT(initial, 1u << 20);
  int ok = 0;
  std::mt19937 rng(7);
  // 12 MiB in batches of 1..8 documents of up to 64 KiB: far more than the initial map holds.
  size_t total = 0;
  int n = 0;
  while (total < (12u << 20)) {
    auto t = s->begin();
    int docs = 1 + rng() % 8;
    for (int d = 0; d < docs; d++, n++) {
      size_t len = 1 + rng() % (64 << 10);
      ASSERT_EQ(t->put("blobs", std::to_string(n), std::string(len, 'a' + n % 26)), CL_OK);
      total += len;
    }
    ASSERT_EQ(s->commit(std::move(t),
                        [&](cl_status_t st) {
                          EXPECT_EQ(st, CL_OK);
                          ok++;
                        }),
              CL_OK);
  }
  const int batches = ok + static_cast<int>(s->pending());
  ASSERT_TRUE(settle(*s));
  EXPECT_EQ(ok, batches);
  EXPECT_GT(s->map_size(), total);
  s->close();
  s = open(o);
  size_t seen = 0, bytes = 0;
  EXPECT_EQ(s->scan("blobs", "",
                    [&](std::string_view k, std::string_view v) {
                      int i = std::stoi(std::string(k));
                      EXPECT_EQ(v.find_first_not_of(static_cast<char>('a' + i % 26)), std::string_view::npos);
                      seen++;
                      bytes += v.size();
                      return true;
                    }),
            CL_OK);
  EXPECT_EQ(seen, static_cast<size_t>(n));
  EXPECT_EQ(bytes, total);
}

// When a batch cannot be applied (here: the map is at its maximum), it and the batches committed after it fail,
// their writes disappear from reads, and later commits work again.
TEST_F(StoreTest, FailedBatchDropsItAndLaterBatches) {
  Store::Options o;
  o.map_size = o.max_map_size = 1 << 20;
  auto s = open(o);
  std::vector<std::pair<std::string, cl_status_t>> results;
  auto record = [&](std::string name) { return [&, name](cl_status_t st) { results.emplace_back(name, st); }; };
  ASSERT_EQ(put(*s, "c", "a", "A", record("a")), CL_OK);
  ASSERT_TRUE(settle(*s));
  // Too big for the map: fails. The next two were committed before the failure was known.
  ASSERT_EQ(put(*s, "c", "big", std::string(4 << 20, 'x'), record("big")), CL_OK);
  ASSERT_EQ(put(*s, "c", "a", "A2", record("a2")), CL_OK);
  ASSERT_EQ(put(*s, "c", "b", "B", record("b")), CL_OK);
  std::string v;
  ASSERT_EQ(s->get("c", "a", &v), CL_OK);
  EXPECT_EQ(v, "A2");
  ASSERT_TRUE(settle(*s));
  EXPECT_EQ(results, (std::vector<std::pair<std::string, cl_status_t>>{
                         {"a", CL_OK}, {"big", CL_ETOOBIG}, {"a2", CL_ECANCELED}, {"b", CL_ECANCELED}}));
  // Reads reverted to what is on disk.
  EXPECT_EQ(s->get("c", "big", &v), CL_ENOENT);
  EXPECT_EQ(s->get("c", "b", &v), CL_ENOENT);
  ASSERT_EQ(s->get("c", "a", &v), CL_OK);
  EXPECT_EQ(v, "A");
  // The store keeps working.
  ASSERT_EQ(put(*s, "c", "d", "D", record("d")), CL_OK);
  ASSERT_TRUE(settle(*s));
  EXPECT_EQ(results.back(), (std::pair<std::string, cl_status_t>{"d", CL_OK}));
  s->close();
  s = open(o);
  EXPECT_EQ(scan_all(*s, "c"), (KV{{"a", "A"}, {"d", "D"}}));
}

TEST_F(StoreTest, SchemaVersionRules) {
  Store::Options o;
  o.dir = dir.sub("db");
  o.schema_version = 2;
  auto s = open(o);
  EXPECT_EQ(s->schema_version(), 2);
  EXPECT_EQ(s->stored_schema_version(), 2);  // a fresh database gets the expected version
  ASSERT_EQ(put(*s, "c", "k", "v"), CL_OK);
  s->close();

  o.schema_version = 3;  // a newer binary: sees older data and migrates it
  s = open(o);
  EXPECT_EQ(s->stored_schema_version(), 2);
  {
    auto t = s->begin();
    EXPECT_EQ(t->set_schema_version(4), CL_EINVAL);  // never beyond what this binary knows
    EXPECT_EQ(t->set_schema_version(0), CL_EINVAL);
    ASSERT_EQ(t->put("c", "k", "v-migrated"), CL_OK);
    ASSERT_EQ(t->set_schema_version(3), CL_OK);
    ASSERT_EQ(s->commit(std::move(t), nullptr), CL_OK);
  }
  EXPECT_EQ(s->stored_schema_version(), 3);
  EXPECT_EQ(scan_all(*s, "c"), (KV{{"k", "v-migrated"}}));  // the version record never shows in scans
  s->close();
  s = open(o);
  EXPECT_EQ(s->stored_schema_version(), 3);
  s->close();

  o.schema_version = 2;  // an older binary refuses data from the future
  std::string err;
  EXPECT_FALSE(Store::open(loop, o, &err));
  EXPECT_NE(err.find("schema version 3"), std::string::npos) << err;
  EXPECT_NE(err.find("newer"), std::string::npos) << err;
  // The refused open left the data and the lock alone.
  o.schema_version = 3;
  s = open(o);
  std::string v;
  EXPECT_EQ(s->get("c", "k", &v), CL_OK);
  EXPECT_EQ(v, "v-migrated");
}

TEST_F(StoreTest, DataWithoutVersionRecordIsVersionZero) {
  // An LMDB environment with a document but no version record (written here with plain LMDB).
  std::string path = dir.sub("legacy");
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  ASSERT_EQ(mdb_env_open(env, path.c_str(), 0, 0600), 0);
  MDB_txn* txn = nullptr;
  MDB_dbi dbi;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  ASSERT_EQ(mdb_dbi_open(txn, nullptr, 0, &dbi), 0);
  std::string key("c\0k", 3), val("old");
  MDB_val k{key.size(), key.data()}, v{val.size(), val.data()};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  auto s = open({.dir = path, .schema_version = 1});
  EXPECT_EQ(s->stored_schema_version(), 0);
  std::string out;
  ASSERT_EQ(s->get("c", "k", &out), CL_OK);
  EXPECT_EQ(out, "old");
}

TEST_F(StoreTest, OpenErrorsAreClear) {
  std::string err;
  auto fails = [&](Store::Options o) {
    err.clear();
    auto s = Store::open(loop, o, &err);
    EXPECT_FALSE(s);
    EXPECT_FALSE(err.empty());
    return err;
  };
  EXPECT_NE(fails({.dir = ""}).find("no directory"), std::string::npos) << err;
  EXPECT_NE(fails({.dir = dir.sub("x"), .schema_version = 0}).find("schema version"), std::string::npos) << err;
  EXPECT_NE(fails({.dir = dir.sub("x"), .map_size = 2 << 20, .max_map_size = 1 << 20}).find("map size"),
            std::string::npos)
      << err;
  std::ofstream(dir.sub("file")) << "not a directory";
  EXPECT_NE(fails({.dir = dir.sub("file")}).find("not a directory"), std::string::npos) << err;
  EXPECT_NE(fails({.dir = dir.sub("missing/parent/db")}).find("cannot create"), std::string::npos) << err;
  EXPECT_NE(fails({.dir = dir.sub("file/db")}).find(dir.sub("file/db")), std::string::npos) << err;
  // A data file that is not LMDB.
  ASSERT_EQ(mkdir(dir.sub("junk").c_str(), 0700), 0);
  std::ofstream(dir.sub("junk/data.mdb")) << std::string(64 << 10, 'j');
  EXPECT_NE(fails({.dir = dir.sub("junk")}).find("cannot open the LMDB environment"), std::string::npos) << err;
  // Already open in this process (a second open would break LMDB's one-environment-per-process rule).
  auto s = open();
  EXPECT_NE(fails({.dir = dir.sub("db")}).find("already open"), std::string::npos) << err;
  s->close();
  EXPECT_TRUE(open());
}

TEST_F(StoreTest, CreatesItsDirectoryPrivate) {
  auto s = open();
  struct stat st;
  ASSERT_EQ(stat(dir.sub("db").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(dir.sub("db/data.mdb").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
}

// The writer thread against the loop: commits, reads, scans, map growth and flushes all at once. Meant for
// TSan (label tsan): every cross-thread path of the store runs here many times.
TEST_F(StoreTest, WriterThreadStress) {
  Store::Options o;
  o.map_size = 128 << 10;  // forces several resizes while the loop reads
  auto s = open(o);
  std::map<std::string, std::string> model;
  std::mt19937 rng(1234);
  uint64_t durable = 0, committed = 0, flushes = 0, flushes_done = 0;
  uint64_t last_durable = 0;
  bool ordered = true;
  auto deadline = cloudlet::test::now_us() + 3e6;
  for (int round = 0; round < 4000 && cloudlet::test::now_us() < deadline; round++) {
    auto t = s->begin();
    ASSERT_TRUE(t);
    int ops = 1 + rng() % 6;
    for (int i = 0; i < ops; i++) {
      std::string k = "k" + std::to_string(rng() % 500);
      if (rng() % 4 == 0) {
        ASSERT_EQ(t->del("stress", k), CL_OK);
        model.erase(k);
      } else {
        std::string v(rng() % 3000, static_cast<char>('a' + rng() % 26));
        ASSERT_EQ(t->put("stress", k, v), CL_OK);
        model[k] = v;
      }
    }
    uint64_t n = ++committed;
    ASSERT_EQ(s->commit(std::move(t),
                        [&, n](cl_status_t st) {
                          EXPECT_EQ(st, CL_OK);
                          if (n != last_durable + 1) ordered = false;
                          last_durable = n;
                          durable++;
                        }),
              CL_OK);
    // Reads against the model while the writer works.
    std::string k = "k" + std::to_string(rng() % 500), v;
    auto it = model.find(k);
    cl_status_t st = s->get("stress", k, &v);
    if (it == model.end()) {
      EXPECT_EQ(st, CL_ENOENT);
    } else {
      ASSERT_EQ(st, CL_OK);
      EXPECT_EQ(v, it->second);
    }
    if (round % 200 == 0) {
      size_t n_scan = 0;
      auto mit = model.begin();
      EXPECT_EQ(s->scan("stress", "",
                        [&](std::string_view sk, std::string_view sv) {
                          if (mit == model.end() || sk != mit->first || sv != mit->second) {
                            ADD_FAILURE() << "scan differs from the model at " << sk;
                            return false;
                          }
                          ++mit;
                          n_scan++;
                          return true;
                        }),
                CL_OK);
      EXPECT_EQ(n_scan, model.size());
    }
    if (round % 100 == 0) {
      flushes++;
      s->flush([&] { flushes_done++; });
    }
    if (round % 3 == 0) pump(loop);
  }
  ASSERT_TRUE(run_until(loop, [&] { return durable == committed && flushes_done == flushes; }));
  EXPECT_TRUE(ordered);
  EXPECT_GT(s->map_size(), static_cast<uint64_t>(o.map_size));
  s->close();
  s = open(o);
  KV expect(model.begin(), model.end());
  EXPECT_EQ(scan_all(*s, "stress"), expect);
}

}  // namespace
