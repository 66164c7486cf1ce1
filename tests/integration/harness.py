"""Integration-test harness: runs the real cloudletd binary on loopback with a generated configuration.

Only the Python standard library (/usr/bin/python3). Every wait is bounded; every process started is stopped
in tearDown, also when a test fails.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

BUILD_DIR = os.environ.get("CLOUDLET_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SOURCE_DIR = os.environ.get("CLOUDLET_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.path.join(BUILD_DIR, "cloudletd")


def sanitizer():
    """The sanitizer the build under test uses ("address", "thread" or ""), from its CMake cache."""
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CLOUDLET_SANITIZE:"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ephemeral_range():
    """The kernel's ephemeral port range (net.ipv4.ip_local_port_range): ports it hands to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def port_block(size):
    """(first, last) of `size` consecutive ports nobody listens on, outside the ephemeral range (fixed ports inside
    it get taken by outgoing connections after heavy loopback traffic), at random so that concurrent runs rarely
    meet."""
    lo, hi = ephemeral_range()
    spans = [(a, b) for a, b in ((10000, lo - size), (hi + 1, 65536 - size)) if a <= b]
    rng = random.Random()
    for _ in range(200):
        first, last = rng.choice(spans)
        base = rng.randint(first, last)
        if all(port_free(p) for p in range(base, base + size)):
            return base, base + size - 1
    raise RuntimeError(f"no {size} free ports outside the ephemeral range {lo}-{hi}")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


# What config/cloudletd.json gives plugins beyond the defaults: URL prefixes outside /plugins/<name>/ and
# privileged operations.
PLUGIN_EXTRA = {
    "manager": {"prefixes": ["/manager/"], "guards": ["manager"], "grants": ["device.pair", "device.revoke", "device.unpair", "service.delete", "instance.stop.force"]},
    "offload_api": {"prefixes": ["/api/"], "grants": ["device.auth"]},
}


def plugin_entry(name):
    """A plugins[] entry for a plugin of the build, configured as config/cloudletd.json does."""
    return dict({"name": name}, **PLUGIN_EXTRA.get(name, {}))


def bearer(raw, token):
    """A raw HTTP request (bytes or str) with the manager's API token added after its request line: the
    manager refuses anonymous requests (401) before reading their bodies, so raw-socket tests of what lies
    behind need an authenticated client."""
    if isinstance(raw, str):
        raw = raw.encode()
    return raw.replace(b"\r\n", f"\r\nAuthorization: Bearer {token}\r\n".encode(), 1)


class Server:
    """One cloudletd process with its own data directory and ports. The manager plugin (the /manager/api routes)
    is loaded too, whatever the plugin list says, unless manager=False."""

    def __init__(self, workdir, config=None, args=(), plugins=("hello",), name="cl", manager=True):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.api_port = free_port()
        self.manager_port = free_port()
        self.log_path = os.path.join(self.dir, "cloudletd.log")
        cfg = {
            "data_dir": os.path.join(self.dir, "data"),
            "log": {"level": "debug"},
            "listeners": {
                "api": {"host": "127.0.0.1", "port": self.api_port},
                "manager": {"host": "127.0.0.1", "port": self.manager_port,
                            "webroot": os.path.join(SOURCE_DIR, "webroot")},
            },
            "discovery": {"enabled": False},
            "plugin_dir": os.path.join(BUILD_DIR, "plugins"),
            "plugins_dlclose": True,
            "plugins": [plugin_entry(p) for p in plugins],
        }
        for k, v in (config or {}).items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
        named = [p if isinstance(p, str) else p.get("name") for p in cfg["plugins"]]
        if manager and "manager" not in named:
            cfg["plugins"] = [plugin_entry("manager")] + list(cfg["plugins"])
        self.config = cfg
        self.config_path = os.path.join(self.dir, "cloudletd.json")
        with open(self.config_path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.args = list(args)
        self.proc = None
        self.manager = manager or "manager" in named
        self.token = None  # the manager's API token, made before the first start (cloudletd --new-token)

    def new_token(self, name="tests"):
        """A new manager API token from the command line (`cloudletd --new-token`), whether or not the server
        runs; the harness sends the first one with every manager request."""
        r = subprocess.run([BINARY, "--config", self.config_path, "--new-token", name], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip().startswith("cl_"), \
            f"--new-token failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r.stdout.strip()

    def auth_headers(self):
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self, wait=True, timeout=20):
        if self.manager and self.token is None:
            self.token = self.new_token()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BINARY, "--config", self.config_path] + self.args,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cloudletd exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                status, _, _ = self.get("manager", "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"cloudletd not ready after {timeout}s:\n{self.log_text()}")

    def port(self, listener):
        return self.api_port if listener == "api" else self.manager_port

    def request(self, listener, method, path, body=None, headers=None, timeout=10, anonymous=False):
        """One request; on the manager listener it carries the harness's API token unless anonymous or the
        caller sends its own Authorization."""
        headers = dict(headers or {})
        if listener == "manager" and not anonymous and not any(k.lower() == "authorization" for k in headers):
            headers.update(self.auth_headers())
        conn = http.client.HTTPConnection("127.0.0.1", self.port(listener), timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    def get(self, listener, path, timeout=10, anonymous=False):
        return self.request(listener, "GET", path, timeout=timeout, anonymous=anonymous)

    def get_json(self, listener, path):
        status, headers, body = self.get(listener, path)
        return status, json.loads(body) if body else None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the server; returns its exit status (None if it had to be killed)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.log.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class TestCase(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="cl-it-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop(signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def server(self, **kw):
        s = Server(self.workdir, name=f"cl{len(self.servers)}", **kw)
        self.servers.append(s)
        return s

    def run_binary(self, args, timeout=10):
        return subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=timeout)
