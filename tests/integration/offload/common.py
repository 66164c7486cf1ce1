"""Shared set-up for the offload API's integration tests: a cloudletd with the offload_api plugin (and the
mailbox_poster fixture), device pairing through the manager, and raw HTTP helpers."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import harness  # noqa: E402
import client as cl  # noqa: E402

OFFLOAD = harness.plugin_entry("offload_api")
POSTER_SO = os.path.join(harness.BUILD_DIR, "tests", "offload", "mailbox_poster.so")
POSTER = {"name": "mailbox_poster", "path": POSTER_SO, "prefixes": ["/plugins/mailbox_poster/"]}


def config(mode, extra=None):
    cfg = {"plugins": [OFFLOAD, POSTER], "api": {"mode": mode}}
    cfg.update(extra or {})
    return cfg


def operations(srv):
    status, info = srv.get_json("manager", "/manager/api/info")
    assert status == 200, status
    return set(info["operations"])


def pair(srv, device_id, duration_s=3600):
    """Pairs a device as the manager does; returns its API password (what the phone derives from device.key)."""
    status, _, body = srv.request("manager", "POST", "/manager/api/devices",
                                  body=json.dumps({"device_id": device_id, "duration_s": duration_s}),
                                  headers={"Content-Type": "application/json"})
    assert status == 201, (status, body)
    reply = json.loads(body)
    key = reply["device_key"]
    assert isinstance(key, str) and len(key) == 64, reply
    password = cl.password_of(key)
    assert reply["api_password"] == password, "the phone and the cloudlet must derive the same password"
    return password


def revoke(srv, device_id):
    status, _, body = srv.request("manager", "POST", f"/manager/api/devices/{device_id}/revoke")
    assert status == 200, (status, body)


def post_message(srv, device_id, service_id, message, params, secret=False):
    args = {"device_id": device_id, "service_id": service_id, "message": message, "params": params}
    if secret:
        args["secret"] = True
    status, _, body = srv.request("manager", "POST", "/plugins/mailbox_poster/post",
                                  body=json.dumps(args),
                                  headers={"Content-Type": "application/json"})
    assert status == 200, (status, body)


def raw(srv, method, target, body=None, headers=None, timeout=30):
    """One request on its own connection; returns (status, headers, body) and checks Content-Length."""
    status, hdrs, data = srv.request("api", method, target, body=body, headers=headers, timeout=timeout)
    assert "Content-Length" in hdrs, (target, status, hdrs)
    assert int(hdrs["Content-Length"]) == len(data) or method == "HEAD", (target, hdrs, len(data))
    return status, hdrs, data


def cloudlet(srv, device_id="", password=None):
    return cl.Cloudlet("127.0.0.1", srv.api_port, device_id=device_id, password=password)


def port_open(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(cond, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
