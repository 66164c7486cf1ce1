"""The manager's OpenAPI document (plugins/manager/openapi.json) against a real server: it is served at
/manager/api/openapi.json, and real answers of its routes (successes and errors) validate against the response
schemas it gives for their status. Loopback only, no VMs. Needs python3-jsonschema."""
import copy
import json
import os
import unittest

import jsonschema

import harness

JSON = {"Content-Type": "application/json"}
DOC_PATH = os.path.join(harness.SOURCE_DIR, "plugins", "manager", "openapi.json")


def resolve(doc, node):
    """The JSON Schema (draft 7) of an OpenAPI 3.0 schema: $ref to components inlined, `nullable` as a null
    alternative."""
    if isinstance(node, list):
        return [resolve(doc, n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return resolve(doc, target)
    out = {k: resolve(doc, v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [{"type": "null"}, out]}
    return out


class OpenApi(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOC_PATH, "rb") as f:
            cls.raw = f.read()
        cls.doc = json.loads(cls.raw)

    def operation(self, method, path):
        self.assertIn(path, self.doc["paths"], f"{path} is not documented")
        item = self.doc["paths"][path]
        self.assertIn(method.lower(), item, f"{method} {path} is not documented")
        return item[method.lower()]

    def response(self, op, status):
        responses = op["responses"]
        self.assertIn(str(status), responses, f"status {status} is not documented for {op['operationId']}")
        r = responses[str(status)]
        if "$ref" in r:
            r = resolve(self.doc, r)
        return r

    def call(self, srv, method, path, target=None, body=None, headers=None, status=200):
        """Requests `target` (default: `path`), checks the status and validates the answer against the
        document's schema for `method path` and that status. Returns the parsed JSON answer."""
        op = self.operation(method, path)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        got, hdrs, data = srv.request("manager", method, target or path, body=body,
                                      headers=headers if headers is not None else (JSON if body else {}))
        self.assertEqual(got, status, f"{method} {target or path}: {data!r}")
        r = self.response(op, got)
        ctype = hdrs.get("Content-Type", "").split(";")[0].strip()
        self.assertIn(ctype, r.get("content", {}), f"{method} {path} {got}: {ctype} is not documented")
        schema = resolve(self.doc, r["content"][ctype]["schema"])
        answer = json.loads(data) if ctype == "application/json" else data.decode()
        jsonschema.Draft7Validator(schema).validate(answer)
        return answer

    def test_document_is_complete_and_its_schemas_are_valid(self):
        self.assertTrue(self.doc["openapi"].startswith("3."))
        self.assertTrue(self.doc["info"]["version"])
        refs = []

        def walk(node):
            if isinstance(node, dict):
                if "$ref" in node:
                    refs.append(node["$ref"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(self.doc)
        for ref in refs:
            target = self.doc
            for part in ref.lstrip("#/").split("/"):
                self.assertIn(part, target, ref)
                target = target[part]
        for name in ("Service", "Instance", "Job", "Device", "Error", "ServerInfo"):
            self.assertIn(name, self.doc["components"]["schemas"])
        for name, schema in self.doc["components"]["schemas"].items():
            jsonschema.Draft7Validator.check_schema(resolve(self.doc, schema))
        # Not vacuous: a wrong answer fails.
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(resolve(self.doc, {"$ref": "#/components/schemas/ServiceList"})).validate(
                {"services": [{"service_id": "a"}]})
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(resolve(self.doc, {"$ref": "#/components/schemas/Error"})).validate({})

    def test_real_answers_match_the_document(self):
        srv = self.server().start()
        # The document itself, as the file.
        status, hdrs, data = srv.get("manager", "/manager/api/openapi.json")
        self.assertEqual(status, 200)
        self.assertEqual(hdrs.get("Content-Type"), "application/json")
        self.assertEqual(data, self.raw)
        self.call(srv, "GET", "/manager/api/openapi.json")

        info = self.call(srv, "GET", "/manager/api/info")
        self.assertIn("manager", [p["name"] for p in info["plugins"]])
        self.assertEqual(self.call(srv, "GET", "/manager/api/services"), {"services": []})
        self.assertEqual(self.call(srv, "GET", "/manager/api/instances"), {"instances": []})
        self.call(srv, "GET", "/manager/api/jobs")
        self.assertEqual(self.call(srv, "GET", "/manager/api/devices"), {"devices": []})

        # Pairing, then the device in every view of it.
        paired = self.call(srv, "POST", "/manager/api/devices", body={"device_id": "phone-1", "duration_s": 60},
                           status=201)
        self.assertEqual(paired["state"], "ok")
        listed = self.call(srv, "GET", "/manager/api/devices")
        self.assertEqual([d["device_id"] for d in listed["devices"]], ["phone-1"])
        self.assertNotIn("device_key", listed["devices"][0])
        self.call(srv, "GET", "/manager/api/devices/{id}", "/manager/api/devices/phone-1")
        revoked = self.call(srv, "POST", "/manager/api/devices/{id}/revoke", "/manager/api/devices/phone-1/revoke")
        self.assertEqual(revoked["state"], "revoked")
        self.call(srv, "POST", "/manager/api/devices", body={"device_id": "phone-1", "duration_s": 60}, status=409)
        self.assertEqual(self.call(srv, "DELETE", "/manager/api/devices/{id}", "/manager/api/devices/phone-1"), {})

        # Errors: unknown ids, bad arguments, a body that is not an object, a body that is not JSON.
        for path, target in (("/manager/api/services/{id}", "/manager/api/services/nope"),
                             ("/manager/api/devices/{id}", "/manager/api/devices/phone-1"),
                             ("/manager/api/jobs/{id}", "/manager/api/jobs/job-999"),
                             ("/manager/api/instances/{id}", "/manager/api/instances/" + "0" * 8 + "-0000-0000-0000-"
                                                             + "0" * 12)):
            self.assertIn("error", self.call(srv, "GET", path, target, status=404))
        self.call(srv, "GET", "/manager/api/instances/{id}", "/manager/api/instances/not-a-uuid", status=400)
        self.call(srv, "POST", "/manager/api/devices", body={"device_id": "phone-2", "duration_s": 0}, status=400)
        self.call(srv, "POST", "/manager/api/devices", body="[1]", headers=JSON, status=400)
        self.call(srv, "POST", "/manager/api/devices", body="device_id=x", headers={"Content-Type": "text/plain"},
                  status=415)
        self.call(srv, "POST", "/manager/api/services", body={"service_id": "s1"}, status=400)
        self.call(srv, "POST", "/manager/api/jobs/{id}/cancel", "/manager/api/jobs/job-999/cancel", status=404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
