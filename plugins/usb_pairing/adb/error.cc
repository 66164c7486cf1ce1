#include "adb/error.h"

namespace cloudlet::adb {

const char* errc_name(Errc code) {
  switch (code) {
    case Errc::ok: return "ok";
    case Errc::invalid: return "invalid argument";
    case Errc::unavailable: return "unavailable";
    case Errc::io: return "i/o error";
    case Errc::local_io: return "local file error";
    case Errc::closed: return "closed";
    case Errc::timeout: return "timeout";
    case Errc::auth_refused: return "authorization refused";
    case Errc::protocol: return "protocol error";
    case Errc::too_big: return "too big";
    case Errc::remote: return "device error";
    case Errc::not_found: return "not found";
    case Errc::cancelled: return "cancelled";
    case Errc::busy: return "busy";
    case Errc::unsupported: return "unsupported";
  }
  return "unknown";
}

cl_status_t Error::status() const {
  switch (code) {
    case Errc::ok: return CL_OK;
    case Errc::invalid: return CL_EINVAL;
    case Errc::unavailable: return CL_EUNAVAIL;
    case Errc::io: return CL_EIO;
    case Errc::local_io: return CL_EIO;
    case Errc::closed: return CL_ECLOSING;
    case Errc::timeout: return CL_ETIMEDOUT;
    case Errc::auth_refused: return CL_EPERM;
    case Errc::protocol: return CL_EIO;
    case Errc::too_big: return CL_ETOOBIG;
    case Errc::remote: return CL_EIO;
    case Errc::not_found: return CL_ENOENT;
    case Errc::cancelled: return CL_ECANCELED;
    case Errc::busy: return CL_EBUSY;
    case Errc::unsupported: return CL_ENOTSUP;
  }
  return CL_EIO;
}

std::string Error::text() const {
  if (code == Errc::ok) return "ok";
  return std::string(errc_name(code)) + ": " + message;
}

}  // namespace cloudlet::adb
