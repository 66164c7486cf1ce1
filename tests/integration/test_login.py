"""The manager's login on a real server (plugins/manager/login.cc, core/ops/control.cc): every documented route,
the plugins' routes and the static pages refuse an anonymous caller; the first start's admin password file;
a browser-like login (cookie flags, CSRF, logout); `cloudletd --new-token` and `--set-password` with the server
stopped and while it runs (the control socket); the api listener serves no manager route. Loopback only."""
import http.client
import json
import os
import stat
import subprocess
import time
import unittest

import harness

JSON = {"Content-Type": "application/json"}
DOC_PATH = os.path.join(harness.SOURCE_DIR, "plugins", "manager", "openapi.json")
PUBLIC = {("POST", "/manager/api/login")}


class Login(harness.TestCase):
    def cli(self, srv, *args, stdin=""):
        return subprocess.run([harness.BINARY, "--config", srv.config_path, *args], input=stdin,
                              capture_output=True, text=True, timeout=120)

    def login(self, srv, user, password):
        return srv.request("manager", "POST", "/manager/api/login", json.dumps({"user": user, "password": password}),
                           headers=JSON, anonymous=True)

    def test_every_route_and_page_refuses_an_anonymous_caller(self):
        srv = self.server().start()
        with open(DOC_PATH) as f:
            doc = json.load(f)
        targets = []
        for path, item in doc["paths"].items():
            for method in item:
                if method in ("get", "post", "put", "delete", "patch"):
                    targets.append((method.upper(), path.replace("{id}", "x1")))
        self.assertGreater(len(targets), 30)
        # Also what other plugins and the core put on the listener: routes, static pages, unknown paths.
        targets += [("GET", "/"), ("GET", "/index.html"), ("GET", "/app.js"), ("GET", "/plugins/hello/greet"),
                    ("GET", "/manager/"), ("GET", "/manager/app.js"), ("GET", "/manager/pages/home.js"),
                    ("GET", "/no/such/page"), ("PUT", "/manager/api/services")]
        for method, target in targets:
            status, headers, body = srv.request("manager", method, target, body="{}" if method != "GET" else None,
                                                headers=JSON, anonymous=True)
            if (method, target) in PUBLIC:
                self.assertNotIn(status, (401, 404), target)
                continue
            self.assertEqual(status, 401, f"{method} {target}: {body!r}")
            self.assertIn("Bearer", headers.get("WWW-Authenticate", ""))
        # What stays open: liveness and the login page with its script.
        for target in ("/healthz", "/manager/login", "/manager/login.js", "/manager/login.css"):
            self.assertEqual(srv.get("manager", target, anonymous=True)[0], 200, target)
        status, headers, body = srv.get("manager", "/manager/login", anonymous=True)
        self.assertIn(b'type="password"', body)
        self.assertIn("default-src 'self'", headers.get("Content-Security-Policy", ""))

    def test_the_api_listener_serves_no_manager_route(self):
        srv = self.server(plugins=("hello", "offload_api")).start()
        for target in ("/manager/login", "/manager/api/info", "/manager/api/login"):
            status, _, _ = srv.request("api", "GET" if "login" not in target else "POST", target)
            self.assertEqual(status, 404, target)

    def test_first_password_login_csrf_and_logout_like_a_browser(self):
        srv = self.server()
        srv.token = ""  # no --new-token first: the server's own first start makes the admin
        srv.start()
        pw_file = os.path.join(srv.config["data_dir"], "plugins", "manager", "admin-password")
        for _ in range(200):  # hashed on a worker just after the start: at most 10 s
            if os.path.exists(pw_file) and "first start" in srv.log_text():
                break
            time.sleep(0.05)
        self.assertEqual(stat.S_IMODE(os.stat(pw_file).st_mode), 0o600)
        with open(pw_file) as f:
            password = f.read().strip()
        self.assertIn(password, srv.log_text(), "the first password is logged once")
        self.assertEqual(self.login(srv, "admin", "not-it")[0], 401)
        status, headers, body = self.login(srv, "admin", password)
        self.assertEqual(status, 200, body)
        cookie_line = headers["Set-Cookie"]
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
            self.assertIn(flag, cookie_line)
        cookie = cookie_line.split(";")[0]
        csrf = json.loads(body)["csrf_token"]
        status, _, body = srv.request("manager", "GET", "/manager/api/info", headers={"Cookie": cookie}, anonymous=True)
        self.assertEqual(status, 200)
        # A state change without the CSRF header pairs nothing; with it, it does.
        pair = json.dumps({"device_id": "phone-1", "duration_s": 60})
        status, _, _ = srv.request("manager", "POST", "/manager/api/devices", pair,
                                   headers={**JSON, "Cookie": cookie}, anonymous=True)
        self.assertEqual(status, 403)
        status, _, body = srv.request("manager", "POST", "/manager/api/devices", pair,
                                      headers={**JSON, "Cookie": cookie, "X-CSRF-Token": csrf}, anonymous=True)
        self.assertEqual(status, 201, body)
        # The operation knew who asked (op_call_as): the pairing is the user's.
        self.assertIn("user:admin", srv.log_text() + body.decode())
        status, _, _ = srv.request("manager", "POST", "/manager/api/logout", "",
                                   headers={"Cookie": cookie, "X-CSRF-Token": csrf}, anonymous=True)
        self.assertEqual(status, 200)
        status, _, _ = srv.request("manager", "GET", "/manager/api/info", headers={"Cookie": cookie}, anonymous=True)
        self.assertEqual(status, 401)

    def test_command_line_tokens_and_passwords_with_and_without_a_server(self):
        srv = self.server()
        # Stopped: the command opens the data directory itself.
        offline = srv.new_token("offline")
        r = self.cli(srv, "--set-password", "admin", stdin="first-password\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        srv.start()
        self.assertEqual(srv.get("manager", "/manager/api/info", anonymous=False)[0], 200)
        self.assertEqual(srv.request("manager", "GET", "/manager/api/session",
                                     headers={"Authorization": f"Bearer {offline}"})[0], 200)
        self.assertEqual(self.login(srv, "admin", "first-password")[0], 200)
        # Running: the same commands reach the server through its control socket (0600).
        sock = os.path.join(srv.config["data_dir"], "control.sock")
        self.assertTrue(stat.S_ISSOCK(os.stat(sock).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600)
        online = srv.new_token("online")
        status, _, body = srv.request("manager", "GET", "/manager/api/session",
                                      headers={"Authorization": f"Bearer {online}"})
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["principal"], "token:online")
        r = self.cli(srv, "--set-password", "admin", stdin="second-password\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.login(srv, "admin", "first-password")[0], 401)
        self.assertEqual(self.login(srv, "admin", "second-password")[0], 200)
        # Bad input: a clear message and a failing status, nothing changed.
        for args, stdin, words in ((["--new-token", "bad name"], "", "token name"),
                                   (["--set-password", "admin"], "short\n", "password has"),
                                   (["--set-password", "admin"], "", "no password")):
            r = self.cli(srv, *args, stdin=stdin)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(words, r.stderr, args)
            self.assertEqual(r.stdout, "")
        self.assertEqual(self.login(srv, "admin", "second-password")[0], 200)
        # Tokens listed by the API: none shows its secret.
        status, _, body = srv.get("manager", "/manager/api/tokens")
        names = {t["name"] for t in json.loads(body)}
        self.assertLessEqual({"tests", "offline", "online"}, names)
        for secret in (offline, online, srv.token):
            self.assertNotIn(secret.encode(), body)
        self.assertEqual(srv.stop(), 0)
        self.assertFalse(os.path.exists(sock), "the control socket goes with the server")


if __name__ == "__main__":
    unittest.main(verbosity=2)
