"""Switchboard's protocol conformance suite, written from docs/protocol.md.

It reads the documented tables (error codes, close codes, limits, and the token refusals)
from docs/protocol.md itself, runs one or more tests for every row against real servers, and
fails when:
  - a documented row has no test (except the rows listed in PENDING, which are reported);
  - a test fails;
  - any client saw an `error.code`, close code or HTTP `error` the documentation does not list.

Run by tests/tests/conformance.rs, which starts the servers and passes their addresses in
the SWITCHBOARD_CONFORMANCE environment variable (JSON)."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from client import SEEN, Client, Closed, RawSocket, Refused, mint

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")

# Documented rows the suite cannot produce yet, with why; reported, not failed. Empty: every
# row is produced.
PENDING = {}
# Token refusals no client can cause: reported, not failed on.
UNREACHABLE = {
    ("token", "server_key_error"): "needs a server key the server cannot use; no token causes it",
}

TESTS = []  # (name, [(table, key)], coroutine function)


def covers(*rows):
    def register(function):
        TESTS.append((function.__name__, list(rows), function))
        return function
    return register


def section(text, heading):
    start = text.index(f"\n## {heading}\n") if f"\n## {heading}\n" in text else text.index(f"\n### {heading}\n")
    rest = text[start + 1:]
    end = re.search(r"\n##+ ", rest[3:])
    return rest[: end.start() + 3] if end else rest


def table_keys(block):
    """First-column values of the first Markdown table in `block`, backticks removed."""
    keys = []
    for line in block.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first = line.split("|")[1].strip()
        keys.append(first.strip("`"))
    return keys[1:]  # the header row


def documented():
    text = open(DOCS, encoding="utf-8").read()
    return {
        "error": table_keys(section(text, "Error codes")),
        "close": table_keys(section(text, "Close codes")),
        "limit": table_keys(section(text, "Limits")),
        "token": table_keys(section(text, "When the token is refused")),
    }


class Env:
    def __init__(self, config):
        self.__dict__.update(config)

    def token(self, user, room, **claims):
        return mint(user, room, self.secret, **claims)

    def room(self, label):
        return f"{label}-{uuid.uuid4().hex[:8]}"

    async def pair(self, url=None, label="pair", **claims):
        room = self.room(label)
        url = url or self.main
        a, ja = await Client.joined(url, self.token("alice", room, **claims))
        b, jb = await Client.joined(url, self.token("bob", room, **claims))
        return a, ja, b, jb

    def metric(self, name, code):
        body = urllib.request.urlopen(self.main_http + "/metrics", timeout=5).read().decode()
        pattern = rf'^switchboard_signaling_{name}_total\{{code="{code}"\}} (\d+)'
        found = re.search(pattern, body, re.M)
        return int(found.group(1)) if found else 0


async def expect_refused(url, token, status, error, **kw):
    try:
        client = await Client.open(url, token, **kw)
    except Refused as refused:
        assert (refused.status, refused.error) == (status, error), f"{refused}"
        return refused
    await client.close()
    raise AssertionError(f"expected HTTP {status} {error}, got an open socket")


# --- error codes ---------------------------------------------------------------------------


@covers(("error", "bad_request"))
async def bad_fields_get_bad_request_and_the_connection_stays(env):
    a, _, _, jb = await env.pair()
    await a.send({"type": "offer", "to": jb["participantId"], "ref": "o1"})
    error = await a.error()
    assert (error["code"], error["ref"]) == ("bad_request", "o1"), error
    assert "sdp" in error["message"], error
    await a.send({"type": "candidate", "to": jb["participantId"], "candidate": "", "sdpMLineIndex": 70000})
    assert (await a.error())["code"] == "bad_request"
    await a.send({"type": "ping", "ref": "still-open"})
    assert (await a.expect("pong"))["ref"] == "still-open"
    # A join refused for its fields is a failed join in the metrics.
    before = env.metric("join_failures", "bad_request")
    client = await Client.open(env.main, env.token("carol", env.room("badjoin")))
    await client.send({"type": "join", "v": "one"})
    assert (await client.error())["code"] == "bad_request"
    assert env.metric("join_failures", "bad_request") == before + 1


@covers(("error", "malformed_json"))
async def malformed_json_keeps_the_connection(env):
    a, _, _, _ = await env.pair()
    await a.send("{not json")
    assert (await a.error())["code"] == "malformed_json"
    await a.send({"type": "ping"})
    await a.expect("pong")


@covers(("error", "unknown_type"))
async def unknown_types_are_refused(env):
    a, _, _, _ = await env.pair()
    await a.send({"type": "dance", "ref": "d"})
    error = await a.error()
    assert (error["code"], error["ref"]) == ("unknown_type", "d"), error


@covers(("error", "unsupported_version"))
async def other_versions_are_refused_and_counted_as_failed_joins(env):
    before = env.metric("join_failures", "unsupported_version")
    client = await Client.open(env.main, env.token("alice", env.room("version")))
    await client.send({"type": "join", "v": 2, "ref": "j"})
    error = await client.error()
    assert (error["code"], error["ref"]) == ("unsupported_version", "j"), error
    # The connection stays un-joined: a right join still works.
    await client.send({"type": "join", "v": 1})
    await client.expect("joined")
    assert env.metric("join_failures", "unsupported_version") == before + 1


@covers(("error", "not_joined"))
async def only_join_and_ping_work_before_joined(env):
    client = await Client.open(env.main, env.token("alice", env.room("early")))
    await client.send({"type": "ping", "ref": "before"})
    pong = await client.recv()
    assert pong == {"type": "pong", "ref": "before"}, pong
    await client.send({"type": "offer", "to": "p-1", "sdp": "v=0", "ref": "o"})
    error = await client.error()
    assert (error["code"], error["ref"]) == ("not_joined", "o"), error
    await client.send({"type": "leave"})
    assert (await client.error())["code"] == "not_joined"


@covers(("error", "already_joined"))
async def a_second_join_is_refused_and_counted(env):
    before = env.metric("join_failures", "already_joined")
    a, _, _, _ = await env.pair()
    await a.send({"type": "join", "v": 1, "ref": "again"})
    error = await a.error()
    assert (error["code"], error["ref"]) == ("already_joined", "again"), error
    assert env.metric("join_failures", "already_joined") == before + 1


@covers(("error", "unknown_participant"))
async def relays_to_yourself_and_to_other_rooms_deliver_nothing(env):
    a, ja, b, _ = await env.pair()
    c, jc, _, _ = await env.pair(label="elsewhere")
    own = ja["participantId"]
    for kind, extra in (("offer", {"sdp": "v=0"}), ("answer", {"sdp": "v=0"}), ("candidate", {"candidate": ""})):
        await a.send({"type": kind, "to": own, "ref": "self", **extra})
        error = await a.error()
        assert (error["code"], error["ref"]) == ("unknown_participant", "self"), error
    await a.send({"type": "offer", "to": jc["participantId"], "sdp": "v=0", "ref": "other"})
    assert (await a.error())["code"] == "unknown_participant"
    await a.send({"type": "offer", "to": "p-nobody", "sdp": "v=0"})
    assert (await a.error())["code"] == "unknown_participant"
    assert await a.quiet(0.5), "a relay to yourself was delivered"
    assert await b.quiet(0.2) and await c.quiet(0.2), "a refused relay was delivered"


@covers(("error", "room_full"))
async def a_full_room_refuses_and_the_connection_may_retry(env):
    room = env.room("full")
    for user in ("alice", "bob"):  # --default-max-participants=2
        await Client.joined(env.main, env.token(user, room))
    carol = await Client.open(env.main, env.token("carol", room))
    for _ in range(2):
        await carol.send({"type": "join", "v": 1, "ref": "j"})
        error = await carol.error()
        assert (error["code"], error["ref"]) == ("room_full", "j"), error


@covers(("error", "room_not_found"))
async def missing_rooms_are_not_found(env):
    client = await Client.open(env.strict, env.token("alice", "nowhere"))
    await client.send({"type": "join", "v": 1})
    assert (await client.error())["code"] == "room_not_found"


@covers(("error", "placement_timeout"))
async def unplaceable_rooms_time_out(env):
    client = await Client.open(env.eager, env.token("alice", env.room("unplaced")))
    await client.send({"type": "join", "v": 1})
    assert (await client.error(timeout=20))["code"] == "placement_timeout"


@covers(("error", "rate_limited"))
async def bursts_are_refused_one_by_one(env):
    client, _ = await Client.joined(env.flood, env.flood_token("alice", env.room("burst")))
    for _ in range(6):  # --rate-burst=3, --flood-strikes=5: refused, not yet closed
        await client.send({"type": "ping"})
    codes = []
    for _ in range(6):
        message = await client.recv()
        codes.append(message.get("code", message["type"]))
    assert "pong" in codes and "rate_limited" in codes, codes


@covers(("error", "resume_failed"))
async def unknown_resume_tokens_fail_and_leave_the_connection_unjoined(env):
    client = await Client.open(env.main, env.token("alice", env.room("resume")))
    await client.send({"type": "join", "v": 1, "resume": {"token": "rt1.0123abcd.p-gone", "lastSeq": 0}, "ref": "r"})
    error = await client.error()
    assert (error["code"], error["ref"]) == ("resume_failed", "r"), error
    await client.send({"type": "join", "v": 1})
    await client.expect("joined")


@covers(("error", "unavailable"))
async def a_frozen_redis_gets_unavailable(env):
    a, _, _, jb = await env.pair(url=env.outage)
    os.kill(env.outage_redis_pid, signal.SIGSTOP)
    try:
        await a.send({"type": "offer", "to": jb["participantId"], "sdp": "v=0", "ref": "o"})
        error = await a.error(timeout=20)
        assert (error["code"], error["ref"]) == ("unavailable", "o"), error
    finally:
        os.kill(env.outage_redis_pid, signal.SIGCONT)


def outage_ready(env, within=20):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(env.outage_http + "/readyz", timeout=1).status == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError("the outage server did not become ready again")


@covers(("error", "internal"))
async def a_redis_refusing_writes_gets_internal(env):
    # Redis is up and answers, but refuses every write (out of memory, `noeviction`): the
    # relay fails for a reason that is not an outage.
    outage_ready(env)
    a, _, _, jb = await env.pair(url=env.outage)
    redis_cli = ["redis-cli", "-p", str(env.outage_redis_port)]
    assert subprocess.run(redis_cli + ["CONFIG", "SET", "maxmemory", "1"], capture_output=True).returncode == 0
    try:
        await a.send({"type": "offer", "to": jb["participantId"], "sdp": "v=0", "ref": "o"})
        error = await a.error(timeout=20)
        assert (error["code"], error["ref"]) == ("internal", "o"), error
    finally:
        subprocess.run(redis_cli + ["CONFIG", "SET", "maxmemory", "0"], capture_output=True)


# --- close codes ---------------------------------------------------------------------------


def admin(env, method, path):
    """A call to the server API (docs/api.md) with an admin token, as an app's backend makes it."""
    now = int(time.time())
    token = jwt.encode(
        {"sub": "backend", "aud": "switchboard-admin", "admin": True, "iat": now, "exp": now + 60},
        env.secret.encode(), algorithm="HS256", headers={"kid": env.kid})
    request = urllib.request.Request(env.admin_http + path, method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


@covers(("close", "4002"))
async def a_kicked_participant_is_closed_with_4002(env):
    room = env.room("kick")
    a, ja = await Client.joined(env.main, env.token("alice", room))
    b, _ = await Client.joined(env.main, env.token("bob", room))
    assert admin(env, "DELETE", f"/v1/rooms/{room}/participants/{ja['participantId']}") == 204
    assert await a.close_code() == 4002
    left = await b.expect("participantLeft")
    assert (left["id"], left["reason"]) == (ja["participantId"], "kicked"), left


@covers(("close", "4003"))
async def an_ended_room_closes_everyone_with_4003(env):
    room = env.room("end")
    a, _ = await Client.joined(env.main, env.token("alice", room))
    b, _ = await Client.joined(env.main, env.token("bob", room))
    assert admin(env, "DELETE", f"/v1/rooms/{room}") == 200
    assert await a.close_code() == 4003
    assert await b.close_code() == 4003


@covers(("close", "1000"))
async def leave_closes_normally(env):
    a, _, b, _ = await env.pair()
    await a.send({"type": "leave"})
    assert await a.close_code() == 1000
    left = await b.expect("participantLeft")
    assert left["reason"] == "left", left


@covers(("close", "1001"))
async def sigterm_sends_reconnect_then_going_away_even_unjoined(env):
    room = env.room("drain")
    joined, _ = await Client.joined(env.drain, env.token("alice", room))
    waiting = await Client.open(env.drain, env.token("bob", room))
    os.kill(env.drain_pid, signal.SIGTERM)
    reconnect = await joined.expect("reconnect")
    assert reconnect["resumeToken"].startswith("rt1."), reconnect
    assert await joined.close_code() == 1001
    assert await waiting.close_code() == 1001


async def protocol_violation(env, send):
    raw = await RawSocket.open(env.main, env.token("alice", env.room("raw")))
    send(raw)
    await raw.writer.drain()
    return await raw.close_code()


@covers(("close", "1002"))
async def websocket_protocol_violations_close_with_1002(env):
    cases = {
        "lone continuation": lambda r: r.frame(0x0, b"x"),
        "unmasked frame": lambda r: r.frame(0x1, b'{"type":"ping"}', mask=False),
        "RSV1 set": lambda r: r.frame(0x1, b'{"type":"ping"}', rsv1=True),
        "unknown opcode": lambda r: r.frame(0x3, b""),
        "oversized ping": lambda r: r.frame(0x9, b"x" * 126),
        "fragmented ping": lambda r: r.frame(0x9, b"x", fin=False),
    }
    got = {name: await protocol_violation(env, send) for name, send in cases.items()}
    assert all(code == 1002 for code in got.values()), got


@covers(("close", "1003"))
async def binary_frames_close_with_1003(env):
    a, _, _, _ = await env.pair()
    await a.ws.send(b"\x00\x01")
    assert await a.close_code() == 1003


@covers(("close", "1007"))
async def invalid_utf8_closes_with_1007(env):
    assert await protocol_violation(env, lambda r: r.frame(0x1, b'{"type":"\xff\xfe"}')) == 1007


@covers(("close", "1008"))
async def a_sustained_flood_closes_with_1008(env):
    client, _ = await Client.joined(env.flood, env.flood_token("alice", env.room("flood")))
    try:
        for _ in range(200):
            await client.send({"type": "ping"})
    except Exception:  # the server may close while we still send
        pass
    assert await client.close_code() == 1008


@covers(("close", "1009"), ("limit", "Text frame"))
async def frames_over_64_kib_close_with_1009(env):
    a, _, _, jb = await env.pair()
    envelope = json.dumps({"type": "offer", "to": jb["participantId"], "sdp": ""})
    at_limit = envelope.replace('"sdp": ""', '"sdp": "' + "a" * (65536 - len(envelope)) + '"')
    assert len(at_limit.encode()) == 65536
    await a.send(at_limit)  # read, and refused for its sdp: the connection stays
    assert (await a.error())["code"] == "bad_request"
    await a.send(at_limit[:-2] + 'a"}')
    assert await a.close_code() == 1009


@covers(("close", "4001"))
async def the_same_user_joining_again_replaces_the_old_session(env):
    room = env.room("dup")
    first, j1 = await Client.joined(env.main, env.token("alice", room))
    bob, _ = await Client.joined(env.main, env.token("bob", room))
    await Client.joined(env.main, env.token("alice", room))
    assert await first.close_code() == 4001
    left = await bob.expect("participantLeft")
    assert (left["id"], left["reason"]) == (j1["participantId"], "duplicate_identity"), left


@covers(("close", "4004"))
async def no_join_in_time_closes_with_4004(env):
    client = await Client.open(env.main, env.token("alice", env.room("late")))
    started = time.monotonic()
    assert await client.close_code() == 4004  # --join-timeout=2s
    assert time.monotonic() - started >= 1.5


@covers(("close", "4005"))
async def a_client_answering_no_pings_closes_with_4005(env):
    raw = await RawSocket.open(env.main, env.token("alice", env.room("idle")))
    await raw.join()
    started = time.monotonic()
    assert await raw.close_code(answer_pings=False) == 4005  # --idle-timeout=1500ms
    assert time.monotonic() - started >= 1.0


@covers(("close", "4006"))
async def a_client_that_stops_reading_closes_with_4006(env):
    room = env.room("slow")
    sender, _ = await Client.joined(env.slow, env.token("sender", room))
    reader = await Client.open(env.slow, env.token("reader", room))
    reader.ws.max_queue = 1
    await reader.send({"type": "join", "v": 1})
    jr = await reader.expect("joined")
    big = "v=0 " + "a" * 30000

    async def flood():
        for i in range(1000):
            try:
                await sender.send({"type": "offer", "to": jr["participantId"], "sdp": big})
            except Exception:
                return
            if i % 50 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(flood())
    await asyncio.sleep(2.0)  # not reading: the server's queue for us fills up
    code = await reader.close_code(timeout=20)
    task.cancel()
    assert code == 4006, code


# --- limits --------------------------------------------------------------------------------


async def relayed_or_refused(a, b, to, message):
    """("relayed", what b got) when b gets the message, or ("error", code) of a's error."""
    await a.send({**message, "to": to, "ref": "lim"})
    relayed = asyncio.create_task(b.expect(message["type"]))
    refused = asyncio.create_task(a.error())
    done, pending = await asyncio.wait({relayed, refused}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if relayed in done:
        return ("relayed", relayed.result())
    return ("error", refused.result().get("code"))


async def check_field_limit(env, kind, field, at_limit, over, base):
    a, _, b, jb = await env.pair(label="limit")
    to = jb["participantId"]
    ok, message = await relayed_or_refused(a, b, to, {**base, "type": kind, field: at_limit})
    assert ok == "relayed" and message[field] == at_limit, (field, ok)
    assert await relayed_or_refused(a, b, to, {**base, "type": kind, field: over}) == ("error", "bad_request"), field


@covers(("limit", "sdp"))
async def sdp_is_1_byte_to_32_kib(env):
    await check_field_limit(env, "offer", "sdp", "a" * 32768, "a" * 32769, {})
    await check_field_limit(env, "answer", "sdp", "v", "", {})


@covers(("limit", "candidate"))
async def candidates_are_at_most_1_kib_and_may_be_empty(env):
    await check_field_limit(env, "candidate", "candidate", "c" * 1024, "c" * 1025, {})
    await check_field_limit(env, "candidate", "candidate", "", "c" * 5000, {})


@covers(("limit", "sdpMid"))
async def sdp_mid_is_at_most_64_bytes(env):
    await check_field_limit(env, "candidate", "sdpMid", "m" * 64, "m" * 65, {"candidate": ""})


@covers(("limit", "usernameFragment"))
async def username_fragment_is_at_most_256_bytes(env):
    await check_field_limit(env, "candidate", "usernameFragment", "u" * 256, "u" * 257, {"candidate": ""})


@covers(("limit", "ref"))
async def refs_are_at_most_64_characters(env):
    client = await Client.open(env.main, env.token("alice", env.room("ref")))
    await client.send({"type": "ping", "ref": "r" * 64})
    assert (await client.expect("pong"))["ref"] == "r" * 64
    await client.send({"type": "ping", "ref": "r" * 65})
    error = await client.error()
    assert error["code"] == "bad_request" and "ref" not in error, error


@covers(("limit", "Room, user and participant ids"))
async def ids_are_1_to_64_characters_of_the_charset(env):
    room64 = "r" * 64
    _, joined = await Client.joined(env.main, env.token("alice", room64))
    assert joined["room"] == room64
    for user, room in (("alice", "r" * 65), ("a" * 65, "ok"), ("a:b", "ok"), ("", "ok"), ("alice", "a/b")):
        await expect_refused(env.main, env.token(user, room), 401, "invalid_claim")
    a, _, _, _ = await env.pair()
    for bad in ("p/1", "", "p" * 65):
        await a.send({"type": "offer", "to": bad, "sdp": "v=0"})
        assert (await a.error())["code"] == "bad_request", bad


@covers(("limit", "Display name"))
async def display_names_are_1_to_64_characters_without_controls(env):
    room = env.room("name")
    _, joined = await Client.joined(env.main, env.token("alice", room, name="N" * 64))
    assert joined["participants"][0]["name"] == "N" * 64
    for bad in ("N" * 65, "", "bell\u0007"):
        await expect_refused(env.main, env.token("bob", room, name=bad), 401, "invalid_claim")


@covers(("limit", "Region"))
async def regions_are_lowercase_dns_labels(env):
    room = env.room("region")
    await Client.joined(env.main, env.token("alice", room, region="eu-west-1"))
    for bad in ("EU", "-eu", "e" * 64, "eu_west"):
        await expect_refused(env.main, env.token("bob", room, region=bad), 401, "invalid_claim")


@covers(("limit", "Resume token"))
async def resume_tokens_are_256_bytes_of_the_charset(env):
    client = await Client.open(env.main, env.token("alice", env.room("rt")))
    at_limit = "rt1." + "a" * 252
    await client.send({"type": "join", "v": 1, "resume": {"token": at_limit, "lastSeq": 0}})
    assert (await client.error())["code"] == "resume_failed"  # well-formed, unknown
    for bad in ("rt1." + "a" * 253, "rt1.a b", ""):
        await client.send({"type": "join", "v": 1, "resume": {"token": bad, "lastSeq": 0}})
        assert (await client.error())["code"] == "bad_request", bad


@covers(("limit", "Access token"))
async def access_tokens_over_8_kib_are_malformed(env):
    room = env.room("big")
    padded = env.token("alice", room, pad="x" * 5000)
    assert len(padded) <= 8192
    await Client.joined(env.main, padded)
    huge = env.token("alice", room, pad="x" * 7000)
    assert len(huge) > 8192
    await expect_refused(env.main, huge, 401, "malformed_token", header=True)


# --- token refusals (401) ------------------------------------------------------------------


def token_with(env, payload=None, headers=None, key=None, algorithm="HS256", kid="test"):
    now = int(time.time())
    body = {"sub": "alice", "room": "tok", "iat": now, "exp": now + 300}
    for name, value in (payload or {}).items():
        if value is ...:
            body.pop(name, None)
        else:
            body[name] = value
    head = {"kid": kid} if kid else {}
    head.update(headers or {})
    return jwt.encode(body, key or env.secret.encode(), algorithm=algorithm, headers=head)


@covers(("token", "missing_token"))
async def no_token_is_missing_token(env):
    await expect_refused(env.main, None, 401, "missing_token")


@covers(("token", "malformed_token"))
async def garbage_and_crit_are_malformed(env):
    for bad in ("a.b", "!!!.???.###", "a.b.c.d"):
        await expect_refused(env.main, bad, 401, "malformed_token")
    await expect_refused(env.main, token_with(env, headers={"crit": ["exp"]}), 401, "malformed_token")


@covers(("token", "unsupported_algorithm"))
async def alg_none_is_unsupported(env):
    unsigned = jwt.encode({"sub": "alice", "room": "tok", "exp": int(time.time()) + 60}, None,
                          algorithm="none", headers={"kid": "test"})
    await expect_refused(env.main, unsigned, 401, "unsupported_algorithm")


@covers(("token", "missing_kid"))
async def no_kid_with_several_keys_is_missing_kid(env):
    await expect_refused(env.main, token_with(env, kid=None), 401, "missing_kid")


@covers(("token", "unknown_kid"))
async def unknown_kids_are_refused(env):
    await expect_refused(env.main, token_with(env, kid="retired"), 401, "unknown_kid")


@covers(("token", "algorithm_mismatch"))
async def an_rs256_token_for_an_hs256_key_is_a_mismatch(env):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await expect_refused(env.main, token_with(env, key=key, algorithm="RS256"), 401, "algorithm_mismatch")


@covers(("token", "invalid_signature"))
async def a_wrong_secret_is_an_invalid_signature(env):
    await expect_refused(env.main, token_with(env, key=b"another-secret-that-is-32-bytes-long!"), 401, "invalid_signature")


@covers(("token", "token_expired"))
async def expired_tokens_are_refused(env):
    now = int(time.time())
    await expect_refused(env.main, token_with(env, {"iat": now - 600, "exp": now - 300}), 401, "token_expired")


@covers(("token", "token_not_yet_valid"))
async def future_tokens_are_refused(env):
    now = int(time.time())
    await expect_refused(env.main, token_with(env, {"nbf": now + 600, "exp": now + 900}), 401, "token_not_yet_valid")


@covers(("token", "missing_exp"))
async def tokens_without_exp_are_refused(env):
    for missing in (..., None):
        await expect_refused(env.main, token_with(env, {"exp": missing}), 401, "missing_exp")


@covers(("token", "invalid_exp"))
async def exp_that_is_no_usable_number_is_invalid(env):
    for bad in ("1999999999", [1999999999], {"at": 1}, -5, 10**30, 2**64 + 1, 1e300):
        await expect_refused(env.main, token_with(env, {"exp": bad, "iat": ...}), 401, "invalid_exp")


@covers(("token", "lifetime_too_long"))
async def long_lived_tokens_are_refused(env):
    now = int(time.time())
    await expect_refused(env.main, token_with(env, {"exp": now + 2 * 86400}), 401, "lifetime_too_long")


@covers(("token", "invalid_audience"))
async def an_audience_nobody_configured_is_refused(env):
    await expect_refused(env.main, token_with(env, {"aud": "someone"}), 401, "invalid_audience")


@covers(("token", "invalid_issuer"))
async def a_missing_issuer_is_refused_where_one_is_configured(env):
    await expect_refused(env.flood, token_with(env), 401, "invalid_issuer")


@covers(("token", "invalid_claim"))
async def bad_claims_are_named(env):
    refused = await expect_refused(env.main, token_with(env, {"sub": ...}), 401, "invalid_claim")
    assert "sub" in json.loads(refused.body)["message"]


@covers(("token", "room_mismatch"))
async def the_room_parameter_must_be_the_tokens_room(env):
    token = token_with(env)
    await expect_refused(env.main, token, 401, "room_mismatch", query={"room": "other"})
    for bad in ("../x", "\x00", "", "a:b"):
        await expect_refused(env.main, token, 401, "room_mismatch", query={"room": bad})
    client = await Client.open(env.main, token, query={"room": "tok"})
    await client.close()
    # The token's own fault wins over a bad room parameter.
    await expect_refused(env.main, "a.b", 401, "malformed_token", query={"room": "../x"})


@covers()
async def other_http_answers_are_the_documented_statuses(env):
    """The answers besides the token table: 405, 400, 414 and 431 (docs: "Other HTTP answers")."""
    host, port = env.main_http.removeprefix("http://").split(":")
    token = env.token("alice", env.room("http"))

    async def status(request):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request.encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return int(line.split()[1])

    get = "GET /v1/ws?access_token={} HTTP/1.1\r\nHost: x\r\n{}\r\n"
    assert await status(f"POST /v1/ws?access_token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") == 405
    assert await status(get.format(token, "")) == 400
    assert await status(get.format(token + "&x=" + "a" * 70000, "")) == 414
    assert await status(get.format(token, "".join(f"X-H{i}: 1\r\n" for i in range(150)))) == 431


# --- runner --------------------------------------------------------------------------------


async def run_all(env, only=None):
    results = {}
    for name, rows, test in TESTS:
        if only and name not in only:
            continue
        started = time.monotonic()
        try:
            await asyncio.wait_for(test(env), 60)
            results[name] = ("ok", None)
        except Exception as error:  # a failed test, reported with its cause
            results[name] = ("FAILED", "".join(traceback.format_exception(error)).strip())
        print(f"test {name} ... {results[name][0]} ({time.monotonic() - started:.1f}s)", flush=True)
    return results


def main():
    config = json.loads(os.environ["SWITCHBOARD_CONFORMANCE"])
    env = Env(config)
    env.flood_token = lambda user, room: mint(user, room, env.secret, iss=env.flood_issuer)
    only = set(sys.argv[1:])
    docs = documented()
    results = asyncio.run(run_all(env, only))
    failures = [name for name, (status, _) in results.items() if status != "ok"]

    print("\nrow -> tests (docs/protocol.md)")
    uncovered = []
    for table, keys in docs.items():
        for key in keys:
            tests = [name for name, rows, _ in TESTS if (table, key) in rows]
            if (table, key) in PENDING:
                status = PENDING[(table, key)]
            elif (table, key) in UNREACHABLE:
                status = "not produced: " + UNREACHABLE[(table, key)]
            elif not tests:
                status = "NO TEST"
                uncovered.append((table, key))
            elif only and not any(t in only for t in tests):
                status = "not run"
            else:
                status = "ok" if all(results.get(t, ("ok",))[0] == "ok" for t in tests) else "FAILED"
            print(f"  {table:6} {key:34} {status:12} {', '.join(tests)}")

    undocumented = {
        "error": sorted(SEEN["error"] - set(docs["error"])),
        "close": sorted(SEEN["close"] - {int(k) for k in docs["close"]}),
        "http": sorted(SEEN["http"] - set(docs["token"])),
    }
    for name in failures:
        print(f"\n---- {name} ----\n{results[name][1]}")
    print(f"\nseen: error codes {sorted(SEEN['error'])}, close codes {sorted(SEEN['close'])}, "
          f"HTTP errors {sorted(SEEN['http'])}")
    problems = []
    if failures:
        problems.append(f"{len(failures)} tests failed: {', '.join(failures)}")
    if uncovered and not only:
        problems.append(f"documented rows without a test: {uncovered}")
    if any(undocumented.values()):
        problems.append(f"codes seen on the wire that docs/protocol.md does not list: {undocumented}")
    print(f"\nconformance: {len(results) - len(failures)} passed, {len(failures)} failed, "
          f"{sum(len(v) for v in docs.values())} documented rows, "
          f"{len([r for r in PENDING if r[1] in docs[r[0]]])} pending")
    if problems:
        print("conformance FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("conformance: every documented row produced on the wire")


if __name__ == "__main__":
    main()
