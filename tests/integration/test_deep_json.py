"""Issue 15, defect 1: deeply nested JSON on any route that reads JSON. RapidJSON's recursive parser overflowed
the stack (a segfault, every session gone) on a body of '[' or of '{"a":' repeated. Every body must now get a
400 that names the reason, with the server up and answering afterwards. Loopback only."""
import json
import os
import unittest

import harness

POSTER_SO = os.path.join(harness.BUILD_DIR, "tests", "offload", "mailbox_poster.so")

# The manager's POST routes that take a JSON body (devices, services, instances, jobs), and one that hands the
# body to an operation from a plugin (message.post through the mailbox_poster fixture).
MANAGER_ROUTES = [
    "/manager/api/devices",
    "/manager/api/services",
    "/manager/api/services/demo.svc",
    "/manager/api/services/demo.svc/refresh",
    "/manager/api/instances",
    "/manager/api/instances/i-1/stop",
    "/manager/api/instances/i-1/pause",
    "/manager/api/instances/i-1/resume",
    "/manager/api/jobs/j-1/cancel",
]

BODIES = {
    "140 KB of [": b"[" * (140 * 1024),
    "140 KB of {\"a\":": b'{"a":' * (28 * 1024),
    "1 MB of [": b"[" * 1000000,  # just under the buffered-body limit: far beyond any stack
    "[{ mixed": b'[{"a":' * 100000,
}


class DeepJson(harness.TestCase):
    def setUp(self):
        super().setUp()
        plugins = [harness.plugin_entry("offload_api"),
                   {"name": "mailbox_poster", "path": POSTER_SO, "prefixes": ["/plugins/mailbox_poster/"]}]
        self.srv = self.server(config={"plugins": plugins, "api": {"mode": "both"}}).start()

    def tearDown(self):
        if self.srv.proc and self.srv.proc.poll() is None:
            self.assertEqual(self.srv.stop(), 0, self.srv.log_text()[-3000:])
        super().tearDown()

    def post(self, listener, path, body, content_type="application/json"):
        return self.srv.request(listener, "POST", path, body=body, headers={"Content-Type": content_type}, timeout=30)

    def assert_up(self, after):
        self.assertIsNone(self.srv.proc.poll(), f"cloudletd died after {after}:\n{self.srv.log_text()[-3000:]}")
        for listener in ("manager", "api"):
            self.assertEqual(self.srv.get(listener, "/healthz", timeout=5)[0], 200, after)

    def test_every_manager_json_route_answers_400_with_the_reason(self):
        for path in MANAGER_ROUTES:
            for name, body in BODIES.items():
                status, _, reply = self.post("manager", path, body)
                self.assertEqual(status, 400, (path, name, reply[:200]))
                error = json.loads(reply)["error"]
                self.assertIn("nesting deeper than 128", error, (path, name))
                self.assert_up(f"{name} on {path}")
        # The routes still work for honest bodies.
        status, _, reply = self.post("manager", "/manager/api/devices", json.dumps({"device_id": "d1", "duration_s": 60}))
        self.assertEqual(status, 201, reply)

    def test_operation_arguments_from_a_plugin(self):
        for name, body in BODIES.items():
            status, _, reply = self.post("manager", "/plugins/mailbox_poster/post", body)
            self.assertEqual(status, 400, (name, reply[:200]))
            self.assert_up(name)
        deep_params = json.dumps({"device_id": "d", "service_id": "s", "message": "m"})[:-1] + ',"params":' + \
            "[" * 5000 + "]" * 5000 + "}"
        status, _, _ = self.post("manager", "/plugins/mailbox_poster/post", deep_params)
        self.assertEqual(status, 400)
        self.assert_up("deep params")

    def test_the_phones_api(self):
        # The tunnel takes a form body: JSON nesting is no JSON to it, and it stays a clear 400. (Its route takes
        # at most 256 KiB; larger bodies get a 413 before the plugin sees them.)
        for name, body in BODIES.items():
            if len(body) > 200 * 1024:
                continue
            for content_type in ("application/x-www-form-urlencoded", "application/json"):
                status, _, reply = self.srv.request("api", "POST", "/api/command", body=body, timeout=30,
                                                    headers={"X-Device-ID": "phone-1", "Content-Type": content_type})
                self.assertEqual((status, reply), (400, b"Must provide the command parameter (x-www-form-urlencoded "
                                                        b"body or query string)"), name)
                status, _, reply = self.srv.request("api", "POST", "/api/command", body=b"command=" + body,
                                                    headers={"X-Device-ID": "phone-1",
                                                             "Content-Type": "application/x-www-form-urlencoded"},
                                                    timeout=30)
                self.assertIn(status, (400, 401, 413), (name, reply[:200]))
            self.assert_up(name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
