#include "commands.h"

#include <memory>
#include <vector>

#include "json/json.h"
#include "plugin.h"
#include "wire.h"

namespace cloudlet::offload {

Answer Answer::json(std::string body) {
  Answer a;
  a.body = std::move(body);
  return a;
}

Answer Answer::error(uint32_t status, std::string_view message) {
  Answer a;
  a.status = status;
  a.content_type = "text/plain; charset=utf-8";
  a.body = error_body(status, message);
  return a;
}

Answer Answer::fixed_error(uint32_t status, std::string_view message) {
  Answer a = error(status, message);
  a.fixed_text = true;
  return a;
}

namespace {

constexpr size_t kMaxServiceId = 128;
constexpr size_t kMaxInstanceId = 64;
constexpr size_t kMaxAppId = 128;
constexpr size_t kMaxDeviceId = 128;

// Operation arguments: a JSON object written field by field.
class Args {
 public:
  Args() : w_(buf_) { w_.StartObject(); }
  Args& str(const char* key, std::string_view v) {
    w_.Key(key);
    w_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    return *this;
  }
  Args& boolean(const char* key, bool v) {
    w_.Key(key);
    w_.Bool(v);
    return *this;
  }
  Args& strings(const char* key, const std::vector<std::string>& v) {
    w_.Key(key);
    w_.StartArray();
    for (const auto& s : v) w_.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    w_.EndArray();
    return *this;
  }
  std::string done() {
    w_.EndObject();
    return std::string(buf_.GetString(), buf_.GetSize());
  }

 private:
  rapidjson::StringBuffer buf_;
  rapidjson::Writer<rapidjson::StringBuffer> w_;
};

// An operation failed: its status and message, or 503 when nothing provides it.
Answer op_failed(const char* op, cl_status_t st, std::string_view result, bool missing) {
  if (missing) return Answer::fixed_error(503, std::string(op) + " is not available on this cloudlet");
  return Answer::error(http_status(st), op_error_message(result, st));
}

Answer bad_result(const char* op) {
  return Answer::fixed_error(500, std::string(op) + " returned an unexpected result");
}

// A required identifier parameter: absent -> pycloud's "Must provide ..." (400); malformed -> 400 naming it.
const std::string* require_id(const Call& c, const char* name, size_t max, const char* missing_text,
                              const AnswerDone& done) {
  const std::string* v = c.params.get(name);
  if (!v || v->empty()) {
    done(Answer::fixed_error(400, missing_text));
    return nullptr;
  }
  if (!valid_id(*v, max)) {
    done(Answer::error(400, std::string("Invalid ") + name + " '" + quote_safe(*v) +
                                "': expected letters, digits, '.', '_' or '-' (at most " + std::to_string(max) + ")"));
    return nullptr;
  }
  return v;
}

// Stops an instance on behalf of a request whose client never saw it (or whose device lost its right to it).
void stop_instance(Plugin& p, const std::string& id, const std::string& device_id, const char* why) {
  Args a;
  a.str("id", id);
  if (!device_id.empty()) a.str("device_id", device_id);
  p.log(CL_LOG_INFO, "stopping instance " + id + ": " + why);
  p.call("instance.stop", a.done(), [&p, id](cl_status_t st, std::string_view result, bool) {
    if (st != CL_OK && st != CL_ENOENT) {
      p.log(CL_LOG_WARN, "could not stop instance " + id + ": " + op_error_message(result, st));
    }
  });
}

std::string state_of(std::string_view device_auth_json) {
  json::Document d;
  if (!json::parse(device_auth_json, &d, nullptr)) return "";
  return std::string(json::get_string(d, "state").value_or(""));
}

void run_services(Plugin& p, Call, AnswerDone done) {
  services_fetch(
      p, [done](cl_status_t st, const std::string&, const std::string& body, const std::string& error, bool missing) {
        if (st != CL_OK) return done(Answer::error(missing ? 503 : http_status(st), error));
        done(Answer::json(body));
      });
}

void run_service_get(Plugin& p, Call c, AnswerDone done) {
  const std::string* sid = require_id(c, "serviceId", kMaxServiceId, "Must provide service id", done);
  if (!sid) return;
  std::string id = *sid;
  p.call("service.get", Args().str("service_id", id).done(),
         [id, done](cl_status_t st, std::string_view r, bool missing) {
           if (st == CL_ENOENT && !missing) return done(Answer::error(404, "Service for " + id + " not found"));
           if (st != CL_OK) return done(op_failed("service.get", st, r, missing));
           std::string body;
           if (!service_object(r, &body)) return done(bad_result("service.get"));
           done(Answer::json(std::move(body)));
         });
}

// After an authenticated start: tie the instance to the device (the core stops it when the device's
// authorization ends or is revoked), then check the device is still authorized, since its window may have ended
// while the instance was starting (its end-of-window sweep would have missed this instance).
void attach_to_device(Plugin& p, std::string id, std::string body, std::string device, AnswerDone done) {
  std::string args = Args().str("device_id", device).str("instance_id", id).done();
  p.call("device.attach", args, [&p, id, body, device, done](cl_status_t st, std::string_view r, bool missing) {
    if (st != CL_OK) {
      stop_instance(p, id, device, "it could not be tied to its device");
      return done(st == CL_ENOENT && !missing
                      ? Answer::fixed_error(401, "Device with id " + device + " is not paired to this cloudlet")
                      : op_failed("device.attach", st, r, missing));
    }
    p.call("device.auth", Args().str("device_id", device).done(),
           [&p, id, body, device, done](cl_status_t st2, std::string_view r2, bool) {
             std::string state = st2 == CL_OK ? state_of(r2) : "";
             if (state != "ok") {
               stop_instance(p, id, device, "its device is no longer authorized");
               if (state == "revoked")
                 return done(Answer::fixed_error(403, "Authorization has been revoked for device with id " + device));
               if (state == "expired")
                 return done(Answer::fixed_error(403, "Authorization has expired for device with id " + device));
               return done(Answer::fixed_error(401, "Device with id " + device + " is not paired to this cloudlet"));
             }
             Answer a = Answer::json(body);
             a.undelivered = [&p, id, device] { stop_instance(p, id, device, "its client left before the reply"); };
             done(std::move(a));
           });
  });
}

void run_start(Plugin& p, Call c, AnswerDone done) {
  const std::string* sid = require_id(c, "serviceId", kMaxServiceId, "Must provide service id", done);
  if (!sid) return;
  std::string service = *sid;
  Args a;
  a.str("service_id", service).boolean("join", truthy(c.params.get("join"))).str("ip_address", c.local_ip);
  a.boolean("wait_ready", true);
  std::string device = c.authenticated ? c.device_id : std::string();
  if (!device.empty()) a.str("device_id", device);
  std::string ip = c.local_ip;
  p.call("instance.start", a.done(), [&p, service, device, ip, done](cl_status_t st, std::string_view r, bool missing) {
    // pycloud answers an unknown service with 400, and phones are used to it.
    if (st == CL_ENOENT && !missing) return done(Answer::error(400, "Service vm for " + service + " not found"));
    if (st != CL_OK) return done(op_failed("instance.start", st, r, missing));
    std::string body, id;
    if (!start_body(r, ip, &body, &id)) return done(bad_result("instance.start"));
    if (!device.empty()) return attach_to_device(p, id, body, device, done);
    Answer ans = Answer::json(std::move(body));
    ans.undelivered = [&p, id] { stop_instance(p, id, "", "its client left before the reply"); };
    done(std::move(ans));
  });
}

void run_stop(Plugin& p, Call c, AnswerDone done) {
  const std::string* iid = require_id(c, "instanceId", kMaxInstanceId, "Must provide instance id", done);
  if (!iid) return;
  std::string id = *iid;
  Args a;
  a.str("id", id);
  if (c.authenticated) a.str("device_id", c.device_id);
  p.call("instance.stop", a.done(), [id, done](cl_status_t st, std::string_view r, bool missing) {
    // pycloud answers 404 for any id it does not know, malformed ones included (the core says CL_EINVAL).
    if ((st == CL_ENOENT || st == CL_EINVAL) && !missing)
      return done(Answer::error(404, "Service vm for " + id + " not found"));
    if (st != CL_OK) return done(op_failed("instance.stop", st, r, missing));
    done(Answer::json("{}"));
  });
}

std::string app_list_args(const Call& c) {
  Args a;
  const std::string* os = c.params.get("osName");
  const std::string* ver = c.params.get("osVersion");
  const std::string* tags = c.params.get("tags");
  if (os && !os->empty()) a.str("os_name", *os);
  if (ver && !ver->empty()) a.str("os_version", *ver);
  if (tags) {
    std::vector<std::string> list = split_tags(*tags);
    if (!list.empty()) a.strings("tags", list);
  }
  return a.done();
}

// app.list -> the apps array; an absent app store means no apps, not an error.
void list_apps(Plugin& p, const std::string& args, std::function<void(std::string array, Answer error)> next) {
  p.call("app.list", args, [next](cl_status_t st, std::string_view r, bool missing) {
    if (missing) return next("[]", Answer());
    if (st != CL_OK) return next("", op_failed("app.list", st, r, false));
    std::string array;
    if (!apps_array(r, &array)) return next("", bad_result("app.list"));
    next(std::move(array), Answer());
  });
}

void run_apps(Plugin& p, Call c, AnswerDone done) {
  list_apps(p, app_list_args(c), [done](std::string array, Answer error) {
    if (array.empty()) return done(std::move(error));
    done(Answer::json("{\"apps\":" + array + "}"));
  });
}

void run_app_get(Plugin& p, Call c, AnswerDone done) {
  const std::string* aid = require_id(c, "appId", kMaxAppId, "Must provide app id", done);
  if (!aid) return;
  std::string id = *aid;
  p.call("app.get", Args().str("app_id", id).done(), [id, done](cl_status_t st, std::string_view r, bool missing) {
    if (st == CL_ENOENT || missing) return done(Answer::error(404, "App " + id + " not found"));
    if (st != CL_OK) return done(op_failed("app.get", st, r, false));
    Answer a;
    if (!app_file(r, &a.file_path, &a.file_name)) return done(bad_result("app.get"));
    a.content_type = "application/vnd.android.package-archive";
    done(std::move(a));
  });
}

// /system: system.info, then the services and apps arrays when asked for, then one body.
struct SystemJob {
  std::string info;
  std::unique_ptr<std::string> services, apps;
  bool want_services = false, want_apps = false;
  AnswerDone done;
};

void system_finish(const std::shared_ptr<SystemJob>& job) {
  std::string body;
  if (!system_body(job->info, job->services.get(), job->apps.get(), &body)) return job->done(bad_result("system.info"));
  job->done(Answer::json(std::move(body)));
}

void system_apps(Plugin& p, const std::shared_ptr<SystemJob>& job) {
  if (!job->want_apps) return system_finish(job);
  list_apps(p, "{}", [job](std::string array, Answer error) {
    if (array.empty()) return job->done(std::move(error));
    job->apps = std::make_unique<std::string>(std::move(array));
    system_finish(job);
  });
}

void system_services(Plugin& p, const std::shared_ptr<SystemJob>& job) {
  if (!job->want_services) return system_apps(p, job);
  services_fetch(p, [&p, job](cl_status_t st, const std::string& array, const std::string&, const std::string& error,
                              bool missing) {
    if (st != CL_OK) return job->done(Answer::error(missing ? 503 : http_status(st), error));
    job->services = std::make_unique<std::string>(array);
    system_apps(p, job);
  });
}

void run_system(Plugin& p, Call c, AnswerDone done) {
  auto job = std::make_shared<SystemJob>();
  job->want_services = truthy(c.params.get("services"));
  job->want_apps = truthy(c.params.get("apps"));
  job->done = std::move(done);
  p.call("system.info", "{}", [&p, job](cl_status_t st, std::string_view r, bool missing) {
    if (st != CL_OK) return job->done(op_failed("system.info", st, r, missing));
    job->info = std::string(r);
    system_services(p, job);
  });
}

void run_messages(Plugin& p, Call c, AnswerDone done) {
  if (c.device_id.empty()) return done(Answer::fixed_error(400, "Must provide the X-Device-ID header"));
  if (!valid_id(c.device_id, kMaxDeviceId, ":")) {
    return done(Answer::error(400, "Invalid X-Device-ID '" + quote_safe(c.device_id) + "'"));
  }
  const std::string* sid = require_id(c, "serviceId", kMaxServiceId, "Must provide service id", done);
  if (!sid) return;
  std::string device = c.device_id, service = *sid;
  // Through the tunnel the device proved its key: only then are messages with secrets handed out. On the open
  // route anyone can send any device's id.
  std::string args =
      Args().str("device_id", device).str("service_id", service).boolean("secure", c.authenticated).done();
  p.call("message.fetch", args, [device, service, done](cl_status_t st, std::string_view r, bool missing) {
    if (st != CL_OK) return done(op_failed("message.fetch", st, r, missing));
    std::string body;
    if (!messages_body(r, device, service, &body)) return done(bad_result("message.fetch"));
    done(Answer::json(std::move(body)));
  });
}

}  // namespace

void command_run(Plugin& p, Call call, AnswerDone done) {
  switch (call.command) {
    case Command::services:
      return run_services(p, std::move(call), std::move(done));
    case Command::service_get:
      return run_service_get(p, std::move(call), std::move(done));
    case Command::start:
      return run_start(p, std::move(call), std::move(done));
    case Command::stop:
      return run_stop(p, std::move(call), std::move(done));
    case Command::apps:
      return run_apps(p, std::move(call), std::move(done));
    case Command::app_get:
      return run_app_get(p, std::move(call), std::move(done));
    case Command::system:
      return run_system(p, std::move(call), std::move(done));
    case Command::messages:
      return run_messages(p, std::move(call), std::move(done));
  }
  done(Answer::fixed_error(404, "Command not found"));
}

}  // namespace cloudlet::offload
