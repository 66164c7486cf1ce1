#include "virt/demo.h"

#include <sys/stat.h>

#include <memory>

#include "log/log.h"
#include "loop/loop.h"
#include "virt/files.h"
#include "virt/services.h"

namespace cloudlet::virt {

std::string demo_guest_dir_default() {
  std::string build = std::string(CLOUDLET_BUILD_DIR) + "/demo-guest";
  struct stat st;
  if (stat((build + "/vmlinuz").c_str(), &st) == 0) return build;
  return "/usr/share/cloudletd/demo-guest";
}

void demo_register(Loop& loop, Services& services, const std::string& guest_dir) {
  if (services.find(kDemoServiceId)) {
    log::info("virt", "demo service {} is registered", kDemoServiceId);
    return;
  }
  struct Found {
    std::string error, cmdline;
  };
  auto found = std::make_shared<Found>();
  loop.queue_work(
      [guest_dir, found] {
        for (const char* f : {"vmlinuz", "initrd.img"}) {
          if (!files_exists(guest_dir + "/" + f)) {
            found->error = guest_dir + "/" + f + " is missing";
            return;
          }
        }
        std::string cmdline;
        if (auto e = files_read(guest_dir + "/cmdline", &cmdline, 4096); !e.ok()) {
          found->error = e.message();
          return;
        }
        while (!cmdline.empty() && (cmdline.back() == '\n' || cmdline.back() == ' ')) cmdline.pop_back();
        found->cmdline = cmdline;
      },
      [&services, guest_dir, found](bool) {
        if (services.find(kDemoServiceId)) return;
        if (!found->error.empty()) {
          log::warn("virt", "no demo guest ({}): build it with `cmake --build build --target demo-guest` (make build "
                    "does) or set virt.demo_dir", found->error);
          return;
        }
        ServiceDef def;
        def.service_id = kDemoServiceId;
        def.description = "Demo Service VM: a tiny Linux guest (Debian cloud kernel, busybox) serving a page on port "
                          "8080 that shows its boot id and uptime";
        def.version = "1.0";
        def.tags = {"demo", "http"};
        def.port = 8080;
        def.num_users = 4;
        def.min_memory = 128;
        def.ideal_memory = 256;
        Services::Source src;
        src.kernel = guest_dir + "/vmlinuz";
        src.initrd = guest_dir + "/initrd.img";
        src.cmdline = found->cmdline;
        src.blank_disk_mib = 64;
        log::info("virt", "demo service {}: making its saved memory state from {} (first run only; the server "
                  "serves meanwhile)", kDemoServiceId, guest_dir);
        services.create(std::move(def), std::move(src), false, [](cl_status_t st, const std::string& result) {
          if (st == CL_OK) {
            log::info("virt", "demo service {} is ready: start it with the commands in README.md (Service VMs)",
                      kDemoServiceId);
          } else {
            log::error("virt", "demo service {} could not be made: {}", kDemoServiceId, result);
          }
        });
      });
}

}  // namespace cloudlet::virt
