// The request-body form layer: turns an application/x-www-form-urlencoded or multipart/form-data body into
// decoded fields and spooled files.
//
// File parts are streamed to randomly named files (O_EXCL, mode 0600) in a spool directory (the server's
// <data_dir>/tmp, on the same filesystem as where files end up, so take_file is a rename). Disk work runs on
// the loop's thread pool, one operation at a time per reader, so the loop never blocks and memory stays
// bounded: wants_pause() tells the server to stop reading the socket while too much is queued for disk.
//
// Lifetime: the reader's state is shared with its in-flight disk operations and freed by the last of them,
// so abort() and the destructor are safe at any time; neither calls anything back. Spooled files that were
// not taken or released are deleted (on a worker) when the reader is aborted, fails, or is destroyed.
// Destroy readers before Loop::close(), which then waits for that cleanup.
//
// Thread rule: loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet {
class Loop;
}

namespace cloudlet::http {

enum class FormKind { none, urlencoded, multipart };

struct FormLimits {
  size_t max_fields_bytes = 1 << 20;  // non-file fields: names + values (urlencoded: the raw body)
  size_t max_fields = 1000;
  uint64_t max_file_bytes = 64ull << 30;  // all file parts of one request together
  size_t max_files = 100;
  size_t max_part_header_bytes = 8 * 1024;
  size_t max_parts = 1000;
  size_t pause_bytes = 4 << 20;  // wants_pause() while more than this is queued for disk
  // fsync every file before finish() reports success, so a caller may record a taken file in the store as
  // soon as done runs. Off only for scratch data (tests, caches).
  bool sync = true;
};

struct FormFile {
  std::string field;         // the form field's name
  std::string filename;      // as sent by the client: untrusted, never used as a path
  std::string content_type;  // as sent by the client
  std::string path;          // absolute spool path, generated; stays the spool path after take_file
  uint64_t size = 0;         // bytes written (final once finish() reported CL_OK)
};

class FormReader {
 public:
  using Fields = std::vector<std::pair<std::string, std::string>>;
  using DoneFn = std::function<void(cl_status_t status, const std::string& error)>;

  // content_type: the request's Content-Type value; it decides the kind. Anything that is not a form gives
  // kind() == none and status() == CL_EINVAL (the server may simply not use the reader). spool_dir must be
  // an absolute, existing directory.
  FormReader(Loop& loop, std::string_view content_type, std::string spool_dir, FormLimits limits = {});
  ~FormReader();
  FormReader(const FormReader&) = delete;
  FormReader& operator=(const FormReader&) = delete;

  static FormKind kind_of(std::string_view content_type);
  FormKind kind() const;

  // CL_OK, or the first error (CL_EINVAL malformed body, CL_ETOOBIG a limit, CL_EIO disk trouble,
  // CL_ECANCELED aborted); error() says what happened in words fit for a 4xx/5xx body.
  cl_status_t status() const;
  const std::string& error() const;

  // Consumes a chunk of the body (any size; the bytes are copied as needed). Returns status(); on an error
  // the caller answers the request and calls abort() (or destroys the reader). CL_ESTATE after finish().
  cl_status_t feed(std::string_view chunk);

  // True while more than limits.pause_bytes are queued for disk: stop reading the socket until the resume
  // callback runs (when the queue has drained to half the threshold, or when a disk error occurred that the
  // next feed() will report). Feeding while paused is allowed, only wasteful of memory.
  bool wants_pause() const;
  void set_resume(std::function<void()> resume);
  uint64_t queued_bytes() const;

  // The body is complete. done runs once on the loop (never inside this call) after every file was written,
  // fsync'd (limits.sync) and closed: CL_OK, or the error that ended the read. Not called after abort().
  void finish(DoneFn done);

  // The client went away or the request is being refused: stops, drops queued data, closes and deletes
  // every spooled file (in the background), and calls nothing afterwards. Safe with writes in flight.
  void abort();

  // Fields in arrival order (decoded for urlencoded bodies; as sent for multipart). Files in arrival order;
  // a file input left empty by a browser (filename="" and no data) gives no entry.
  const Fields& fields() const;
  const std::vector<FormFile>& files() const;

  // After finish() reported CL_OK. Moves file `index` to dest_abs (absolute, no "." or ".." components),
  // creating missing parent directories (0755), never replacing an existing file (renameat2
  // RENAME_NOREPLACE, or link+unlink where the filesystem lacks it). Metadata only, so it runs on the loop;
  // the directory is not fsync'd (use take_file_async when the new name must be durable before it is
  // recorded anywhere).
  // Returns CL_OK, CL_ENOENT (no such file or already taken/released), CL_EINVAL (bad dest_abs),
  // CL_EEXIST (dest_abs exists), CL_ESTATE (not finished), CL_EIO (with *error set if given).
  cl_status_t take_file(size_t index, const std::string& dest_abs, std::string* error = nullptr);
  // The same on a worker, and with limits.sync the destination directory is fsync'd too, so the new name is
  // durable before done runs. done is not called if the reader is aborted or destroyed first (a failed move
  // then still deletes the spooled file).
  void take_file_async(size_t index, std::string dest_abs, DoneFn done);
  // The caller takes over the spooled file at files()[index].path: it will no longer be deleted.
  cl_status_t release_file(size_t index);

  // Deletes spool files a crash left behind (regular files named like ours, nothing else) and returns how
  // many, or -1 if the directory cannot be read. Blocking: call at start-up, before the loop serves.
  static int sweep_spool(const std::string& spool_dir);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cloudlet::http
