#!/usr/bin/python3
"""Zeroconf tests in two network namespaces (A and B) joined by a veth pair, each with its own dbus-daemon
and avahi-daemon. See netns_env.py for the environment and for switching the command under test from
discovery_driver to cloudletd (CLOUDLET_DISCOVERY_CMD, CLOUDLET_DISCOVERY_CONFIG_TEMPLATE).

  discovery_test.py <case> [--driver PATH] [--runs N]

Cases: publish, mutual, restart, collision, no_daemon, static_file, startup_time.
"""

import os
import re
import signal
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_env import (ADDR, SERVICE_TYPE, Browser, Instance, check, command_is_driver, log,  # noqa: E402
                       main_wrapper, median_ms)

PORT = 9999
VISIBLE_S = 10  # generous bound for "shows up"; the timed acceptance is in startup_time and restart


def expect_clean_exit(inst):
    rc = inst.stop()
    out = inst.output()
    check(rc == 0, f"{inst.name}: exit code {rc} (expected 0, all handles closed)\n{out}")
    check("handle still open" not in out, f"{inst.name}: handles left open at exit\n{out}")


def peer_line(name):
    """The Discovery log line for a found/changed peer (the same in the driver and in cloudletd)."""
    return rf"peer '{re.escape(name)}' at (\S+) \(([^)]*)\) port (\d+) encryption=(\w+) on (\S+)"


def unique(tag):
    return f"{tag}-{os.getpid()}"


# ---- (a) publish: the exact record phones parse ---------------------------------------------------------------
def case_publish(env, args):
    env.up()
    browser = Browser(env, "b")
    name = unique("pub")
    inst = Instance(env, "a", name, PORT, encrypted=False)
    rec = browser.resolved(name, VISIBLE_S)
    check(rec is not None, f"'{name}' not visible from B\nbrowse:\n{browser.dump()}\noutput:\n{inst.output()}")
    log(f"B sees: {rec.line}")

    # The one-shot command from the issue, as a person would run it.
    records = [r for r in env.browse_once("b") if r.event == "=" and r.name == name]
    check(records, "avahi-browse -rpt _cloudlet._tcp in B does not list the service")
    for r in records:
        check(r.type == SERVICE_TYPE, f"type {r.type}")
        check(r.port == PORT, f"port {r.port}")
        check(r.txt == ["encryption=disabled"], f"TXT must be exactly one string, got {r.txt}")
        check(r.address == ADDR["a"], f"address {r.address}, expected {ADDR['a']}")
        check(r.host == f"{env.avahi_host('a')}.local", f"host {r.host}")
        check(r.name.split(" ")[-1] == name, "the last word of the instance name is the cloudlet name")
    log(f"avahi-browse -rpt in B: {records[0].line}")

    status = env.http_probe("b", ADDR["a"], PORT)
    check(status.startswith("HTTP/1."), f"no HTTP answer on {ADDR['a']}:{PORT}: {status!r}")
    log(f"serves: {status}")

    if inst.uses_driver:  # the API mode changes at run time: the TXT follows (driver: SIGUSR1)
        t = time.monotonic()
        inst.signal(signal.SIGUSR1)
        updated = None
        while updated is None and time.monotonic() - t < 5:  # avahi-browse -r reports a service once: ask again
            updated = next((r for r in env.browse_once("b") if r.event == "=" and r.name == name and
                            r.txt == ["encryption=enabled"]), None)
        check(updated is not None, f"TXT not updated to encryption=enabled\n{inst.output()}")
        log(f"TXT update seen in {time.monotonic() - t:.2f}s: {updated.line}")

    # Withdrawn on shutdown: a goodbye reaches B at once (not a cache expiry minutes later).
    t = time.monotonic()
    expect_clean_exit(inst)
    gone = browser.removed(name, 5, t)
    check(gone is not None, f"service not withdrawn on shutdown\n{browser.dump()}")
    log(f"withdrawn {gone.t - t:.2f}s after SIGTERM")


# ---- (b) two instances see each other --------------------------------------------------------------------------
def case_mutual(env, args):
    env.up()
    na, nb = unique("alpha"), unique("beta")
    ia = Instance(env, "a", na, PORT, encrypted=False)
    ib = Instance(env, "b", nb, PORT, encrypted=True)
    ma = ia.wait_output(peer_line(nb), VISIBLE_S)
    mb = ib.wait_output(peer_line(na), VISIBLE_S)
    check(ma is not None, f"A did not see B\n{ia.output()}")
    check(mb is not None, f"B did not see A\n{ib.output()}")
    log(f"A sees: {ma.group(0)}")
    log(f"B sees: {mb.group(0)}")
    check(ma.group(1) == f"{env.avahi_host('b')}.local" and ADDR["b"] in ma.group(2).split(", "),
          f"A's view of B: {ma.group(0)}")
    check(ma.group(3) == str(PORT) and ma.group(4) == "enabled", f"A's view of B: {ma.group(0)}")
    check(mb.group(1) == f"{env.avahi_host('a')}.local" and ADDR["a"] in mb.group(2).split(", "),
          f"B's view of A: {mb.group(0)}")
    check(mb.group(4) == "disabled", f"B's view of A: {mb.group(0)}")
    time.sleep(1.0)
    check(not re.search(peer_line(na), ia.output()), f"A lists itself as a peer\n{ia.output()}")
    check(not re.search(peer_line(nb), ib.output()), f"B lists itself as a peer\n{ib.output()}")

    # Discovery::stop() from inside a peer callback (driver only): it exits cleanly by itself.
    if command_is_driver():
        quitter = Instance(env, "a", unique("gamma"), PORT + 2, driver_args=["--no-publish", "--stop-on-peer"])
        try:
            rc = quitter.proc.wait(VISIBLE_S)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, f"stop() inside a peer callback: exit {rc}\n{quitter.output()}")
        log("stop() from inside a peer callback: clean exit")

    # Kept current: B's API mode changes (driver: SIGUSR1), A sees the new TXT through its open resolver.
    if ib.uses_driver:
        t = time.monotonic()
        ib.signal(signal.SIGUSR1)
        changed = None
        while changed is None and time.monotonic() - t < 10:
            changed = next((m for m in re.finditer(peer_line(nb), ia.output()) if m.group(4) == "disabled"), None)
            time.sleep(0.05)
        check(changed is not None, f"A did not see B's TXT change\n{ia.output()}")
        log(f"A saw B's TXT change within {time.monotonic() - t:.2f}s")

    # B leaves; A notices through B's goodbye.
    t = time.monotonic()
    expect_clean_exit(ib)
    lost = ia.wait_output(rf"peer '{re.escape(nb)}' on \S+ is gone", 5)
    check(lost is not None, f"A did not notice B leaving\n{ia.output()}")
    log(f"A saw B leave within {time.monotonic() - t:.2f}s")
    expect_clean_exit(ia)


# ---- (c) avahi-daemon restarts ---------------------------------------------------------------------------------
def case_restart(env, args):
    env.up()
    browser_b = Browser(env, "b")
    name = unique("rst")
    inst = Instance(env, "a", name, PORT)
    check(browser_b.resolved(name, VISIBLE_S) is not None, f"not visible\n{inst.output()}")

    # 1. A clean restart (SIGTERM sends goodbyes, so B forgets the record first).
    t = time.monotonic()
    env.stop_avahi("a", signal.SIGTERM)
    check(browser_b.removed(name, 5, t) is not None, f"B kept the record after avahi-daemon stopped\n"
          f"{browser_b.dump()}")
    check(inst.wait_output(r"lost avahi-daemon", 5) is not None, f"no reconnect\n{inst.output()}")
    time.sleep(0.5)
    t_restart = time.monotonic()
    env.start_avahi("a", wait=False)
    rec = browser_b.resolved(name, 5, t_restart)
    check(rec is not None, f"not re-published within 5 s of the restart\n{browser_b.dump()}\n{inst.output()}")
    log(f"re-published after a clean restart: visible in B {rec.t - t_restart:.2f}s after avahi-daemon started")

    # 2. A crash (SIGKILL: no goodbye, B's cache keeps the record). A browser inside A sees only what A's
    # fresh daemon holds, so the record there proves the re-registration.
    env.stop_avahi("a", signal.SIGKILL)
    time.sleep(0.5)
    t_restart = time.monotonic()
    env.start_avahi("a", wait=False)
    env.wait_avahi("a")
    browser_a = Browser(env, "a")
    rec = browser_a.resolved(name, 5 - (time.monotonic() - t_restart))
    check(rec is not None, f"not re-published within 5 s of the crash restart\n{browser_a.dump()}\n"
          f"{inst.output()}")
    check(rec.txt == ["encryption=disabled"] and rec.port == PORT, f"record after restart: {rec.line}")
    log(f"re-published after a crash: registered {rec.t - t_restart:.2f}s after avahi-daemon started")
    check(len(re.findall(r"published '" + re.escape(name), inst.output())) >= 3,
          f"expected three registrations\n{inst.output()}")

    status = env.http_probe("b", ADDR["a"], PORT)
    check(status.startswith("HTTP/1."), f"stopped serving: {status!r}")
    expect_clean_exit(inst)


# ---- (d) name collisions ---------------------------------------------------------------------------------------
def case_collision(env, args):
    env.up()
    browser = Browser(env, "b")
    name = unique("same")
    first = Instance(env, "a", name, PORT)
    check(browser.resolved(name, VISIBLE_S) is not None, f"first not visible\n{first.output()}")

    # Another host takes the same name: it loses the probe and renames.
    second = Instance(env, "b", name, PORT)
    m = second.wait_output(r"service name '([^']*)' is already taken; using '([^']*)'", VISIBLE_S)
    check(m is not None, f"second instance did not report a collision\n{second.output()}")
    alt = m.group(2)
    check(alt != name and alt.startswith(name), f"alternative name {alt!r}")
    log(f"cross-host collision: {m.group(0)}")
    pub = second.wait_output(r"published '" + re.escape(alt) + "'", VISIBLE_S)
    check(pub is not None, f"alternative not published\n{second.output()}")
    rec = browser.resolved(alt, VISIBLE_S)
    check(rec is not None and rec.host == f"{env.avahi_host('b')}.local", f"{alt!r} not visible from B")
    check("already taken" not in first.output(), f"the first owner renamed\n{first.output()}")

    # The same name again on A's host (same avahi-daemon as the first): refused locally by the daemon and
    # renamed. Its first alternative is usually the second's name, freshly announced; mDNS then resolves that
    # conflict one way or the other (a lost probe, or a conflicting announcement renaming either holder), so
    # check the settled state rather than one path.
    third = Instance(env, "a", name, PORT + 1)
    m3 = third.wait_output(r"published '([^']*)'", VISIBLE_S)
    check(m3 is not None, f"third not published\n{third.output()}")
    check("already taken" in third.output(), f"no local collision logged\n{third.output()}")
    log(f"same-host collision: third first published as {m3.group(1)!r}")

    def final_name(inst):
        names = re.findall(r"published '([^']*)'", inst.output())
        return names[-1] if names else None

    want = None
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        time.sleep(1.0)
        finals = [final_name(i) for i in (first, second, third)]
        if None in finals or len(set(finals)) != 3:
            continue
        want = {finals[0]: (env.avahi_host("a"), PORT), finals[1]: (env.avahi_host("b"), PORT),
                finals[2]: (env.avahi_host("a"), PORT + 1)}
        seen = {r.name: (r.host.removesuffix(".local"), r.port) for r in env.browse_once("b") if r.event == "="}
        if all(seen.get(n) == v for n, v in want.items()):
            break
        want = None
    check(want is not None, "names did not settle to three distinct, resolvable ones\n"
          f"first:\n{first.output()}\nsecond:\n{second.output()}\nthird:\n{third.output()}\n{browser.dump()}")
    check(final_name(first) == name, "the first (long established) owner must keep its name")
    for n in want:
        check(n == name or re.fullmatch(re.escape(name) + r" #\d+", n), f"unexpected name {n!r}")
    log(f"settled names: {sorted(want)}")

    for inst in (third, second, first):
        expect_clean_exit(inst)


# ---- (e) no avahi-daemon -----------------------------------------------------------------------------------------
def case_no_daemon(env, args):
    # 1. No system bus at all in A: starts, serves, retries quietly, exits cleanly.
    name = unique("lonely")
    inst = Instance(env, "a", name, PORT, bus=False)
    check(inst.wait_output(r"cannot reach avahi-daemon", 5) is not None, f"no warning\n{inst.output()}")
    status = env.http_probe("b", ADDR["a"], PORT)
    check(status.startswith("HTTP/1."), f"does not serve without D-Bus: {status!r}\n{inst.output()}")
    log(f"serves without any bus: {status}")
    expect_clean_exit(inst)

    # 2. A bus but no avahi-daemon: waits for the daemon; publishes as soon as it starts.
    env.start_dbus("a")
    env.start_dbus("b")
    env.start_avahi("b")
    browser = Browser(env, "b")
    name = unique("waiting")
    inst = Instance(env, "a", name, PORT)
    check(inst.wait_output(r"avahi-daemon is not running; waiting for it", 5) is not None,
          f"no waiting message\n{inst.output()}")
    status = env.http_probe("b", ADDR["a"], PORT)
    check(status.startswith("HTTP/1."), f"does not serve while waiting: {status!r}")
    time.sleep(1.0)
    check(inst.proc.poll() is None, "exited while waiting")
    t = time.monotonic()
    env.start_avahi("a", wait=False)
    rec = browser.resolved(name, 5, t)
    check(rec is not None, f"not published within 5 s of avahi-daemon appearing\n{inst.output()}")
    log(f"avahi-daemon appeared: visible in B {rec.t - t:.2f}s later")
    expect_clean_exit(inst)


# ---- the static service file for avahi's own publishing --------------------------------------------------------------
def case_static_file(env, args):
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "..", "discovery", "cloudlet.service"))
    check(os.path.isfile(path), f"missing {path}")
    dest = os.path.join(env.services_dir("a"), "cloudlet.service")
    shutil.copyfile(path, dest)
    os.chmod(dest, 0o644)
    env.up()
    browser = Browser(env, "b")
    host = env.avahi_host("a")  # %h: the daemon's host name
    rec = browser.resolved(host, VISIBLE_S)
    check(rec is not None, f"static service not visible\n{browser.dump()}")
    check(rec.port == PORT and rec.txt == ["encryption=disabled"], f"static record: {rec.line}")
    log(f"static file: {rec.line}")


# ---- start-up time: process start to visible in avahi-browse in B --------------------------------------------------
def case_startup_time(env, args):
    env.up()
    browser = Browser(env, "b")
    time.sleep(0.5)  # let the browser settle on an empty network
    times = []
    for i in range(max(5, args.runs)):
        name = unique(f"time{i}")
        t0 = time.monotonic()
        inst = Instance(env, "a", name, PORT)
        rec = browser.resolved(name, VISIBLE_S, t0)
        check(rec is not None, f"run {i}: not visible\n{inst.output()}")
        times.append(rec.t - t0)
        t = time.monotonic()
        expect_clean_exit(inst)
        check(browser.removed(name, 5, t) is not None, f"run {i}: not withdrawn")
    ms = [round(x * 1000) for x in times]
    med = median_ms(times)
    log(f"start -> visible in avahi-browse (ns B), {len(ms)} runs: {ms} ms; median {med:.0f} ms")
    check(med < 1500, f"median {med:.0f} ms >= 1500 ms")


CASES = {
    "publish": case_publish,
    "mutual": case_mutual,
    "restart": case_restart,
    "collision": case_collision,
    "no_daemon": case_no_daemon,
    "static_file": case_static_file,
    "startup_time": case_startup_time,
}

if __name__ == "__main__":
    sys.exit(main_wrapper(CASES))
