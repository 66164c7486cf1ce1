// Named operations: JSON arguments in, a status and a JSON result out, always asynchronous.
//
// The core registers the VM and device operations ("instance.start", "device.pair", ...); plugins register
// theirs through the ABI. HTTP front ends translate requests into operation calls and stay thin; plugins use
// each other only through operations and events. Results are JSON; errors carry {"error": "<message>"}.
//
// Every call carries its Caller (the core, a plugin, or a plugin acting for a principal); handlers read it from
// their Reply. Operations registered with CL_OP_F_PRIVILEGED are refused (CL_EPERM) to any caller but the core
// and plugins granted them in the configuration.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cloudlet_plugin.h"

namespace cloudlet {

class Loop;

// Who calls an operation: the core's form of the ABI's cl_caller_t.
struct Caller {
  uint32_t kind = CL_CALLER_CORE;  // CL_CALLER_*
  std::string plugin;              // the calling plugin ("" for the core)
  std::string principal;           // whom a front end authenticated ("" when none)
  // The privileged operations this caller was granted ("grants" of its plugin); the core needs none.
  std::shared_ptr<const std::set<std::string>> grants;

  bool may_call(std::string_view privileged_op) const;
  // For log lines that record who changed something: " by user:admin (manager)", " by plugin x", or "" for
  // the core itself.
  std::string by() const;
};

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
    // Who made this call (the core for calls made with call()). Valid as long as the Reply.
    const Caller& caller() const;

   private:
    friend class Operations;
    struct State;
    std::shared_ptr<State> state_;
  };
  using Handler = std::function<void(std::string_view args_json, Reply reply)>;
  using Done = std::function<void(cl_status_t status, std::string_view result_json)>;

  explicit Operations(Loop& loop) : loop_(loop) {}

  // Registers name ([a-z0-9_.-]{1,64}); flags are CL_OP_F_*. CL_EINVAL for a bad name or an unknown flag,
  // CL_EEXIST when taken.
  cl_status_t add(std::string_view name, Handler handler, void* owner = nullptr, uint32_t flags = 0);
  void remove_owner(void* owner);
  bool exists(std::string_view name) const { return handlers_.count(std::string(name)) > 0; }
  bool privileged(std::string_view name) const;
  std::vector<std::string> names() const;

  // Calls an operation. args_json must be a JSON object (CL_EINVAL otherwise); CL_ENOENT for an unknown name.
  // When it returns CL_OK, done runs exactly once, later, from a clean stack. The caller is the core.
  cl_status_t call(std::string_view name, std::string_view args_json, Done done);
  // The same for another caller (a plugin): CL_EPERM, done not called, for a privileged operation the caller
  // was not granted.
  cl_status_t call_as(const Caller& caller, std::string_view name, std::string_view args_json, Done done);

  static bool valid_name(std::string_view name);

 private:
  struct Entry {
    Handler handler;
    void* owner;
    uint32_t flags;
  };
  Loop& loop_;
  std::unordered_map<std::string, Entry> handlers_;
};

}  // namespace cloudlet
