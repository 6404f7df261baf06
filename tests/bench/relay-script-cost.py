#!/usr/bin/env python3
"""Redis CPU per call of Switchboard's relay script and of leaner variants, on a bare Redis.

Starts its own redis-server on CPU 0 (loopback, no persistence), subscribes one client to the
target's channel so every PUBLISH is delivered, loads each variant and drives it with
redis-benchmark from CPU 1 (50 clients with one request in flight each, or with --pipeline N, 4
clients with N each, as a pod's multiplexed connection sends them), and prints the Redis
process's CPU time per message. The first variants are the relay script exactly as the
signaling server sends it (assembled from signaling/src/store/redis.rs), with one message per
call and with several; the others take one thing away at a time from the one-message call, so
the difference between two lines is what that thing costs Redis.

Usage: python3 tests/bench/relay-script-cost.py [--pipeline N] [calls per variant, default 300000]
Needs redis-server, redis-cli, redis-benchmark and taskset.
"""
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = open(os.path.join(ROOT, "signaling/src/store/redis.rs")).read()
PORT = 7390
ARGS = sys.argv[1:]
PIPELINE = 1
if ARGS[:1] == ["--pipeline"]:
    PIPELINE = int(ARGS[1])
    ARGS = ARGS[2:]
CALLS = int(ARGS[0]) if ARGS else 300000
CLIENTS = ["-c", "50"] if PIPELINE == 1 else ["-c", "4", "-P", str(PIPELINE)]


def const(name):
    return re.search(r'const %s: &str = r#"(.*?)"#;' % name, SOURCE, re.S).group(1)


ROOM = "sb:room:{r1}"
KEYS = [ROOM + ":participants", ROOM + ":users", ROOM + ":expiry", ROOM + ":seq"]
PREFIX = '{"type":"offer","from":"p1","sdp":"' + "x" * 200 + '"'

# The relay script's check, seq and mailbox without Redis TIME and the deadline (a membership
# test only), then without any check, then a script that only publishes.
MEMBER_ONLY = """
local room = string.sub(KEYS[1], 1, #KEYS[1] - 13)
local to = ARGV[1]
if redis.call('HEXISTS', KEYS[1], to) == 0 then return 0 end
local count = redis.call('HINCRBY', KEYS[4], to, 1)
local seq = tostring(count)
local payload = seq .. ' ' .. ARGV[2] .. ',"seq":' .. seq .. '}'
local box = room .. ':mailbox:' .. to
local length = redis.call('RPUSH', box, payload)
if length > tonumber(ARGV[3]) then redis.call('LPOP', box, length - tonumber(ARGV[3])) end
redis.call('PUBLISH', room .. ':to:' .. to, payload)
return count
"""
MEMBERSHIP_TEST = "if redis.call('HEXISTS', KEYS[1], to) == 0 then return 0 end\n"
assert MEMBERSHIP_TEST in MEMBER_ONLY
NO_CHECK = MEMBER_ONLY.replace(MEMBERSHIP_TEST, "")
# The mailbox as a stream: XADD with the ID "0-*" numbers the entries 1, 2, 3, ... (the seq)
# and trims to the mailbox length in the same call; with the shipped check, then without.
STREAM_NO_CHECK = """
local room = string.sub(KEYS[1], 1, #KEYS[1] - 13)
local to = ARGV[1]
local id = redis.call('XADD', room .. ':box:' .. to, 'MAXLEN', ARGV[3], '0-*', 'm', ARGV[2])
local seq = string.sub(id, 3)
redis.call('PUBLISH', room .. ':to:' .. to, seq .. ' ' .. ARGV[2] .. ',"seq":' .. seq .. '}')
return tonumber(seq)
"""
STREAM_CHECK = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]))
if not deadline or deadline <= now then return 0 end
""" + STREAM_NO_CHECK
EMPTY = "return 1\n"
PUBLISH_ONLY = "redis.call('PUBLISH', KEYS[1]:sub(1, #KEYS[1] - 13) .. ':to:' .. ARGV[1], ARGV[2])\nreturn 1\n"
# Several messages per call: the membership-only body in a loop over (target, message) pairs.
BATCH = """
local room = string.sub(KEYS[1], 1, #KEYS[1] - 13)
local limit = 64
for i = 1, #ARGV, 2 do
  local to = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], to) == 1 then
    local seq = tostring(redis.call('HINCRBY', KEYS[4], to, 1))
    local payload = seq .. ' ' .. ARGV[i + 1] .. ',"seq":' .. seq .. '}'
    local box = room .. ':mailbox:' .. to
    if redis.call('RPUSH', box, payload) > limit then redis.call('LPOP', box) end
    redis.call('PUBLISH', room .. ':to:' .. to, payload)
  end
end
return 1
"""


def cli(*args):
    return subprocess.run(["redis-cli", "-p", str(PORT), *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    server = subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", str(PORT),
                               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)
    subscriber = None
    try:
        for _ in range(100):
            try:
                cli("PING")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.05)
        cli("HSET", KEYS[0], "p2", '{"id":"p2"}')
        cli("ZADD", KEYS[2], str(int(time.time() * 1000) + 10**9), "p2")
        subscriber = subprocess.Popen(["taskset", "-c", "1", "redis-cli", "-p", str(PORT),
                                       "SUBSCRIBE", ROOM + ":to:p2"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        time.sleep(0.3)

        def run(label, args, per_call=1):
            # Three rounds, the median and the spread: one round varies by a few µs.
            calls = CALLS // per_call
            rounds = []
            for _ in range(3):
                before, started = cpu_seconds(server.pid), time.time()
                subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(PORT), "-n",
                                str(calls), *CLIENTS, "-q", *args],
                               capture_output=True, check=True)
                used, wall = cpu_seconds(server.pid) - before, time.time() - started
                rounds.append((1e6 * used / (calls * per_call), calls * per_call / wall))
            rounds.sort()
            (low, _), (median, rate), (high, _) = rounds
            print(f"| {label} | {median:.2f} ({low:.2f} to {high:.2f}) | {rate:,.0f} |",
                  flush=True)

        print(f"{'unpipelined, 50 clients' if PIPELINE == 1 else f'pipelined {PIPELINE} deep, 4 clients'}")
        print("| Variant | Redis CPU µs per message, median of 3 (range) | messages/s |")
        print("| --- | --- | --- |")
        run("PUBLISH alone (no script)", ["PUBLISH", ROOM + ":to:p2", PREFIX])
        relay = cli("SCRIPT", "LOAD",
                    "local PUBLISH = 'PUBLISH'\n" + const("EXPIRE_KEYS") + const("RELAY"))
        # The shipped script takes the mailbox length, then a room's keys and a (target,
        # message) pair per message: alone, as a quiet pod sends it, and several per call, as a
        # busy one does.
        for size in (1, 4, 16):
            run(f"relay script as shipped, {size} per call" if size > 1
                else "relay script as shipped, one message",
                ["EVALSHA", relay, str(4 * size), *KEYS * size, "64", *["p2", PREFIX] * size],
                size)
        cli("DEL", ROOM + ":mailbox:p2")
        for label, body in [("membership test instead of TIME + deadline", MEMBER_ONLY),
                            ("no check at all", NO_CHECK),
                            ("stream mailbox (XADD 0-* MAXLEN), shipped check", STREAM_CHECK),
                            ("stream mailbox, no check", STREAM_NO_CHECK),
                            ("a script that only publishes", PUBLISH_ONLY),
                            ("an empty script", EMPTY)]:
            sha = cli("SCRIPT", "LOAD", body)
            run(label, ["EVALSHA", sha, "4", *KEYS, "p2", PREFIX, "64"])
            cli("DEL", ROOM + ":mailbox:p2", ROOM + ":box:p2")
        sha = cli("SCRIPT", "LOAD", BATCH)
        for size in (4, 16):
            run(f"membership-test body, {size} messages per call",
                ["EVALSHA", sha, "4", *KEYS] + ["p2", PREFIX] * size, size)
    finally:
        if subscriber:
            subscriber.kill()
        server.kill()


if __name__ == "__main__":
    main()
