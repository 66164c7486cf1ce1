// The embedded driver's qemu.conf: each root gets its own VNC port block (core/virt/embed.h).
#include "virt/embed.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace cloudlet::virt;

TEST(Embed, VncBlockIsStableAndInRange) {
  EmbedVncBlock a = embed_vnc_block("/var/lib/cloudletd/libvirt");
  EmbedVncBlock again = embed_vnc_block("/var/lib/cloudletd/libvirt");
  EXPECT_EQ(a.min, again.min);
  EXPECT_EQ(a.max - a.min + 1, kVncBlockSize);
  EXPECT_GE(a.min, kVncPortBase);
  EXPECT_LE(a.max, kVncPortBase + kVncBlocks * kVncBlockSize - 1);
  EXPECT_LT(a.max, 20000);  // below the forwarded ports' default range
  EXPECT_EQ((a.min - kVncPortBase) % kVncBlockSize, 0);
}

TEST(Embed, RootsSpreadOverBlocks) {
  // Test roots differ by a suffix (mkdtemp): they must not all land in a few blocks.
  std::set<int> blocks;
  for (int i = 0; i < 200; i++) blocks.insert(embed_vnc_block("/tmp/cl-virt-" + std::to_string(i)).min);
  EXPECT_GE(blocks.size(), 40u);
}

TEST(Embed, QemuConfCarriesTheBlock) {
  EmbedVncBlock b = embed_vnc_block("/data/libvirt");
  std::string conf = embed_qemu_conf("/data/libvirt");
  EXPECT_NE(conf.find("remote_display_port_min = " + std::to_string(b.min) + "\n"), std::string::npos) << conf;
  EXPECT_NE(conf.find("remote_display_port_max = " + std::to_string(b.max) + "\n"), std::string::npos) << conf;
  EXPECT_NE(conf.find("security_driver = \"none\"\n"), std::string::npos);
}
