"""Two network namespaces joined by a veth pair, each with a private dbus-daemon and avahi-daemon.

avahi-daemon never runs in the default namespace (its multicast would leave the machine): every daemon and
every tool runs through `ip netns exec`. Each avahi-daemon also gets its own /run (tmpfs: the daemon's pid
file and socket have fixed paths) and its own /etc/avahi/services (a bind-mounted scratch directory) inside
the private mount namespace `ip netns exec` creates, so concurrent daemons never meet.

Names carry the PID (cldisc<pid>a/b, cdv<pid>a/b). Clean-up runs on every exit path: normal return,
exceptions, SIGTERM/SIGINT/SIGHUP (handlers raise SystemExit), and if this process is SIGKILLed (a ctest
timeout), every child dies with it (setpriv --pdeathsig KILL) and the next run removes the namespaces whose
owner PID is gone.

The command under test is a template (environment CLOUDLET_DISCOVERY_CMD) with placeholders:
  {driver} {build} {source} {name} {port} {encryption} ("enabled"/"disabled") {encrypted} ("true"/"false")
  {api_mode} ("encrypted"/"open") {manager_port} (port + 1000) {workdir} (a scratch directory of this
  instance) {config} (see below)
If CLOUDLET_DISCOVERY_CONFIG_TEMPLATE names a file, it is formatted with the same placeholders and written to
{config} before each start. Default: the discovery_driver. For cloudletd:
  CLOUDLET_DISCOVERY_CMD='{build}/cloudletd --config {config}'
  CLOUDLET_DISCOVERY_CONFIG_TEMPLATE=tests/integration/discovery/cloudletd.json.in
The checks read the Discovery log lines ("published '...'", "peer '...' at ...", ...), which cloudletd
writes too (log level info or lower); the driver-only checks (SIGUSR1, --stop-on-peer) are skipped.
Python 3 standard library only.
"""

import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

IP = "/usr/sbin/ip"
NS_RE = re.compile(r"^cldisc(\d+)([ab])$")
TMP_RE = re.compile(r"^cldisc(\d+)-\w+$")
ADDR = {"a": "10.77.0.1", "b": "10.77.0.2"}
SERVICE_TYPE = "_cloudlet._tcp"
DEFAULT_CMD = "{driver} --name {name} --port {port} --encryption {encryption} --listen 0.0.0.0"


class TestFailure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise TestFailure(message)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(argv, timeout=15, check_rc=True, env=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                       env=env)
    if check_rc and p.returncode != 0:
        raise TestFailure(f"{' '.join(argv)} failed ({p.returncode}): {p.stdout.strip()}")
    return p


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_stale():
    """Removes namespaces (and their processes) left by runs that were killed outright."""
    out = run([IP, "netns", "list"], check_rc=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if not m or pid_alive(int(m.group(1))):
            continue
        pids = run([IP, "netns", "pids", name], check_rc=False).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run([IP, "netns", "delete", name], check_rc=False)
        log(f"removed stale namespace {name}")
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        m = TMP_RE.match(entry)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
            log(f"removed stale directory {entry}")


def unescape_label(text):
    """avahi-browse -p escapes names like DNS labels: '\\032' is a space, '\\.' a dot."""
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m.group(1))) if m.group(1).isdigit() else m.group(1), text)


def parse_txt(field):
    """The TXT field of avahi-browse -p: each string quoted, separated by spaces."""
    return [s.replace('\\"', '"').replace("\\\\", "\\") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', field)]


class Record:
    def __init__(self, t, line):
        self.t = t
        self.line = line
        f = line.split(";")
        self.event = f[0]
        self.interface = f[1] if len(f) > 1 else ""
        self.protocol = f[2] if len(f) > 2 else ""
        self.name = unescape_label(f[3]) if len(f) > 3 else ""
        self.type = f[4] if len(f) > 4 else ""
        self.domain = f[5] if len(f) > 5 else ""
        self.host = f[6] if len(f) > 6 else ""
        self.address = f[7] if len(f) > 7 else ""
        self.port = int(f[8]) if len(f) > 8 and f[8].isdigit() else None
        self.txt = parse_txt(";".join(f[9:])) if len(f) > 9 else []

    def __repr__(self):
        return self.line


class Browser:
    """A continuous `avahi-browse -rp` in one namespace; lines are kept with their arrival time."""

    def __init__(self, env, side, service_type=SERVICE_TYPE):
        self.records = []
        self.cond = threading.Condition()
        self.proc = env.spawn(side, ["avahi-browse", "-rp", "--no-db-lookup", service_type],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            rec = Record(time.monotonic(), line.rstrip("\n"))
            with self.cond:
                self.records.append(rec)
                self.cond.notify_all()

    def wait(self, pred, timeout, since=0.0):
        """The first record after `since` matching pred, waiting up to timeout seconds; None if none."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.records:
                    if r.t >= since and pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.2))

    def resolved(self, name, timeout, since=0.0):
        return self.wait(lambda r: r.event == "=" and r.name == name and r.type == SERVICE_TYPE, timeout, since)

    def removed(self, name, timeout, since=0.0):
        return self.wait(lambda r: r.event == "-" and r.name == name, timeout, since)

    def dump(self):
        with self.cond:
            return "\n".join(r.line for r in self.records)


def command_is_driver():
    template = os.environ.get("CLOUDLET_DISCOVERY_CMD", DEFAULT_CMD)
    return shlex.split(template)[0] == "{driver}" or os.path.basename(shlex.split(template)[0]) == "discovery_driver"


class Instance:
    """One run of the command under test inside a namespace; its stdout+stderr go to a file."""

    def __init__(self, env, side, name, port=9999, encrypted=False, bus=True, driver_args=()):
        self.env = env
        self.side = side
        self.name = name
        self.workdir = tempfile.mkdtemp(prefix=f"inst-{name}-", dir=env.tmp)
        self.out_path = os.path.join(self.workdir, "output.log")
        values = {
            "driver": env.driver, "build": env.build_dir, "source": env.source_dir, "name": name,
            "port": str(port), "encryption": "enabled" if encrypted else "disabled",
            "encrypted": "true" if encrypted else "false", "api_mode": "encrypted" if encrypted else "open",
            "manager_port": str(port + 1000), "workdir": self.workdir,
            "config": os.path.join(self.workdir, "cloudletd.json"),
        }
        template_file = os.environ.get("CLOUDLET_DISCOVERY_CONFIG_TEMPLATE")
        if template_file:
            with open(template_file) as f:
                text = f.read()
            for k, v in values.items():
                text = text.replace("{" + k + "}", v)
            with open(values["config"], "w") as f:
                f.write(text)
        template = os.environ.get("CLOUDLET_DISCOVERY_CMD", DEFAULT_CMD)
        argv = [tok.format(**values) for tok in shlex.split(template)]
        self.uses_driver = command_is_driver()
        if self.uses_driver:
            argv += list(driver_args)  # options only the driver has (the real daemon is configured by file)
        self.out = open(self.out_path, "w")
        self.started = time.monotonic()
        self.proc = env.spawn(side, argv, stdout=self.out, stderr=subprocess.STDOUT, bus=bus)

    def output(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def wait_output(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.output())
            if m or time.monotonic() > deadline:
                return m
            if self.proc.poll() is not None:
                return rx.search(self.output())
            time.sleep(0.05)

    def signal(self, signum):
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout=10):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.out.close()


class Env:
    def __init__(self, driver=None):
        self.pid = os.getpid()
        self.driver = driver or ""
        self.build_dir = os.environ.get("CLOUDLET_BUILD_DIR", "")
        self.source_dir = os.environ.get("CLOUDLET_SOURCE_DIR", "")
        self.ns = {s: f"cldisc{self.pid}{s}" for s in "ab"}
        self.veth = {s: f"cdv{self.pid}{s}" for s in "ab"}
        self.tmp = None
        self.procs = []
        self.dbus = {}
        self.avahi = {}
        self.created_ns = []

    # ---- lifetime -------------------------------------------------------------------------------------------
    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    @staticmethod
    def _on_signal(signum, frame):
        raise SystemExit(128 + signum)

    def _setup(self):
        check(os.geteuid() == 0, "needs root (network namespaces)")
        for tool in (IP, "/usr/sbin/avahi-daemon", "/usr/bin/dbus-daemon", "/usr/bin/avahi-browse",
                     "/usr/bin/setpriv", "/usr/bin/dbus-send"):
            check(os.access(tool, os.X_OK), f"missing {tool}")
        sweep_stale()
        self.tmp = tempfile.mkdtemp(prefix=f"cldisc{self.pid}-")
        os.chmod(self.tmp, 0o711)  # avahi-daemon drops root and must still reach the bus socket in here
        for s in "ab":
            run([IP, "netns", "add", self.ns[s]])
            self.created_ns.append(self.ns[s])
            run([IP, "-n", self.ns[s], "link", "set", "lo", "up"])
        run([IP, "-n", self.ns["a"], "link", "add", self.veth["a"], "type", "veth", "peer", "name",
             self.veth["b"], "netns", self.ns["b"]])
        for s in "ab":
            run([IP, "-n", self.ns[s], "addr", "add", ADDR[s] + "/24", "dev", self.veth[s]])
            run([IP, "-n", self.ns[s], "link", "set", self.veth[s], "up"])
            os.makedirs(self.services_dir(s), mode=0o755)
            os.chmod(self.services_dir(s), 0o755)

    def cleanup(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in self.created_ns:
            for pid in run([IP, "netns", "pids", name], check_rc=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run([IP, "netns", "delete", name], check_rc=False)  # removes the veth pair too
        self.created_ns = []
        if self.tmp and os.environ.get("CLOUDLET_DISCOVERY_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.procs = []

    # ---- processes ------------------------------------------------------------------------------------------
    def bus_path(self, side):
        return os.path.join(self.tmp, f"bus-{side}")

    def services_dir(self, side):
        return os.path.join(self.tmp, f"services-{side}")

    def process_env(self, side, bus=True):
        env = dict(os.environ)
        env["LC_ALL"] = "C"
        # bus=False points at a socket that never exists: "no system bus at all".
        path = self.bus_path(side) if bus else os.path.join(self.tmp, f"no-bus-{side}")
        env["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=" + path
        return env

    def ns_argv(self, side, argv):
        return [IP, "netns", "exec", self.ns[side], "/usr/bin/setpriv", "--pdeathsig", "KILL", "--"] + argv

    def spawn(self, side, argv, bus=True, **kw):
        p = subprocess.Popen(self.ns_argv(side, argv), env=self.process_env(side, bus), **kw)
        self.procs.append(p)
        return p

    def run_in(self, side, argv, timeout=10, check_rc=True):
        return run(self.ns_argv(side, argv), timeout=timeout, check_rc=check_rc, env=self.process_env(side))

    # ---- daemons --------------------------------------------------------------------------------------------
    def start_dbus(self, side):
        with open("/usr/share/dbus-1/system.conf") as f:
            conf = f.read()
        # A private system bus: our own socket, no fork, no pid file, no syslog, no service activation.
        conf = re.sub(r"<listen>.*?</listen>", f"<listen>unix:path={self.bus_path(side)}</listen>", conf)
        for pattern in (r"<fork/>", r"<syslog/>", r"<pidfile>.*?</pidfile>", r"<user>.*?</user>",
                        r"<standard_system_servicedirs/>", r"<servicehelper>.*?</servicehelper>"):
            conf = re.sub(pattern, "", conf)
        conf = conf.replace("<includedir>system.d</includedir>",
                            "<includedir>/usr/share/dbus-1/system.d</includedir>")
        path = os.path.join(self.tmp, f"dbus-{side}.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.dbus[side] = self.spawn(side, ["/usr/bin/dbus-daemon", f"--config-file={path}", "--nofork",
                                            "--nopidfile"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not os.path.exists(self.bus_path(side)):
            check(self.dbus[side].poll() is None, f"dbus-daemon in {side} exited")
            check(time.monotonic() < deadline, f"dbus-daemon in {side} did not start")
            time.sleep(0.02)

    def avahi_conf(self, side):
        path = os.path.join(self.tmp, f"avahi-{side}.conf")
        with open(path, "w") as f:
            f.write(f"""[server]
host-name=cl{self.pid}{side}
use-ipv4=yes
use-ipv6=no
allow-interfaces={self.veth[side]}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no
publish-addresses=yes
# Otherwise the veth's IPv6 link-local address is announced over IPv4 too, and a resolver (a phone, or
# avahi-browse -r) may report it instead of the IPv4 address, whichever record comes first.
publish-aaaa-on-ipv4=no

[reflector]
enable-reflector=no
""")
        return path

    def avahi_host(self, side):
        return f"cl{self.pid}{side}"

    def start_avahi(self, side, wait=True):
        conf = self.avahi_conf(side)
        script = ('mount -t tmpfs -o mode=0755 cldisc /run && '
                  'mount --bind "$0" /etc/avahi/services && '
                  'exec /usr/sbin/avahi-daemon -f "$1" --no-chroot --no-rlimits --no-proc-title')
        self.avahi[side] = self.spawn(side, ["/bin/sh", "-c", script, self.services_dir(side), conf],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            self.wait_avahi(side)
        return self.avahi[side]

    def wait_avahi(self, side, timeout=10):
        """Until the daemon's server state is RUNNING (2): its host name is established."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.run_in(side, ["/usr/bin/dbus-send", "--system", "--print-reply",
                                   "--dest=org.freedesktop.Avahi", "/", "org.freedesktop.Avahi.Server.GetState"],
                            check_rc=False, timeout=5)
            if "int32 2" in p.stdout:
                return
            check(self.avahi[side].poll() is None, f"avahi-daemon in {side} exited")
            check(time.monotonic() < deadline, f"avahi-daemon in {side} not running after {timeout}s")
            time.sleep(0.05)

    def stop_avahi(self, side, signum=signal.SIGTERM):
        p = self.avahi.pop(side)
        p.send_signal(signum)
        p.wait(10)

    def up(self, sides="ab"):
        for s in sides:
            self.start_dbus(s)
        for s in sides:
            self.start_avahi(s, wait=False)
        for s in sides:
            self.wait_avahi(s)

    # ---- probes ---------------------------------------------------------------------------------------------
    def http_probe(self, side, host, port, timeout=3):
        """One HTTP/1.0 GET from a namespace; returns the status line ('' if nothing came back)."""
        code = ("import socket,sys\n"
                "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))\n"
                "s.sendall(b'GET / HTTP/1.0\\r\\nHost: cloudlet\\r\\n\\r\\n')\n"
                "d=b''\n"
                "while len(d)<65536:\n"
                "  c=s.recv(4096)\n"
                "  if not c: break\n"
                "  d+=c\n"
                "print(d.split(b'\\r\\n')[0].decode('latin-1'))\n")
        p = self.run_in(side, ["/usr/bin/python3", "-c", code, host, str(port), str(timeout)],
                        timeout=timeout + 5, check_rc=False)
        return p.stdout.strip() if p.returncode == 0 else ""

    def browse_once(self, side, timeout=15):
        """`avahi-browse -rpt _cloudlet._tcp` exactly as a person would run it."""
        p = self.run_in(side, ["avahi-browse", "-rpt", SERVICE_TYPE], timeout=timeout, check_rc=False)
        return [Record(0, line) for line in p.stdout.splitlines() if line]


def median_ms(values):
    return statistics.median(values) * 1000.0


def main_wrapper(cases, argv=None):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(cases))
    ap.add_argument("--driver", default=os.environ.get("CLOUDLET_DISCOVERY_DRIVER", ""))
    ap.add_argument("--runs", type=int, default=7, help="startup_time: number of runs")
    args = ap.parse_args(argv)
    try:
        with Env(args.driver) as env:
            cases[args.case](env, args)
    except TestFailure as e:
        log(f"FAIL: {e}")
        return 1
    log("PASS")
    return 0


if __name__ == "__main__":
    sys.exit("import this module; run discovery_test.py")
