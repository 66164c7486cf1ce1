"""HTTPS on the manager listener (core/http/self_signed.cc, tls/): "tls": true makes the server's own
certificate once and reuses it; the tls/ scripts make a CA, a server certificate and a client certificate that
a real client (Python's ssl, OpenSSL) verifies; HSTS and the Secure cookie on TLS. Loopback only."""
import hashlib
import http.client
import json
import os
import ssl
import stat
import subprocess
import tempfile
import time
import unittest

import harness

TLS_DIR = os.path.join(harness.SOURCE_DIR, "tls")


def https(srv, method, path, cafile, body=None, headers=None, cert=None, server_hostname="localhost"):
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(*cert)
    conn = http.client.HTTPSConnection(server_hostname, srv.manager_port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


class Https(harness.TestCase):
    def test_own_certificate_made_once_verified_and_kept(self):
        srv = self.server(config={"listeners": {"manager": {"host": "127.0.0.1", "port": harness.free_port(),
                                                            "tls": True}}})
        srv.manager_port = srv.config["listeners"]["manager"]["port"]
        srv.token = ""
        srv.start(wait=False)
        cred = os.path.join(srv.config["data_dir"], "credentials")
        crt, key = os.path.join(cred, "manager.crt"), os.path.join(cred, "manager.key")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "listener 'manager' on" not in srv.log_text():
            time.sleep(0.05)
        self.assertEqual(stat.S_IMODE(os.stat(cred).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertIn("made a self-signed certificate", srv.log_text())
        with open(crt, "rb") as f:
            der = ssl.PEM_cert_to_DER_cert(f.read().decode())
        fingerprint = hashlib.sha256(der).hexdigest()
        self.assertIn(fingerprint, srv.log_text(), "the log names the fingerprint to compare in the browser")
        # A real client verifies it (the certificate is its own anchor) for the names it lists.
        for name in ("localhost", "127.0.0.1"):
            status, headers, body = https(srv, "GET", "/healthz", crt, server_hostname=name)
            self.assertEqual((status, body), (200, b"ok\n"), name)
            self.assertEqual(headers.get("Strict-Transport-Security"), "max-age=31536000")
        with self.assertRaises(ssl.SSLCertVerificationError):
            https(srv, "GET", "/healthz", cafile=None)  # the system's CAs do not know it
        # Plain HTTP on the TLS port gets nothing useful.
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            status, _, _ = srv.get("manager", "/healthz", anonymous=True, timeout=3)
            raise ConnectionError(f"plain HTTP answered {status}")
        # The session cookie is Secure on TLS.
        pw_file = os.path.join(srv.config["data_dir"], "plugins", "manager", "admin-password")
        self.assertTrue(self.wait_for_file(pw_file))
        with open(pw_file) as f:
            password = f.read().strip()
        status, headers, body = https(srv, "POST", "/manager/api/login", crt,
                                      json.dumps({"user": "admin", "password": password}),
                                      {"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        self.assertIn("; Secure", headers["Set-Cookie"])
        # A restart keeps the same certificate.
        self.assertEqual(srv.stop(), 0)
        srv.start(wait=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and srv.log_text().count("listener 'manager' on") < 2:
            time.sleep(0.05)
        self.assertEqual(https(srv, "GET", "/healthz", crt)[0], 200)
        with open(crt, "rb") as f:
            self.assertEqual(hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read().decode())).hexdigest(), fingerprint)
        self.assertEqual(srv.log_text().count("made a self-signed certificate"), 1)
        # The command line works on a TLS server's data directory, running or not, and makes no certificate.
        self.assertTrue(srv.new_token("while-running").startswith("cl_"))
        self.assertEqual(srv.stop(), 0)
        os.rename(crt, crt + ".away")
        self.assertTrue(srv.new_token("while-stopped").startswith("cl_"))
        self.assertFalse(os.path.exists(crt), "a command must not make the listener's certificate")
        os.rename(crt + ".away", crt)

    def wait_for_file(self, path):
        for _ in range(200):
            if os.path.exists(path):
                return True
            time.sleep(0.05)
        return False

    def test_site_ca_server_and_client_certificates(self):
        d = tempfile.mkdtemp(prefix="cl-tls-", dir=self.workdir)
        run = lambda *a: subprocess.run([os.path.join(TLS_DIR, a[0]), *a[1:]], capture_output=True, text=True,
                                        timeout=60)
        r = run("make-ca.sh", d, "Test site CA")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(d, "ca.crt")) as f:
            ca_pem = f.read()
        r = run("make-ca.sh", d)
        self.assertEqual(r.returncode, 0, "idempotent")
        with open(os.path.join(d, "ca.crt")) as f:
            self.assertEqual(f.read(), ca_pem, "a CA is never replaced")
        r = run("make-server-cert.sh", d, "localhost", "127.0.0.1", "::1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotEqual(run("make-server-cert.sh", d, "bad;name").returncode, 0)
        r = run("make-client-cert.sh", d, "peer-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        client_fp = r.stdout.strip().rsplit(" ", 1)[-1]
        r = run("make-server-cert.sh", d, "localhost", "127.0.0.1", "::1")
        self.assertIn("kept", r.stdout, "a valid certificate is kept when the script runs again")
        for f in ("ca.key", "localhost.key", "peer-1.key"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode), 0o600, f)
        port = harness.free_port()
        srv = self.server(config={"listeners": {"manager": {
            "host": "127.0.0.1", "port": port, "tls_cert": os.path.join(d, "localhost.crt"),
            "tls_key": os.path.join(d, "localhost.key"), "tls_client_certs": "require"}}})
        srv.manager_port = port
        srv.start(wait=False)
        ca = os.path.join(d, "ca.crt")
        client = (os.path.join(d, "peer-1.crt"), os.path.join(d, "peer-1.key"))
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            try:
                status, headers, _ = https(srv, "GET", "/healthz", ca, cert=client)
                break
            except (ConnectionError, ssl.SSLError, OSError):
                time.sleep(0.1)
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("Strict-Transport-Security"), "max-age=31536000")
        # The server verified by the site CA; a client without a certificate fails the handshake.
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            https(srv, "GET", "/healthz", ca)
        # And the fingerprint the script printed is the one the server sees (what plugins authorise by).
        der = subprocess.run(["openssl", "x509", "-in", client[0], "-outform", "DER"], capture_output=True).stdout
        self.assertEqual(hashlib.sha256(der).hexdigest(), client_fp)


if __name__ == "__main__":
    unittest.main(verbosity=2)
