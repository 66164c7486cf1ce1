// Helpers shared by the multipart and form reader tests: body builders, a streaming hash, process facts.
#pragma once

#include <dirent.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace formtest {

struct PartSpec {
  std::string name;
  std::optional<std::string> filename;
  std::string content_type;
  std::string data;
};

inline std::string part_headers(const PartSpec& p) {
  std::string h = "Content-Disposition: form-data; name=\"" + p.name + "\"";
  if (p.filename) h += "; filename=\"" + *p.filename + "\"";
  h += "\r\n";
  if (!p.content_type.empty()) h += "Content-Type: " + p.content_type + "\r\n";
  return h;
}

inline std::string make_body(const std::string& boundary, const std::vector<PartSpec>& parts,
                             const std::string& preamble = "", const std::string& epilogue = "") {
  std::string b = preamble;
  for (const auto& p : parts) {
    b += "--" + boundary + "\r\n" + part_headers(p) + "\r\n" + p.data + "\r\n";
  }
  b += "--" + boundary + "--\r\n" + epilogue;
  return b;
}

// A chunk-boundary independent 64-bit hash (words of 8 bytes, tail padded, length mixed in).
class StreamHash {
 public:
  void add(const char* p, size_t n) {
    total_ += n;
    while (n > 0 && fill_ > 0 && fill_ < 8) {
      tail_[fill_++] = static_cast<unsigned char>(*p++);
      n--;
      if (fill_ == 8) {
        mix_tail();
      }
    }
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      mix(w);
      p += 8;
      n -= 8;
    }
    while (n > 0) {
      tail_[fill_++] = static_cast<unsigned char>(*p++);
      n--;
    }
  }
  uint64_t value() const {
    StreamHash c = *this;
    if (c.fill_ > 0) {
      std::memset(c.tail_ + c.fill_, 0, 8 - c.fill_);
      uint64_t w;
      std::memcpy(&w, c.tail_, 8);
      c.mix(w);
    }
    c.mix(total_);
    return c.h_;
  }
  uint64_t size() const { return total_; }

 private:
  void mix_tail() {
    uint64_t w;
    std::memcpy(&w, tail_, 8);
    mix(w);
    fill_ = 0;
  }
  void mix(uint64_t w) {
    h_ ^= w;
    h_ = (h_ << 29) | (h_ >> 35);
    h_ *= 0x9E3779B97F4A7C15ull;
  }
  uint64_t h_ = 0xcbf29ce484222325ull;
  uint64_t total_ = 0;
  unsigned char tail_[8] = {};
  size_t fill_ = 0;
};

// Resident set size in KiB (VmRSS), or 0 if unreadable.
inline long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

inline int open_fd_count() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') n++;
    }
    closedir(d);
  }
  return n - 1;  // the DIR's own descriptor
}

inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.push_back(e->d_name);
    }
    closedir(d);
  }
  return out;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// CPU time of the calling thread in seconds: throughput figures that other processes on a shared machine
// cannot drag down.
inline double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

constexpr bool kSanitized =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#else
    false;
#endif

}  // namespace formtest
