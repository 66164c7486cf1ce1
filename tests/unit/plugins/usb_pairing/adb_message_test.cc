// Wire-level pieces of the ADB library: headers, checksums, argument checks, quoting.
#include <gtest/gtest.h>

#include "adb/connection.h"
#include "adb/message.h"
#include "adb/tcp_transport.h"

using namespace cloudlet::adb;

TEST(AdbMessage, CommandsAreTheirLetters) {
  EXPECT_EQ(command_name(kCmdCnxn), "CNXN");
  EXPECT_EQ(command_name(kCmdAuth), "AUTH");
  EXPECT_EQ(command_name(kCmdOpen), "OPEN");
  EXPECT_EQ(command_name(kCmdOkay), "OKAY");
  EXPECT_EQ(command_name(kCmdClse), "CLSE");
  EXPECT_EQ(command_name(kCmdWrte), "WRTE");
  EXPECT_EQ(command_name(0x12345678), "0x12345678");
}

TEST(AdbMessage, HeaderRoundTripsLittleEndian) {
  Message m = message_make(kCmdWrte, 7, 0x01020304, std::string("abc"), true);
  uint8_t raw[kHeaderSize];
  header_encode(m.header, raw);
  EXPECT_EQ(raw[0], 'W');
  EXPECT_EQ(raw[3], 'E');
  EXPECT_EQ(raw[8], 0x04);  // arg1, least significant byte first
  EXPECT_EQ(get_le32(raw + 12), 3u);
  EXPECT_EQ(get_le32(raw + 16), uint32_t('a' + 'b' + 'c'));
  EXPECT_EQ(get_le32(raw + 20), kCmdWrte ^ 0xffffffffu);
  Header h = header_decode(raw);
  EXPECT_EQ(h.command, kCmdWrte);
  EXPECT_EQ(h.arg0, 7u);
  EXPECT_EQ(h.arg1, 0x01020304u);
  EXPECT_EQ(header_check(h, 4096), "");
}

TEST(AdbMessage, ChecksumOnlyWhenAsked) {
  EXPECT_EQ(message_make(kCmdWrte, 1, 2, std::string("\xff\xff"), false).header.check, 0u);
  EXPECT_EQ(message_make(kCmdWrte, 1, 2, std::string("\xff\xff"), true).header.check, 510u);
  EXPECT_EQ(payload_checksum(nullptr, 0), 0u);
}

TEST(AdbMessage, HeaderChecksCatchCorruption) {
  Header h = message_make(kCmdOkay, 1, 2, std::string(), false).header;
  h.magic ^= 1;
  EXPECT_NE(header_check(h, 4096).find("magic"), std::string::npos);
  h = message_make(kCmdWrte, 1, 2, std::string(), false).header;
  h.length = 0x7fffffff;
  EXPECT_NE(header_check(h, 1024 * 1024).find("2147483647 byte payload"), std::string::npos);
  h.length = 1024 * 1024;
  EXPECT_EQ(header_check(h, 1024 * 1024), "");
}

TEST(AdbMessage, ShellQuotingSurvivesAnyArgument) {
  EXPECT_EQ(shell_quote("plain"), "'plain'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
  EXPECT_EQ(shell_join({"am", "startservice", "-e", "k", "a b;rm -rf /"}),
            "'am' 'startservice' '-e' 'k' 'a b;rm -rf /'");
}

TEST(AdbMessage, RemotePathsAreChecked) {
  std::string err;
  EXPECT_TRUE(remote_path_check("/sdcard/cloudlet/adb/device.key", &err));
  EXPECT_TRUE(remote_path_check("/sdcard/a,b", &err));  // the device splits SEND at the last comma
  EXPECT_FALSE(remote_path_check("sdcard/x", &err));
  EXPECT_FALSE(remote_path_check("/sdcard/../x", &err));
  EXPECT_FALSE(remote_path_check("/sdcard/./x", &err));
  EXPECT_FALSE(remote_path_check(std::string("/a\0b", 4), &err));
  EXPECT_FALSE(remote_path_check("/a\nb", &err));
  EXPECT_FALSE(remote_path_check("/" + std::string(1024, 'x'), &err));
  EXPECT_TRUE(remote_path_check("/" + std::string(1023, 'x'), &err));
}

TEST(AdbMessage, HostPortParsing) {
  std::string h, p, err;
  EXPECT_TRUE(hostport_parse("127.0.0.1:5555", &h, &p, &err));
  EXPECT_EQ(h, "127.0.0.1");
  EXPECT_EQ(p, "5555");
  EXPECT_TRUE(hostport_parse("[::1]:5037", &h, &p, &err));
  EXPECT_EQ(h, "::1");
  EXPECT_TRUE(hostport_parse("phone.local:5555", &h, &p, &err));
  EXPECT_FALSE(hostport_parse("127.0.0.1", &h, &p, &err));
  EXPECT_FALSE(hostport_parse("127.0.0.1:0", &h, &p, &err));
  EXPECT_FALSE(hostport_parse("127.0.0.1:65536", &h, &p, &err));
  EXPECT_FALSE(hostport_parse("::1:5555", &h, &p, &err));
  EXPECT_FALSE(hostport_parse("a b:5555", &h, &p, &err));
  EXPECT_FALSE(hostport_parse(":5555", &h, &p, &err));
}
