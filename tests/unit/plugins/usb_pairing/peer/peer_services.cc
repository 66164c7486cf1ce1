#include "peer/peer_services.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "adb/message.h"

namespace cloudlet::adb::peer {

namespace {

constexpr size_t kDataMax = 64 * 1024;
constexpr size_t kPathMax = 1024;

uint32_t id_of(const char* s) { return get_le32(reinterpret_cast<const uint8_t*>(s)); }

void frame(std::string* out, const char* id, uint32_t v) {
  uint8_t b[8];
  std::memcpy(b, id, 4);
  put_le32(b + 4, v);
  out->append(reinterpret_cast<char*>(b), 8);
}

void word(std::string* out, uint32_t v) {
  uint8_t b[4];
  put_le32(b, v);
  out->append(reinterpret_cast<char*>(b), 4);
}

bool mkdir_parents(const std::string& path) {
  size_t pos = 0;
  while ((pos = path.find('/', pos + 1)) != std::string::npos) {
    std::string dir = path.substr(0, pos);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return true;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(char(c));
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out.push_back(char(c));
    }
  }
  return out;
}

// Splits a command line the way sh would for the simple cases: blanks separate words; '...' is literal;
// "..." allows \" \\ \$ \`; a backslash outside quotes escapes the next character.
std::vector<std::string> words_split(const std::string& line) {
  std::vector<std::string> words;
  std::string cur;
  bool have = false;
  for (size_t i = 0; i < line.size(); i++) {
    char c = line[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (have) words.push_back(cur);
      cur.clear();
      have = false;
    } else if (c == '\'') {
      have = true;
      size_t end = line.find('\'', i + 1);
      if (end == std::string::npos) end = line.size();
      cur += line.substr(i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      have = true;
      for (i++; i < line.size() && line[i] != '"'; i++) {
        if (line[i] == '\\' && i + 1 < line.size() && std::strchr("\"\\$`", line[i + 1])) i++;
        cur.push_back(line[i]);
      }
    } else if (c == '\\' && i + 1 < line.size()) {
      have = true;
      cur.push_back(line[++i]);
    } else {
      have = true;
      cur.push_back(c);
    }
  }
  if (have) words.push_back(cur);
  return words;
}

// ---- sync ------------------------------------------------------------------------------------------------

class SyncService final : public Service {
 public:
  explicit SyncService(Peer& p) : peer_(p) {}

  ~SyncService() override { abort_send(); }

  void input(ConnIo& io, const uint8_t* p, size_t n) override {
    in_.append(reinterpret_cast<const char*>(p), n);
    size_t off = 0;
    while (!close_when_drained && in_.size() - off >= 8) {
      const char* h = in_.data() + off;
      uint32_t id = get_le32(reinterpret_cast<const uint8_t*>(h));
      uint32_t len = get_le32(reinterpret_cast<const uint8_t*>(h) + 4);
      if (send_fd_ >= 0) {
        if (id == id_of("DATA")) {
          if (len > kDataMax) {
            fail(fmt::format("data chunk of {} bytes exceeds {}", len, kDataMax));
            return;
          }
          if (in_.size() - off < 8 + size_t(len)) break;
          if (!write_fd(h + 8, len)) {
            fail(std::string("write failed: ") + std::strerror(errno));
            return;
          }
          send_size_ += len;
          off += 8 + len;
          continue;
        }
        if (id == id_of("DONE")) {
          off += 8;
          finish_send(len);
          continue;
        }
        fail("expected DATA or DONE during SEND");
        return;
      }
      if (id == id_of("QUIT")) {
        off += 8;
        peer_.event("sync: quit");
        close_when_drained = true;
        break;
      }
      if (len > kPathMax) {
        fail(fmt::format("request path of {} bytes is too long", len));
        return;
      }
      if (in_.size() - off < 8 + size_t(len)) break;
      std::string arg = in_.substr(off + 8, len);
      off += 8 + len;
      if (id == id_of("STAT")) do_stat(arg);
      else if (id == id_of("LIST")) do_list(arg);
      else if (id == id_of("SEND")) do_send(arg);
      else if (id == id_of("RECV")) do_recv(arg);
      else {
        fail(fmt::format("unknown sync request {}", std::string(h, 4)));
        return;
      }
    }
    in_.erase(0, std::min(off, in_.size()));
    (void)io;
  }

  void refill(ConnIo& io) override {
    if (recv_fd_ < 0) return;
    // Fill up to one WRTE with 64 KiB DATA frames, then DONE.
    size_t max = io.payload_max();
    while (out.size() + 8 < max && recv_fd_ >= 0) {
      std::string buf(std::min(kDataMax, max - out.size() - 8), '\0');
      ssize_t n = ::read(recv_fd_, buf.data(), buf.size());
      if (n < 0) {
        ::close(recv_fd_);
        recv_fd_ = -1;
        fail_frame(std::string("read failed: ") + std::strerror(errno));
        return;
      }
      if (n == 0) {
        ::close(recv_fd_);
        recv_fd_ = -1;
        frame(&out, "DONE", 0);
        peer_.event("sync: recv done");
        return;
      }
      frame(&out, "DATA", uint32_t(n));
      out.append(buf.data(), size_t(n));
    }
  }

  void host_closed(ConnIo&) override {
    if (send_fd_ >= 0) peer_.event("sync: host closed the stream during SEND of " + send_path_);
    abort_send();
    if (recv_fd_ >= 0) ::close(recv_fd_);
    recv_fd_ = -1;
  }

 private:
  bool write_fd(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(send_fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= size_t(w);
    }
    return true;
  }

  void fail_frame(const std::string& msg) {
    frame(&out, "FAIL", uint32_t(msg.size()));
    out += msg;
  }

  // Reports a failure and ends the stream, like adbd does.
  void fail(const std::string& msg) {
    peer_.event("sync: fail: " + msg);
    abort_send();
    fail_frame(msg);
    close_when_drained = true;
  }

  void abort_send() {
    if (send_fd_ >= 0) {
      ::close(send_fd_);
      unlink(send_tmp_.c_str());
    }
    send_fd_ = -1;
  }

  void do_stat(const std::string& dev) {
    std::string path;
    struct stat st {};
    bool ok = peer_path(peer_, dev, &path) && lstat(path.c_str(), &st) == 0;
    frame(&out, "STAT", ok ? uint32_t(st.st_mode) : 0);
    word(&out, ok ? uint32_t(st.st_size) : 0);
    word(&out, ok ? uint32_t(st.st_mtime) : 0);
    peer_.event(fmt::format("sync: stat {} {}", dev, ok ? "found" : "missing"));
  }

  void do_list(const std::string& dev) {
    std::string path;
    DIR* d = peer_path(peer_, dev, &path) ? opendir(path.c_str()) : nullptr;
    if (d) {
      while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        struct stat st {};
        if (lstat((path + "/" + name).c_str(), &st) != 0) continue;
        frame(&out, "DENT", uint32_t(st.st_mode));
        word(&out, uint32_t(st.st_size));
        word(&out, uint32_t(st.st_mtime));
        word(&out, uint32_t(name.size()));
        out += name;
      }
      closedir(d);
    }
    frame(&out, "DONE", 0);
    word(&out, 0);
    word(&out, 0);
    word(&out, 0);
    peer_.event("sync: list " + dev);
  }

  void do_send(const std::string& arg) {
    size_t comma = arg.rfind(',');
    if (comma == std::string::npos) {
      fail("SEND without a mode");
      return;
    }
    std::string dev = arg.substr(0, comma);
    mode_t mode = mode_t(std::strtoul(arg.c_str() + comma + 1, nullptr, 10));
    if (S_ISLNK(mode)) {
      fail("symlinks are not supported by the test peer");
      return;
    }
    std::string path;
    if (!peer_path(peer_, dev, &path)) {
      fail("bad path " + dev);
      return;
    }
    if (!mkdir_parents(path)) {
      fail(std::string("mkdir failed: ") + std::strerror(errno));
      return;
    }
    send_tmp_ = path + ".peer-tmp";
    send_fd_ = ::open(send_tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (send_fd_ < 0) {
      fail(std::string("open failed: ") + std::strerror(errno));
      return;
    }
    send_path_ = path;
    send_dev_ = dev;
    send_mode_ = mode & 0777;
    send_size_ = 0;
  }

  void finish_send(uint32_t mtime) {
    fchmod(send_fd_, send_mode_);
    ::close(send_fd_);
    send_fd_ = -1;
    struct timeval tv[2] = {{time_t(mtime), 0}, {time_t(mtime), 0}};
    utimes(send_tmp_.c_str(), tv);
    if (rename(send_tmp_.c_str(), send_path_.c_str()) != 0) {
      fail(std::string("rename failed: ") + std::strerror(errno));
      return;
    }
    peer_.event(fmt::format("sync: received {} mode={:04o} size={} mtime={}", send_dev_, send_mode_, send_size_, mtime));
    frame(&out, "OKAY", 0);
  }

  void do_recv(const std::string& dev) {
    std::string path;
    int fd = peer_path(peer_, dev, &path) ? ::open(path.c_str(), O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
      peer_.event("sync: recv " + dev + " missing");
      fail_frame(std::string("open failed: ") + std::strerror(errno ? errno : ENOENT));
      return;
    }
    peer_.event("sync: recv " + dev);
    recv_fd_ = fd;
  }

  Peer& peer_;
  std::string in_;
  int send_fd_ = -1;
  std::string send_tmp_, send_path_, send_dev_;
  mode_t send_mode_ = 0;
  uint64_t send_size_ = 0;
  int recv_fd_ = -1;
};

// ---- shell -----------------------------------------------------------------------------------------------

class ShellService final : public Service {
 public:
  ShellService(Peer& p, std::string cmd) : peer_(p), cmd_(std::move(cmd)) {}
  void start(ConnIo&) override {
    out = peer_shell(peer_, cmd_);
    close_when_drained = true;
  }

 private:
  Peer& peer_;
  std::string cmd_;
};

std::string am_command(Peer& peer, const std::vector<std::string>& w) {
  if (w.size() < 2 || (w[1] != "startservice" && w[1] != "start-service")) {
    return "Error: the test peer only knows 'am startservice'\n";
  }
  std::string component, extras_json;
  int extras = 0;
  for (size_t i = 2; i < w.size(); i++) {
    if (w[i] == "-n" && i + 1 < w.size()) {
      component = w[++i];
    } else if ((w[i] == "-e" || w[i] == "--es") && i + 2 < w.size()) {
      if (extras++) extras_json += ",";
      extras_json += fmt::format("\"{}\":\"{}\"", json_escape(w[i + 1]), json_escape(w[i + 2]));
      i += 2;
    } else {
      return fmt::format("Error: Unknown option: {}\n", w[i]);
    }
  }
  if (component.empty() || component.find('/') == std::string::npos) {
    return "Error: Not found; no service started.\n";
  }
  std::ofstream log(peer.am_log_path(), std::ios::app);
  log << fmt::format("{{\"cmd\":\"startservice\",\"component\":\"{}\",\"extras\":{{{}}}}}\n", json_escape(component),
                     extras_json);
  peer.event("shell: am startservice " + component);
  return fmt::format("Starting service: Intent {{ cmp={}{} }}\n", component, extras ? " (has extras)" : "");
}

}  // namespace

bool peer_path(const Peer& peer, const std::string& dev, std::string* out) {
  if (dev.empty() || dev[0] != '/') return false;
  std::string path = peer.fs_root();
  size_t pos = 1;
  while (pos <= dev.size()) {
    size_t end = dev.find('/', pos);
    std::string comp = dev.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (comp == "..") return false;
    if (!comp.empty() && comp != ".") path += "/" + comp;
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  *out = path;
  return true;
}

std::string peer_shell(Peer& peer, const std::string& command) {
  std::vector<std::string> w = words_split(command);
  peer.event("shell: " + command);
  if (w.empty()) return "";
  const std::string& cmd = w[0];
  if (cmd == "echo") {
    bool newline = true;
    size_t i = 1;
    if (i < w.size() && w[i] == "-n") {
      newline = false;
      i++;
    }
    std::string s;
    for (; i < w.size(); i++) s += (s.empty() ? "" : " ") + w[i];
    return newline ? s + "\n" : s;
  }
  if (cmd == "cat") {
    std::string out;
    for (size_t i = 1; i < w.size(); i++) {
      std::string path;
      std::ifstream in;
      if (peer_path(peer, w[i], &path)) in.open(path, std::ios::binary);
      if (!in) {
        out += fmt::format("cat: {}: No such file or directory\n", w[i]);
        continue;
      }
      std::ostringstream ss;
      ss << in.rdbuf();
      out += ss.str();
    }
    return out;
  }
  if (cmd == "mkdir") {
    for (size_t i = 1; i < w.size(); i++) {
      std::string path;
      if (w[i] == "-p") continue;
      if (!peer_path(peer, w[i], &path) || !mkdir_parents(path + "/")) return "mkdir: " + w[i] + ": failed\n";
    }
    return "";
  }
  if (cmd == "rm") {
    for (size_t i = 1; i < w.size(); i++) {
      std::string path;
      if (w[i] == "-f") continue;
      if (peer_path(peer, w[i], &path)) unlink(path.c_str());
    }
    return "";
  }
  if (cmd == "am") return am_command(peer, w);
  return fmt::format("/system/bin/sh: {}: inaccessible or not found\n", cmd);
}

std::unique_ptr<Service> service_make(ConnIo& io, const std::string& name) {
  Peer& peer = io.owner();
  if (name == "sync:") return std::make_unique<SyncService>(peer);
  if (name.rfind("shell:", 0) == 0 && name.size() > 6) return std::make_unique<ShellService>(peer, name.substr(6));
  peer.event("refused service " + name);
  return nullptr;
}

}  // namespace cloudlet::adb::peer
