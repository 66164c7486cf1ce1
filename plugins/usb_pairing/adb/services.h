// Internal: the streams behind Connection's operations (sync.cc, shell.cc).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "adb/connection.h"
#include "adb/stream.h"

namespace cloudlet::adb {

// Sync protocol (inside a "sync:" stream): requests and replies are a 4-letter id, a little-endian 32-bit
// length (or value) and, for some, that many bytes. DATA chunks carry at most 64 KiB.
constexpr size_t kSyncDataMax = 64 * 1024;
constexpr size_t kSyncPathMax = 1024;

std::shared_ptr<Stream> push_stream_make(StreamHost& host, PushRequest req, std::function<void(Error)> cb);
std::shared_ptr<Stream> pull_stream_make(StreamHost& host, std::string remote, size_t max_bytes,
                                         std::function<void(Error, std::string)> cb);
std::shared_ptr<Stream> stat_stream_make(StreamHost& host, std::string remote,
                                         std::function<void(Error, RemoteStat)> cb);
std::shared_ptr<Stream> shell_stream_make(StreamHost& host, std::string command, size_t max_output,
                                          std::function<void(Error, std::string)> cb);

}  // namespace cloudlet::adb
