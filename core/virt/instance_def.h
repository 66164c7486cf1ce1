// An instance: one running VM of a service, restored from the service's saved memory state.
//
// Its id is the libvirt domain's UUID; its domain name is "<prefix><id>" where the prefix ("cloudlet-<tag>-",
// the tag being random per data directory) tells this server's domains from anyone else's. Files live in
// <data_dir>/instances/<id>/ (disk.qcow2: the overlay on the service's disk; console.log). Stored in the store's
// "instances" collection once it runs; in-flight states (starting, stopping) exist only in memory.
//
// Users. A shared instance (started with join on a service with num_users > 0) counts its users; each start that
// joined it added one share, tagged with the caller's device_id when an authenticated front end gave one.
// instance.stop removes one share (instance_remove_user) and stops the VM when none is left.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cloudlet::virt {

struct InstanceUser {
  std::string device_id;  // "" = an anonymous share (the plain API has no identities)
  int64_t since_ms = 0;
};

struct InstanceDef {
  std::string id, service_id, name;
  uint16_t port = 0, ssh_port = 0;  // host ports forwarded to the service port and to 22
  std::string ip_address;           // the address the first client used (reported when a call gives none)
  int vnc_port = -1;                // -1 = none
  std::string state = "starting";   // starting | running | paused | stopping
  bool memory_restored = false;
  bool shared = false;
  std::vector<InstanceUser> users;
  int64_t started_ms = 0;           // wall clock
};

// The store document.
std::string instance_record(const InstanceDef& i);
std::string instance_parse_record(std::string_view json, InstanceDef* out);

// The operations' Instance object. ip_address: what to report ("" = the stored one).
std::string instance_json(const InstanceDef& i, const std::string& ip_address = {});

// Removes one share for a leaving user: the device's own share when device_id is given and holds one, else an
// anonymous share, else (no device_id given) the newest share. Returns false, changing nothing, when device_id is
// given and neither it nor an anonymous user holds a share (a device cannot end another device's use).
bool instance_remove_user(InstanceDef* i, const std::string& device_id);

// Whether a join may add one more user.
bool instance_has_room(const InstanceDef& i, int64_t num_users);

}  // namespace cloudlet::virt
