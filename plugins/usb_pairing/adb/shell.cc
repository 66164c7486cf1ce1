// The shell service, version 1: "shell:<command>" runs the command through the device's sh; its output
// (stdout and stderr together) comes back as stream data and the device closes the stream when it exits.
#include <fmt/format.h>

#include "adb/services.h"

namespace cloudlet::adb {

namespace {

class ShellStream final : public Stream {
 public:
  ShellStream(StreamHost& host, std::string command, size_t max_output, std::function<void(Error, std::string)> cb)
      : Stream(host, "shell:" + command), command_(std::move(command)), max_(max_output), cb_(std::move(cb)) {}

  void opened() override {}
  void ready() override {}

  void data(const uint8_t* p, size_t n) override {
    if (finished_) return;
    if (output_.size() + n > max_) {
      finish(Error(Errc::too_big, fmt::format("it printed more than {} bytes", max_)));
      return;
    }
    output_.append(reinterpret_cast<const char*>(p), n);
  }

  void remote_closed() override {
    if (finished_) return;
    if (remote_id == 0) finish(Error(Errc::remote, "the device refused to open the shell service"));
    else finish(Error());
  }

  void failed(const Error& err) override {
    if (finished_) return;
    finished_ = true;
    report(err);
  }

  bool waiting_device() const override { return !finished_; }

  std::string describe() const override {
    std::string shown = command_.size() > 80 ? command_.substr(0, 80) + "..." : command_;
    return fmt::format("shell command \"{}\"", shown);
  }

 private:
  void finish(Error err) {
    if (finished_) return;
    finished_ = true;
    host_.stream_close(*this);
    report(std::move(err));
  }
  void report(Error err) { deliver(cb_, std::move(err), output_); }

  std::string command_;
  size_t max_;
  std::function<void(Error, std::string)> cb_;
  std::string output_;
  bool finished_ = false;
};

}  // namespace

std::shared_ptr<Stream> shell_stream_make(StreamHost& host, std::string command, size_t max_output,
                                          std::function<void(Error, std::string)> cb) {
  return std::make_shared<ShellStream>(host, std::move(command), max_output, std::move(cb));
}

}  // namespace cloudlet::adb
