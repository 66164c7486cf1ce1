#include "jobs/jobs.h"

#include <fmt/format.h>

#include "events/bus.h"
#include "json/json.h"
#include "loop/loop.h"
#include "ops/operations.h"

namespace cloudlet {

Jobs::Jobs(Loop& loop, EventBus& events, Operations& ops) : loop_(loop), events_(events) {
  ops.add("job.get", [this](std::string_view args, Operations::Reply reply) {
    json::Document d;
    json::parse(args, &d, nullptr);
    auto id = json::get_string(d, "job_id");
    if (!id) return reply.error(CL_EINVAL, "job_id (string) is required");
    std::string j = describe(std::string(*id));
    if (j.empty()) return reply.error(CL_ENOENT, "no job " + std::string(*id));
    reply(CL_OK, j);
  });
  ops.add("job.list", [this](std::string_view, Operations::Reply reply) {
    std::string out = "{\"jobs\":[";
    bool first = true;
    for (const auto& [id, j] : jobs_) {
      if (!first) out += ",";
      first = false;
      out += to_json(j);
    }
    reply(CL_OK, out + "]}");
  });
  ops.add("job.cancel", [this](std::string_view args, Operations::Reply reply) {
    json::Document d;
    json::parse(args, &d, nullptr);
    auto id = json::get_string(d, "job_id");
    if (!id) return reply.error(CL_EINVAL, "job_id (string) is required");
    cl_status_t st = cancel(std::string(*id));
    if (st != CL_OK) return reply.error(st, st == CL_ENOENT ? "no such job" : "the job cannot be cancelled now");
    reply(CL_OK, "{}");
  });
}

std::string Jobs::create(std::string_view kind, std::string_view subject, std::function<void()> cancel) {
  Job j;
  j.id = fmt::format("job-{}", next_++);
  j.kind = kind;
  j.subject = subject;
  j.created_ms = loop_.now_ms();
  j.cancel = std::move(cancel);
  std::string id = j.id;
  publish("job.progress", jobs_.emplace(id, std::move(j)).first->second);
  return id;
}

void Jobs::progress(const std::string& id, double fraction, std::string_view message) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.state != "running") return;
  it->second.progress = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
  it->second.message = message;
  publish("job.progress", it->second);
}

void Jobs::finish(const std::string& id, cl_status_t status, std::string result_json) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.state != "running") return;
  Job& j = it->second;
  j.status = status;
  j.state = status == CL_OK ? "done" : (status == CL_ECANCELED ? "canceled" : "failed");
  j.progress = status == CL_OK ? 1.0 : j.progress;
  j.result = json::valid(result_json) && !result_json.empty() ? std::move(result_json) : json::error_object(result_json);
  j.finished_ms = loop_.now_ms();
  j.cancel = nullptr;
  std::vector<Done> waiters;
  waiters.swap(j.waiters);
  publish("job.done", j);
  cl_status_t st = j.status;
  std::string result = j.result;
  for (auto& w : waiters) {
    loop_.defer([w = std::move(w), st, result] { w(st, result); });
  }
  finished_order_.push_back(id);
  while (finished_order_.size() > kKeepFinished) {
    jobs_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

bool Jobs::wait(const std::string& id, Done done) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  if (it->second.state != "running") {
    cl_status_t st = it->second.status;
    std::string result = it->second.result;
    loop_.defer([done = std::move(done), st, result] { done(st, result); });
    return true;
  }
  it->second.waiters.push_back(std::move(done));
  return true;
}

cl_status_t Jobs::cancel(const std::string& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return CL_ENOENT;
  if (it->second.state != "running") return CL_ESTATE;
  if (!it->second.cancel) return CL_ENOTSUP;
  if (!it->second.cancel_requested) {
    it->second.cancel_requested = true;
    auto fn = it->second.cancel;
    loop_.defer([fn] { fn(); });
  }
  return CL_OK;
}

std::string Jobs::describe(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? std::string() : to_json(it->second);
}

size_t Jobs::running() const {
  size_t n = 0;
  for (const auto& [id, j] : jobs_) n += j.state == "running";
  return n;
}

std::string Jobs::to_json(const Job& j) const {
  std::string out = "{\"job_id\":";
  json::append_quoted(&out, j.id);
  out += ",\"kind\":";
  json::append_quoted(&out, j.kind);
  out += ",\"subject\":";
  json::append_quoted(&out, j.subject);
  out += ",\"state\":";
  json::append_quoted(&out, j.state);
  out += fmt::format(",\"progress\":{:.3f},\"message\":", j.progress);
  json::append_quoted(&out, j.message);
  out += fmt::format(",\"status\":{},\"created_ms\":{},\"finished_ms\":{},\"result\":{}}}", j.status, j.created_ms,
                     j.finished_ms, j.result);
  return out;
}

void Jobs::publish(const char* topic, const Job& j) { events_.publish(topic, to_json(j)); }

}  // namespace cloudlet
