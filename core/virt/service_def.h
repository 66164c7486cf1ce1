// A service: what a phone asks for by service_id, and the VM image it is started from.
//
// Stored as one document in the store's "services" collection (and, for people and exports, as service.json in
// the service's directory). The image files live in <data_dir>/services/<id>/:
//   vmlinuz, initrd.img, cmdline      boot files of direct-kernel guests (optional)
//   image-<N>/disk.qcow2               the disk every instance overlays (read-only, 0444)
//   image-<N>/state.sav                the saved memory state (virDomainSave; read-only)
//   image-<N>/domain.xml               the domain XML of that state (for cold boots when a restore fails)
//   image-<N>/console.log              the console of the boot that made the state
//   service.json                       the metadata
// A refresh makes image-<N+1> next to the current one and switches the record to it in one store commit, so a
// crash at any moment leaves the old image or the new one in use, never a mix.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "json/json.h"
#include "system/status.h"

namespace cloudlet::virt {

struct ServiceDef {
  std::string service_id, description, version;
  std::vector<std::string> tags;
  uint16_t port = 0;           // the service's port inside the guest
  int64_t num_users = 0;       // clients that may share one instance; 0 = not shared
  int64_t min_memory = 0;      // MiB; 0 = not given
  int64_t ideal_memory = 0;    // MiB; 0 = not given
  std::string image;           // current image directory ("image-1"); "" = no saved state
  bool kernel_boot = false;    // direct kernel boot (vmlinuz in the service directory)
  bool has_initrd = false;
  std::string cmdline;
  int64_t created_ms = 0, refreshed_ms = 0;  // wall clock
};

constexpr size_t kMaxServiceId = 128;
constexpr size_t kMaxDescription = 4096;
constexpr size_t kMaxVersion = 128;
constexpr size_t kMaxTags = 64;
constexpr size_t kMaxTag = 64;
constexpr int64_t kMaxUsers = 100000;
constexpr int64_t kMaxMemoryMib = 1 << 20;
constexpr int64_t kDefaultMemoryMib = 256;

// [A-Za-z0-9._-]{1,128}, and not "." or ".." (it names a directory).
bool service_id_valid(std::string_view id);

// Memory for a domain booted from scratch: ideal_memory, else min_memory, else 256 MiB.
int64_t service_memory_mib(const ServiceDef& s);

// Applies the metadata members present in args (description, version, tags, num_users, min_memory,
// ideal_memory; and port when allow_port) to *def. CL_EINVAL with a sentence naming the bad member, success if all
// are valid (then *def is updated; on error it is unchanged).
Status service_apply_metadata(const json::Value& args, ServiceDef* def, bool allow_port);

// The store document (also written as service.json).
std::string service_record(const ServiceDef& s);
// Reads a store document; CL_EINVAL when it is not a valid record.
Status service_parse_record(std::string_view json, ServiceDef* out);

// The operations' Service object: {"service_id", "description", "version", "tags", "port", "num_users",
// "min_memory", "ideal_memory", "state_saved", "instances"}.
std::string service_json(const ServiceDef& s, bool state_saved, int64_t instances);

// A non-negative integer member given as a JSON integer or a string of digits (forms send strings).
// CL_EINVAL (naming the key) if present but not such a value; absent leaves *out alone.
Status json_int_member(const json::Value& obj, const char* key, int64_t min, int64_t max, int64_t* out, bool* present);

}  // namespace cloudlet::virt
