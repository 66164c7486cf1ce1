// Child of the kill -9 test: opens the store in argv[1] and commits numbered transactions (see
// store_crash_docs.h) as fast as it can, continuing after the last one on disk. For every transaction whose
// durable callback ran it writes the number (8 bytes, native order) to the file descriptor argv[2]. It is meant
// to be killed; it exits on its own after 30 s at the latest.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "loop/loop.h"
#include "store/store.h"
#include "store_crash_docs.h"

using namespace cloudlet;

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <store dir> <fd>\n", argv[0]);
    return 2;
  }
  const int fd = atoi(argv[2]);
  Loop loop;
  Store::Options o;
  o.dir = argv[1];
  o.map_size = 256 << 10;  // small, so the map also grows while being killed
  std::string err;
  auto store = Store::open(loop, o, &err);
  if (!store) {
    fprintf(stderr, "store_crash_child: %s\n", err.c_str());
    return 1;
  }
  uint64_t next = 0;
  std::string last;
  if (store->get("meta", "last", &last) == CL_OK) next = std::stoull(last) + 1;

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool failed = false;
  std::function<void()> step = [&] {
    if (failed || std::chrono::steady_clock::now() > deadline) {
      store->close();
      loop.stop();
      return;
    }
    // Bounded backlog: wait for the disk when 512 transactions are pending.
    for (int i = 0; i < 16 && store->pending() < 512; i++) {
      const uint64_t n = next++;
      auto t = store->begin();
      bool ok = t && t->put("docs", test::crash_doc_key(n), test::crash_doc_value(n)) == CL_OK &&
                t->put("meta", "last", std::to_string(n)) == CL_OK &&
                t->put("ring", test::crash_ring_key(n % 64), std::to_string(n)) == CL_OK &&
                t->del("ring", test::crash_ring_key((n + 32) % 64)) == CL_OK &&
                store->commit(std::move(t), [&, n](cl_status_t st) {
                  if (st != CL_OK) {
                    fprintf(stderr, "store_crash_child: transaction %llu failed: %d\n",
                            static_cast<unsigned long long>(n), st);
                    failed = true;
                    return;
                  }
                  if (write(fd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) failed = true;
                }) == CL_OK;
      if (!ok) {
        fprintf(stderr, "store_crash_child: commit %llu refused\n", static_cast<unsigned long long>(n));
        failed = true;
        break;
      }
    }
    if (store->pending() >= 512) {
      loop.timer_start(1, 0, step);
    } else {
      loop.defer(step);
    }
  };
  loop.defer(step);
  loop.run();
  return failed ? 1 : 0;
}
