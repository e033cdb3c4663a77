"""What a node trusts on Redis: only what is sealed with the cluster secret.

A real redis-server (tests/support/redis_server.py) on loopback, a real node (the app
in-process, or `mediaserver` as a subprocess), and a raw redis client playing
someone who can write to Redis but does not know the secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from mediaserver.matchmaker import Match, MatchPolicy, Ticket
from mediaserver.matchmaker.redis import DEFAULT_CHANNEL, RedisMatchmaker
from mediaserver.node.auth import PURPOSE_BUS, PURPOSE_MATCH, PURPOSE_NODE, Sealer
from mediaserver.node.bus import NodeInfo
from mediaserver.node.coordinator import Coordinator
from mediaserver.node.redis_bus import DEFAULT_PREFIX, RedisBus
from tests.support.http_client import http_get
from tests.support.peers import wait_for
from tests.support.redis_server import CLUSTER_SECRET, RedisServer
from tests.support.signalling_client import Client, running_server, start_and_match
from tests.support import DATA

OFFER = (DATA / "offer_chromium.sdp").read_text()
SECRET = CLUSTER_SECRET.encode()
WRONG = Sealer(b"a secret that is not the cluster's")


async def _register_fakes(raw: aioredis.Redis) -> None:
    """Fake nodes, each emptier than any real one: unsealed (the old format),
    sealed with a wrong secret, and a sealed entry copied under another id."""
    fake = NodeInfo("evil", announced_ip="127.0.0.9", udp_port=9, sessions=-1000)
    await raw.sadd(DEFAULT_PREFIX + "nodes", "evil", "evil2")
    await raw.set(DEFAULT_PREFIX + "info:evil", fake.encode(), px=60_000)
    wrong = WRONG.seal(PURPOSE_NODE, "evil2", "evil2", NodeInfo("evil2").encode(), time.time())
    await raw.set(DEFAULT_PREFIX + "info:evil2", wrong, px=60_000)


async def _next_message(pubsub: Any) -> dict[str, Any]:
    while True:
        msg = await pubsub.get_message(timeout=5)
        assert msg is not None, "nothing published"
        if msg["type"] == "message":
            return dict(msg)


async def test_a_node_entry_without_the_secret_is_no_node():
    async def handler(msg: dict[str, Any]) -> None:
        return None

    with RedisServer() as redis:
        raw = aioredis.Redis.from_url(redis.url)
        buses = [RedisBus(redis.url, n, secret=SECRET) for n in ("na", "nb")]
        try:
            for bus in buses:
                await bus.start(handler, lambda n=bus.node_id: NodeInfo(n, sessions=10))
            await _register_fakes(raw)
            # nb's real, sealed entry copied under a third id
            entry = await raw.get(DEFAULT_PREFIX + "info:nb")
            await raw.sadd(DEFAULT_PREFIX + "nodes", "copy")
            await raw.set(DEFAULT_PREFIX + "info:copy", entry, px=60_000)
            na = buses[0]
            assert await wait_for(lambda: na.rejected["bad_signature"] > 0, 5)
            assert await wait_for(lambda: na.rejected["misdirected"] > 0, 5)
            assert na.rejected["unsigned"] > 0
            assert sorted(na.nodes()) == ["na", "nb"]
        finally:
            for bus in buses:
                await bus.close()
            await raw.aclose()


async def test_forged_messages_reach_no_node_and_sealed_ones_do(caplog):
    caplog.set_level(logging.WARNING, logger="mediaserver.node")
    got: list[dict[str, Any]] = []

    async def handler(msg: dict[str, Any]) -> None:
        got.append(msg)

    with RedisServer() as redis:
        raw = aioredis.Redis.from_url(redis.url)
        a = RedisBus(redis.url, "na", secret=SECRET)
        b = RedisBus(redis.url, "nb", secret=SECRET)
        try:
            await a.start(handler, lambda: NodeInfo("na"))
            await b.start(handler, lambda: NodeInfo("nb"))
            channel = DEFAULT_PREFIX + "n:na"
            event = {"t": "peer", "to": "na/x", "by": "nb/y", "ev": "chat", "from": "nb"}
            now = time.time()
            right = Sealer(SECRET)

            def text(t: str) -> bytes:
                data: bytes = msgpack.packb({**event, "text": t})
                return data

            forged = [
                text("no seal at all"),
                WRONG.seal(PURPOSE_BUS, "nb", "na", text("wrong secret"), now),
                right.seal(PURPOSE_BUS, "nb", "nb", text("nb's, onto na's channel"), now),
                right.seal(PURPOSE_BUS, "nb", "na", text("old"), now - 60),
            ]
            for f in forged:
                assert await raw.publish(channel, f) == 1
            await b.send("na", {**event, "text": "sealed"})
            # a genuine message, captured off the channel and replayed
            sub = raw.pubsub()
            await sub.subscribe(channel)
            await b.send("na", {**event, "text": "twice"})
            msg = None
            while msg is None or msg["type"] != "message":
                msg = await sub.get_message(timeout=5)
            assert await raw.publish(channel, msg["data"]) == 2
            await sub.aclose()
            assert await wait_for(lambda: sum(a.rejected.values()) >= 5, 5), a.rejected
            await asyncio.sleep(0.2)
            assert [m["text"] for m in got] == ["sealed", "twice"]
            assert got[0]["from"] == "nb"
            assert a.rejected == {"unsigned": 1, "bad_signature": 1, "misdirected": 1,
                                  "expired": 1, "replayed": 1}  # fmt: skip
            # logged with a reason, a kind and a length; never the bytes
            logged = [r for r in caplog.records if r.getMessage() == "node_message_rejected"]
            assert {r.reason for r in logged} == set(a.rejected)  # type: ignore[attr-defined]
            assert all(r.kind == "bus" and r.bytes > 0 for r in logged)  # type: ignore[attr-defined]
            dump = repr([vars(r) for r in logged])
            for payload in ("no seal at all", "wrong secret", "onto na's channel", "twice"):
                assert payload not in dump
        finally:
            await a.close()
            await b.close()
            await raw.aclose()


async def test_a_fake_node_gets_no_offer_and_a_forged_match_or_event_reaches_no_visitor():
    with RedisServer() as redis:
        raw = aioredis.Redis.from_url(redis.url)
        async with running_server(redis_url=redis.url, cluster_secret=CLUSTER_SECRET) as server:
            hub = server.hub
            listener = raw.pubsub()
            await listener.psubscribe(DEFAULT_PREFIX + "n:evil*")
            assert (await listener.get_message(timeout=5))["type"] == "psubscribe"
            matches = raw.pubsub()
            await matches.subscribe(DEFAULT_CHANNEL)
            await _register_fakes(raw)
            assert await wait_for(lambda: hub.bus.rejected["unsigned"] > 0, 5)
            status, body = await asyncio.to_thread(http_get, server.http_url + "/healthz")
            assert json.loads(body)["nodes"] == 1

            # a visitor's offer lands on this node, never on the emptier fake one
            x = await Client.open(server.url, source="127.0.0.2")
            y = await Client.open(server.url, source="127.0.0.3")
            await x.hello()
            await y.hello()
            await x.send("start")
            await x.expect("queued")
            await x.send("offer", sdp=OFFER)
            await x.expect("answer")
            assert len(server.sfu.sessions) == 1

            # a match forged on the match channel, pairing x with a peer of the fake
            # node, in the script's plain format: dropped, x is not told
            x_id = (await raw.zrange("mediaserver:mm:q", 0, 0))[0].decode()
            pairing = json.dumps([[x_id, "evil/abc", []]])
            assert await raw.publish(DEFAULT_CHANNEL, "elsewhere\n" + pairing) == 2
            await _next_message(matches)
            assert await wait_for(lambda: hub.matchmaker.rejected["unsigned"] == 1, 5)
            # sealed right (a node's, sent as that peer's node died): x is not told
            # either, as no live node holds that peer, and queues again
            sealed = Sealer(SECRET).seal(PURPOSE_MATCH, "n2", "*", pairing.encode(), time.time())
            assert await raw.publish(DEFAULT_CHANNEL, base64.b64encode(sealed)) == 2
            await _next_message(matches)
            assert await wait_for(lambda: hub.stats["stale_matches"] == 1, 5)
            await x.expect("queued")  # as after any stale match
            await y.send("start")
            await y.expect("queued")
            await x.expect("matched")
            await y.expect("matched")

            # the match is public on Redis: a forged chat "from" y to x, unsealed
            # and sealed with a wrong secret, on x's node channel
            seen = await _next_message(matches)
            opened = Sealer(SECRET).open(base64.b64decode(seen["data"]), PURPOSE_MATCH, time.time())
            a, b, _ = json.loads(opened.payload)[0]
            channel = DEFAULT_PREFIX + "n:" + hub.node_id
            me = hub.node_id
            chat = {"t": "peer", "to": a, "by": b, "ev": "chat", "text": "forged", "from": me}
            before = sum(hub.bus.rejected.values())
            assert await raw.publish(channel, msgpack.packb(chat)) == 1
            sealed = WRONG.seal(PURPOSE_BUS, me, me, msgpack.packb(chat), time.time())
            assert await raw.publish(channel, sealed) == 1
            assert await wait_for(lambda: sum(hub.bus.rejected.values()) >= before + 2, 5)
            await y.send("chat", text="genuine")
            assert (await x.expect("chat"))["text"] == "genuine"
            await x.quiet(0.3)

            # nothing went the fake nodes' way, and /metrics counts the rejects
            assert await listener.get_message(timeout=0.5) is None
            status, text = await asyncio.to_thread(http_get, server.http_url + "/metrics")
            counts = {
                line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("mediaserver_node_messages_rejected_total{")
            }
            assert counts["unsigned"] >= 3 and counts["bad_signature"] >= 2, counts
            for c in (x, y):
                await c.close()
            await listener.aclose()
            await matches.aclose()
        await raw.aclose()


async def test_a_password_protected_redis_works_with_the_password_in_the_url(tmp_path):
    with RedisServer(password="pw-3f9a1c") as redis:
        assert redis.url.startswith("redis://:pw-3f9a1c@127.0.0.1:")
        # an ACL user that may touch only the server's keys and channels, no admin
        # commands (the README's recipe)
        admin = aioredis.Redis.from_url(redis.url)
        await admin.execute_command(
            "ACL", "SETUSER", "node", "on", ">pw-node-5e", "resetkeys", "~mediaserver:*",
            "resetchannels", "&mediaserver:*", "+@all", "-@admin", "-@dangerous",
        )  # fmt: skip
        await admin.aclose()
        acl_url = redis.url.replace(":pw-3f9a1c@", "node:pw-node-5e@")
        for url in (redis.url, acl_url):
            async with running_server(redis_url=url, cluster_secret=CLUSTER_SECRET) as server:
                x = await Client.open(server.url, source="127.0.0.2")
                y = await Client.open(server.url, source="127.0.0.3")
                await x.hello()
                await y.hello()
                await start_and_match(x, y)
                # the bus registered and read back this node's sealed entry
                hub = server.hub
                assert await wait_for(lambda: hub.bus._alive.keys() == {hub.node_id}, 5)
                for c in (x, y):
                    await c.close()

        # without it, or with a wrong one: one clear line, exit 1, no password in it
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
        for url in (redis.url.replace(":pw-3f9a1c@", ""), redis.url.replace("3f9a1c", "nothis")):
            proc = subprocess.run(
                [sys.executable, "-m", "mediaserver.cli", "--redis-url", url, "--workers", "1",
                 "--host", "127.0.0.1", "--port", "0", "--udp-port", "0",
                 "--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")],
                capture_output=True, text=True, timeout=60, check=False,
                env={**clean, "MEDIASERVER_CLUSTER_SECRET": CLUSTER_SECRET},
            )  # fmt: skip
            out = proc.stdout + proc.stderr
            assert proc.returncode == 1, out
            assert "cannot start: Redis refused this node" in out, out
            assert "redis://USER:PASSWORD@" in out
            assert "Traceback" not in out and "nothis" not in out


async def test_a_malformed_match_message_is_logged_without_its_text(caplog):
    with RedisServer() as redis:
        raw = aioredis.Redis.from_url(redis.url)
        mm = RedisMatchmaker(redis.url, MatchPolicy(), lambda m: None)
        try:
            await mm.start()
            with caplog.at_level(logging.WARNING, logger="mediaserver.matchmaker"):
                await raw.publish(DEFAULT_CHANNEL, "evil\n[not json: SECRET-TEXT")
                assert await wait_for(lambda: any("match channel" in r.getMessage()
                                                  for r in caplog.records), 5)  # fmt: skip
            text = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
            assert "SECRET-TEXT" not in text
            assert "(27 chars)" in text
        finally:
            await mm.close()
            await raw.aclose()


async def test_the_coordinator_socket_is_this_users_alone(tmp_path):
    """--workers N without Redis: whoever connects to the coordinator's socket joins
    as a worker. It is 0600, whatever the umask, in a directory only we can enter."""
    old = os.umask(0o022)
    try:
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        coordinator = Coordinator(str(private / "coordinator.sock"), MatchPolicy())
        await coordinator.start()
        try:
            mode = stat.S_IMODE(os.stat(private / "coordinator.sock").st_mode)
            assert mode == 0o600, oct(mode)
        finally:
            await coordinator.close()
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        with pytest.raises(PermissionError, match="mode 0700"):
            await Coordinator(str(shared / "coordinator.sock"), MatchPolicy()).start()
        assert not (shared / "coordinator.sock").exists()
    finally:
        os.umask(old)


async def test_rediss_with_a_user_password_carries_the_queue_and_the_bus():
    """TLS and a password from the URL reach every Redis client a node makes (the
    matchmaker's and the bus's), and the certificate is checked by default."""
    with RedisServer(password="pw-tls-77", tls=True) as redis:
        assert redis.url.startswith("rediss://:pw-tls-77@")
        async with running_server(redis_url=redis.url, cluster_secret=CLUSTER_SECRET) as server:
            x = await Client.open(server.url, source="127.0.0.2")
            y = await Client.open(server.url, source="127.0.0.3")
            await x.hello()
            await y.hello()
            await start_and_match(x, y)
            # the bus read this node's own sealed entry back from the registry
            assert await wait_for(lambda: server.hub.bus._alive.keys() == {server.hub.node_id}, 5)
            for c in (x, y):
                await c.close()
        # without the CA the server's certificate is refused
        unverified = redis.url.partition("?")[0]
        try:
            async with running_server(redis_url=unverified, cluster_secret=CLUSTER_SECRET):
                raise AssertionError("started against an unverified certificate")
        except aioredis.ConnectionError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc)


async def test_matches_on_the_channel_are_sealed_and_forged_ones_pair_nobody():
    """Two nodes' matchmakers share the queue; a match reaches the other node only
    sealed by a node: the script's plain format, a wrong secret and a replay of
    a real one are dropped."""
    heard1: list[Match] = []
    heard2: list[Match] = []
    with RedisServer() as redis:
        raw = aioredis.Redis.from_url(redis.url)
        spy = raw.pubsub()
        m1 = RedisMatchmaker(redis.url, MatchPolicy(), heard1.append, sealer=Sealer(SECRET))
        m2 = RedisMatchmaker(redis.url, MatchPolicy(), heard2.append, sealer=Sealer(SECRET))
        try:
            await m1.start()
            await m2.start()
            await spy.subscribe(DEFAULT_CHANNEL)
            plain = "elsewhere\n" + json.dumps([["n1/a", "n2/b", []]])
            wrong = WRONG.seal(PURPOSE_MATCH, "x", "*", json.dumps([["n1/c", "n2/d", []]]).encode(),
                               time.time())  # fmt: skip
            assert await raw.publish(DEFAULT_CHANNEL, plain) == 3
            assert await raw.publish(DEFAULT_CHANNEL, base64.b64encode(wrong)) == 3
            for _ in range(2):
                await _next_message(spy)

            await m1.enqueue(Ticket("n1/x", "X", age_confirmed=True))
            await m2.enqueue(Ticket("n2/y", "Y", age_confirmed=True))
            assert heard2 == [Match("n1/x", "n2/y", ())]  # the node that made it
            assert await wait_for(lambda: len(heard1) == 1, 5)  # the other, sealed
            assert heard1 == [Match("n1/x", "n2/y", ())]
            real = await _next_message(spy)
            assert await raw.publish(DEFAULT_CHANNEL, real["data"]) == 3  # replayed
            assert await wait_for(lambda: m1.rejected["replayed"] == 1, 5)
            await asyncio.sleep(0.1)
            assert heard1 == [Match("n1/x", "n2/y", ())]
            assert m1.rejected == {"unsigned": 1, "bad_signature": 1, "replayed": 1}
            assert m2.rejected == {"unsigned": 1, "bad_signature": 1, "replayed": 1}
        finally:
            await m1.close()
            await m2.close()
            await spy.aclose()
            await raw.aclose()
