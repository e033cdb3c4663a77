"""Issue 18's "done when", over real WebSockets (minus the still frame): two nodes
(the real app, each with its own SQLite file) share a real Redis (redis-server started
here). A reports B with the chat; a moderator lists it and reads the chat lines,
bans B for a day; B's next hello on the other node gets `banned` (through Redis alone:
that node's database holds no ban); the audit log shows the read; a normal account
gets 404; after 30 days of retention the evidence is gone from the database file."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mediaserver.cli import main as cli_main
from tests.support.redis_server import CLUSTER_SECRET, RedisServer
from tests.support.signalling_client import Client, running_server, start_and_match

A_ADDR, B_ADDR = "127.0.0.2", "127.0.0.3"  # two visitors, two addresses (loopback)


@contextlib.asynccontextmanager
async def two_nodes(tmp: Path, redis_url: str) -> AsyncIterator[tuple[Any, Any]]:
    # one data key (so one identity key: address hashes agree), a database each
    shared = {
        "redis_url": redis_url,
        "cluster_secret": CLUSTER_SECRET,
        "data_key_file": str(tmp / "shared.key"),
    }
    async with (
        running_server(db=str(tmp / "n1.db"), **shared) as n1,
        running_server(db=str(tmp / "n2.db"), **shared) as n2,
    ):
        yield n1, n2


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_report_review_ban_on_another_node_audit_and_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisServer() as redis:
        async with two_nodes(tmp_path, redis.url) as (n1, n2):
            api = httpx.AsyncClient(base_url=n1.http_url + "/api/v1", timeout=10)
            accounts = {}
            for name in ("bee_reported", "the_mod", "just_normal"):
                r = await api.post(
                    "/profiles", json={"username": name, "date_of_birth": "1990-05-17"}
                )
                assert r.status_code == 201, r.text
                accounts[name] = r.json()
            bee, mod, normal = (
                accounts["bee_reported"],
                accounts["the_mod"],
                accounts["just_normal"],
            )
            key_file = str(tmp_path / "shared.key")
            assert (
                cli_main(
                    [
                        "moderation",
                        "grant",
                        "the_mod",
                        "--db",
                        str(tmp_path / "n1.db"),
                        "--data-key-file",
                        key_file,
                    ]
                )
                == 0
            )
            capsys.readouterr()

            # A and B meet on node 1 and chat; A reports B with the chat
            a = await Client.open(n1.url, source=A_ADDR)
            b = await Client.open(n1.url, source=B_ADDR)
            await a.hello()
            await b.hello(token=bee["token"])
            await start_and_match(a, b)
            await a.send("chat", text="hello there")
            assert (await b.expect("chat"))["text"] == "hello there"
            await b.send("chat", text="something awful 5e1d")
            assert (await a.expect("chat"))["text"] == "something awful 5e1d"
            await a.send("report", reason="harassment", include_chat=True)
            await a.expect("queued")
            await a.expect("reported")
            assert (await b.expect("partner_left"))["reason"] == "next"
            await b.expect("queued")

            # the moderator lists it (the report is filed by B's node, in a thread)
            deadline = time.monotonic() + 10
            while True:
                r = await api.get("/moderation/reports", headers=bearer(mod["token"]))
                assert r.status_code == 200, r.text
                if r.json()["reports"]:
                    break
                assert time.monotonic() < deadline, "the report was never filed"
                await asyncio.sleep(0.05)
            (listed,) = r.json()["reports"]
            assert (listed["reason"], listed["source"]) == ("harassment", "chat")
            assert listed["reported_user_id"] == bee["id"]
            assert listed["reported_handle"] == "bee_reported"
            assert "evidence" not in listed
            # ... and reads the chat lines
            r = await api.get(f"/moderation/reports/{listed['id']}", headers=bearer(mod["token"]))
            assert r.json()["evidence"] == {
                "chat": [
                    {"from": "reporter", "text": "hello there"},
                    {"from": "reported", "text": "something awful 5e1d"},
                ]
            }
            # a normal account, or nobody, gets 404
            for headers in (bearer(normal["token"]), {}):
                for path in ("/moderation/reports", f"/moderation/reports/{listed['id']}"):
                    r = await api.get(path, headers=headers)
                    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
            # a ban for a day
            before = time.time()
            r = await api.post(
                f"/moderation/reports/{listed['id']}/decision",
                headers=bearer(mod["token"]),
                json={"action": "ban", "duration_s": 86400, "note": "abuse"},
            )
            assert r.status_code == 201, r.text

            # B's next hello on node 2 (same address, signed out): banned, until a day on
            b2 = await Client.open(n2.url, source=B_ADDR)
            await b2.send("hello", age_confirmed=True)
            err = await b2.error("banned")
            assert err["ref"] == "hello"
            until = dt.datetime.fromisoformat(err["until"]).timestamp()
            assert before + 86400 - 5 <= until <= time.time() + 86400 + 5
            # node 2's own database holds no ban: it came through Redis
            assert n2.store._conn.execute("SELECT COUNT(*) FROM bans").fetchone()[0] == 0
            # A, from another address, is not banned on node 2
            a2 = await Client.open(n2.url, source=A_ADDR)
            await a2.hello()
            # on node 1, B's account is banned at its next start too
            await b.send("stop")
            await b.expect("stopped")
            await b.send("start")
            assert (await b.error("banned"))["ref"] == "start"

            # the audit log shows the moderator's read
            reads = [e for e in n1.store.audit_log() if e["event"] == "moderation_report_read"]
            assert [e["detail"] for e in reads] == [
                {"moderator_id": mod["id"], "report_id": listed["id"]}
            ]

            # /metrics on node 1: nothing open, one ban decision, a ban on each kind
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(n1.http_url + "/metrics")).text
            for line in (
                'mediaserver_moderation_open_reports{worker="0"} 0.0',
                'mediaserver_moderation_decisions_total{action="ban",worker="0"} 1.0',
                'mediaserver_moderation_bans_in_force{kind="account",worker="0"} 1.0',
                'mediaserver_moderation_bans_in_force{kind="address",worker="0"} 1.0',
            ):
                assert line in metrics, line

            # 31 days later, retention deletes the evidence from the file
            (sealed,) = n1.store._conn.execute(
                "SELECT evidence_sealed FROM moderation_reports"
            ).fetchone()
            db = tmp_path / "n1.db"
            n1.store.checkpoint()
            assert bytes(sealed) in db.read_bytes()
            as_of = (dt.datetime.now(dt.UTC) + dt.timedelta(days=31)).date().isoformat()
            code = await asyncio.to_thread(
                cli_main,
                [
                    "retention",
                    "--run-once",
                    "--as-of",
                    as_of,
                    "--db",
                    str(db),
                    "--data-key-file",
                    key_file,
                ],
            )
            assert code == 0
            counts = json.loads(capsys.readouterr().out.splitlines()[-1])
            assert counts["evidence_purged"] == 1
            n1.store.checkpoint()
            on_disk = db.read_bytes() + (
                Path(str(db) + "-wal").read_bytes() if Path(str(db) + "-wal").exists() else b""
            )
            assert bytes(sealed) not in on_disk
            r = await api.get(f"/moderation/reports/{listed['id']}", headers=bearer(mod["token"]))
            assert r.json()["evidence"] == {}
            for c in (a, b, b2, a2):
                await c.close()
            await api.aclose()
