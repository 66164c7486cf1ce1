"""bench/svm_start driver (run by run.sh, which starts cloudletd and waits for demo.httpd's saved state).

1. Start-to-first-reply: the same saved state (demo.httpd's state.sav) restored N times by raw `virsh restore` in a
   separate embedded-driver root (its own overlay and port through --xml, made before the clock starts), and N
   times by a cloudletd instance start; alternating rounds; each timed until the guest's first HTTP reply through
   the forwarded port. Medians and the ratio cloudletd/virsh.
2. p99 latency of GET /healthz on the api listener (one keep-alive connection, back to back) while two instance
   starts are in flight, against the same without starts.

Python stdlib only; loopback only; every wait bounded.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)


def now():
    return time.monotonic()


def first_reply(port, deadline_s=60):
    """Seconds until GET / on 127.0.0.1:port gets a complete 200 reply (connection refused -> retry at once)."""
    t_end = now() + deadline_s
    while now() < t_end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(30)
                s.sendall(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]:
                    return True
        except OSError:
            pass
        time.sleep(0.005)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Manager:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, timeout=300):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body) if body is not None else None
            headers = {"Authorization": "Bearer " + os.environ.get("CLOUDLET_TOKEN", "")}
            if data:
                headers["Content-Type"] = "application/json"
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
        finally:
            c.close()

    def start(self, wait_ready):
        st, inst = self.call("POST", "/manager/api/instances",
                             {"service_id": "demo.httpd", "wait_ready": wait_ready, "ip_address": "127.0.0.1"})
        if st != 200:
            raise RuntimeError(f"instance.start: {st} {inst}")
        return inst

    def stop(self, iid):
        st, r = self.call("DELETE", f"/manager/api/instances/{iid}")
        if st != 200:
            raise RuntimeError(f"instance.stop: {st} {r}")


class Virsh:
    def __init__(self, work, state, disk):
        self.root = os.path.join(work, "virsh-root")
        os.makedirs(os.path.join(self.root, "etc"), exist_ok=True)
        # The same settings cloudletd gives its embedded driver (core/virt/embed.cc).
        with open(os.path.join(self.root, "etc", "qemu.conf"), "w") as f:
            f.write('user = "root"\ngroup = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\n'
                    'stdio_handler = "file"\nremember_owner = 0\n')
        self.uri = f"qemu:///embed?root={self.root}"
        self.work = os.path.join(work, "virsh")
        os.makedirs(self.work, exist_ok=True)
        self.state, self.disk = state, disk
        self.saved_xml = self.run("save-image-dumpxml", state).stdout
        self.name = ET.fromstring(self.saved_xml).find("name").text
        self.n = 0

    def run(self, *args, check=True):
        r = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            raise RuntimeError(f"virsh {args[0]}: {r.stderr.strip()}")
        return r

    def prepare(self):
        """An overlay on the service disk and the restore XML pointing at it and at a free port (untimed)."""
        self.n += 1
        overlay = os.path.join(self.work, f"overlay-{self.n}.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", self.disk, overlay],
                       check=True, timeout=60)
        port = free_port()
        root = ET.fromstring(self.saved_xml)
        root.find("./devices/disk/source").set("file", overlay)
        for src in root.findall("./devices/serial/source") + root.findall("./devices/console/source"):
            if src.get("path"):
                src.set("path", os.path.join(self.work, "console.log"))
        for arg in root.iter(f"{{{QEMU_NS}}}arg"):
            v = arg.get("value", "")
            if v.startswith("user,"):
                opts = [o for o in v.split(",") if not o.startswith("hostfwd=")]
                arg.set("value", ",".join(opts + [f"hostfwd=tcp:127.0.0.1:{port}-:8080"]))
        xml_path = os.path.join(self.work, f"restore-{self.n}.xml")
        with open(xml_path, "wb") as f:
            f.write(ET.tostring(root))
        return overlay, xml_path, port

    def restore_to_reply(self):
        overlay, xml_path, port = self.prepare()
        t0 = now()
        self.run("restore", self.state, "--xml", xml_path, "--running")
        ok = first_reply(port)
        took = now() - t0
        self.run("destroy", self.name, check=False)
        os.unlink(overlay)
        if not ok:
            raise RuntimeError("the virsh-restored guest never answered")
        return took


def start_to_reply(mgr, wait_ready):
    t0 = now()
    inst = mgr.start(wait_ready)
    ok = first_reply(inst["port"])
    took = now() - t0
    if not inst["memory_restored"]:
        raise RuntimeError("cloudletd cold booted: not a restore")
    mgr.stop(inst["id"])
    if not ok:
        raise RuntimeError("the cloudletd instance never answered")
    return took


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


class Pinger:
    """GET /healthz back to back on one keep-alive connection; remembers (send time, latency)."""

    def __init__(self, port):
        self.port = port
        self.samples = []
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop:
            t0 = now()
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            t1 = now()
            if r.status != 200:
                raise RuntimeError(f"/healthz answered {r.status}")
            self.samples.append((t0, t1 - t0))
            time.sleep(0.001)
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--manager-port", type=int, required=True)
    ap.add_argument("--api-port", type=int, required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--p99-rounds", type=int, default=8)
    ap.add_argument("--soak", type=int, default=0, help="start/stop cycles for the RSS soak (0: none)")
    ap.add_argument("--server-pid", type=int, default=0)
    a = ap.parse_args()
    mgr = Manager(a.manager_port)
    image = os.path.join(a.data, "services", "demo.httpd", "image-1")
    virsh = Virsh(a.work, os.path.join(image, "state.sav"), os.path.join(image, "disk.qcow2"))

    # Warm-up (not counted): the first QEMU start in a fresh embedded root probes QEMU's capabilities.
    virsh.restore_to_reply()
    start_to_reply(mgr, True)

    v, c_ready, c_plain = [], [], []
    for i in range(a.runs):
        v.append(virsh.restore_to_reply())
        c_ready.append(start_to_reply(mgr, True))
        c_plain.append(start_to_reply(mgr, False))
        print(f"  round {i + 1}: virsh restore {v[-1] * 1000:.0f} ms | cloudletd start (wait_ready) "
              f"{c_ready[-1] * 1000:.0f} ms | cloudletd start (no wait) {c_plain[-1] * 1000:.0f} ms", flush=True)
    mv, mr, mp = statistics.median(v), statistics.median(c_ready), statistics.median(c_plain)
    print(f"median start-to-first-reply: virsh restore {mv * 1000:.0f} ms, cloudletd {mr * 1000:.0f} ms "
          f"(wait_ready), {mp * 1000:.0f} ms (no wait)")
    print(f"ratio cloudletd/virsh: {mr / mv:.3f} (wait_ready, what phones use), {mp / mv:.3f} (no wait); "
          f"acceptance <= 1.05")

    # p99 of a cheap request while two starts are in flight.
    pinger = Pinger(a.api_port)
    pinger.thread.start()
    time.sleep(2)
    idle_end = now()
    windows = []
    for _ in range(a.p99_rounds):
        results = [None, None]

        def go(k):
            results[k] = mgr.start(True)
        t0 = now()
        ts = [threading.Thread(target=go, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        windows.append((t0, now()))
        for r in results:
            mgr.stop(r["id"])
        time.sleep(0.5)
    pinger.stop = True
    pinger.thread.join(30)
    idle = [lat for (t, lat) in pinger.samples if t < idle_end]
    busy = [lat for (t, lat) in pinger.samples if any(w0 <= t <= w1 for (w0, w1) in windows)]
    print(f"GET /healthz on the api listener: idle p50 {pct(idle, 50) * 1000:.2f} ms p99 {pct(idle, 99) * 1000:.2f} ms "
          f"({len(idle)} requests)")
    print(f"GET /healthz while two starts are in flight: p50 {pct(busy, 50) * 1000:.2f} ms "
          f"p99 {pct(busy, 99) * 1000:.2f} ms max {max(busy) * 1000:.2f} ms ({len(busy)} requests in "
          f"{len(windows)} windows of two concurrent starts); acceptance p99 <= 5 ms")

    if a.soak and a.server_pid:
        soak(mgr, a.soak, a.server_pid)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def soak(mgr, cycles, pid):
    """cloudletd's RSS over many start/stop cycles: it must come back to where it was after the first one (a
    leak or fragmentation shows as a climb). Starts do not wait for the guest's reply (the VM's work is QEMU's)."""
    mgr.stop(mgr.start(False)["id"])
    time.sleep(1)
    first = rss_kib(pid)
    marks = []
    t0 = now()
    for i in range(1, cycles + 1):
        mgr.stop(mgr.start(False)["id"])
        if i % 50 == 0 or i == cycles:
            marks.append((i, rss_kib(pid)))
            print(f"  soak: {i} cycles, cloudletd RSS {marks[-1][1] / 1024:.1f} MiB", flush=True)
    time.sleep(2)
    last = rss_kib(pid)
    print(f"soak: {cycles} start/stop cycles in {now() - t0:.0f} s; cloudletd RSS after the first "
          f"{first / 1024:.1f} MiB, after the last {last / 1024:.1f} MiB, growth {(last - first) / 1024:+.2f} MiB; "
          f"acceptance <= 2 MiB")


if __name__ == "__main__":
    main()
