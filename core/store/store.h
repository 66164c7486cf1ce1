// The store: one LMDB environment in the data directory holding JSON documents in named collections.
//
// A document is addressed by (collection, key) and stored under the LMDB key `collection + '\0' + key`, so a
// collection is a contiguous, ordered key range. Values are opaque bytes here; the ABI layer checks JSON and
// prefixes plugin collections with the plugin's name (that is how plugins get private namespaces).
//
// Threads. Every method runs on the loop thread. The store owns one writer thread that applies committed
// transactions to LMDB; the loop never waits for the disk except in open() (start-up) and close() (shutdown),
// and never waits for the writer: it only try-locks their shared queue and retries a millisecond later if the
// writer holds it. Reads wait only while the writer remaps a full map (rare: the map doubles each time).
// Close the store before the loop (the writer reports through Loop::post); a Txn may outlive its store (its
// calls then fail with CL_ECLOSING).
//
// Writes. begin() opens the one write transaction (a second begin() while it is open is CL_EBUSY); commit()
// makes its writes visible to every later read at once, all or nothing, through an in-memory overlay of
// committed-but-not-yet-written batches. Read-modify-write is therefore atomic as long as it happens within one
// loop turn. The writer thread applies batches in commit order, each as part of one LMDB write transaction with
// a synchronous commit (fdatasync); consecutive queued batches may share one LMDB transaction, which keeps each
// of them all-or-nothing. `durable` then runs on the loop with CL_OK, in commit order.
//
// Failure. If a batch cannot be applied (disk full, I/O error, the map cannot grow), that batch and every batch
// committed after it until the loop has seen the failure are dropped: their writes vanish from the overlay (reads
// revert to what is on disk), the failed batch's `durable` gets the cause (CL_EIO, CL_ETOOBIG, CL_ENOMEM), the
// later ones get CL_ECANCELED (they may have been computed from the failed writes), and an error is logged.
// Batches committed afterwards are applied normally.
//
// Durability model. LMDB never overwrites live pages and switches to a new version only by writing a meta page
// after the data pages are synced, so a kill -9 at any moment, including in the middle of a commit, leaves the
// previous or the new version on disk, never a mix and never a corrupt file. A write whose `durable` callback ran
// survives kill -9 and power loss. A write committed but not yet durable lives only in this process (the overlay
// and the writer's queue: usually one or two fdatasyncs' worth) and is lost if the process dies first; since
// batches are applied in order, what is on disk is always a prefix of the committed history. A failed fdatasync
// is reported as a failure even though the kernel may still write the data later (page-cache behaviour that no
// user-space store can undo).
//
// Map size. The map starts at Options::map_size and grows automatically (doubling, at most max_map_size) when a
// batch does not fit; the writer resizes only while no read transaction is active (the loop holds a mutex for the
// few microseconds of each read, the writer takes it only to resize).
//
// Schema version. A reserved record outside every valid collection name holds the version of the data layout.
// open() refuses data newer than the binary expects; older data opens, stored_schema_version() reports it so a
// migration can run, and Txn::set_schema_version() records the new version atomically with the migrated data.
#pragma once

#include <cloudlet_plugin.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace cloudlet {

class Loop;

class Store {
 public:
  struct Options {
    std::string dir;                      // the LMDB environment directory; created (0700) if missing
    uint64_t map_size = 1ull << 30;       // initial map size; grows automatically when full
    uint64_t max_map_size = 256ull << 30; // growth stops here: batches that still do not fit fail (CL_ETOOBIG)
    int schema_version = 1;               // the data layout this binary expects (>= 1)
  };

  // Collection names are [A-Za-z0-9_.:/-]{1,110}; keys are 1..400 bytes without NUL, so every encoded key fits
  // LMDB's 511-byte key limit. Values and transactions are bounded so one caller cannot exhaust memory or a map.
  static constexpr size_t kMaxCollection = 110;
  static constexpr size_t kMaxKey = 400;
  static constexpr size_t kMaxValue = 16u << 20;
  static constexpr size_t kMaxTxnBytes = 64u << 20;

  class Txn;
  using ScanFn = std::function<bool(std::string_view key, std::string_view value)>;
  using DurableFn = std::function<void(cl_status_t)>;

  // Opens (or creates) the environment in opts.dir. On failure returns nullptr and sets *error to a sentence
  // naming the directory and the cause: unusable directory, store already open (by this or another process),
  // LMDB error, or a stored schema version newer than opts.schema_version. Blocks on disk I/O: start-up only.
  static std::unique_ptr<Store> open(Loop& loop, const Options& opts, std::string* error);

  ~Store();  // close()
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  static bool valid_collection(std::string_view coll);
  static bool valid_key(std::string_view key);

  // A plugin's private namespace: its collection `coll` is stored as "plugin:<plugin>/<coll>". Checks the ABI's
  // rules (plugin names [a-z0-9_]{1,32}, plugin collections [a-z0-9_.-]{1,64}); false if either is invalid.
  // Neither part can contain '/', so plugins cannot reach each other's collections; core collections must not
  // start with "plugin:".
  static bool plugin_collection(std::string_view plugin, std::string_view coll, std::string* out);

  // Reads see every committed transaction (durable or not). CL_OK, CL_ENOENT, CL_EINVAL (bad name or key),
  // CL_ECLOSING (after close) or CL_EIO (LMDB error, logged).
  cl_status_t get(std::string_view coll, std::string_view key, std::string* out);

  // Calls fn for each document of coll whose key starts with prefix (may be empty), in key order, until fn
  // returns false. key and value are valid during the call only. fn may read, and may even commit (later keys
  // then may or may not reflect that commit). Same status codes as get(), minus CL_ENOENT.
  cl_status_t scan(std::string_view coll, std::string_view prefix, const ScanFn& fn);

  // Opens the write transaction. nullptr if one is already open (CL_EBUSY) or the store is closed
  // (CL_ECLOSING); the reason goes to *status when given. Destroying a Txn without commit() aborts it.
  std::unique_ptr<Txn> begin(cl_status_t* status = nullptr);

  // Commits txn: its writes are visible to all reads when this returns; durable (may be empty) runs later on
  // the loop, in commit order, with CL_OK once they are on disk or with an error (see Failure above). Returns
  // CL_OK, CL_EINVAL (null txn or another store's) or CL_ECLOSING; on error nothing is written and durable is
  // never called. An empty transaction is valid: its durable runs once everything before it is durable.
  cl_status_t commit(std::unique_ptr<Txn> txn, DurableFn durable);

  // Runs done on the loop once every batch committed so far has settled (durable, or failed and reported).
  void flush(std::function<void()> done);

  // Waits for the writer to apply everything committed (their durable callbacks run before this returns), joins
  // it and closes the environment. Later calls fail with CL_ECLOSING. Idempotent; the destructor calls it.
  void close();
  bool closed() const;

  int schema_version() const;         // the version this binary expects (Options::schema_version)
  int stored_schema_version() const;  // the version of the data: lower than expected means "migrate"
  size_t pending() const;             // batches committed but not yet settled
  uint64_t map_size() const;          // the current LMDB map size (grows)
  const std::string& dir() const;

  // Test seam: while on, another thread holds the lock the loop shares with the writer thread, as a writer
  // preempted inside its critical section would. Commits and settlements then take their path that never waits
  // for the lock (retrying on a later loop turn). close() turns it off.
  void test_hold_writer_lock(bool on);

 private:
  struct Impl;
  explicit Store(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// A write transaction: collects writes on the loop thread until commit(). Reads through it see its own writes
// first, then the store. Status codes: CL_OK, CL_EINVAL (bad name or key), CL_ETOOBIG (value over kMaxValue or
// transaction over kMaxTxnBytes), CL_ECLOSING (store closed); get() also CL_ENOENT and CL_EIO.
class Store::Txn {
 public:
  ~Txn();
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  cl_status_t get(std::string_view coll, std::string_view key, std::string* out);
  cl_status_t put(std::string_view coll, std::string_view key, std::string_view value);
  cl_status_t del(std::string_view coll, std::string_view key);  // CL_OK also when the document does not exist
  // Records the data layout version with this transaction (1..Options::schema_version), for migrations.
  cl_status_t set_schema_version(int version);

  size_t size() const;   // number of distinct documents written or deleted
  size_t bytes() const;  // keys plus values, counted against kMaxTxnBytes

 private:
  friend class Store;
  struct State;
  explicit Txn(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cloudlet
