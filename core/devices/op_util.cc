#include "devices/op_util.h"

#include "store/store.h"

namespace cloudlet::devices {

json::Document args_of(std::string_view args) {
  json::Document d;
  json::parse(args, &d, nullptr);
  return d;
}

bool printable(std::string_view s, size_t max) {
  if (s.size() > max) return false;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

void put_durable(Store& store, std::string_view coll, std::string_view key, const std::string& value,
                 Operations::Reply reply, std::string answer) {
  cl_status_t st = CL_OK;
  auto txn = store.begin(&st);
  if (!txn) return reply.error(st, "the store is busy");
  st = txn->put(coll, key, value);
  if (st != CL_OK) return reply.error(st, "cannot store the device");
  st = store.commit(std::move(txn), [reply, answer = std::move(answer)](cl_status_t s) {
    if (s != CL_OK) return reply.error(s, "the store could not write the change");
    reply(CL_OK, answer);
  });
  if (st != CL_OK) reply.error(st, "cannot commit");
}

}  // namespace cloudlet::devices
