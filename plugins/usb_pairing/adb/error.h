// Errors of the ADB host library: a code the caller can act on (and map to a cl_status_t at the ABI) plus a
// sentence a person can act on ("device refused authorization: ...").
#pragma once

#include <cloudlet_plugin.h>

#include <string>

namespace cloudlet::adb {

enum class Errc {
  ok = 0,
  invalid,       // a bad argument from the caller (path, size, name)
  unavailable,   // no such device, connection refused, USB interface busy
  io,            // transport failure (socket or USB error)
  local_io,      // reading or writing a local file failed
  closed,        // the device closed the connection or the stream
  timeout,       // a deadline passed (connect, handshake, a stalled device)
  auth_refused,  // the device did not accept our key
  protocol,      // the device broke the protocol (bad magic, checksum, sizes, unexpected replies)
  too_big,       // a size limit was exceeded
  remote,        // the device reported a failure (sync FAIL)
  not_found,     // a remote file does not exist
  cancelled,     // the caller closed the connection before the operation finished
  busy,          // too many operations at once
  unsupported,   // not available on this system (no hotplug, no USB)
};

struct Error {
  Errc code = Errc::ok;
  std::string message;

  Error() = default;
  Error(Errc c, std::string m) : code(c), message(std::move(m)) {}

  explicit operator bool() const { return code != Errc::ok; }
  // The matching ABI status (CL_OK when there is no error).
  cl_status_t status() const;
  // "timeout: device stopped responding ..." for logs.
  std::string text() const;
};

const char* errc_name(Errc code);

}  // namespace cloudlet::adb
