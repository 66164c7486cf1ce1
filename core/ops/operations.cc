#include "ops/operations.h"

#include "json/json.h"
#include "log/log.h"
#include "loop/loop.h"

namespace cloudlet {

struct Operations::Reply::State {
  Loop* loop = nullptr;
  Done done;
  bool answered = false;
  std::string name;
  Caller caller;
  ~State() {
    if (!answered && done) {
      log::error("ops", "operation '{}' dropped its reply", name);
      auto fn = std::move(done);
      loop->defer([fn = std::move(fn)] { fn(CL_EIO, json::error_object("operation dropped its reply")); });
    }
  }
};

void Operations::Reply::operator()(cl_status_t status, std::string result_json) const {
  if (!state_ || state_->answered) return;
  state_->answered = true;
  if (status != CL_OK && !json::is_object(result_json)) {
    // Errors always reach callers as {"error": ...}; wrap a bare message.
    result_json = json::error_object(result_json.empty() ? std::string("operation failed") : result_json);
  } else if (result_json.empty()) {
    result_json = "{}";
  }
  auto done = std::move(state_->done);
  state_->done = nullptr;
  state_->loop->defer([done = std::move(done), status, result = std::move(result_json)] { done(status, result); });
}

void Operations::Reply::error(cl_status_t status, std::string_view message) const {
  (*this)(status, json::error_object(message));
}

bool Operations::Reply::answered() const { return !state_ || state_->answered; }

const Caller& Operations::Reply::caller() const {
  static const Caller core;  // a default Reply (never handed to a handler) reports the core
  return state_ ? state_->caller : core;
}

bool Caller::may_call(std::string_view privileged_op) const {
  if (kind == CL_CALLER_CORE) return true;
  return grants && grants->count(std::string(privileged_op)) > 0;
}

std::string Caller::by() const {
  if (kind == CL_CALLER_CORE) return "";
  if (principal.empty()) return " by plugin " + plugin;
  return " by " + principal + " (" + plugin + ")";
}

bool Operations::valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

cl_status_t Operations::add(std::string_view name, Handler handler, void* owner, uint32_t flags) {
  if (!valid_name(name) || !handler || (flags & ~uint32_t{CL_OP_F_PRIVILEGED})) return CL_EINVAL;
  auto [it, inserted] = handlers_.emplace(std::string(name), Entry{std::move(handler), owner, flags});
  return inserted ? CL_OK : CL_EEXIST;
}

bool Operations::privileged(std::string_view name) const {
  auto it = handlers_.find(std::string(name));
  return it != handlers_.end() && (it->second.flags & CL_OP_F_PRIVILEGED);
}

void Operations::remove_owner(void* owner) {
  for (auto it = handlers_.begin(); it != handlers_.end();) {
    it = it->second.owner == owner ? handlers_.erase(it) : std::next(it);
  }
}

std::vector<std::string> Operations::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : handlers_) out.push_back(name);
  return out;
}

cl_status_t Operations::call(std::string_view name, std::string_view args_json, Done done) {
  static const Caller core;
  return call_as(core, name, args_json, std::move(done));
}

cl_status_t Operations::call_as(const Caller& caller, std::string_view name, std::string_view args_json, Done done) {
  auto it = handlers_.find(std::string(name));
  if (it == handlers_.end()) return CL_ENOENT;
  if (!done) return CL_EINVAL;
  if ((it->second.flags & CL_OP_F_PRIVILEGED) && !caller.may_call(name)) {
    log::warn("ops", "plugin '{}' called the privileged operation '{}' without a grant: refused", caller.plugin, name);
    return CL_EPERM;
  }
  json::Document args;
  if (!json::parse(args_json, &args, nullptr) || !args.IsObject()) return CL_EINVAL;
  Reply reply;
  reply.state_ = std::make_shared<Reply::State>();
  reply.state_->loop = &loop_;
  reply.state_->done = std::move(done);
  reply.state_->name = std::string(name);
  reply.state_->caller = caller;
  // The handler may be removed (plugin unload) while the call is queued: copy it.
  Handler handler = it->second.handler;
  try {
    handler(args_json, reply);
  } catch (const std::exception& e) {
    log::error("ops", "operation '{}' threw: {}", name, e.what());
    reply.error(CL_EIO, std::string("internal error: ") + e.what());
  } catch (...) {
    log::error("ops", "operation '{}' threw", name);
    reply.error(CL_EIO, "internal error");
  }
  return CL_OK;
}

}  // namespace cloudlet
