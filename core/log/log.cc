#include "log/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <ctime>
#include <mutex>

namespace cloudlet::log {
namespace detail {
int g_level = static_cast<int>(Level::info);
}

namespace {
std::mutex g_mutex;
FILE* g_out = nullptr;     // nullptr = stderr
FILE* g_access = nullptr;  // nullptr = disabled

// "2026-11-27T19:47:53.123Z"
size_t format_time(char* buf, size_t cap) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &t);
  n += static_cast<size_t>(snprintf(buf + n, cap - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000)));
  return n;
}
}  // namespace

bool parse_level(std::string_view text, Level* out) {
  static constexpr std::string_view names[] = {"error", "warn", "info", "debug", "trace"};
  for (int i = 0; i < 5; i++) {
    if (text == names[i]) {
      *out = static_cast<Level>(i);
      return true;
    }
  }
  return false;
}

std::string_view level_name(Level level) {
  static constexpr std::string_view names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
  int i = static_cast<int>(level);
  return (i >= 0 && i < 5) ? names[i] : "?";
}

void set_level(Level level) { detail::g_level = static_cast<int>(level); }
Level level() { return static_cast<Level>(detail::g_level); }

bool set_output_file(const std::string& path) {
  FILE* f = fopen(path.c_str(), "ae");
  if (!f) return false;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out) fclose(g_out);
  g_out = f;
  return true;
}

bool open_access_log(const std::string& path) {
  FILE* f = (path == "-") ? stderr : fopen(path.c_str(), "ae");
  if (!f) return false;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_access && g_access != stderr) fclose(g_access);
  g_access = f;
  return true;
}

bool access_log_enabled() { return g_access != nullptr; }

void write_access(std::string_view line) {
  char ts[40];
  size_t n = format_time(ts, sizeof ts);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_access) return;
  fmt::print(g_access, "{} {}\n", std::string_view(ts, n), line);
  fflush(g_access);
}

void write(Level level, std::string_view source, std::string_view message) {
  char ts[40];
  size_t n = format_time(ts, sizeof ts);
  // Strip trailing newlines so every call is exactly one line.
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.remove_suffix(1);
  std::lock_guard<std::mutex> lock(g_mutex);
  FILE* out = g_out ? g_out : stderr;
  fmt::print(out, "{} {:<5} [{}] {}\n", std::string_view(ts, n), level_name(level), source, message);
  fflush(out);
}

}  // namespace cloudlet::log
