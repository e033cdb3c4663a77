"""The moderation desk in /metrics (the real app on loopback, a real SQLite store):
open reports, the oldest open report's age, decisions by action, bans in force."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.store.limits import DAY
from tests.support.signalling_client import running_server
from tests.support.store import make


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("mediaserver_moderation")
        for s in family.samples
    }


async def test_metrics_show_the_queue_decisions_and_bans() -> None:
    async with running_server() as server:
        store = server.store

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            async with httpx.AsyncClient() as http:
                r = await http.get(server.http_url + "/metrics")
            assert r.status_code == 200
            return samples(r.text)

        empty = await scrape()
        assert empty[("mediaserver_moderation_open_reports", ())] == 0
        assert empty[("mediaserver_moderation_oldest_open_report_age_seconds", ())] == 0
        assert empty[("mediaserver_moderation_decisions_total", (("action", "ban"),))] == 0
        moderator, _ = make(store, "mod_metrics")
        reported, _ = make(store, "reported_metrics")
        ids = [
            store.file_chat_report(
                "spam",
                reported_address=f"{i:064x}",
                reported_user_id=reported.id,
                reporter_address="f" * 64,
                reporter_user_id=None,
            )
            for i in range(4)
        ]
        store.decide(moderator.id, ids[0], "dismiss", None, "")
        store.decide(moderator.id, ids[1], "ban", DAY, "")
        store.decide(moderator.id, ids[2], "ban", None, "")
        # the open one was filed an hour ago
        store._conn.execute("UPDATE moderation_reports SET at = at - 3600 WHERE id = ?", (ids[3],))
        got = await scrape()
        assert got[("mediaserver_moderation_open_reports", ())] == 1
        assert 3600 <= got[("mediaserver_moderation_oldest_open_report_age_seconds", ())] < 3700
        assert got[("mediaserver_moderation_decisions_total", (("action", "dismiss"),))] == 1
        assert got[("mediaserver_moderation_decisions_total", (("action", "ban"),))] == 2
        assert got[("mediaserver_moderation_decisions_total", (("action", "warn"),))] == 0
        # one account (banned twice: counted once), two address hashes
        assert got[("mediaserver_moderation_bans_in_force", (("kind", "account"),))] == 1
        assert got[("mediaserver_moderation_bans_in_force", (("kind", "address"),))] == 2
