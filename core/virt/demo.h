// The demo service `demo.httpd` (cloudletd --demo): the tiny real guest the build makes (core/virt/demo: Debian's
// cloud kernel and a busybox initramfs serving a page on port 8080) registered as a shared service, its saved
// memory state made on the first run in the background (a job; the server serves meanwhile).
#pragma once

#include <string>

namespace cloudlet {
class Loop;
}

namespace cloudlet::virt {

class Services;

constexpr const char* kDemoServiceId = "demo.httpd";

// Where the demo guest is looked for when virt.demo_dir is not set: <build dir>/demo-guest when this binary was
// built in a tree that has one, else /usr/share/cloudletd/demo-guest.
std::string demo_guest_dir_default();

// Registers demo.httpd from guest_dir unless it exists. Logs what happens (including how to build the guest when
// it is missing). Loop thread; file checks run on a worker.
void demo_register(Loop& loop, Services& services, const std::string& guest_dir);

}  // namespace cloudlet::virt
