#include "virt/context.h"

#include "json/json.h"
#include "log/log.h"

namespace cloudlet::virt {

std::string error_json(std::string_view message) { return json::error_object(message); }

std::string job_begin(VirtContext& ctx, std::string_view kind, std::string_view subject, bool wait,
                      Operations::Reply reply, std::function<void()> cancel) {
  std::string id = ctx.jobs.create(kind, subject, std::move(cancel));
  if (wait) {
    ctx.jobs.wait(id, [reply](cl_status_t st, const std::string& result) { reply(st, result); });
  } else {
    std::string out = "{\"job_id\":";
    json::append_quoted(&out, id);
    reply(CL_OK, out + "}");
  }
  return id;
}

void commit_one(VirtContext& ctx, const char* collection, const std::string& key, const std::string& value,
                std::function<void(cl_status_t)> done) {
  cl_status_t st = CL_OK;
  auto txn = ctx.store.begin(&st);
  if (txn) st = value.empty() ? txn->del(collection, key) : txn->put(collection, key, value);
  if (txn && st == CL_OK) st = ctx.store.commit(std::move(txn), done);
  if (st != CL_OK) {
    log::error("virt", "cannot commit {}/{}: status {}", collection, key, st);
    ctx.loop.defer([done = std::move(done), st] { done(st); });
  }
}

}  // namespace cloudlet::virt
