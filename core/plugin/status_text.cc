#include "plugin/status_text.h"

namespace cloudlet {

const char* status_text(cl_status_t st) {
  switch (st) {
    case CL_OK: return "ok";
    case CL_EINVAL: return "invalid argument";
    case CL_ENOMEM: return "out of memory";
    case CL_ENOTSUP: return "not supported";
    case CL_EBUSY: return "busy";
    case CL_ENOENT: return "not found";
    case CL_ECANCELED: return "cancelled";
    case CL_ECLOSING: return "closing";
    case CL_EEXIST: return "already exists";
    case CL_EIO: return "input/output or internal error";
    case CL_EDECLINED: return "declined";
    case CL_ETIMEDOUT: return "timed out";
    case CL_EPERM: return "not permitted";
    case CL_ETOOBIG: return "too big";
    case CL_ESTATE: return "invalid state";
    case CL_EUNAUTH: return "unauthenticated";
    case CL_EUNAVAIL: return "unavailable";
    default: return "unknown status";
  }
}

}  // namespace cloudlet
