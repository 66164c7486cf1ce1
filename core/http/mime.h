// MIME types for static files, by file extension.
#pragma once

#include <string_view>

namespace cloudlet::http {

// "application/octet-stream" for unknown extensions. Text types carry "; charset=utf-8".
std::string_view mime_type_for(std::string_view path);

}  // namespace cloudlet::http
