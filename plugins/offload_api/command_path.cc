#include "command_path.h"

#include <vector>

namespace cloudlet::offload {

const CommandPath kCommandPaths[8] = {
    {Command::services, "/api/services", "services", ""},
    {Command::service_get, "/api/services/get", "services", "get"},
    {Command::start, "/api/servicevm/start", "servicevm", "start"},
    {Command::stop, "/api/servicevm/stop", "servicevm", "stop"},
    {Command::apps, "/api/apps", "apps", ""},
    {Command::app_get, "/api/apps/get", "apps", "get"},
    {Command::system, "/api/system", "system", ""},
    {Command::messages, "/api/system/get_messages", "system", "get_messages"},
};

std::optional<Command> command_of(std::string_view path) {
  std::vector<std::string_view> words;
  while (true) {
    size_t slash = path.find('/');
    words.push_back(path.substr(0, slash));
    if (words.size() > 3) return std::nullopt;  // no command has more words (and a path of '/'s stays cheap)
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  if (words.size() < 2) return std::nullopt;
  std::string_view controller = words[1], action = words.size() > 2 ? words[2] : std::string_view();
  for (const auto& c : kCommandPaths) {
    if (controller == c.controller && action == c.action) return c.command;
  }
  return std::nullopt;
}

}  // namespace cloudlet::offload
