"""A Switchboard signaling client written from docs/protocol.md alone, as an app developer
would write one in another language: it mints its own join tokens (PyJWT), connects with
`websockets`, and speaks the JSON protocol. `RawSocket` speaks WebSocket frames by hand, for
the hostile frames a well-behaved library refuses to send.

Every `error.code`, HTTP `error` and close code a client sees is recorded in `SEEN`, so the
suite can fail on any code the documentation does not list."""

import asyncio
import base64
import json
import os
import struct
import time
import urllib.parse

import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

# What the server sent, over the whole run: {"error": {...}, "close": {...}, "http": {...}}.
SEEN = {"error": set(), "close": set(), "http": set()}

# How long any single wait may take: every test is bounded.
WAIT = 10.0


class Refused(Exception):
    """The upgrade was refused with an HTTP status and (for token refusals) a JSON body."""

    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        try:
            self.error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            self.error = None
        if self.error:
            SEEN["http"].add(self.error)


class Closed(Exception):
    """The server closed the connection: `code` is None when no close frame came."""

    def __init__(self, code, reason):
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason
        if code is not None:
            SEEN["close"].add(code)


def mint(user, room, secret, kid="test", ttl=300, **claims):
    """A join token as the app's backend would mint it: HS256 over the secret's raw bytes."""
    now = int(time.time())
    payload = {"sub": user, "room": room, "iat": now, "exp": now + ttl}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret.encode(), algorithm="HS256", headers={"kid": kid})


class Client:
    """One connection. `messages` are the JSON messages received, in order."""

    def __init__(self, ws):
        self.ws = ws
        self.closed = None

    @classmethod
    async def open(cls, url, token=None, header=False, query=None):
        params = dict(query or {})
        headers = {}
        if token is not None and header:
            headers["Authorization"] = f"Bearer {token}"
        elif token is not None:
            params["access_token"] = token
        full = url + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            ws = await asyncio.wait_for(
                connect(full, additional_headers=headers, max_size=None, ping_interval=None,
                        max_queue=4, open_timeout=WAIT),
                WAIT,
            )
        except InvalidStatus as refused:
            response = refused.response
            raise Refused(response.status_code, response.body.decode(errors="replace")) from None
        return cls(ws)

    @classmethod
    async def joined(cls, url, token, **join):
        """Connects and joins; returns (client, joined message)."""
        client = await cls.open(url, token)
        await client.send({"type": "join", "v": 1, **join})
        return client, await client.expect("joined")

    async def send(self, message):
        await self.ws.send(json.dumps(message) if isinstance(message, dict) else message)

    async def recv(self, timeout=WAIT):
        try:
            text = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as closed:
            frame = closed.rcvd
            self.closed = Closed(frame.code if frame else None, frame.reason if frame else None)
            raise self.closed from None
        message = json.loads(text)
        if message.get("type") == "error":
            SEEN["error"].add(message.get("code"))
        return message

    async def expect(self, kind, timeout=WAIT):
        """The next message of type `kind`, skipping presence and refreshes."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message.get("type") == kind:
                return message
            if message.get("type") == "error" and kind != "error":
                raise AssertionError(f"expected {kind}, got {message}")

    async def error(self, timeout=WAIT):
        return await self.expect("error", timeout)

    async def close_code(self, timeout=WAIT):
        """Reads until the server closes; returns its close code (None: no close frame)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.recv(max(0.01, deadline - time.monotonic()))
            except Closed as closed:
                return closed.code

    async def quiet(self, seconds):
        """True when nothing but presence arrives for `seconds`."""
        try:
            message = await self.recv(seconds)
        except asyncio.TimeoutError:
            return True
        return message.get("type") in ("participantJoined", "participantLeft")

    async def close(self):
        await self.ws.close()


class RawSocket:
    """WebSocket by hand (RFC 6455): the upgrade, and frames with any flags, masked or not."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url, token):
        parsed = urllib.parse.urlparse(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"{parsed.path}?access_token={urllib.parse.quote(token)}"
        writer.write(
            (f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        status = head.split(b" ", 2)[1]
        if status != b"101":
            raise AssertionError(f"upgrade refused: {head!r}")
        return cls(reader, writer)

    def frame(self, opcode, payload, fin=True, rsv1=False, mask=True):
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", first, (0x80 if mask else 0) | length)
        elif length < 65536:
            head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
        else:
            head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.writer.write(head + payload)

    async def text(self, message):
        self.frame(0x1, json.dumps(message).encode())
        await self.writer.drain()

    async def read_frame(self, timeout=WAIT):
        """(opcode, payload) of the server's next frame; None when the connection ended."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        except asyncio.IncompleteReadError:
            return None
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return opcode, await self.reader.readexactly(length)

    async def join(self):
        await self.text({"type": "join", "v": 1})
        while True:
            frame = await self.read_frame()
            if frame is None:
                raise AssertionError("closed before joined")
            if frame[0] == 0x1 and json.loads(frame[1]).get("type") == "joined":
                return json.loads(frame[1])

    async def close_code(self, timeout=WAIT, answer_pings=True):
        """Reads frames until the server's close frame; its code (None: dropped without one)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                return None
            opcode, payload = frame
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                closed = Closed(code, payload[2:].decode(errors="replace"))
                self.writer.close()
                return closed.code
            if opcode == 0x9 and answer_pings:
                self.frame(0xA, payload)
