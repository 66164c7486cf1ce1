// Helpers for the virt tests: driving the loop until something happened, a tiny HTTP GET, temp dirs, processes,
// Status assertions.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "loop/loop.h"
#include "system/status.h"

namespace vt {

// A Status as a gtest assertion, so that a failure shows its code and message: ASSERT_TRUE(vt::ok(files_write(...))).
inline ::testing::AssertionResult ok(const cloudlet::Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "failed with " << s.code() << ": " << s.message();
}

// The failure a Status must be: EXPECT_TRUE(vt::fails(qemu_img::create_sync(...), CL_EEXIST, "exists")).
inline ::testing::AssertionResult fails(const cloudlet::Status& s, cl_status_t code, const std::string& text = "") {
  if (s.ok()) return ::testing::AssertionFailure() << "succeeded; expected " << code;
  if (s.code() != code || s.message().find(text) == std::string::npos) {
    return ::testing::AssertionFailure() << "failed with " << s.code() << ": " << s.message() << "; expected " << code
                                         << " with '" << text << "'";
  }
  return ::testing::AssertionSuccess();
}

inline int64_t mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Runs the loop until pred() holds or timeout_ms passes; returns pred(). A 5 ms wake-up timer keeps it turning.
inline bool run_until(cloudlet::Loop& loop, const std::function<bool()>& pred, int64_t timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  auto tick = loop.timer_start(5, 5, [] {});
  while (!pred() && mono_ms() < deadline) uv_run(loop.uv(), UV_RUN_ONCE);
  loop.timer_stop(tick);
  return pred();
}

// Keeps the loop turning for ms milliseconds.
inline void pump(cloudlet::Loop& loop, int64_t ms) {
  int64_t until = mono_ms() + ms;
  run_until(loop, [&] { return mono_ms() >= until; }, ms + 1000);
}

// GET / on 127.0.0.1:port. Returns the body of a complete 200 reply, or "" (refused, timeout, other status).
inline std::string http_get(uint16_t port, int timeout_ms = 1000) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return {};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int64_t deadline = mono_ms() + timeout_ms;
  auto wait = [&](short ev) {
    int64_t left = deadline - mono_ms();
    if (left <= 0) return false;
    pollfd p{fd, ev, 0};
    return poll(&p, 1, static_cast<int>(left)) == 1 && !(p.revents & (POLLERR | POLLNVAL));
  };
  std::string resp;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) goto out;
  if (!wait(POLLOUT)) goto out;
  {
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) goto out;
    const char req[] = "GET / HTTP/1.0\r\nHost: guest\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof req - 1)) goto out;
    char buf[4096];
    bool eof = false;
    while (resp.size() < 65536 && wait(POLLIN)) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        eof = n == 0;
        break;
      }
      resp.append(buf, static_cast<size_t>(n));
    }
    if (!eof) resp.clear();  // HTTP/1.0: the reply is complete only when the server closes
  }
out:
  close(fd);
  if (resp.rfind("HTTP/1.", 0) != 0 || resp.find(" 200 ") == std::string::npos) return {};
  auto body = resp.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : resp.substr(body + 4);
}

// "key=value" line of the demo guest's page.
inline std::string page_field(const std::string& page, const std::string& key) {
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  return {};
}

inline std::string make_temp_dir(const char* tag) {
  std::string templ = std::string("/tmp/") + tag + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return {};
  return buf.data();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// PIDs of processes whose command line contains `needle`.
inline std::vector<pid_t> pids_with_cmdline(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    char* end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == getpid()) continue;
    std::string cmd = read_file(std::string("/proc/") + e->d_name + "/cmdline");
    for (auto& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(needle) != std::string::npos) out.push_back(static_cast<pid_t>(pid));
  }
  closedir(d);
  return out;
}

inline const char* env_or(const char* name, const char* fallback) {
  const char* v = getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace vt
