// Reads a local file ahead of a push, block by block on worker threads (a disk read can take far longer than
// the loop may block), keeping at most `depth` blocks buffered.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adb/error.h"
#include "adb/reactor.h"

namespace cloudlet::adb {

class FileReader {
 public:
  static constexpr size_t kBlock = 1024 * 1024;
  static constexpr size_t kDepth = 2;

  // on_ready runs on the loop whenever the reader opened the file, buffered more data, hit the end or
  // failed. It is never called after the reader is destroyed.
  FileReader(Reactor& reactor, std::string path, std::function<void()> on_ready);
  ~FileReader();
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  bool opened() const;   // open() and fstat() done (size/mtime/mode valid)
  uint64_t size() const;
  int64_t mtime() const;
  uint32_t mode() const;

  // Contiguous buffered bytes at the read position (0 while the next block is still being read).
  const uint8_t* data() const;
  size_t available() const;
  void consume(size_t n);
  uint64_t consumed() const { return consumed_; }
  // Everything was read and consumed.
  bool eof() const;
  const Error& error() const;

 private:
  struct Core;
  void read_more();

  Reactor& reactor_;
  std::shared_ptr<Core> core_;
  std::function<void()> on_ready_;
  uint64_t consumed_ = 0;
};

}  // namespace cloudlet::adb
