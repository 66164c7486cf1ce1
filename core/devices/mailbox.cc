#include "devices/mailbox.h"

#include <fmt/format.h>

#include "devices/devices.h"
#include "devices/op_util.h"
#include "json/json.h"
#include "loop/loop.h"
#include "ops/operations.h"

namespace cloudlet {

namespace {

constexpr const char* kMessages = "messages";
constexpr int64_t kKeepReadMessagesMs = 7LL * 24 * 3600 * 1000;
constexpr size_t kMaxMessageBytes = 64 * 1024;

}  // namespace

using devices::args_of;
using devices::printable;
using devices::put_durable;

void Mailbox::start() {
  ops_.add("message.post", [this](std::string_view args, Operations::Reply reply) { post(args, reply); });
  ops_.add("message.fetch", [this](std::string_view args, Operations::Reply reply) { fetch(args, reply); });
}

void Mailbox::post(std::string_view args, Operations::Reply reply) {
  json::Document a = args_of(args);
  auto dev = json::get_string(a, "device_id");
  auto svc = json::get_string(a, "service_id");
  auto msg = json::get_string(a, "message");
  if (!dev || !Devices::valid_device_id(*dev)) {
    return reply.error(CL_EINVAL, "device_id must be [A-Za-z0-9._:-]{1,128}");
  }
  if (!svc || !Devices::valid_service_id(*svc)) {
    return reply.error(CL_EINVAL, "service_id must be [A-Za-z0-9._-]{1,128}");
  }
  if (!msg || msg->empty() || !printable(*msg, 128)) return reply.error(CL_EINVAL, "message must be a short string");
  const json::Value* params = json::member(a, "params");
  if (params && !params->IsObject()) return reply.error(CL_EINVAL, "params must be an object of strings");
  if (params) {
    for (auto it = params->MemberBegin(); it != params->MemberEnd(); ++it) {
      if (!it->value.IsString()) return reply.error(CL_EINVAL, "params values must be strings (phones read them so)");
    }
  }
  const json::Value* secret = json::member(a, "secret");
  if (secret && !secret->IsBool()) return reply.error(CL_EINVAL, "secret must be true or false");
  if (args.size() > kMaxMessageBytes) return reply.error(CL_ETOOBIG, "message too large");
  // Keys sort by time, so a fetch returns messages in the order they were posted.
  std::string key = fmt::format("{}/{}/{:016x}{:04x}", *dev, *svc, wall_ms(), (seq_++) & 0xffff);
  std::string value = "{\"message\":";
  json::append_quoted(&value, *msg);
  value += ",\"params\":" + (params ? json::stringify(*params) : std::string("{}"));
  if (secret && secret->GetBool()) value += ",\"secret\":true";
  value += fmt::format(",\"read\":false,\"created_ms\":{}}}", wall_ms());
  std::string answer = "{\"id\":";
  json::append_quoted(&answer, key);
  put_durable(store_, kMessages, key, value, reply, answer + "}");
}

void Mailbox::fetch(std::string_view args, Operations::Reply reply) {
  json::Document a = args_of(args);
  auto dev = json::get_string(a, "device_id");
  auto svc = json::get_string(a, "service_id");
  bool secure = json::get_bool(a, "secure").value_or(false);
  if (!dev || !Devices::valid_device_id(*dev)) {
    return reply.error(CL_EINVAL, "device_id must be [A-Za-z0-9._:-]{1,128}");
  }
  if (!svc || !Devices::valid_service_id(*svc)) {
    return reply.error(CL_EINVAL, "service_id must be [A-Za-z0-9._-]{1,128}");
  }
  cl_status_t st = CL_OK;
  auto txn = store_.begin(&st);
  if (!txn) return reply.error(st, "the store is busy");
  int64_t now = wall_ms();
  std::string out = "{\"messages\":[";
  bool first = true;
  std::string prefix = std::string(*dev) + "/" + std::string(*svc) + "/";
  store_.scan(kMessages, prefix, [&](std::string_view key, std::string_view value) {
    json::Document m;
    if (!json::parse(value, &m, nullptr) || !m.IsObject()) return true;
    if (m["read"].GetBool()) {
      if (now - m["created_ms"].GetInt64() > kKeepReadMessagesMs) txn->del(kMessages, key);
      return true;
    }
    // A message with secrets waits for the device's authenticated channel; the open API only has an id.
    if (!secure && json::get_bool(m, "secret").value_or(false)) return true;
    if (!first) out += ",";
    first = false;
    out += "{\"message\":" + json::stringify(m["message"]) + ",\"params\":" + json::stringify(m["params"]) + "}";
    m["read"].SetBool(true);
    txn->put(kMessages, key, json::stringify(m));  // read and marked in one transaction
    return true;
  });
  out += "]}";
  // Answer as soon as the transaction is visible: waiting for durability would risk marking messages read
  // that the client never received.
  st = store_.commit(std::move(txn), {});
  if (st != CL_OK) return reply.error(st, "cannot mark messages read");
  reply(CL_OK, out);
}

size_t mailbox_delete_device(Store& store, Store::Txn& txn, const std::string& device_id) {
  std::vector<std::string> keys;
  store.scan(kMessages, device_id + "/", [&](std::string_view k, std::string_view) {
    keys.emplace_back(k);
    return true;
  });
  for (auto& k : keys) txn.del(kMessages, k);
  return keys.size();
}

}  // namespace cloudlet
