// The SSE event stream over a real loopback connection.
#include "events/event_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "events/bus.h"
#include "http/server.h"
#include "loop/loop.h"

using namespace cloudlet;

namespace {

int connect_to(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// Reads until `needle` appears (or 5 s pass); returns everything read.
std::string read_until(int fd, const std::string& needle, std::string buf = "") {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  char tmp[4096];
  while (buf.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) break;
    buf.append(tmp, static_cast<size_t>(n));
  }
  return buf;
}

// Listens as the manager on an ephemeral loopback port; returns the port (0 on failure, with a test failure).
uint16_t listen_manager(http::Server& server) {
  http::ListenerOptions lo;
  lo.name = "manager";
  std::string err;
  EXPECT_EQ(server.listen(lo, &err), CL_OK) << err;
  http::Listener* l = server.listener("manager");
  return l ? l->bound_port : 0;
}

void run_until(Loop& loop, const std::function<bool()>& pred) {
  uint64_t start = uv_hrtime();
  Loop::TimerId t = loop.timer_start(1, 1, [&] {
    if (pred() || uv_hrtime() - start > 5000000000ull) loop.stop();
  });
  loop.run();
  loop.timer_stop(t);
}

}  // namespace

TEST(EventStream, StreamsEventsAndEndsWhenTheClientLeaves) {
  Loop loop;
  EventBus bus(loop);
  http::Server server(loop, "/tmp");
  uint16_t port = listen_manager(server);
  ASSERT_NE(port, 0);
  {
    EventStreams streams(loop, bus, 2);
    streams.add_route(server);
    std::atomic<int> stage{0};
    std::string got;
    std::thread client([&] {
      int fd = connect_to(port);
      std::string req = "GET /manager/api/events?topics=instance.*,job.done HTTP/1.1\r\nHost: localhost\r\n\r\n";
      send(fd, req.data(), req.size(), 0);
      std::string buf = read_until(fd, "event: hello");
      stage = 1;
      got = read_until(fd, "event: job.done\ndata: {\"j\":2}\n\n", buf);
      close(fd);
      stage = 2;
    });
    run_until(loop, [&] { return stage >= 1; });
    EXPECT_EQ(streams.open_streams(), 1u);
    bus.publish("other.topic", "{\"skip\":true}");
    bus.publish("instance.state", "{\"a\":1}");
    bus.publish("job.done", "{\"j\":2}");
    run_until(loop, [&] { return stage >= 2; });
    client.join();
    EXPECT_NE(got.find("Content-Type: text/event-stream"), std::string::npos) << got;
    EXPECT_NE(got.find("event: instance.state\ndata: {\"a\":1}\n\n"), std::string::npos) << got;
    EXPECT_EQ(got.find("other.topic"), std::string::npos);
    run_until(loop, [&] { return streams.open_streams() == 0; });
    EXPECT_EQ(streams.open_streams(), 0u);
    EXPECT_EQ(bus.subscriber_count(), 0u);
  }
  bool down = false;
  server.shutdown(1000, [&] { down = true; });
  run_until(loop, [&] { return down; });
  EXPECT_EQ(loop.close(), 0);
}

TEST(EventStream, CapAndShutdownCloseStreams) {
  Loop loop;
  EventBus bus(loop);
  http::Server server(loop, "/tmp");
  uint16_t port = listen_manager(server);
  ASSERT_NE(port, 0);
  EventStreams streams(loop, bus, 1);
  streams.add_route(server);
  std::atomic<int> stage{0};
  std::string second, first_tail;
  std::thread client([&] {
    int a = connect_to(port);
    std::string req = "GET /manager/api/events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    send(a, req.data(), req.size(), 0);
    std::string buf = read_until(a, "event: hello");
    int b = connect_to(port);
    send(b, req.data(), req.size(), 0);
    second = read_until(b, "too many");
    close(b);
    stage = 1;
    first_tail = read_until(a, "0\r\n\r\n", buf);  // the chunked stream ends cleanly at close_all
    close(a);
    stage = 2;
  });
  run_until(loop, [&] { return stage >= 1; });
  EXPECT_NE(second.find("503"), std::string::npos) << second;
  streams.close_all();
  run_until(loop, [&] { return stage >= 2; });
  client.join();
  EXPECT_NE(first_tail.find("0\r\n\r\n"), std::string::npos);
  EXPECT_EQ(bus.subscriber_count(), 0u);
  bool down = false;
  server.shutdown(1000, [&] { down = true; });
  run_until(loop, [&] { return down; });
  EXPECT_EQ(loop.close(), 0);
}

// Issue 15: a HEAD request answers the stream's head and holds no stream slot (64 HEADs used to lock out
// every real stream), while the connection stays usable.
TEST(EventStream, HeadHoldsNoStreamSlot) {
  Loop loop;
  EventBus bus(loop);
  http::Server server(loop, "/tmp");
  uint16_t port = listen_manager(server);
  ASSERT_NE(port, 0);
  EventStreams streams(loop, bus, 1);
  streams.add_route(server);
  std::atomic<int> stage{0};
  std::string head_reply, after_head, stream;
  size_t subscribers_after_head = 99;
  std::thread client([&] {
    int a = connect_to(port);
    std::string head = "HEAD /manager/api/events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    send(a, head.data(), head.size(), 0);
    head_reply = read_until(a, "\r\n\r\n");
    // The HEAD's connection stays open for more requests.
    send(a, head.data(), head.size(), 0);
    after_head = read_until(a, "\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the slot is given back on the next turn
    stage = 1;
    while (stage < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int b = connect_to(port);  // the one slot is free for a real stream
    std::string get = "GET /manager/api/events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    send(b, get.data(), get.size(), 0);
    stream = read_until(b, "event: hello");
    close(a);
    close(b);
    stage = 3;
  });
  run_until(loop, [&] { return stage >= 1; });
  subscribers_after_head = bus.subscriber_count();
  stage = 2;
  run_until(loop, [&] { return stage >= 3; });
  client.join();
  EXPECT_NE(head_reply.find("200 OK"), std::string::npos) << head_reply;
  EXPECT_NE(head_reply.find("text/event-stream"), std::string::npos) << head_reply;
  EXPECT_EQ(head_reply.find("Connection: close"), std::string::npos) << head_reply;
  EXPECT_EQ(subscribers_after_head, 0u);
  EXPECT_NE(stream.find("event: hello"), std::string::npos) << stream;
  EXPECT_NE(after_head.find("200 OK"), std::string::npos) << after_head;
  streams.close_all();
  bool down = false;
  server.shutdown(1000, [&] { down = true; });
  run_until(loop, [&] { return down; });
  EXPECT_EQ(loop.close(), 0);
}
