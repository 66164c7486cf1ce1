// The cloudlet's hardware figures for /api/system (phones rank cloudlets with them) and the manager's status
// bar. CPU usage and free memory are sampled once a second on a worker, so a request never waits; the static
// facts (cores, MHz, cache) are read once, with fallbacks because phones drop a cloudlet whose rank is 0.
// Operation: system.info (core/ops/README.md).
#pragma once

#include <cstdint>
#include <string>

namespace cloudlet {

class Loop;
class Operations;
class EventBus;

struct SystemFacts {
  int cores = 1;
  double mhz = 0;         // /proc/cpuinfo "cpu MHz", else cpufreq max, else BogoMIPS/2, else 1000
  int64_t cache_kb = 0;   // /proc/cpuinfo "cache size", else the largest sysfs cache level
  int64_t total_bytes = 0;
};

struct CpuTimes {
  uint64_t busy = 0, total = 0;
};

// Parsers (pure, for tests): text of /proc/cpuinfo, /proc/meminfo, /proc/stat.
SystemFacts parse_cpuinfo(const std::string& cpuinfo);
bool parse_meminfo(const std::string& meminfo, int64_t* total, int64_t* available);
bool parse_proc_stat(const std::string& stat, CpuTimes* out);

class SystemInfo {
 public:
  // events (may be null): each sample is also published as `system.load` (the manager's live charts).
  SystemInfo(Loop& loop, Operations& ops, EventBus* events = nullptr);
  ~SystemInfo();
  // Reads the static facts (start-up), takes a first sample, starts the sampler, registers system.info.
  void start();
  void stop();
  std::string json() const;

 private:
  void sample();
  Loop& loop_;
  Operations& ops_;
  EventBus* events_;
  SystemFacts facts_;
  CpuTimes last_;
  double usage_ = 0;  // percent over all cores: 0 .. 100 * cores
  int64_t free_bytes_ = 0;
  uint64_t timer_ = 0;
  bool sampling_ = false;
};

}  // namespace cloudlet
