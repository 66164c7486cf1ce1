// Publish/subscribe on topics ("instance.state", "job.progress", "peer.found"), with JSON payloads.
//
// Deliveries are asynchronous (a later loop turn, clean stack) and in publication order. A subscription
// pattern is an exact topic, a prefix ending in ".*" ("instance.*"), or "*".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace cloudlet {

class Loop;

class EventBus {
 public:
  using Handler = std::function<void(std::string_view topic, std::string_view payload_json)>;

  explicit EventBus(Loop& loop) : loop_(loop) {}

  // Returns the subscription id (never 0), or 0 for an invalid pattern.
  uint64_t subscribe(std::string_view pattern, Handler handler, void* owner = nullptr);
  bool unsubscribe(uint64_t id);
  void* owner_of(uint64_t id) const;
  void remove_owner(void* owner);

  void publish(std::string_view topic, std::string payload_json);

  static bool valid_topic(std::string_view topic);
  static bool matches(std::string_view pattern, std::string_view topic);
  size_t subscriber_count() const { return subs_.size(); }

 private:
  struct Sub {
    std::string pattern;
    Handler handler;
    void* owner;
  };
  void deliver();

  Loop& loop_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Sub> subs_;  // ordered: delivery in subscription order
  std::vector<std::pair<std::string, std::string>> queue_;
  bool scheduled_ = false;
};

}  // namespace cloudlet
