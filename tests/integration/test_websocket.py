"""WebSockets end to end with a real, independent client: Python's `websockets` library (Debian's
python3-websockets) against cloudletd's hello plugin echo at /plugins/hello/echo (ABI 1.1 ws_* slots).
The client does its own framing, masking, fragmentation, ping and closing handshake, so this checks the
server against an implementation that is not ours. Loopback only; every wait is bounded."""
import asyncio
import unittest

import websockets

import harness


def connect(srv):
    """The echo on the manager listener, with the harness's API token (the listener's guard runs first)."""
    uri = "ws://127.0.0.1:%d/plugins/hello/echo" % srv.port("manager")
    return websockets.connect(uri, max_size=None, open_timeout=10, close_timeout=10, extra_headers=srv.auth_headers())


async def session(srv):
    seen = {}
    async with connect(srv) as ws:
        await ws.send("h\u00e9llo, cloudlet")
        seen["text"] = await asyncio.wait_for(ws.recv(), 10)
        payload = bytes(range(256)) * 200  # 51200 bytes: one frame with a 16-bit length
        await ws.send(payload)
        seen["binary_ok"] = (await asyncio.wait_for(ws.recv(), 10)) == payload
        # A fragmented message: the library sends it as one text frame and continuations.
        await ws.send(iter(["frag", "mented ", "message"]))
        seen["fragments"] = await asyncio.wait_for(ws.recv(), 10)
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        seen["pong"] = True
        await ws.close(code=1000, reason="done")
        seen["close_code"] = ws.close_code
    return seen


async def too_big(srv):
    async with connect(srv) as ws:
        await ws.send(b"x" * (64 * 1024 + 1))  # over the plugin's max_message
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.exceptions.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None
    return None


class WebSocketEcho(harness.TestCase):
    def test_a_real_client_talks_to_the_echo_and_closes_cleanly(self):
        srv = self.server().start()
        seen = asyncio.run(session(srv))
        self.assertEqual(seen["text"], "h\u00e9llo, cloudlet")
        self.assertTrue(seen["binary_ok"])
        self.assertEqual(seen["fragments"], "fragmented message")
        self.assertTrue(seen["pong"])
        self.assertEqual(seen["close_code"], 1000)
        # The plugin's close callback saw the client's code and reason.
        for _ in range(100):
            if 'echo socket closed: ' in srv.log_text():
                break
            asyncio.run(asyncio.sleep(0.05))
        self.assertIn('code 1000, reason "done"', srv.log_text())

    def test_a_message_over_the_bound_closes_with_1009(self):
        srv = self.server().start()
        self.assertEqual(asyncio.run(too_big(srv)), 1009)
        # The server is still there for the next client.
        status, _, _ = srv.get("manager", "/plugins/hello/greet?name=after")
        self.assertEqual(status, 200)

    def test_a_plain_get_is_answered_400(self):
        srv = self.server().start()
        status, _, body = srv.get("manager", "/plugins/hello/echo")
        self.assertEqual(status, 400)
        self.assertIn(b"WebSocket", body)


if __name__ == "__main__":
    unittest.main()
