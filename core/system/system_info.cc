#include "system/system_info.h"

#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "events/bus.h"
#include "loop/loop.h"
#include "ops/operations.h"

namespace cloudlet {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "key : value" lines of /proc/cpuinfo; the first occurrence (the first CPU) wins.
std::string field(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
    if (k == key) {
      std::string v = line.substr(colon + 1);
      while (!v.empty() && v[0] == ' ') v.erase(0, 1);
      return v;
    }
  }
  return "";
}

int64_t sysfs_cache_kb() {
  int64_t best = 0;
  for (int i = 0; i < 8; i++) {
    std::string s = read_file(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", i));
    if (s.empty()) continue;
    int64_t v = std::atoll(s.c_str());
    if (s.find('M') != std::string::npos) v *= 1024;
    if (v > best) best = v;
  }
  return best;
}

}  // namespace

SystemFacts parse_cpuinfo(const std::string& cpuinfo) {
  SystemFacts f;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  f.cores = n > 0 ? static_cast<int>(n) : 1;
  std::string mhz = field(cpuinfo, "cpu MHz");
  if (!mhz.empty()) f.mhz = std::atof(mhz.c_str());
  std::string cache = field(cpuinfo, "cache size");
  if (!cache.empty()) {
    f.cache_kb = std::atoll(cache.c_str());
    if (cache.find("MB") != std::string::npos) f.cache_kb *= 1024;
  }
  if (f.mhz <= 0) {
    std::string bogo = field(cpuinfo, "bogomips");
    if (bogo.empty()) bogo = field(cpuinfo, "BogoMIPS");
    if (!bogo.empty()) f.mhz = std::atof(bogo.c_str()) / 2;
  }
  return f;
}

bool parse_meminfo(const std::string& meminfo, int64_t* total, int64_t* available) {
  std::string t = field(meminfo, "MemTotal"), a = field(meminfo, "MemAvailable");
  if (a.empty()) a = field(meminfo, "MemFree");
  if (t.empty() || a.empty()) return false;
  *total = std::atoll(t.c_str()) * 1024;
  *available = std::atoll(a.c_str()) * 1024;
  return true;
}

bool parse_proc_stat(const std::string& stat, CpuTimes* out) {
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
  if (stat.rfind("cpu ", 0) != 0) return false;
  std::istringstream in(stat.substr(4));
  uint64_t v[8] = {0};
  for (auto& x : v) {
    if (!(in >> x)) break;
  }
  uint64_t idle = v[3] + v[4];
  uint64_t total = 0;
  for (auto x : v) total += x;
  out->busy = total - idle;
  out->total = total;
  return total > 0;
}

SystemInfo::SystemInfo(Loop& loop, Operations& ops, EventBus* events) : loop_(loop), ops_(ops), events_(events) {}

SystemInfo::~SystemInfo() { stop(); }

void SystemInfo::start() {
  facts_ = parse_cpuinfo(read_file("/proc/cpuinfo"));
  if (facts_.mhz <= 0) {
    std::string khz = read_file("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
    if (!khz.empty()) facts_.mhz = std::atof(khz.c_str()) / 1000;
  }
  if (facts_.mhz <= 0) facts_.mhz = 1000;  // unknown: a plausible figure keeps the cloudlet rankable
  if (facts_.cache_kb <= 0) facts_.cache_kb = sysfs_cache_kb();
  int64_t avail = 0;
  parse_meminfo(read_file("/proc/meminfo"), &facts_.total_bytes, &avail);
  free_bytes_ = avail;
  parse_proc_stat(read_file("/proc/stat"), &last_);
  timer_ = loop_.timer_start(1000, 1000, [this] { sample(); });
  ops_.add("system.info", [this](std::string_view, Operations::Reply reply) { reply(CL_OK, json()); });
}

void SystemInfo::stop() {
  if (timer_) loop_.timer_stop(timer_);
  timer_ = 0;
}

void SystemInfo::sample() {
  if (sampling_) return;
  sampling_ = true;
  struct Sample {
    CpuTimes cpu;
    int64_t total = 0, avail = 0;
    bool ok = false;
  };
  auto s = std::make_shared<Sample>();
  loop_.queue_work(
      [s] {
        s->ok = parse_proc_stat(read_file("/proc/stat"), &s->cpu) &&
                parse_meminfo(read_file("/proc/meminfo"), &s->total, &s->avail);
      },
      [this, s](bool cancelled) {
        sampling_ = false;
        if (cancelled || !s->ok) return;
        uint64_t dt = s->cpu.total - last_.total, db = s->cpu.busy - last_.busy;
        if (dt > 0 && s->cpu.total >= last_.total) usage_ = 100.0 * facts_.cores * static_cast<double>(db) / dt;
        last_ = s->cpu;
        free_bytes_ = s->avail;
        if (events_) {
          events_->publish("system.load", fmt::format("{{\"time_ms\":{},\"cpu_percent\":{:.1f},\"cores\":{},"
                                                      "\"memory_total\":{},\"memory_free\":{}}}",
                                                      wall_ms(), usage_, facts_.cores, facts_.total_bytes,
                                                      free_bytes_));
        }
      });
}

std::string SystemInfo::json() const {
  return fmt::format(
      "{{\"cpu_info\":{{\"max_cores\":{},\"usage\":{:.1f},\"speed\":{:.3f},\"cache\":{}}},"
      "\"memory_info\":{{\"max_memory\":{},\"free_memory\":{}}}}}",
      facts_.cores, usage_, facts_.mhz, facts_.cache_kb, facts_.total_bytes, free_bytes_);
}

}  // namespace cloudlet
