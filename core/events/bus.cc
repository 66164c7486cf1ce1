#include "events/bus.h"

#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet {

bool EventBus::valid_topic(std::string_view topic) {
  if (topic.empty() || topic.size() > 128) return false;
  for (char c : topic) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

bool EventBus::matches(std::string_view pattern, std::string_view topic) {
  if (pattern == "*") return true;
  if (pattern.size() >= 2 && pattern.substr(pattern.size() - 2) == ".*") {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);  // keeps the dot
    return topic.size() > prefix.size() && topic.substr(0, prefix.size()) == prefix;
  }
  return pattern == topic;
}

uint64_t EventBus::subscribe(std::string_view pattern, Handler handler, void* owner) {
  std::string_view base = pattern;
  if (base.size() >= 2 && base.substr(base.size() - 2) == ".*") base.remove_suffix(2);
  if (!handler || (pattern != "*" && !valid_topic(base))) return 0;
  uint64_t id = next_id_++;
  subs_.emplace(id, Sub{std::string(pattern), std::move(handler), owner});
  return id;
}

bool EventBus::unsubscribe(uint64_t id) { return subs_.erase(id) > 0; }

void* EventBus::owner_of(uint64_t id) const {
  auto it = subs_.find(id);
  return it == subs_.end() ? nullptr : it->second.owner;
}

void EventBus::remove_owner(void* owner) {
  for (auto it = subs_.begin(); it != subs_.end();) {
    it = it->second.owner == owner ? subs_.erase(it) : std::next(it);
  }
}

void EventBus::publish(std::string_view topic, std::string payload_json) {
  queue_.emplace_back(std::string(topic), std::move(payload_json));
  if (scheduled_) return;
  scheduled_ = true;
  loop_.defer([this] { deliver(); });
}

void EventBus::deliver() {
  scheduled_ = false;
  std::vector<std::pair<std::string, std::string>> batch;
  batch.swap(queue_);
  for (const auto& [topic, payload] : batch) {
    // Collect ids first: handlers may subscribe or unsubscribe while we deliver.
    std::vector<uint64_t> ids;
    for (const auto& [id, sub] : subs_) {
      if (matches(sub.pattern, topic)) ids.push_back(id);
    }
    for (uint64_t id : ids) {
      auto it = subs_.find(id);
      if (it == subs_.end()) continue;
      Handler h = it->second.handler;
      try {
        h(topic, payload);
      } catch (const std::exception& e) {
        log::error("events", "subscriber of '{}' threw: {}", topic, e.what());
      } catch (...) {
        log::error("events", "subscriber of '{}' threw", topic);
      }
    }
  }
}

}  // namespace cloudlet
