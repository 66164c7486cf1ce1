"""A mobile client that behaves like client-lib 3.0.0 (SEI-AMS/client-lib, see
../shared/reference/mobile-clients.md 1): a new connection per request, X-Device-ID on every request, parameters
in unspecified order and URL-encoded with Java's URLEncoder rules, the encrypted tunnel byte for byte, replies read
by Content-Length only, 401/403 messages taken from after the first '#'.

It is stricter than the phones where they are lenient by accident: where client-lib calls getString the value
must be a JSON string, where it calls getInt/getLong an integer, where it calls getDouble a number (or a numeric
string, which org.json accepts). A reply a phone would mis-read fails here instead of being silently dropped.
"""
import base64
import hashlib
import http.client
import json
import os
import random
import urllib.parse

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class CloudletError(Exception):
    """CloudletException: any non-200 reply (message = body, or the status line when the body is empty)."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class CredentialsError(CloudletError):
    """CredentialsException: 401 or 403, message = the text after the first '#'."""


class WireError(AssertionError):
    """The server broke the wire contract (types, Content-Length, encryption)."""


# ---- the tunnel's cipher (client-lib AESEncrypter) ------------------------------------------------------------

def password_of(device_key):
    """The API password a phone derives from its device.key: lowercase hex SHA-256."""
    return hashlib.sha256(device_key.encode("utf-8")).hexdigest()


def aes_key(password):
    return hashlib.sha256(password.encode("utf-8")).digest()


def seal(plaintext, password, iv=None):
    iv = iv if iv is not None else os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(aes_key(password)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode("ascii")


def unseal(text, password):
    raw = base64.b64decode(text, validate=True)
    if len(raw) < 32 or len(raw) % 16:
        raise WireError(f"encrypted reply of {len(raw)} bytes is not IV + whole blocks")
    dec = Cipher(algorithms.AES(aes_key(password)), modes.CBC(raw[:16])).decryptor()
    data = dec.update(raw[16:]) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(data) + unpadder.finalize()


def java_urlencode(value):
    """java.net.URLEncoder.encode: letters, digits and .-*_ stay, space becomes '+', the rest %XX (UTF-8)."""
    return urllib.parse.quote_plus(value, safe="*")


# ---- strict readers (org.json getters) ------------------------------------------------------------------------

def get_string(obj, key, nullable=False):
    if key not in obj:
        raise WireError(f"missing field {key!r} in {obj}")
    v = obj[key]
    if v is None and nullable:
        return None
    if not isinstance(v, str):
        raise WireError(f"field {key!r} must be a string, got {type(v).__name__}: {v!r}")
    return v


def get_int(obj, key):
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise WireError(f"field {key!r} must be an integer, got {v!r}")
    return v


def get_double(obj, key):
    v = obj.get(key)
    if isinstance(v, bool):
        raise WireError(f"field {key!r} must be a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        return float(v)  # org.json's getDouble parses strings (pycloud sent "2400.000")
    raise WireError(f"field {key!r} must be a number, got {v!r}")


def get_array(obj, key):
    v = obj.get(key)
    if not isinstance(v, list):
        raise WireError(f"field {key!r} must be an array, got {v!r}")
    return v


# ---- the client ----------------------------------------------------------------------------------------------

class Cloudlet:
    """CloudletImpl + CloudletCommandExecutorImpl for one cloudlet."""

    def __init__(self, host, port, device_id="", password=None, timeout=120):
        self.host, self.port = host, port
        self.device_id = device_id
        self.password = password  # set: the encrypted API
        self.timeout = timeout
        self.last_headers = {}

    # Transport ----------------------------------------------------------------------------------------------
    def _exchange(self, method, target, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            h = {"X-Device-ID": self.device_id}
            h.update(headers or {})
            conn.request(method, target, body=body, headers=h)
            resp = conn.getresponse()
            length = resp.getheader("Content-Length")
            te = resp.getheader("Transfer-Encoding")
            data = resp.read()
            self.last_headers = dict(resp.getheaders())
            return resp.status, resp.reason, length, te, data
        finally:
            conn.close()

    def execute(self, path, params=None):
        """Sends one command and returns the reply body (bytes, decrypted in encrypted mode)."""
        params = dict(params or {})
        keys = list(params)
        random.shuffle(keys)  # HashMap order: unspecified
        if self.password is None:
            query = "&".join(f"{k}={java_urlencode(str(params[k]))}" for k in keys)
            target = "/api" + path + ("?" + query if query else "")
            status, reason, length, te, data = self._exchange("GET", target)
        else:
            plain = path + "".join(f"&{k}={params[k]}" for k in keys)
            body = "command=" + java_urlencode(seal(plain.encode("utf-8"), self.password))
            status, reason, length, te, data = self._exchange(
                "POST", "/api/command", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        if te is not None and te.lower() == "chunked":
            raise WireError(f"{path}: chunked reply (client-lib reads Content-Length only)")
        if length is None:
            raise WireError(f"{path}: reply without Content-Length (status {status})")
        if int(length) != len(data):
            raise WireError(f"{path}: Content-Length {length} but {len(data)} bytes")
        if status != 200:
            text = data.decode("utf-8", "replace") if data else f"HTTP/1.1 {status} {reason}"
            if status in (401, 403):
                message = text.split("#")[1] if "#" in text else text
                raise CredentialsError(status, message)
            raise CloudletError(status, text)
        if int(length) <= 0:
            raise WireError(f"{path}: 200 with an empty body (client-lib gets null)")
        if self.password is not None:
            return unseal(data.decode("ascii"), self.password)
        return data

    def execute_json(self, path, params=None):
        body = self.execute(path, params)
        try:
            obj = json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise WireError(f"{path}: reply is not JSON: {body[:200]!r}") from e
        if not isinstance(obj, dict):
            raise WireError(f"{path}: reply is not a JSON object")
        return obj

    # Commands (client-lib names) -------------------------------------------------------------------------------
    def get_services(self):
        obj = self.execute_json("/services")
        out = []
        for s in get_array(obj, "services"):
            tags = get_array(s, "tags")
            for t in tags:
                if not isinstance(t, str):
                    raise WireError(f"tag {t!r} is not a string")
            out.append({"_id": get_string(s, "_id"), "service_id": get_string(s, "service_id"),
                        "description": get_string(s, "description"), "version": get_string(s, "version"),
                        "tags": tags})
        return out

    def get_system_info(self, services=None, apps=None):
        params = {}
        if services is not None:
            params["services"] = services
        if apps is not None:
            params["apps"] = apps
        obj = self.execute_json("/system", params)
        cpu, mem = obj.get("cpu_info"), obj.get("memory_info")
        if not isinstance(cpu, dict) or not isinstance(mem, dict):
            raise WireError(f"/system without cpu_info/memory_info: {obj}")
        info = {"max_cores": get_int(cpu, "max_cores"), "usage": get_double(cpu, "usage"),
                "speed": get_double(cpu, "speed"), "cache": get_int(cpu, "cache"),
                "max_memory": get_int(mem, "max_memory"), "free_memory": get_int(mem, "free_memory"),
                "raw": obj}
        return info

    def start_service(self, service_id, join):
        obj = self.execute_json("/servicevm/start", {"serviceId": service_id, "join": "true" if join else "false"})
        vm = {"_id": get_string(obj, "_id"), "port": get_int(obj, "port"),
              "fqdn": get_string(obj, "fqdn", nullable=True), "ip_address": get_string(obj, "ip_address"),
              "raw": obj}
        if vm["fqdn"] in (None, "null"):
            vm["address"] = vm["ip_address"]  # client-lib resolves ip_address when fqdn is null
        else:
            vm["address"] = vm["fqdn"]
        return vm

    def stop_service_vm(self, instance_id):
        self.execute("/servicevm/stop", {"instanceId": instance_id})
        return True

    def get_apps(self, os_name=None, os_version=None, tags=None):
        params = {}
        if os_name:
            params["osName"] = os_name
            if os_version:
                params["osVersion"] = os_version
        if tags:
            params["tags"] = ",".join(tags)
        obj = self.execute_json("/apps", params)
        apps = get_array(obj, "apps")
        for a in apps:
            for f in ("_id", "name", "package_name", "min_android_version", "service_id", "app_version",
                      "description"):
                get_string(a, f)
            get_string(a, "md5sum", nullable=True)
        return apps

    def get_app(self, app_id):
        return self.execute("/apps/get", {"appId": app_id})

    def get_messages(self, service_id):
        obj = self.execute_json("/system/get_messages", {"serviceId": service_id})
        out = []
        for m in obj.get("messages", []):
            params = m.get("params", {})
            if not isinstance(params, dict):
                raise WireError(f"params must be an object: {m}")
            for k in params:
                get_string(params, k)
            out.append((get_string(m, "message"), params))
        return out


# ---- client-lib's rankers (rank/) ----------------------------------------------------------------------------

def cpu_based_rank(info):
    return 100 * info["max_cores"] - info["usage"]


def cpu_performance_rank(info):
    return (100 * info["max_cores"] - info["usage"]) * info["speed"] / 100


def memory_performance_rank(info):
    return 0 * (info["cache"] * info["max_cores"]) + info["free_memory"] / 1024 / 1024
