// Logging: one line per call, "<time> <LEVEL> [<source>] <message>", written to stderr (or a file) with fmt.
// Thread-safe: any thread may log. The source is "core", a subsystem ("http", "virt") or a plugin's name.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <string_view>

namespace cloudlet::log {

enum class Level : int { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

// Parses "error", "warn", "info", "debug", "trace". Returns false for anything else.
bool parse_level(std::string_view text, Level* out);
std::string_view level_name(Level level);

void set_level(Level level);
Level level();
inline bool enabled(Level l);

// Writes to `path` instead of stderr (opened for append). Returns false and keeps stderr on failure.
bool set_output_file(const std::string& path);

// The access log (one line per HTTP response). Disabled until opened; "-" means stderr.
bool open_access_log(const std::string& path);
bool access_log_enabled();
void write_access(std::string_view line);

void write(Level level, std::string_view source, std::string_view message);

namespace detail {
extern int g_level;
}
inline bool enabled(Level l) { return static_cast<int>(l) <= detail::g_level; }

template <typename... Args>
void error(std::string_view src, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::error)) write(Level::error, src, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(std::string_view src, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::warn)) write(Level::warn, src, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(std::string_view src, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::info)) write(Level::info, src, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(std::string_view src, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::debug)) write(Level::debug, src, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void trace(std::string_view src, fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::trace)) write(Level::trace, src, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace cloudlet::log
