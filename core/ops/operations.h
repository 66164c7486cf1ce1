// Named operations: JSON arguments in, a status and a JSON result out, always asynchronous.
//
// The core registers the VM and device operations ("instance.start", "device.pair", ...); plugins register
// theirs through the ABI. HTTP front ends translate requests into operation calls and stay thin; plugins use
// each other only through operations and events. Results are JSON; errors carry {"error": "<message>"}.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet {

class Loop;

class Operations {
 public:
  // Answers an invocation. Exactly once; extra calls are ignored. A Reply dropped without being called
  // answers CL_EIO "operation dropped its reply" (so a caller never waits forever).
  class Reply {
   public:
    Reply() = default;
    void operator()(cl_status_t status, std::string result_json) const;
    void error(cl_status_t status, std::string_view message) const;
    bool answered() const;

   private:
    friend class Operations;
    struct State;
    std::shared_ptr<State> state_;
  };
  using Handler = std::function<void(std::string_view args_json, Reply reply)>;
  using Done = std::function<void(cl_status_t status, std::string_view result_json)>;

  explicit Operations(Loop& loop) : loop_(loop) {}

  // Registers name ([a-z0-9_.-]{1,64}). CL_EINVAL for a bad name, CL_EEXIST when taken.
  cl_status_t add(std::string_view name, Handler handler, void* owner = nullptr);
  void remove_owner(void* owner);
  bool exists(std::string_view name) const { return handlers_.count(std::string(name)) > 0; }
  std::vector<std::string> names() const;

  // Calls an operation. args_json must be a JSON object (CL_EINVAL otherwise); CL_ENOENT for an unknown name.
  // When it returns CL_OK, done runs exactly once, later, from a clean stack.
  cl_status_t call(std::string_view name, std::string_view args_json, Done done);

  static bool valid_name(std::string_view name);

 private:
  struct Entry {
    Handler handler;
    void* owner;
  };
  Loop& loop_;
  std::unordered_map<std::string, Entry> handlers_;
};

}  // namespace cloudlet
