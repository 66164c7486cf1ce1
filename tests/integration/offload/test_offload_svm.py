"""The mobile API with real Service VMs: `cloudletd --demo` registers demo.httpd (a real QEMU guest serving HTTP on
port 8080, restored from its saved memory state), and a client that behaves like client-lib starts it, reaches it
at ip_address:port, joins, stops it, and loses it when its device's authorization ends or is revoked.

Needs the core's instance.* operations (issue 3) and the demo guest built (make demo-guest). One server serves the
whole module, because the demo's saved state is made on its first start. Loopback only; every wait is bounded."""
import http.client
import shutil
import socket
import sys
import tempfile
import time
import unittest

import common
from common import cl, harness

DEMO = "demo.httpd"
SRV = None
WORKDIR = None
PORTS = None
SKIPPED = None  # why the whole module was skipped (ctest then reports it as skipped: exit code 77)


def setUpModule():
    global SRV, WORKDIR, PORTS, SKIPPED
    WORKDIR = tempfile.mkdtemp(prefix="cl-it-svm-")
    PORTS = harness.port_block(100)
    SRV = harness.Server(WORKDIR, name="svm", args=["--demo"], config=common.config(
        "both", {"virt": {"port_min": PORTS[0], "port_max": PORTS[1], "ready_timeout_ms": 60000}}))
    SRV.start(timeout=60)
    missing = {"service.list", "instance.start", "instance.stop"} - common.operations(SRV)
    if missing:
        SKIPPED = f"the core has no {sorted(missing)} yet (issue 3): Service VM tests cannot run"
        tearDownModule()  # not called by unittest when setUpModule raises
        raise unittest.SkipTest(SKIPPED)
    # The demo's saved memory state is made on the first run: wait (bounded) until the service can be started.
    phone = common.cloudlet(SRV, device_id="warm-up")
    deadline = time.monotonic() + 900
    last = None
    while time.monotonic() < deadline:
        try:
            if any(s["service_id"] == DEMO for s in phone.get_services()):
                vm = phone.start_service(DEMO, join=False)
                phone.stop_service_vm(vm["_id"])
                return
        except cl.CloudletError as e:
            last = e
        time.sleep(2)
    raise AssertionError(f"{DEMO} never became startable: {last}\n{SRV.log_text()[-5000:]}")


def tearDownModule():
    global SRV, WORKDIR
    if SRV is not None:
        SRV.stop()
        SRV = None
    if WORKDIR:
        shutil.rmtree(WORKDIR, ignore_errors=True)
        WORKDIR = None


def http_get(host, port, timeout=10):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def listeners_in(lo, hi):
    """Ports in [lo, hi] with a listening TCP socket (QEMU's forwarded ports), from /proc/net/tcp{,6}."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    if parts[3] == "0A" and lo <= port <= hi:
                        found.add(port)
        except OSError:
            pass
    return found


class ServiceVms(unittest.TestCase):
    def setUp(self):
        self.assertIsNone(SRV.proc.poll(), "cloudletd died")
        self.phone = common.cloudlet(SRV, device_id="phone-svm")

    def reach(self, vm):
        self.assertEqual(vm["address"], "127.0.0.1")  # the address this client used to reach the cloudlet
        status, body = http_get(vm["address"], vm["port"])
        self.assertEqual(status, 200)
        self.assertTrue(body)

    def wait_closed(self, port, timeout=30):
        self.assertTrue(common.wait_until(lambda: not common.port_open("127.0.0.1", port, 0.5), timeout),
                        f"port {port} still open")

    def test_start_reach_stop(self):
        vm = self.phone.start_service(DEMO, join=False)
        raw = vm["raw"]
        self.assertEqual(raw["service_id"], DEMO)
        self.assertIs(raw["running"], True)
        self.assertIsNone(raw["fqdn"])
        self.assertIsInstance(raw["ssh_port"], int)
        self.assertTrue(PORTS[0] <= vm["port"] <= PORTS[1])
        self.reach(vm)
        self.assertTrue(self.phone.stop_service_vm(vm["_id"]))
        self.wait_closed(vm["port"])
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.stop_service_vm(vm["_id"])
        self.assertEqual(e.exception.status, 404)

    def test_two_starts_without_join_are_two_instances(self):
        a = self.phone.start_service(DEMO, join=False)
        b = self.phone.start_service(DEMO, join=False)
        try:
            self.assertNotEqual(a["_id"], b["_id"])
            self.assertNotEqual(a["port"], b["port"])
            self.reach(a)
            self.reach(b)
        finally:
            self.phone.stop_service_vm(a["_id"])
            self.phone.stop_service_vm(b["_id"])
        self.wait_closed(a["port"])
        self.wait_closed(b["port"])

    def test_join_shares_and_counts_users(self):
        a = self.phone.start_service(DEMO, join=True)
        b = common.cloudlet(SRV, device_id="phone-svm-2").start_service(DEMO, join=True)
        self.reach(a)
        self.reach(b)
        if a["_id"] == b["_id"]:
            # One shared instance with two users: the first stop leaves it running for the other.
            self.phone.stop_service_vm(a["_id"])
            time.sleep(1)
            self.reach(b)
            self.phone.stop_service_vm(b["_id"])
            self.wait_closed(a["port"])
        else:  # demo.httpd is not shared (num_users 0): join starts a new instance
            self.phone.stop_service_vm(a["_id"])
            self.phone.stop_service_vm(b["_id"])
            self.wait_closed(a["port"])
            self.wait_closed(b["port"])

    def test_encrypted_start_reach_stop(self):
        phone = common.cloudlet(SRV, "phone-enc-svm", common.pair(SRV, "phone-enc-svm"))
        vm = phone.start_service(DEMO, join=False)
        self.reach(vm)
        self.assertTrue(phone.stop_service_vm(vm["_id"]))
        self.wait_closed(vm["port"])

    def test_expiry_stops_the_devices_instance(self):
        window = 40  # longer than a start under TCG
        phone = common.cloudlet(SRV, "phone-expiring", common.pair(SRV, "phone-expiring", duration_s=window))
        paired = time.monotonic()
        vm = phone.start_service(DEMO, join=False)
        self.assertLess(time.monotonic() - paired, window, "the start took longer than the window")
        self.reach(vm)
        self.wait_closed(vm["port"], timeout=max(1, paired + window - time.monotonic()) + 20)
        with self.assertRaises(cl.CredentialsError) as e:
            phone.get_system_info()
        self.assertEqual(e.exception.status, 403)
        self.assertEqual(e.exception.message, "Authorization has expired for device with id phone-expiring")

    def test_revoke_stops_the_devices_instance(self):
        phone = common.cloudlet(SRV, "phone-revoked", common.pair(SRV, "phone-revoked"))
        vm = phone.start_service(DEMO, join=False)
        self.reach(vm)
        common.revoke(SRV, "phone-revoked")
        self.wait_closed(vm["port"])
        with self.assertRaises(cl.CredentialsError) as e:
            phone.start_service(DEMO, join=False)
        self.assertEqual(e.exception.status, 403)
        self.assertEqual(e.exception.message, "Authorization has been revoked for device with id phone-revoked")

    def test_a_client_that_leaves_during_a_start_leaves_no_instance(self):
        before = listeners_in(*PORTS)
        s = socket.create_connection(("127.0.0.1", SRV.api_port))
        s.sendall(f"GET /api/servicevm/start?serviceId={DEMO}&join=false HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "X-Device-ID: leaver\r\n\r\n".encode())
        s.close()  # before the reply
        self.assertTrue(common.wait_until(lambda: "its client left before the reply" in SRV.log_text(), 120, 0.5),
                        SRV.log_text()[-3000:])
        self.assertTrue(common.wait_until(lambda: listeners_in(*PORTS) <= before, 30), listeners_in(*PORTS))

    def test_unknown_service(self):
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.start_service("no.such.service", join=True)
        self.assertEqual((e.exception.status, e.exception.message), (400, "Service vm for no.such.service not found"))
        self.assertIn(DEMO, [s["service_id"] for s in self.phone.get_services()])


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    sys.exit(77 if SKIPPED else 0)
