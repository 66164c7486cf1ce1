"""The mobile API (offload_api plugin) against the real cloudletd, driven by a client that behaves like client-lib:
open and encrypted modes, pairing, authorization windows, revocation, the mailbox, and bad input. The parts that
need a Service VM are in test_offload_svm.py. Loopback only."""
import base64
import json
import os
import time
import unittest

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import common
from common import cl, harness

SERVICE_OPS = ("service.list", "service.get", "instance.start", "instance.stop")


class ClientSelfCheck(unittest.TestCase):
    """The test client itself reproduces client-lib's known-answer vector (mobile-clients.md 1.3), so a server that
    talks to it talks to phones."""

    def test_known_answer_vector(self):
        password = cl.password_of("test-device-private-key\n")
        self.assertEqual(password, "c93e781ffd96d3794d5e02c71a23dc824cad730b1e09d7f8c87dadc141f14632")
        self.assertEqual(cl.aes_key(password).hex(), "c6c655e0aa76cd122cfe1a69f6feca370ca0aadee64b61e9939046886e728b39")
        plain = b"/servicevm/start&join=true&serviceId=edu.cmu.sei.ams.speech_rec_service"
        wire = ("AAECAwQFBgcICQoLDA0OD9PpLIvFAm19+jOVwFyBVFMIAOmpZvYVbPaq67RPmeQR2EKQBe2JZ9vvvnp0DkUF4m1ROP6bqPJYIDbyt"
                "vyRmBYVmAyZxoaKt7ogFQ3Xlc3S")
        self.assertEqual(cl.seal(plain, password, iv=bytes(range(16))), wire)
        self.assertEqual(cl.unseal(wire, password), plain)


class OpenMode(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.srv = self.server(config=common.config("open")).start()
        self.ops = common.operations(self.srv)
        self.phone = common.cloudlet(self.srv, device_id="phone-open-1")

    def tearDown(self):
        if self.srv.proc and self.srv.proc.poll() is None:
            self.assertEqual(self.srv.stop(), 0, self.srv.log_text()[-3000:])
        super().tearDown()

    def test_loaded_with_the_open_routes(self):
        log = self.srv.log_text()
        self.assertIn("loaded 'offload_api'", log)
        self.assertIn("mobile API in open mode", log)
        status, _, _ = common.raw(self.srv, "POST", "/api/command", body="command=AAAA",
                                  headers={"X-Device-ID": "x", "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 404)  # the tunnel exists only in encrypted or both mode
        status, _, _ = common.raw(self.srv, "POST", "/api/services", body="")
        self.assertEqual(status, 405)

    def test_system_info_feeds_every_ranker(self):
        info = self.phone.get_system_info()
        self.assertGreaterEqual(info["max_cores"], 1)
        self.assertEqual(info["max_cores"], os.sysconf("SC_NPROCESSORS_ONLN"))
        self.assertGreaterEqual(info["usage"], 0.0)
        self.assertLessEqual(info["usage"], 100.0 * info["max_cores"] + 1e-6)
        self.assertGreater(info["speed"], 0.0)
        self.assertGreaterEqual(info["cache"], 0)
        with open("/proc/meminfo") as f:
            total_kib = int(next(l for l in f if l.startswith("MemTotal:")).split()[1])
        self.assertEqual(info["max_memory"], total_kib * 1024)
        self.assertGreater(info["free_memory"], 0)
        self.assertLessEqual(info["free_memory"], info["max_memory"])
        # client-lib only picks a cloudlet whose rank is > 0 (mobile-clients.md 2.3).
        self.assertGreater(cl.cpu_based_rank(info), 0)
        self.assertGreater(cl.cpu_performance_rank(info), 0)
        self.assertGreater(cl.memory_performance_rank(info), 0)
        self.assertNotIn("services", info["raw"])
        self.assertNotIn("apps", info["raw"])
        # Usage is sampled in the background (about once a second): keep a core busy and it shows.
        def busy_then_sample():
            end = time.monotonic() + 1.2
            while time.monotonic() < end:
                pass
            return self.phone.get_system_info()["usage"] > 0
        self.assertTrue(common.wait_until(busy_then_sample, 10, 0))

    def test_system_info_with_services_and_apps(self):
        if "service.list" not in self.ops:
            with self.assertRaises(cl.CloudletError) as e:
                self.phone.get_system_info(services="true")
            self.assertEqual(e.exception.status, 503)
            self.assertIn("service.list", e.exception.message)
        else:
            raw = self.phone.get_system_info(services="TRUE", apps="y")["raw"]
            self.assertIsInstance(raw["services"], list)
            self.assertEqual(raw["apps"], [])  # no app store loaded
        raw = self.phone.get_system_info(services="false", apps="no")["raw"]
        self.assertNotIn("services", raw)
        self.assertNotIn("apps", raw)

    def test_services_list(self):
        if "service.list" not in self.ops:
            with self.assertRaises(cl.CloudletError) as e:
                self.phone.get_services()
            self.assertEqual(e.exception.status, 503)
            self.skipTest("the core has no service.list yet (issue 3): checked the clear 503 only")
        services = self.phone.get_services()  # strict types: raises on any wrong one
        for s in services:
            self.assertEqual(s["_id"], s["service_id"])
        status, headers, body = common.raw(self.srv, "GET", "/api/services")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(json.loads(body), {"services": services})

    def test_services_and_instances_errors(self):
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.execute("/services/get")
        self.assertEqual((e.exception.status, e.exception.message), (400, "Must provide service id"))
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.execute("/servicevm/start", {"join": "true"})
        self.assertEqual((e.exception.status, e.exception.message), (400, "Must provide service id"))
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.execute("/servicevm/stop")
        self.assertEqual((e.exception.status, e.exception.message), (400, "Must provide instance id"))
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.execute("/servicevm/start", {"serviceId": "../../etc"})
        self.assertEqual(e.exception.status, 400)
        cases = [("service.get", "/services/get", {"serviceId": "no.such.service"}, 404,
                  "Service for no.such.service not found"),
                 ("instance.start", "/servicevm/start", {"serviceId": "no.such.service", "join": "false"}, 400,
                  "Service vm for no.such.service not found"),
                 ("instance.stop", "/servicevm/stop", {"instanceId": "no-such-instance"}, 404,
                  "Service vm for no-such-instance not found")]
        for op, path, params, status, message in cases:
            with self.assertRaises(cl.CloudletError) as e:
                self.phone.execute(path, params)
            if op in self.ops:
                self.assertEqual((e.exception.status, e.exception.message), (status, message), path)
            else:  # issue 3 not there yet: a clear 503 naming the operation
                self.assertEqual(e.exception.status, 503, path)
                self.assertIn(op, e.exception.message)

    def test_apps_without_an_app_store(self):
        self.assertEqual(self.phone.get_apps("Android", "6.0", ["speech", "test"]), [])
        self.assertEqual(self.phone.get_apps(), [])
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.get_app("app-1")
        self.assertEqual((e.exception.status, e.exception.message), (404, "App app-1 not found"))
        with self.assertRaises(cl.CloudletError) as e:
            self.phone.execute("/apps/get")
        self.assertEqual((e.exception.status, e.exception.message), (400, "Must provide app id"))

    def test_mailbox_returns_each_message_once(self):
        self.assertEqual(self.phone.get_messages("demo.httpd"), [])
        params = {"cloudlet_name": "c2", "cloudlet_ip": "10.0.0.2", "cloudlet_port": "9999",
                  "cloudlet_encryption_enabled": "false", "ssid": "cloudlet-two"}
        common.post_message(self.srv, "phone-open-1", "demo.httpd", "move-to-new-cloudlet-network", params)
        common.post_message(self.srv, "phone-open-1", "demo.httpd", "second", {"n": "2"})
        common.post_message(self.srv, "phone-open-1", "other.service", "elsewhere", {})
        common.post_message(self.srv, "someone-else", "demo.httpd", "not-mine", {})
        got = self.phone.get_messages("demo.httpd")
        self.assertEqual(got, [("move-to-new-cloudlet-network", params), ("second", {"n": "2"})])
        self.assertEqual(self.phone.get_messages("demo.httpd"), [])  # marked read in the same transaction
        self.assertEqual(self.phone.get_messages("other.service"), [("elsewhere", {})])
        # pycloud crashed (500) without the header; here it is a clear 400.
        nobody = common.cloudlet(self.srv, device_id="")
        with self.assertRaises(cl.CloudletError) as e:
            nobody.get_messages("demo.httpd")
        self.assertEqual((e.exception.status, e.exception.message), (400, "Must provide the X-Device-ID header"))

    def test_bad_input_gets_clear_errors_and_the_server_is_unharmed(self):
        targets = ["/api/services?%%%", "/api/services/get?serviceId=%00", "/api/services/get?serviceId=" + "a" * 5000,
                   "/api/servicevm/start?serviceId=%FF%FE&join=maybe", "/api/servicevm/stop?instanceId=%0d%0a",
                   "/api/apps?tags=,,,&osName=", "/api/apps/get?appId=..%2F..%2Fetc%2Fpasswd",
                   "/api/system?services=%ZZ&apps", "/api/system/get_messages?serviceId=&&&=",
                   "/api/system/get_messages?serviceId=" + "%41" * 300, "/api/nothing/here", "/api/"]
        for t in targets:
            status, _, body = common.raw(self.srv, "GET", t, headers={"X-Device-ID": "phone#1\t"})
            self.assertIn(status, (200, 400, 404, 503), (t, status, body))
        self.assertEqual(self.srv.proc.poll(), None)
        self.assertEqual(self.srv.get("api", "/healthz")[0], 200)
        self.assertGreater(self.phone.get_system_info()["max_cores"], 0)


class EncryptedMode(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.srv = self.server(config=common.config("encrypted")).start()
        self.ops = common.operations(self.srv)

    def tearDown(self):
        if self.srv.proc and self.srv.proc.poll() is None:
            self.assertEqual(self.srv.stop(), 0, self.srv.log_text()[-3000:])
        super().tearDown()

    def phone(self, device_id, duration_s=3600):
        return common.cloudlet(self.srv, device_id=device_id, password=common.pair(self.srv, device_id, duration_s))

    def command(self, device_id, body, content_type="application/x-www-form-urlencoded", target="/api/command"):
        headers = {"Content-Type": content_type}
        if device_id is not None:
            headers["X-Device-ID"] = device_id
        return common.raw(self.srv, "POST", target, body=body, headers=headers)

    def test_only_the_tunnel_exists(self):
        self.assertIn("mobile API in encrypted mode", self.srv.log_text())
        for path in ("/api/services", "/api/system", "/api/servicevm/start?serviceId=x"):
            self.assertEqual(common.raw(self.srv, "GET", path)[0], 404, path)

    def test_round_trip_for_every_command(self):
        phone = self.phone("phone-enc-1")
        info = phone.get_system_info(services="false", apps="true")
        self.assertGreater(cl.cpu_based_rank(info), 0)
        self.assertEqual(info["raw"]["apps"], [])
        self.assertEqual(phone.get_apps("Android", "6.0", ["speech"]), [])
        with self.assertRaises(cl.CloudletError) as e:
            phone.get_app("app-1")
        self.assertEqual(e.exception.status, 404)
        # Errors travel in clear, with fixed texts: nothing decrypted is quoted (the open API names the app).
        self.assertEqual(e.exception.message, "What the command names was not found")
        common.post_message(self.srv, "phone-enc-1", "svc.one", "hello", {"k": "v=1&2"})
        self.assertEqual(phone.get_messages("svc.one"), [("hello", {"k": "v=1&2"})])
        self.assertEqual(phone.get_messages("svc.one"), [])
        if "service.list" in self.ops:
            self.assertIsInstance(phone.get_services(), list)
            self.assertIsInstance(phone.get_system_info(services="Y")["raw"]["services"], list)
        with self.assertRaises(cl.CloudletError) as e:
            phone.execute("/services/get", {"serviceId": "no.such.service"})
        self.assertEqual(e.exception.status, 404 if "service.get" in self.ops else 503)
        with self.assertRaises(cl.CloudletError) as e:
            phone.execute("/servicevm/start", {"join": "true"})
        self.assertEqual((e.exception.status, e.exception.message), (400, "Must provide service id"))
        with self.assertRaises(cl.CloudletError) as e:
            phone.stop_service_vm("no-such-instance")
        self.assertEqual(e.exception.status, 404 if "instance.stop" in self.ops else 503)

    def test_unknown_device_is_401(self):
        stranger = common.cloudlet(self.srv, device_id="unknown-dev", password="0" * 64)
        with self.assertRaises(cl.CredentialsError) as e:
            stranger.get_system_info()
        self.assertEqual(e.exception.status, 401)
        self.assertEqual(e.exception.message, "Device with id unknown-dev is not paired to this cloudlet")
        status, _, body = self.command("unknown-dev", "command=AAAA")
        self.assertEqual(body, b"401 Unauthorized\n#Device with id unknown-dev is not paired to this cloudlet")

    def test_revoked_device_is_403(self):
        phone = self.phone("phone-rev")
        phone.get_system_info()
        common.revoke(self.srv, "phone-rev")
        with self.assertRaises(cl.CredentialsError) as e:
            phone.get_system_info()
        self.assertEqual(e.exception.status, 403)
        self.assertEqual(e.exception.message, "Authorization has been revoked for device with id phone-rev")

    def test_expired_window_is_403(self):
        phone = self.phone("phone-exp", duration_s=4)
        paired = time.monotonic()
        phone.get_system_info()
        time.sleep(max(0.0, paired + 4.3 - time.monotonic()))
        with self.assertRaises(cl.CredentialsError) as e:
            phone.get_system_info()
        self.assertEqual(e.exception.status, 403)
        self.assertEqual(e.exception.message, "Authorization has expired for device with id phone-exp")

    def test_wrong_password_cannot_use_the_api(self):
        self.phone("phone-key")
        impostor = common.cloudlet(self.srv, device_id="phone-key", password=cl.password_of("guess"))
        for _ in range(5):
            with self.assertRaises(cl.CloudletError) as e:
                impostor.get_system_info()
            self.assertIn(e.exception.status, (400, 404))
            self.assertNotIn("system", e.exception.message)  # the decrypted text is never echoed

    def test_bad_commands_get_clear_errors_and_the_server_is_unharmed(self):
        password = common.pair(self.srv, "phone-bad")
        key = cl.aes_key(password)

        def no_padding(blocks):
            iv = bytes(16)
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            return base64.b64encode(iv + enc.update(blocks) + enc.finalize()).decode()

        enc = cl.java_urlencode
        cases = [
            (None, "command=AAAA", 400, b"Must provide the X-Device-ID header"),
            ("", "command=AAAA", 400, b"Must provide the X-Device-ID header"),
            ("phone-bad", "", 400, None),
            ("phone-bad", "cmd=AAAA", 400, None),
            ("phone-bad", "command=" + enc("!!not base64!!"), 400, b"The command is not valid Base64"),
            ("phone-bad", "command=" + enc("QUJD"), 400, None),                                  # 3 bytes
            ("phone-bad", "command=" + enc(base64.b64encode(bytes(40)).decode()), 400, None),   # not whole blocks
            ("phone-bad", "command=" + enc(no_padding(b"/services" + bytes(7))), 400, None),     # pad byte 0
            ("phone-bad", "command=" + enc(no_padding(b"/services" + bytes([2] * 6) + b"\x07")), 400, None),
            ("phone-bad", "command=" + enc(cl.seal(b"/no/such", password)), 404, b"Command not found"),
            ("phone-bad", "command=" + enc(cl.seal(b"/servicevm/migration_svm_resume&id=1", password)), 404, None),
            ("phone-bad", "command=" + enc(cl.seal(b"/services/get&serviceId", password)), 400, None),
            ("phone-bad", "command=" + "A" * 70000, 413, None),
        ]
        for device, body, status, text in cases:
            got_status, _, got = self.command(device, body)
            self.assertEqual(got_status, status, (device, body[:60], got))
            if text is not None:
                self.assertEqual(got, text)
        # Bodies over the route's limit are refused by the server before the plugin sees them.
        self.assertEqual(self.command("phone-bad", "command=" + "A" * 300000)[0], 413)
        # multipart is not how phones send commands: a clear 400, not a crash.
        status, _, _ = self.command("phone-bad", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
                                    content_type="multipart/form-data; boundary=b")
        self.assertEqual(status, 400)
        # The command may also come in the query string (pycloud read request.params).
        status, _, body = self.command("phone-bad", "", target="/api/command?command=" + enc(cl.seal(b"/system", password)))
        self.assertEqual(status, 200)
        self.assertIn(b"cpu_info", cl.unseal(body.decode(), password))
        self.assertIsNone(self.srv.proc.poll())
        self.assertEqual(self.srv.get("api", "/healthz")[0], 200)
        self.assertGreater(common.cloudlet(self.srv, "phone-bad", password).get_system_info()["max_cores"], 0)


    def test_forged_commands_get_no_decrypted_bytes_back(self):
        """Issue 15, defect 5: with CBC and no MAC, flipping IV bits of a captured command rewrites its first
        block; the error then quoted the rest of the decrypted text (a service name, an instance id)."""
        password = common.pair(self.srv, "phone-cap")
        forgeries = [
            (b"/system/get_messages&serviceId=secret.service.name", b"/services/get&a=", (b"secret", b"ages")),
            (b"/system/get_messages&serviceId=secret.service.name", b"/apps/get&appId=", (b"secret", b"ages")),
            (b"/servicevm/stop&instanceId=inst-secret-42", b"/apps/get&appId=", (b"secret", b"instanceId")),
            (b"/servicevm/stop&instanceId=inst-secret-42", b"/servicevm/stop&", (b"secret",)),  # a replay
        ]
        for captured, block, secrets in forgeries:
            raw = bytearray(base64.b64decode(cl.seal(captured, password)))
            for i in range(16):
                raw[i] ^= captured[i] ^ block[i]
            status, _, body = self.command("phone-cap", "command=" + cl.java_urlencode(base64.b64encode(raw).decode()))
            self.assertIn(status, (400, 404), (block, body))
            for secret in secrets:
                self.assertNotIn(secret, body, (block, body))

    def test_replayed_commands_are_refused(self):
        """Defect 6: a captured command sent again is refused; the phone's next command (a fresh IV) works."""
        password = common.pair(self.srv, "phone-replay")
        captured = "command=" + cl.java_urlencode(cl.seal(b"/system", password))
        status, _, body = self.command("phone-replay", captured)
        self.assertEqual(status, 200)
        self.assertIn(b"cpu_info", cl.unseal(body.decode(), password))
        status, _, body = self.command("phone-replay", captured)
        self.assertEqual((status, body), (400, b"This command was already received (replayed commands are refused)"))
        self.assertIn("refused a replayed command from device phone-replay", self.srv.log_text())
        phone = common.cloudlet(self.srv, "phone-replay", password)
        for _ in range(20):  # client-lib draws a random IV per command: never refused
            self.assertGreater(phone.get_system_info()["max_cores"], 0)

    def test_messages_with_secrets_come_only_through_the_tunnel(self):
        """Defect 8: in encrypted mode too, the secret message is served through the tunnel."""
        phone = self.phone("phone-secret")
        common.post_message(self.srv, "phone-secret", "svc", "credentials", {"k": "v"}, secret=True)
        self.assertEqual(phone.get_messages("svc"), [("credentials", {"k": "v"})])


class BothModes(harness.TestCase):
    def test_open_and_encrypted_at_once_from_the_flag(self):
        srv = self.server(config=common.config("open"), args=["--api-mode", "both"]).start()
        self.assertIn("mobile API in both mode", srv.log_text())
        open_phone = common.cloudlet(srv, device_id="p-open")
        secure = common.cloudlet(srv, device_id="p-enc", password=common.pair(srv, "p-enc"))
        self.assertEqual(open_phone.get_system_info()["max_cores"], secure.get_system_info()["max_cores"])
        common.post_message(srv, "p-enc", "s", "m", {"a": "b"})
        common.post_message(srv, "p-open", "s", "n", {})
        self.assertEqual(secure.get_messages("s"), [("m", {"a": "b"})])
        self.assertEqual(open_phone.get_messages("s"), [("n", {})])
        # Defect 8 of issue 15: a message with secrets (migration's credential bundle) is never served on the open
        # route, where anyone can send the device's id; the tunnel serves it. Others go both ways.
        common.post_message(srv, "p-enc", "s", "credentials", {"key": "k1"}, secret=True)
        common.post_message(srv, "p-enc", "s", "plain", {})
        thief = common.cloudlet(srv, device_id="p-enc")  # the open API with the paired phone's id
        self.assertEqual(thief.get_messages("s"), [("plain", {})])
        self.assertEqual(thief.get_messages("s"), [])
        self.assertEqual(secure.get_messages("s"), [("credentials", {"key": "k1"})])
        self.assertEqual(secure.get_messages("s"), [])
        self.assertEqual(srv.stop(), 0, srv.log_text()[-6000:])


if __name__ == "__main__":
    unittest.main(verbosity=2)
