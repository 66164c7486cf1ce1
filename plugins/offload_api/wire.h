// The JSON the phones read, built from the core operations' results. Field names and types are the contract of
// ../shared/reference/mobile-clients.md section 1: strings where client-lib calls getString, numbers where it
// calls getInt/getDouble/getLong, null where pycloud sent null. Every shaper coerces instead of trusting the
// operation's types, and returns false only when the result is not the object it should be.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cloudlet_plugin.h"

namespace cloudlet::offload {

// service.list result -> the services array "[{_id, service_id, description, version, tags}, ...]".
bool services_array(std::string_view service_list_json, std::string* out);
// service.get result -> one service object with the same five fields.
bool service_object(std::string_view service_json, std::string* out);

// instance.start result -> {_id, service_id, port, ssh_port, ip_address, vnc_address, fqdn, running}.
// ip_address is the address this client used to reach the cloudlet (the instance's port is forwarded there).
bool start_body(std::string_view instance_json, std::string_view ip_address, std::string* out,
                std::string* instance_id);

// app.list result -> the apps array "[{_id, name, package_name, tags, md5sum, min_android_version, service_id,
// app_version, description}, ...]".
bool apps_array(std::string_view app_list_json, std::string* out);

// app.get result -> the APK to send: an absolute path and a download name.
bool app_file(std::string_view app_json, std::string* path, std::string* file_name);

// system.info result (+ optional services and apps arrays) -> {cpu_info, memory_info[, services][, apps]}.
bool system_body(std::string_view system_json, const std::string* services, const std::string* apps, std::string* out);

// message.fetch result -> {"messages": [{device_id, service_id, message, params: {k: str}}]}.
bool messages_body(std::string_view fetch_json, std::string_view device_id, std::string_view service_id,
                   std::string* out);

// The HTTP status for an operation error.
uint32_t http_status(cl_status_t status);
// The "error" message of an operation's error result (or a generic one).
std::string op_error_message(std::string_view result_json, cl_status_t status);

// A plain-text error body. 401 and 403 put the message after a '#' (client-lib keeps only what follows the
// first '#'); other statuses carry the message alone (client-lib shows the whole body).
std::string error_body(uint32_t status, std::string_view message);

}  // namespace cloudlet::offload
