"""Service VMs on real QEMU (TCG) through libvirt's embedded driver, driven through the real cloudletd's manager API.

One server serves the module: `--demo` makes demo.httpd's saved memory state once (a cold boot and a save, about
15 s), and every instance after that is restored from it. Checks: instances come from the saved memory (the guest's
boot id is the one of the boot that was saved), stop closes the port and removes the overlay, two instances run
at once with their own ports, names and UUIDs, join respects capacity under concurrency, a kill -9 of cloudletd
leaves its instance running and the restarted server re-attaches it, bad inputs and failed restores leave nothing
behind, and a service made through the API can be refreshed and deleted. Loopback only; every wait is bounded.
"""
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402

DEMO = "demo.httpd"
PORTS = None
SRV = None
WORKDIR = None
SAVED_BOOT_ID = None


def new_server():
    srv = harness.Server(WORKDIR, name="virt", args=["--demo"], plugins=(), config={
        "virt": {"domain_type": "qemu", "forward_address": "127.0.0.1", "port_min": PORTS[0], "port_max": PORTS[1],
                 "ready_timeout_ms": 60000, "boot_timeout_ms": 300000}})
    srv.start(timeout=60)
    return srv


def call(method, path, body=None, timeout=300):
    data = json.dumps(body) if body is not None else None
    status, _, raw = SRV.request("manager", method, path, body=data,
                                 headers={"Content-Type": "application/json"} if data else None, timeout=timeout)
    return status, json.loads(raw) if raw else None


def wait_until(cond, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def data_dir():
    return SRV.config["data_dir"]


def console_boot_id(path):
    with open(path, errors="replace") as f:
        for line in f:
            if "boot_id" in line and line.startswith("demo-guest:"):
                return line.split("boot_id", 1)[1].split(",")[0].strip()
    return None


def page(port, timeout=20):
    """The demo guest's page as a dict (boot_id, uptime, ...), or None if it does not answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(10)
                s.sendall(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
                data = b""
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b" 200 " in head.split(b"\r\n")[0]:
                fields = {}
                for line in body.decode(errors="replace").splitlines():
                    if "=" in line:
                        k, v = line.split("=", 1)
                        fields[k] = v
                return fields
        except OSError:
            pass
        time.sleep(0.2)
    return None


def port_closed(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def qemu_processes():
    """QEMU processes using files of this server's data directory."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmd and data_dir() in cmd:
            found.append(int(pid))
    return found


def instance_dirs():
    try:
        return sorted(os.listdir(os.path.join(data_dir(), "instances")))
    except FileNotFoundError:
        return []


def setUpModule():
    global SRV, WORKDIR, PORTS, SAVED_BOOT_ID
    if not os.access("/usr/bin/qemu-system-x86_64", os.X_OK):
        raise unittest.SkipTest("qemu-system-x86 is not installed")
    demo = os.path.join(harness.BUILD_DIR, "demo-guest", "vmlinuz")
    if not os.path.exists(demo):
        raise unittest.SkipTest(f"no demo guest at {demo}: run `cmake --build build --target demo-guest`")
    WORKDIR = tempfile.mkdtemp(prefix="cl-it-virt-")
    PORTS = harness.port_block(40)
    SRV = new_server()
    ok = wait_until(lambda: any(s["service_id"] == DEMO for s in call("GET", "/manager/api/services")[1]["services"]),
                    600, 0.5)
    if not ok:
        raise AssertionError(f"{DEMO} was never registered:\n{SRV.log_text()[-5000:]}")
    SAVED_BOOT_ID = console_boot_id(os.path.join(data_dir(), "services", DEMO, "image-1", "console.log"))
    assert SAVED_BOOT_ID and len(SAVED_BOOT_ID) == 36, SAVED_BOOT_ID


def tearDownModule():
    global SRV
    try:
        if SRV is not None:
            # Whatever a failed test left running goes with it (the server itself keeps instances on shutdown).
            for i in call("GET", "/manager/api/instances")[1]["instances"]:
                call("DELETE", f"/manager/api/instances/{i['id']}")
            rc = SRV.stop()
            leftovers = qemu_processes()
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
            assert rc == 0, f"cloudletd exited with {rc}; its log ends:\n{SRV.log_text()[-6000:]}"
            assert not leftovers, f"QEMU processes left behind: {leftovers}"
    finally:
        SRV = None
        if WORKDIR:
            shutil.rmtree(WORKDIR, ignore_errors=True)


class ServiceVmTest(unittest.TestCase):
    def setUp(self):
        self.assertIsNone(SRV.proc.poll(), "cloudletd died")
        status, body = call("GET", "/manager/api/instances")
        self.assertEqual((status, body["instances"]), (200, []), "a previous test left an instance")

    def tearDown(self):
        # A failed test must not fail the next ones too: end whatever it left running.
        if SRV.proc.poll() is None:
            for i in call("GET", "/manager/api/instances")[1]["instances"]:
                call("DELETE", f"/manager/api/instances/{i['id']}")

    def start(self, **args):
        body = {"service_id": DEMO, "wait_ready": True, "ip_address": "127.0.0.1"}
        body.update(args)
        return call("POST", "/manager/api/instances", body)

    def stop(self, iid, **args):
        return call("POST", f"/manager/api/instances/{iid}/stop", args)

    def assert_nothing_left(self):
        self.assertEqual(call("GET", "/manager/api/instances")[1]["instances"], [])
        self.assertEqual(instance_dirs(), [])
        self.assertTrue(wait_until(lambda: not qemu_processes(), 20), qemu_processes())

    def test_start_from_saved_state_then_stop(self):
        t0 = time.monotonic()
        status, inst = self.start()
        self.assertEqual(status, 200, inst)
        took = time.monotonic() - t0
        self.assertIs(inst["memory_restored"], True)
        self.assertEqual(inst["state"], "running")
        self.assertEqual(inst["service_id"], DEMO)
        self.assertTrue(inst["name"].startswith("cloudlet-"))
        self.assertTrue(PORTS[0] <= inst["port"] <= PORTS[1])
        self.assertTrue(PORTS[0] <= inst["ssh_port"] <= PORTS[1])
        self.assertEqual(inst["ip_address"], "127.0.0.1")
        self.assertRegex(inst["vnc_address"], r"^127\.0\.0\.1:\d+$")
        self.assertIsNone(inst["fqdn"])
        p = page(inst["port"])
        self.assertIsNotNone(p, "the guest does not answer")
        # The guest's memory was restored: same boot as the one saved (a cold boot draws a new random boot id).
        self.assertEqual(p["boot_id"], SAVED_BOOT_ID)
        time.sleep(1)
        p2 = page(inst["port"])
        self.assertGreater(float(p2["uptime"]), float(p["uptime"]), "the restored guest runs on")
        print(f"MEASURE instance start with readiness wait: {took * 1000:.0f} ms, guest uptime {p['uptime']}")
        overlay = os.path.join(data_dir(), "instances", inst["id"], "disk.qcow2")
        self.assertTrue(os.path.exists(overlay))
        status, got = call("GET", f"/manager/api/instances/{inst['id']}")
        self.assertEqual((status, got["port"]), (200, inst["port"]))
        status, res = self.stop(inst["id"])
        self.assertEqual((status, res), (200, {"id": inst["id"], "stopped": True, "users": 0}))
        self.assertTrue(port_closed(inst["port"]))
        self.assertFalse(os.path.exists(overlay))
        self.assertEqual(call("GET", f"/manager/api/instances/{inst['id']}")[0], 404)
        self.assert_nothing_left()

    def test_two_instances_at_once(self):
        results = [None, None]

        def go(i):
            results[i] = self.start()
        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        (sa, a), (sb, b) = results
        self.assertEqual((sa, sb), (200, 200), results)
        try:
            self.assertNotEqual(a["id"], b["id"])
            self.assertNotEqual(a["name"], b["name"])
            self.assertEqual(len({a["port"], a["ssh_port"], b["port"], b["ssh_port"]}), 4)
            pa, pb = page(a["port"]), page(b["port"])
            self.assertIsNotNone(pa)
            self.assertIsNotNone(pb)
            self.assertEqual(pa["boot_id"], SAVED_BOOT_ID)
            self.assertEqual(pb["boot_id"], SAVED_BOOT_ID)
            self.assertEqual(len(qemu_processes()), 2)
        finally:
            self.stop(a["id"])
            self.stop(b["id"])
        self.assertTrue(port_closed(a["port"]) and port_closed(b["port"]))
        self.assert_nothing_left()

    def test_join_respects_capacity_under_concurrency(self):
        status, svc = call("GET", f"/manager/api/services/{DEMO}")
        capacity = svc["num_users"]
        self.assertGreater(capacity, 1)
        n = capacity + 2
        results = [None] * n

        def go(i):
            results[i] = self.start(join=True, device_id=f"phone-{i}")
        threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        shares = {}
        for status, inst in results:
            self.assertEqual(status, 200, inst)
            self.assertIs(inst["shared"], True)
            shares[inst["id"]] = shares.get(inst["id"], 0) + 1
        self.assertEqual(len(shares), 2, shares)
        self.assertEqual(sorted(shares.values()), [2, capacity])
        listed = {i["id"]: i["users"] for i in call("GET", "/manager/api/instances")[1]["instances"]}
        self.assertEqual(listed, shares)
        # Each device leaves with its own share, all at once: each VM stops with its last user.
        stops = [None] * n

        def leave(i):
            stops[i] = self.stop(results[i][1]["id"], device_id=f"phone-{i}")
        threads = [threading.Thread(target=leave, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertTrue(all(s[0] == 200 for s in stops), stops)
        self.assertEqual(sum(1 for s in stops if s[1]["stopped"]), 2)
        self.assert_nothing_left()

    def test_kill9_then_restart_reattaches(self):
        global SRV
        status, inst = self.start()
        self.assertEqual(status, 200, inst)
        SRV.kill9()
        # With the embedded driver QEMU outlives cloudletd.
        self.assertIsNotNone(page(inst["port"], timeout=10), "the guest died with cloudletd")
        SRV = new_server()
        status, listed = call("GET", "/manager/api/instances")
        self.assertEqual(status, 200)
        self.assertEqual([i["id"] for i in listed["instances"]], [inst["id"]], SRV.log_text()[-3000:])
        self.assertTrue(wait_until(lambda: "re-attached" in SRV.log_text(), 30), SRV.log_text()[-3000:])
        p = page(inst["port"])
        self.assertIsNotNone(p)
        self.assertEqual(p["boot_id"], SAVED_BOOT_ID)
        # Its ports stay taken: a second instance gets others.
        status, other = self.start()
        self.assertEqual(status, 200, other)
        self.assertNotIn(other["port"], (inst["port"], inst["ssh_port"]))
        self.assertEqual(self.stop(inst["id"])[1]["stopped"], True)
        self.assertEqual(self.stop(other["id"])[1]["stopped"], True)
        self.assertTrue(port_closed(inst["port"]))
        self.assert_nothing_left()

    def test_bad_inputs_leave_nothing(self):
        status, err = call("POST", "/manager/api/instances", {"service_id": "no.such.service"})
        self.assertEqual(status, 404, err)
        self.assertIn("no.such.service", err["error"])
        self.assertEqual(call("POST", "/manager/api/instances", {"service_id": "../etc"})[0], 400)
        self.assertEqual(call("POST", "/manager/api/instances", {"service_id": DEMO, "ip_address": "x"})[0], 400)
        self.assertEqual(call("POST", "/manager/api/instances/not-a-uuid/stop")[0], 400)
        self.assertEqual(call("POST", "/manager/api/instances/6f1c1d5e-1111-4222-8333-444455556666/stop")[0], 404)
        # No free port: every port of the range is taken by someone else.
        held = []
        try:
            for p in range(PORTS[0], PORTS[1] + 1):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                s.listen(1)
                held.append(s)
            status, err = self.start()
            self.assertEqual(status, 409, err)
            self.assertIn("no free port", err["error"])
        finally:
            for s in held:
                s.close()
        self.assert_nothing_left()
        image = os.path.join(data_dir(), "services", DEMO, "image-1")
        svc_dir = os.path.dirname(image)
        # The service's disk is missing.
        os.rename(f"{image}/disk.qcow2", f"{image}/disk.moved")
        try:
            status, err = self.start()
            self.assertEqual(status, 500, err)
            self.assertIn("disk", err["error"])
        finally:
            os.rename(f"{image}/disk.moved", f"{image}/disk.qcow2")
        self.assert_nothing_left()
        # The saved state cannot be restored: a cold boot of the same disk, and the answer says so.
        os.rename(f"{image}/state.sav", f"{image}/state.moved")
        try:
            status, inst = self.start()
            self.assertEqual(status, 200, inst)
            self.assertIs(inst["memory_restored"], False)
            p = page(inst["port"], timeout=60)
            self.assertIsNotNone(p)
            self.assertNotEqual(p["boot_id"], SAVED_BOOT_ID, "a cold boot is a new boot")
            self.assertEqual(self.stop(inst["id"])[1]["stopped"], True)
            self.assert_nothing_left()
            # Neither restore nor cold boot can work (the kernel is gone too): a clear error, nothing left.
            os.rename(f"{svc_dir}/vmlinuz", f"{svc_dir}/vmlinuz.moved")
            try:
                status, err = self.start()
                self.assertEqual(status, 500, err)
                self.assertIn("restoring the saved state failed", err["error"])
                self.assertIn("cold boot", err["error"])
            finally:
                os.rename(f"{svc_dir}/vmlinuz.moved", f"{svc_dir}/vmlinuz")
        finally:
            os.rename(f"{image}/state.moved", f"{image}/state.sav")
        self.assert_nothing_left()
        status, inst = self.start()  # and everything works again
        restore_lines = [l for l in SRV.log_text().splitlines() if "could not be restored" in l]
        self.assertEqual((status, inst["memory_restored"]), (200, True), (inst, restore_lines[-2:]))
        self.stop(inst["id"])
        self.assert_nothing_left()

    def test_service_create_refresh_delete(self):
        sid = "svc.api"
        uploads = os.path.join(data_dir(), "uploads")
        os.makedirs(uploads, exist_ok=True)
        demo = os.path.join(harness.BUILD_DIR, "demo-guest")
        for f in ("vmlinuz", "initrd.img"):
            shutil.copy(os.path.join(demo, f), os.path.join(uploads, f))
        with open(os.path.join(demo, "cmdline")) as f:
            cmdline = f.read().strip()
        # Paths outside the data directory are refused.
        status, err = call("POST", "/manager/api/services",
                           {"service_id": sid, "port": 8080, "kernel": os.path.join(demo, "vmlinuz")})
        self.assertEqual(status, 400, err)
        self.assertIn("outside the data directory", err["error"])
        status, job = call("POST", "/manager/api/services", {
            "service_id": sid, "port": 8080, "kernel": "uploads/vmlinuz", "initrd": "uploads/initrd.img",
            "cmdline": cmdline, "description": "made by a test", "tags": ["t"], "num_users": 0,
            "ideal_memory": 192, "wait": False})
        self.assertEqual(status, 200, job)
        self.assertTrue(job["job_id"].startswith("job-"))
        self.assertEqual(call("POST", "/manager/api/services", {"service_id": sid, "port": 1, "kernel": "x"})[0],
                         409, "a second create of the same id while the first runs")

        def job_state():
            return call("GET", f"/manager/api/jobs/{job['job_id']}")[1]
        self.assertTrue(wait_until(lambda: job_state()["state"] != "running", 600, 0.5))
        j = job_state()
        self.assertEqual(j["state"], "done", j)
        self.assertEqual(j["result"]["state_saved"], True)
        svc_dir = os.path.join(data_dir(), "services", sid)
        for f in ("image-1/disk.qcow2", "image-1/state.sav", "image-1/domain.xml", "vmlinuz", "service.json"):
            self.assertEqual(os.stat(os.path.join(svc_dir, f)).st_mode & 0o777, 0o444, f)
        boot1 = console_boot_id(os.path.join(svc_dir, "image-1", "console.log"))
        status, inst = self.start(service_id=sid)
        self.assertEqual(status, 200, inst)
        self.assertEqual(page(inst["port"])["boot_id"], boot1)
        status, err = call("DELETE", f"/manager/api/services/{sid}")
        self.assertEqual(status, 409, err)
        self.assertEqual(call("POST", f"/manager/api/services/{sid}/refresh")[0], 409)
        self.stop(inst["id"])
        # Refresh: restored from the current state, saved again into a new image; the old one goes.
        status, svc = call("POST", f"/manager/api/services/{sid}/refresh")
        self.assertEqual(status, 200, svc)
        self.assertTrue(os.path.exists(os.path.join(svc_dir, "image-2", "state.sav")))
        self.assertFalse(os.path.exists(os.path.join(svc_dir, "image-1")))
        status, inst = self.start(service_id=sid)
        self.assertEqual(status, 200, inst)
        self.assertIs(inst["memory_restored"], True)
        self.assertEqual(page(inst["port"])["boot_id"], boot1, "the refreshed state continues the same boot")
        self.stop(inst["id"])
        status, svc = call("POST", f"/manager/api/services/{sid}", {"description": "changed", "num_users": 2})
        self.assertEqual((status, svc["description"], svc["num_users"]), (200, "changed", 2))
        self.assertEqual(call("DELETE", f"/manager/api/services/{sid}"), (200, {}))
        self.assertFalse(os.path.exists(svc_dir))
        self.assertEqual(call("GET", f"/manager/api/services/{sid}")[0], 404)
        self.assert_nothing_left()


class UnavailableHypervisor(harness.TestCase):
    """A hypervisor that cannot be reached does not take the server down: VM operations answer 503 with the
    reason, everything else serves, and the server still stops cleanly."""

    def test_serves_and_answers_503(self):
        srv = self.server(plugins=(), args=["--libvirt-uri", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"],
                          config={"virt": {"domain_type": "qemu", "forward_address": "127.0.0.1"}}).start()
        json_type = {"Content-Type": "application/json"}  # the manager's JSON routes take nothing else
        status, _, body = srv.request("manager", "POST", "/manager/api/instances",
                                      body=json.dumps({"service_id": "anything"}), headers=json_type)
        self.assertEqual(status, 404, body)  # no such service: answered without the hypervisor
        status, _, body = srv.request("manager", "POST", "/manager/api/services", body=json.dumps(
            {"service_id": "s", "port": 80, "kernel": "k"}), headers=json_type)
        self.assertEqual(status, 503, body)
        self.assertIn("not available", json.loads(body)["error"])
        self.assertEqual(srv.get("manager", "/healthz")[0], 200)
        self.assertEqual(srv.get_json("manager", "/manager/api/services"), (200, {"services": []}))
        self.assertEqual(srv.stop(), 0, srv.log_text()[-6000:])


if __name__ == "__main__":
    unittest.main(verbosity=2)
