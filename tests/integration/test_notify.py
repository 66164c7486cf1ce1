"""systemd's readiness protocol (core/system/notify.cc), the way systemd runs cloudletd with Type=notify: a
datagram socket named by NOTIFY_SOCKET receives READY=1 once the server serves, WATCHDOG=1 about every half of
WATCHDOG_USEC from the loop, and STOPPING=1 at SIGTERM. Loopback only; every wait is bounded."""
import os
import socket
import time
import unittest

import harness


class Notify(harness.TestCase):
    def messages(self, sock, until, timeout=20):
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                break
            if until(got):
                break
        return got

    def test_ready_watchdog_and_stopping(self):
        path = os.path.join(self.workdir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.addCleanup(sock.close)
        os.environ["NOTIFY_SOCKET"] = path
        os.environ["WATCHDOG_USEC"] = "400000"  # 0.4 s: WATCHDOG=1 every 0.2 s
        try:
            srv = self.server().start(wait=False)
        finally:
            del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
        got = self.messages(sock, lambda m: any(x.startswith("READY=1") for x in m))
        ready = [m for m in got if m.startswith("READY=1")]
        self.assertEqual(len(ready), 1, got)
        self.assertIn("STATUS=serving", ready[0])
        # Ready means serving: the listeners answer at once.
        self.assertEqual(srv.get("manager", "/healthz", anonymous=True)[0], 200)
        got = self.messages(sock, lambda m: m.count("WATCHDOG=1") >= 5, timeout=5)
        self.assertGreaterEqual(got.count("WATCHDOG=1"), 5, got)
        srv.proc.send_signal(15)
        got = self.messages(sock, lambda m: any(x.startswith("STOPPING=1") for x in m), timeout=10)
        self.assertTrue(any(x.startswith("STOPPING=1") for x in got), got)
        self.assertEqual(srv.proc.wait(20), 0)

    def test_nothing_is_sent_without_notify_socket(self):
        # The harness's own servers run without NOTIFY_SOCKET: they start and stop as always.
        srv = self.server().start()
        self.assertEqual(srv.stop(), 0)
        self.assertNotIn("notify", srv.log_text().lower())


if __name__ == "__main__":
    unittest.main(verbosity=2)
