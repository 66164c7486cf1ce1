#include "answer.h"

#include <openssl/crypto.h>

#include <cstdio>
#include <memory>

#include "plugin.h"
#include "wire.h"

namespace cloudlet::offload {

namespace {

// A download name that is safe inside a quoted header parameter.
std::string header_safe_name(std::string_view name) {
  std::string out;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    out.push_back(ok ? c : '_');
    if (out.size() >= 128) break;
  }
  return out.empty() ? std::string("app.apk") : out;
}

void send(Plugin& p, cl_request_t* req, const Answer& a) {
  cl_status_t st = cl::Request(p.host, req).send(a.status, a.content_type, a.body);
  if (st == CL_ECLOSING && a.undelivered) a.undelivered();
}

// Reading and encrypting an APK for the tunnel, off the loop.
struct SealFile {
  Plugin* p;
  std::shared_ptr<bool> alive;
  cl_request_t* req;
  std::string path;
  TunnelKey key;
  TunnelIv iv;
  std::string sealed;
  uint32_t status = 200;
  std::string error;
};

void seal_file_work(void* ud) {
  auto* job = static_cast<SealFile*>(ud);
  FILE* f = fopen(job->path.c_str(), "rb");
  if (!f) {
    job->status = 404;
    job->error = "The package file of this app is missing";
    return;
  }
  std::string data;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    data.append(buf, n);
    if (data.size() > kMaxSealedFileBytes) break;
  }
  bool failed = ferror(f) != 0;
  fclose(f);
  if (failed) {
    job->status = 500;
    job->error = "The package file of this app could not be read";
  } else if (data.size() > kMaxSealedFileBytes) {
    job->status = 413;
    job->error = "The package is too large to send through the encrypted API";
  } else {
    job->sealed = tunnel_seal(data, job->key, job->iv);
  }
  OPENSSL_cleanse(job->key.data(), job->key.size());
}

void seal_file_done(void* ud, cl_status_t status) {
  std::unique_ptr<SealFile> job(static_cast<SealFile*>(ud));
  if (!*job->alive) return;  // the plugin was unloaded: the request is no longer ours
  Answer a;
  if (status != CL_OK) {
    a = Answer::error(503, "The server is shutting down");
  } else if (job->status != 200) {
    a = Answer::error(job->status, job->error);
  } else if (job->sealed.empty()) {
    a = Answer::error(500, "The package could not be encrypted");
  } else {
    a.content_type = "text/plain";
    a.body = std::move(job->sealed);
  }
  send(*job->p, job->req, a);
}

}  // namespace

const char* sealed_error_text(uint32_t status) {
  switch (status) {
    case 400:
      return "The command has a missing or invalid parameter";
    case 401:
      return "The device is not paired to this cloudlet";
    case 403:
      return "The command is not allowed for this device";
    case 404:
      return "What the command names was not found";
    case 409:
      return "The command conflicts with the current state";
    case 413:
      return "The command asks for too much";
    case 501:
      return "The command is not supported by this cloudlet";
    case 503:
      return "The command cannot be carried out now";
    case 504:
      return "The command timed out";
    default:
      return "The command failed";
  }
}

void answer_send(Plugin& p, cl_request_t* req, Answer a) {
  if (!a.file_path.empty()) {
    std::string disposition = "attachment; filename=\"" + header_safe_name(a.file_name) + "\"";
    cl::Request r(p.host, req);
    r.add_header("Content-Disposition", disposition);
    cl_status_t st = r.file(a.file_path, a.content_type);
    if (st != CL_ENOENT && st != CL_EPERM) return;  // sent (or the client is gone): the request is finished
    p.log(CL_LOG_WARN, "app package " + a.file_path + " cannot be sent (" + p.host.strerror(st) + ")");
    a = Answer::error(404, "The package file of this app is missing");
  }
  send(p, req, a);
}

void answer_send_sealed(Plugin& p, cl_request_t* req, Answer a, const TunnelKey& key) {
  if (a.status != 200) {
    // The command was decrypted: an error that may quote it (a parameter, an operation's message about one)
    // would hand its plaintext to whoever forged it by flipping IV bits of a captured command.
    if (!a.fixed_text) a.body = error_body(a.status, sealed_error_text(a.status));
    return send(p, req, a);
  }
  TunnelIv iv;
  if (!tunnel_random_iv(&iv)) return send(p, req, Answer::error(500, "No randomness available to encrypt the reply"));
  if (!a.file_path.empty()) {
    auto* job = new SealFile{&p, p.alive, req, a.file_path, key, iv, {}, 200, {}};
    if (p.host.api()->work_queue(p.host.handle(), seal_file_work, seal_file_done, job, nullptr) != CL_OK) {
      delete job;
      send(p, req, Answer::error(503, "The server is shutting down"));
    }
    return;
  }
  // JSON replies are small: encrypting them takes microseconds, so it stays on the loop.
  std::string sealed = tunnel_seal(a.body, key, iv);
  if (sealed.empty()) return send(p, req, Answer::error(500, "The reply could not be encrypted"));
  a.body = std::move(sealed);
  a.content_type = "text/plain";
  send(p, req, a);
}

}  // namespace cloudlet::offload
