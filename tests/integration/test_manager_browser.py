"""The web manager in a real browser: headless Chromium (Debian `chromium`) driven by python3-selenium with
`chromium-driver`, against a real server with the demo Service VM (real QEMU). Logs in (a wrong password
first), checks that a POST without the CSRF token is refused, creates a service from the demo guest and watches
its job's progress bar move, edits and deletes it, sees an instance started through the phones' API appear
running without a reload (and measures how long that takes), stops it, pairs and revokes a device, checks every
page at 360 px wide, and saves a screenshot of each page under build/screenshots/. Loopback only; every wait is
bounded."""
import json
import os
import shutil
import tempfile
import time
import unittest
import urllib.request

import harness

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the Debian package is in debian/control; say so rather than pass
    webdriver = None

OFFLOAD = {"name": "offload_api", "prefixes": ["/api/"], "grants": ["device.auth"]}
SHOTS = os.path.join(harness.BUILD_DIR, "screenshots")
PAGES = ("home", "services", "instances", "devices", "cloudlets", "jobs")
DEMO = "demo.httpd"


class ManagerInBrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if webdriver is None:
            raise AssertionError("python3-selenium is missing (debian/control lists it): run make deps")
        cls.workdir = tempfile.mkdtemp(prefix="cl-it-browser-")
        ports = harness.port_block(100)
        cls.srv = harness.Server(cls.workdir, name="ui", args=["--demo"], plugins=("hello",), config={
            "plugins": ["hello", OFFLOAD], "api": {"mode": "open"},
            "virt": {"port_min": ports[0], "port_max": ports[1], "ready_timeout_ms": 60000}})
        cls.srv.start(timeout=60)
        cls.base = f"http://127.0.0.1:{cls.srv.manager_port}"
        # The demo's saved state is made on the first start (a cold boot under TCG): wait, bounded.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status, body = cls.srv.get_json("manager", f"/manager/api/services/{DEMO}")
            if status == 200 and body.get("state_saved"):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"{DEMO} never got its saved state:\n{cls.srv.log_text()[-4000:]}")
        pw_file = os.path.join(cls.srv.config["data_dir"], "plugins", "manager", "admin-password")
        with open(pw_file) as f:
            cls.password = f.read().strip()
        os.makedirs(SHOTS, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1280,900", f"--user-data-dir={cls.workdir}/chromium"):
            opts.add_argument(arg)
        cls.driver = webdriver.Chrome(service=ChromeService("/usr/bin/chromedriver"), options=opts)
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "driver", None):
            cls.driver.quit()
        if getattr(cls, "srv", None):
            rc = cls.srv.stop()
            assert rc == 0, f"cloudletd exited with {rc}:\n{cls.srv.log_text()[-4000:]}"
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # ---- helpers ----------------------------------------------------------------------------------------

    def wait(self, cond, timeout=20, what="the condition"):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda d: cond())
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; page at {self.driver.current_url}")

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def present(self, css):
        return len(self.finds(css)) > 0

    def shot(self, name):
        self.driver.save_screenshot(os.path.join(SHOTS, f"manager-{name}.png"))

    def go(self, page):
        self.find(f'a[data-nav="{page}"]').click()
        self.wait(lambda: self.present(f"#page-{page}"), what=f"#page-{page}")

    def fill(self, form, values):
        for name, value in values.items():
            el = self.find(f'{form} [name="{name}"]')
            el.clear()
            el.send_keys(str(value))
        self.find(f'{form} [type="submit"]').click()

    def login(self):
        self.driver.get(self.base + "/manager/login")
        self.fill("#login", {"user": "admin", "password": self.password})
        self.wait(lambda: self.present("#whoami") and self.find("#whoami").text.strip() == "admin",
                  what="the manager after login")

    # ---- the scenario (one test: each step needs the one before) ---------------------------------------

    def test_the_operators_day(self):
        d = self.driver
        # An anonymous browser is sent to the login page; a wrong password says so.
        d.get(self.base + "/manager/")
        self.wait(lambda: d.current_url.endswith("/manager/login"), what="the redirect to the login page")
        self.fill("#login", {"user": "admin", "password": "not-the-password"})
        self.wait(lambda: "wrong user name or password" in self.find("#error").text, what="the login error")
        self.shot("login")
        self.login()
        self.assertTrue(d.current_url.startswith(self.base + "/manager/"))
        # The session cookie is HttpOnly: the page's script cannot read it.
        self.assertNotIn("cloudletd_session", d.execute_script("return document.cookie"))
        # A POST without the CSRF token (what a forged form or script would send) is refused.
        status = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/manager/api/devices', {method: 'POST', headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({device_id: 'forged', duration_s: 60})}).then(r => done(r.status));""")
        self.assertEqual(status, 403)

        # Home: live charts fed by system.load events (no polling).
        self.go("home")
        self.assertEqual(self.find("#home-name").text.strip(), json.loads(
            self.srv.get("manager", "/manager/api/info")[2])["cloudlet_name"])
        self.wait(lambda: int(self.find("#chart-cpu").get_attribute("data-samples") or 0) >= 3, 15,
                  "three CPU samples on the chart")
        self.shot("home")

        # Services: create one from the demo guest's files; its job's progress bar moves to the end.
        data = self.srv.config["data_dir"]
        guest = os.path.join(harness.BUILD_DIR, "demo-guest")
        os.makedirs(os.path.join(data, "uploads"), exist_ok=True)
        for f in ("vmlinuz", "initrd.img"):
            shutil.copy(os.path.join(guest, f), os.path.join(data, "uploads", f))
        with open(os.path.join(guest, "cmdline")) as f:
            cmdline = f.read().strip()
        self.go("services")
        self.wait(lambda: self.present(f'#services-table tr[data-id="{DEMO}"]'), what="the demo service's row")
        self.fill("#service-form", {"service_id": "web2", "description": "second web service", "port": 8080,
                                    "kernel": "uploads/vmlinuz", "initrd": "uploads/initrd.img", "cmdline": cmdline})
        self.go("jobs")
        seen = []
        deadline = time.monotonic() + 300

        def job_row():
            rows = [r for r in self.finds("#jobs-table tbody tr") if "web2" in r.text]
            return rows[0] if rows else None
        while time.monotonic() < deadline:
            row = job_row()
            if row is not None:
                value = float(row.find_element(By.CSS_SELECTOR, "td.progress progress").get_attribute("value") or 0)
                if not seen or seen[-1] != value:
                    seen.append(value)
                state = row.find_element(By.CSS_SELECTOR, "td.state").text.strip()
                if state in ("done", "failed", "canceled"):
                    break
            time.sleep(0.1)
        final = float(job_row().find_element(By.CSS_SELECTOR, "td.progress progress").get_attribute("value") or 0)
        if seen[-1] != final:  # the state cell may change between the two reads above
            seen.append(final)
        self.shot("jobs")
        self.assertEqual(state, "done", f"{job_row().text if job_row() else 'no job row'}\n{self.srv.log_text()[-3000:]}")
        self.assertGreaterEqual(len(seen), 3, f"the progress bar should move, saw {seen}")
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(seen[-1], 1.0)

        self.go("services")
        row = f'#services-table tr[data-id="web2"]'
        self.wait(lambda: self.present(row), what="the new service's row")
        self.find(f'{row} button[data-action="edit"]').click()
        self.wait(lambda: self.present("#service-edit-form"), what="the edit form")
        self.fill("#service-edit-form", {"description": "edited in the browser"})
        self.wait(lambda: "edited in the browser" in self.find(f"{row} td.description").text, what="the edit")
        self.find("#services-search").send_keys("edited")
        self.wait(lambda: not self.find(f'#services-table tr[data-id="{DEMO}"]').is_displayed(), what="the search")
        self.find("#services-search").clear()
        self.shot("services")
        self.find(f'{row} button[data-action="delete"]').click()
        d.switch_to.alert.accept()
        self.wait(lambda: not self.present(row), what="the deleted service's row to go")

        # Instances: one started elsewhere (the phones' API) shows up running without a reload.
        self.go("instances")
        d.execute_script("""
            window.__seen = {};
            new MutationObserver(() => {
              for (const r of document.querySelectorAll('#instances-table tbody tr[data-id]')) {
                const s = r.querySelector('td.state');
                if (s && s.textContent.trim() === 'running' && !window.__seen[r.dataset.id])
                  window.__seen[r.dataset.id] = Date.now();
              }
            }).observe(document.getElementById('view'), {subtree: true, childList: true, characterData: true});""")
        url = f"http://127.0.0.1:{self.srv.api_port}/api/servicevm/start?serviceId={DEMO}&join=false"
        with urllib.request.urlopen(url, timeout=120) as r:
            answered_ms = time.time() * 1000
            vm = json.loads(r.read())
        iid = vm["_id"]
        self.wait(lambda: d.execute_script(f"return window.__seen['{iid}'] || 0") > 0, 10, "the started instance")
        shown_after = d.execute_script(f"return window.__seen['{iid}']") - answered_ms
        print(f"\nMEASURE instance started through /api visible running in the manager {shown_after:.0f} ms "
              f"after the phone's answer")
        self.assertLess(shown_after, 500)
        self.shot("instances")
        self.find(f'#instances-table tr[data-id="{iid}"] button[data-action="stop"]').click()
        self.wait(lambda: not self.present(f'#instances-table tr[data-id="{iid}"]') or
                  self.find(f'#instances-table tr[data-id="{iid}"] td.state').text.strip() == "stopped",
                  60, "the instance to stop")

        # Devices: pair (the key is shown once), then revoke.
        self.go("devices")
        self.fill("#device-pair-form", {"device_id": "phone-b", "duration_s": 3600})
        self.wait(lambda: len(self.find("#device-key").text.strip()) >= 64, what="the new device's key")
        self.assertRegex(self.find("#device-key").text, r"[0-9a-f]{64}")
        row = '#devices-table tr[data-id="phone-b"]'
        self.wait(lambda: self.present(row) and "min" in self.find(f"{row} td.time-left").text, what="time left")
        self.shot("devices")
        self.find(f'{row} button[data-action="revoke"]').click()
        self.wait(lambda: self.find(f"{row} td.state").text.strip() == "revoked", what="the revocation")

        self.go("cloudlets")
        self.shot("cloudlets")

        # Every page fits a phone-sized window (360 px) without sideways scrolling.
        d.set_window_size(360, 800)
        for page in PAGES:
            d.get(f"{self.base}/manager/#/{page}")
            self.wait(lambda: self.present(f"#page-{page}"), what=f"#page-{page} at 360 px")
            width = d.execute_script("return document.documentElement.scrollWidth")
            self.assertLessEqual(width, 361, f"{page} is {width} px wide at 360 px")
            self.shot(f"{page}-360")
        d.set_window_size(1280, 900)

        # Logging out ends the session: the next page load goes back to the login page.
        d.get(self.base + "/manager/#/home")
        self.wait(lambda: self.present("#logout"), what="the logout button")
        self.find("#logout").click()
        self.wait(lambda: d.current_url.endswith("/manager/login"), what="the login page after logout")
        d.get(self.base + "/manager/")
        self.wait(lambda: d.current_url.endswith("/manager/login"), what="no way back in without logging in")


if __name__ == "__main__":
    unittest.main(verbosity=2)
