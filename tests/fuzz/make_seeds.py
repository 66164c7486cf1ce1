#!/usr/bin/env python3
"""Writes the seed corpus (corpus/<target>/): small valid and near-valid inputs from which the fuzzers start.
Run it again after changing it; the fuzzers never write into the tree (run.sh copies the seeds)."""
import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- json --------------------------------------------------------------------------------------------------
write("json", "object", '{"service_id":"demo.httpd","tags":["a","b"],"port":8080,"ready":{"http":true},"x":null}')
write("json", "numbers", '[0,-1,1.5e300,-0.0,18446744073709551615,9223372036854775807,1e-400,"\\u00e9\\ud83d\\ude00"]')
write("json", "deep", "[" * 127 + "]" * 127)
write("json", "too_deep", '{"a":' * 130 + "1" + "}" * 130)
write("json", "comments", '// c\n{"a": [1, 2,], /* b */ "c": {},}')
write("json", "nul", '{"a":1}\x00{}')

# ---- config ------------------------------------------------------------------------------------------------
with open(os.path.join(HERE, "..", "..", "config", "cloudletd.example.json"), "rb") as f:
    write("config", "example", f.read())
write("config", "small", '// comment\n{"log": {"level": "warn"}, "listeners": {"api": {"host": "127.0.0.1", '
      '"port": 9999, "limits": {"max_body_bytes": 1000}}}, "api": {"mode": "both"},}')
write("config", "plugins", '{"plugins": [{"name": "offload_api", "prefixes": ["/api/"], "grants": ["device.auth"], "config": {"k": [1, 2]}}], '
      '"discovery": {"extra_txt": ["version=2"], "name": "lab"}, "virt": {"port_min": 20000, "port_max": 20100}}')

# ---- http --------------------------------------------------------------------------------------------------
write("http", "get_query", "GET /echo/x/y/z?a=1&b=%20c+d&e HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
write("http", "pipelined", "GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD /sub/data.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=10-20\r\n\r\n"
      "GET /sub/data.txt HTTP/1.1\r\nRange: bytes=-5,0-1\r\nIf-None-Match: \"x\"\r\n\r\nGET /decline/q HTTP/1.0\r\n\r\n")
body = "a=1&b=two+words&c=%41%42"
write("http", "form_urlencoded", f"POST /form?q=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
      f"Content-Length: {len(body)}\r\n\r\n{body}")
mp = ("--fuzzb\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nvalue\r\n--fuzzb\r\nContent-Disposition: form-data; "
      "name=\"file\"; filename=\"a.txt\"; filename*=UTF-8''%C3%A9.txt\r\nContent-Type: text/plain\r\n\r\nfile body\r\n"
      "--fuzzb--\r\n")
write("http", "form_multipart", f"POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=fuzzb\r\n"
      f"Content-Length: {len(mp)}\r\n\r\n{mp}")
write("http", "chunked_stream", "PUT /stream/n HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n")
js = '{"a":[1,{"b":null}]}'
write("http", "json", f"POST /json HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {len(js)}\r\n\r\n{js}")
write("http", "events_any", "GET /events HTTP/1.1\r\n\r\nDELETE /any HTTP/1.1\r\nConnection: close\r\n\r\n")
write("http", "bad", "GET /%zz/../..%2f HTTP/1.1\r\nHost: a\r\nX: \x01\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")

# ---- tunnel ------------------------------------------------------------------------------------------------
kat = ("AAECAwQFBgcICQoLDA0OD9PpLIvFAm19+jOVwFyBVFMIAOmpZvYVbPaq67RPmeQR2EKQBe2JZ9vvvnp0DkUF4m1ROP6bqPJYIDbytvyRmBYVmAy"
       "ZxoaKt7ogFQ3Xlc3S")
write("tunnel", "kat_wire", kat)
write("tunnel", "plaintext", "/servicevm/start&join=true&serviceId=edu.cmu.sei.ams.speech_rec_service")
write("tunnel", "apps", "/apps&osVersion=6.0&osName=Android&tags=speech,test")
write("tunnel", "services_result", '{"services":[{"service_id":"s","description":"d","version":1,"tags":["t",2]}]}')
write("tunnel", "start_result", '{"id":"i","service_id":"s","port":20001,"ssh_port":"22","fqdn":null,"state":"running"}')
write("tunnel", "system_result", '{"cpu_info":{"max_cores":2,"usage":"37.5","speed":2400,"cache":512},'
      '"memory_info":{"max_memory":4294967296,"free_memory":1}}')
# A number beyond int64 (UBSan found its conversion undefined once): the shapers must saturate it.
write("tunnel", "system_huge_number", '{"cpu_info":{"max_cores":8888888888888888888888888888,"cache":512},'
      '"memory_info":{"mory":4294961}}')
write("tunnel", "messages_result", '{"messages":[{"message":"m","params":{"a":"b","n":1,"t":true}}]}')
write("tunnel", "base64_lines", base64.encodebytes(bytes(range(64))).decode())

# ---- adb ---------------------------------------------------------------------------------------------------
CNXN, AUTH, OPEN, OKAY, CLSE, WRTE = (struct.unpack("<I", w)[0] for w in (b"CNXN", b"AUTH", b"OPEN", b"OKAY",
                                                                          b"CLSE", b"WRTE"))


def msg(cmd, a0, a1, payload=b""):
    return struct.pack("<6I", cmd, a0, a1, len(payload), 0, cmd ^ 0xFFFFFFFF) + payload


def sync(word, n, data=b""):
    return word + struct.pack("<I", n) + data


cnxn = msg(CNXN, 0x01000001, 4096, b"device::ro.product.name=fz;ro.product.model=Fuzz;features=shell_v2,cmd")
# The host opens streams 1-4 once online: stat, pull, push, shell (adb_fuzz.cc).
online = (msg(OKAY, 101, 1) + msg(WRTE, 101, 1, sync(b"STAT", 0o100644, struct.pack("<II", 7, 0))) +
          msg(OKAY, 102, 2) + msg(WRTE, 102, 2, sync(b"DATA", 5, b"hello") + sync(b"DONE", 0)) +
          msg(OKAY, 103, 3) + msg(WRTE, 103, 3, sync(b"OKAY", 0)) +
          msg(OKAY, 104, 4) + msg(WRTE, 104, 4, b"hi\n") + msg(CLSE, 104, 4))
write("adb", "session", cnxn + online)
write("adb", "auth_then_cnxn", msg(AUTH, 1, 0, bytes(range(20))) + cnxn)
write("adb", "fail_reply", cnxn + msg(OKAY, 101, 1) + msg(WRTE, 101, 1, sync(b"FAIL", 4, b"nope")) + msg(CLSE, 101, 1))
write("adb", "bad_magic", struct.pack("<6I", CNXN, 0x01000000, 4096, 0, 0, 0))


# ---- websocket: the first byte picks how reads are split; then masked client frames ------------------------
def ws_frame(first, payload, mask=b"\x37\xfa\x21\x3d"):
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


write("websocket", "hello", b"\x00" + ws_frame(0x81, b"Hello"))
write("websocket", "fragments", b"\x02" + ws_frame(0x01, b"Hel") + ws_frame(0x89, b"p") + ws_frame(0x80, b"lo"))
write("websocket", "binary_16bit", b"\x03" + ws_frame(0x82, bytes(300)))
write("websocket", "utf8", b"\x01" + ws_frame(0x81, "h\u00e9llo \U0001f600".encode()))
write("websocket", "close", b"\x04" + ws_frame(0x88, struct.pack(">H", 1000) + b"bye") + ws_frame(0x81, b"x"))
write("websocket", "ping_pong", b"\x05" + ws_frame(0x89, b"") + ws_frame(0x8A, b"pong"))
