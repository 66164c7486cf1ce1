// The sync service: push (SEND ... DATA ... DONE), pull (RECV), stat (STAT), each on its own "sync:" stream.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "adb/file_reader.h"
#include "adb/message.h"
#include "adb/reactor.h"
#include "adb/services.h"

namespace cloudlet::adb {

namespace {

constexpr uint32_t id_of(const char (&s)[5]) {
  return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
         uint32_t(uint8_t(s[3])) << 24;
}
constexpr uint32_t kSyncStat = id_of("STAT");
constexpr uint32_t kSyncSend = id_of("SEND");
constexpr uint32_t kSyncRecv = id_of("RECV");
constexpr uint32_t kSyncData = id_of("DATA");
constexpr uint32_t kSyncDone = id_of("DONE");
constexpr uint32_t kSyncOkay = id_of("OKAY");
constexpr uint32_t kSyncFail = id_of("FAIL");
constexpr uint32_t kSyncQuit = id_of("QUIT");
constexpr size_t kFailMax = 64 * 1024;

void put_frame(std::string* out, uint32_t id, uint32_t len) {
  uint8_t b[8];
  put_le32(b, id);
  put_le32(b + 4, len);
  out->append(reinterpret_cast<char*>(b), 8);
}

std::string name_of(uint32_t id) {
  std::string s;
  for (int i = 0; i < 4; i++) {
    char c = char(id >> (8 * i));
    s.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return s;
}

// What all sync streams share: small requests queued as bytes and written as the device acknowledges, and
// the bytes received so far.
class SyncStream : public Stream {
 public:
  explicit SyncStream(StreamHost& host) : Stream(host, "sync:") {}

 protected:
  // Writes queued request bytes, one WRTE at a time.
  void flush() {
    if (state != State::open || awaiting_okay || out_off_ >= out_.size()) return;
    size_t n = std::min<size_t>(out_.size() - out_off_, host_.stream_max_payload());
    std::vector<uint8_t> payload(out_.begin() + long(out_off_), out_.begin() + long(out_off_ + n));
    out_off_ += n;
    if (out_off_ == out_.size()) {
      out_.clear();
      out_off_ = 0;
    }
    host_.stream_write(*this, std::move(payload));
  }
  bool flushed() const { return out_off_ >= out_.size(); }

  // Says goodbye (QUIT when the stream is free to write) and closes the stream.
  void quit() {
    if (state == State::open && !awaiting_okay) {
      std::string q;
      put_frame(&q, kSyncQuit, 0);
      host_.stream_write(*this, std::vector<uint8_t>(q.begin(), q.end()));
    }
    host_.stream_close(*this);
  }

  std::string out_;
  size_t out_off_ = 0;
  std::string in_;
};

// ---- push -----------------------------------------------------------------------------------------------

class PushStream final : public SyncStream {
 public:
  PushStream(StreamHost& host, PushRequest req, std::function<void(Error)> cb)
      : SyncStream(host), req_(std::move(req)), cb_(std::move(cb)) {
    if (!req_.local_path.empty()) {
      // Start reading at once, so the first blocks are ready when the device accepts the stream.
      reader_ = std::make_unique<FileReader>(host.reactor(), req_.local_path, [this] { source_ready(); });
    }
  }

  void opened() override { pump(); }
  void ready() override { pump(); }

  void data(const uint8_t* p, size_t n) override {
    in_.append(reinterpret_cast<const char*>(p), n);
    while (!finished_ && in_.size() >= 8) {
      uint32_t id = get_le32(reinterpret_cast<const uint8_t*>(in_.data()));
      uint32_t len = get_le32(reinterpret_cast<const uint8_t*>(in_.data()) + 4);
      if (id == kSyncOkay) {
        if (phase_ != Phase::status) {
          finish(Error(Errc::protocol, "the device confirmed the push before it was complete"));
          return;
        }
        in_.erase(0, 8);
        finish(Error());
        return;
      }
      if (id == kSyncFail) {
        if (len > kFailMax) {
          finish(Error(Errc::protocol, fmt::format("the device sent a {} byte failure message", len)));
          return;
        }
        if (in_.size() < 8 + size_t(len)) return;
        std::string msg = in_.substr(8, len);
        finish(Error(Errc::remote, "the device refused it: " + msg));
        return;
      }
      finish(Error(Errc::protocol, fmt::format("unexpected sync reply \"{}\"", name_of(id))));
      return;
    }
  }

  void remote_closed() override {
    if (finished_) return;
    if (!opened_once()) finish(Error(Errc::remote, "the device refused to open the sync service"));
    else finish(Error(Errc::closed, "the device closed the sync stream"));
  }

  void failed(const Error& err) override {
    if (finished_) return;
    finished_ = true;
    report(Error(err.code, err.message));
  }

  bool waiting_device() const override {
    return !finished_ && (state == State::opening || awaiting_okay || phase_ == Phase::status);
  }

  std::string describe() const override {
    return fmt::format("push of {} to {} ({} of {} bytes sent)",
                       req_.local_path.empty() ? "data" : req_.local_path, req_.remote_path, sent_, total());
  }

 private:
  enum class Phase { header, data, done, status };

  bool opened_once() const { return remote_id != 0; }

  uint64_t total() const { return reader_ ? reader_->size() : req_.data.size(); }

  size_t source_available() const {
    return reader_ ? reader_->available() : req_.data.size() - mem_off_;
  }
  const uint8_t* source_data() const {
    return reader_ ? reader_->data() : reinterpret_cast<const uint8_t*>(req_.data.data()) + mem_off_;
  }
  void source_consume(size_t n) {
    if (reader_) reader_->consume(n);
    else mem_off_ += n;
  }
  bool source_eof() const { return reader_ ? reader_->eof() : mem_off_ >= req_.data.size(); }

  void source_ready() {
    if (finished_) return;
    if (reader_->error()) {
      finish(reader_->error());
      return;
    }
    pump();
  }

  // Fills one WRTE with the sync byte stream: the SEND request, DATA frames (at most 64 KiB each, split
  // across WRTEs where they fall), DONE with the mtime. Frames are sized by what is buffered, so the loop
  // never waits for the disk.
  void pump() {
    if (finished_ || state != State::open || awaiting_okay || phase_ == Phase::status) return;
    if (reader_ && !reader_->opened()) return;
    size_t max = host_.stream_max_payload();
    std::vector<uint8_t> out;
    out.reserve(max);
    while (out.size() < max) {
      if (pend_off_ < pending_.size()) {
        size_t take = std::min(pending_.size() - pend_off_, max - out.size());
        out.insert(out.end(), pending_.begin() + long(pend_off_), pending_.begin() + long(pend_off_ + take));
        pend_off_ += take;
        if (pend_off_ == pending_.size()) {
          pending_.clear();
          pend_off_ = 0;
        }
        continue;
      }
      if (frame_left_ > 0) {
        size_t avail = source_available();
        if (avail == 0) break;  // the next block is still being read
        size_t take = std::min({size_t(frame_left_), avail, max - out.size()});
        const uint8_t* p = source_data();
        out.insert(out.end(), p, p + take);
        source_consume(take);
        frame_left_ -= uint32_t(take);
        sent_ += take;
        continue;
      }
      if (phase_ == Phase::header) {
        uint32_t mode = S_IFREG | (req_.mode & 0777);
        std::string body = fmt::format("{},{}", req_.remote_path, mode);
        put_frame(&pending_, kSyncSend, uint32_t(body.size()));
        pending_ += body;
        phase_ = Phase::data;
        continue;
      }
      if (phase_ == Phase::data) {
        size_t avail = source_available();
        if (avail > 0) {
          frame_left_ = uint32_t(std::min(avail, kSyncDataMax));
          put_frame(&pending_, kSyncData, frame_left_);
          continue;
        }
        if (!source_eof()) break;
        int64_t mtime = req_.mtime >= 0 ? req_.mtime : reader_ ? reader_->mtime() : int64_t(time(nullptr));
        put_frame(&pending_, kSyncDone, uint32_t(mtime));
        phase_ = Phase::done;
        continue;
      }
      // phase done, and its bytes are all out
      phase_ = Phase::status;
      break;
    }
    if (!out.empty()) host_.stream_write(*this, std::move(out));
  }

  void finish(Error err) {
    if (finished_) return;
    finished_ = true;
    if (err) {
      host_.stream_close(*this);
      report(Error(err.code, err.message));
    } else {
      quit();
      report(Error());
    }
  }

  void report(Error err) { deliver(cb_, std::move(err)); }

  PushRequest req_;
  std::function<void(Error)> cb_;
  std::unique_ptr<FileReader> reader_;
  size_t mem_off_ = 0;
  Phase phase_ = Phase::header;
  std::string pending_;  // control bytes (SEND, DATA and DONE headers) not yet written
  size_t pend_off_ = 0;
  uint32_t frame_left_ = 0;  // file bytes of the current DATA frame still to write
  uint64_t sent_ = 0;
  bool finished_ = false;
};

// ---- pull -----------------------------------------------------------------------------------------------

class PullStream final : public SyncStream {
 public:
  PullStream(StreamHost& host, std::string remote, size_t max_bytes, std::function<void(Error, std::string)> cb)
      : SyncStream(host), remote_(std::move(remote)), max_(max_bytes), cb_(std::move(cb)) {}

  void opened() override {
    put_frame(&out_, kSyncRecv, uint32_t(remote_.size()));
    out_ += remote_;
    flush();
  }
  void ready() override { flush(); }

  void data(const uint8_t* p, size_t n) override {
    in_.append(reinterpret_cast<const char*>(p), n);
    size_t off = 0;
    while (!finished_ && in_.size() - off >= 8) {
      const uint8_t* h = reinterpret_cast<const uint8_t*>(in_.data()) + off;
      uint32_t id = get_le32(h), len = get_le32(h + 4);
      if (id == kSyncData) {
        if (len > kSyncDataMax) {
          finish(Error(Errc::protocol, fmt::format("the device sent a {} byte DATA chunk (limit {})", len, kSyncDataMax)));
          return;
        }
        if (in_.size() - off < 8 + size_t(len)) break;
        if (result_.size() + len > max_) {
          finish(Error(Errc::too_big, fmt::format("the file is larger than the {} byte limit", max_)));
          return;
        }
        result_.append(in_, off + 8, len);
        off += 8 + len;
      } else if (id == kSyncDone) {
        off += 8;
        finish(Error());
        return;
      } else if (id == kSyncFail) {
        if (len > kFailMax) {
          finish(Error(Errc::protocol, fmt::format("the device sent a {} byte failure message", len)));
          return;
        }
        if (in_.size() - off < 8 + size_t(len)) break;
        std::string msg = in_.substr(off + 8, len);
        bool missing = msg.find("No such file") != std::string::npos;
        finish(Error(missing ? Errc::not_found : Errc::remote, "the device refused it: " + msg));
        return;
      } else {
        finish(Error(Errc::protocol, fmt::format("unexpected sync reply \"{}\"", name_of(id))));
        return;
      }
    }
    if (off) in_.erase(0, off);
  }

  void remote_closed() override {
    if (finished_) return;
    finish(Error(remote_id ? Errc::closed : Errc::remote,
                 remote_id ? "the device closed the sync stream" : "the device refused to open the sync service"));
  }

  void failed(const Error& err) override {
    if (finished_) return;
    finished_ = true;
    report(err);
  }

  bool waiting_device() const override { return !finished_; }

  std::string describe() const override {
    return fmt::format("pull of {} ({} bytes received)", remote_, result_.size());
  }

 private:
  void finish(Error err) {
    if (finished_) return;
    finished_ = true;
    if (err) host_.stream_close(*this);
    else quit();
    report(std::move(err));
  }
  void report(Error err) { deliver(cb_, std::move(err), result_); }

  std::string remote_;
  size_t max_;
  std::function<void(Error, std::string)> cb_;
  std::string result_;
  bool finished_ = false;
};

// ---- stat -----------------------------------------------------------------------------------------------

class StatStream final : public SyncStream {
 public:
  StatStream(StreamHost& host, std::string remote, std::function<void(Error, RemoteStat)> cb)
      : SyncStream(host), remote_(std::move(remote)), cb_(std::move(cb)) {}

  void opened() override {
    put_frame(&out_, kSyncStat, uint32_t(remote_.size()));
    out_ += remote_;
    flush();
  }
  void ready() override { flush(); }

  void data(const uint8_t* p, size_t n) override {
    in_.append(reinterpret_cast<const char*>(p), n);
    if (finished_ || in_.size() < 16) return;
    const uint8_t* h = reinterpret_cast<const uint8_t*>(in_.data());
    if (get_le32(h) != kSyncStat) {
      finish(Error(Errc::protocol, fmt::format("unexpected sync reply \"{}\"", name_of(get_le32(h)))), {});
      return;
    }
    RemoteStat st;
    st.mode = get_le32(h + 4);
    st.size = get_le32(h + 8);
    st.mtime = get_le32(h + 12);
    finish(Error(), st);
  }

  void remote_closed() override {
    if (finished_) return;
    finish(Error(remote_id ? Errc::closed : Errc::remote,
                 remote_id ? "the device closed the sync stream" : "the device refused to open the sync service"),
           {});
  }

  void failed(const Error& err) override {
    if (finished_) return;
    finished_ = true;
    report(err, {});
  }

  bool waiting_device() const override { return !finished_; }
  std::string describe() const override { return "stat of " + remote_; }

 private:
  void finish(Error err, RemoteStat st) {
    if (finished_) return;
    finished_ = true;
    if (err) host_.stream_close(*this);
    else quit();
    report(std::move(err), st);
  }
  void report(Error err, RemoteStat st) { deliver(cb_, std::move(err), st); }

  std::string remote_;
  std::function<void(Error, RemoteStat)> cb_;
  bool finished_ = false;
};

}  // namespace

std::shared_ptr<Stream> push_stream_make(StreamHost& host, PushRequest req, std::function<void(Error)> cb) {
  return std::make_shared<PushStream>(host, std::move(req), std::move(cb));
}

std::shared_ptr<Stream> pull_stream_make(StreamHost& host, std::string remote, size_t max_bytes,
                                         std::function<void(Error, std::string)> cb) {
  return std::make_shared<PullStream>(host, std::move(remote), max_bytes, std::move(cb));
}

std::shared_ptr<Stream> stat_stream_make(StreamHost& host, std::string remote,
                                         std::function<void(Error, RemoteStat)> cb) {
  return std::make_shared<StatStream>(host, std::move(remote), std::move(cb));
}

}  // namespace cloudlet::adb
