"""Access exports: built without holding the store's lock, never decrypted for a
listing. Real SQLite files, a real API server on loopback."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from mediaserver.store import Profile, Store
from tests.api.test_api import Server, wait_completed

KEY = bytes(range(32))


class HoldingClock:
    """The store's clock. The first time the thread `hold` names reads it, it stops
    there until `release` is set: a window in which to see what else the store
    serves meanwhile."""

    def __init__(self) -> None:
        self.t = 1_780_000_000.0
        self.hold: int | None = None
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> float:
        if threading.get_ident() == self.hold and not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        return self.t


def test_building_an_export_does_not_block_other_store_calls(tmp_path: Path) -> None:
    clock = HoldingClock()
    store = Store(str(tmp_path / "exports.db"), KEY, clock=clock)
    try:
        profile, _ = store.create_profile("big_account", date_of_birth="1990-01-02",
                                          chat_history_consent=True)
        for i in range(50):
            store.store_chat_message(profile.id, f"conv{i % 5}", "me", f"message {i}")
        request_id = store.submit_request(profile.id, "access").id
        processed: list[int] = []

        def process() -> None:
            clock.hold = threading.get_ident()
            processed.append(store.process_pending())

        worker = threading.Thread(target=process, daemon=True)
        worker.start()
        assert clock.entered.wait(30)  # the export is being built, its thread stopped
        served: list[Profile] = []
        reader = threading.Thread(target=lambda: served.append(store.get_profile(profile.id)),
                                  daemon=True)
        reader.start()
        reader.join(10)  # a deadlock guard, not a speed limit
        served_during_export = list(served)
        clock.release.set()
        worker.join(30)
        reader.join(30)
        assert [p.id for p in served_during_export] == [profile.id]
        assert processed == [1]
        done = store.get_request(profile.id, request_id)
        assert done.status == "completed" and done.export is not None
        assert len(done.export["chat_history"]) == 50
        assert [a["event"] for a in store.audit_log(request_id)] == [
            "received", "verified", "completed"]
    finally:
        clock.release.set()
        store.close()


def test_listing_requests_does_not_decrypt_the_exports(tmp_path: Path) -> None:
    srv = Server(str(tmp_path / "api.db"), str(tmp_path / "api.key"))
    try:
        user = srv.create(username="lister")
        r = srv.http.post("/privacy-requests", headers=srv.auth(user), json={"type": "access"})
        done = wait_completed(srv, user, r.json()["id"])
        assert "export" in done
        # spoil the sealed export in the file: a listing that opened it would fail
        with sqlite3.connect(srv.db) as conn:
            conn.execute("UPDATE privacy_requests SET export_ciphertext = zeroblob(64)")
        listed = srv.http.get("/privacy-requests", headers=srv.auth(user))
        assert listed.status_code == 200, listed.text
        body: dict[str, Any] = listed.json()
        assert [x["id"] for x in body["requests"]] == [done["id"]]
        assert body["requests"][0]["status"] == "completed"
        assert "export" not in body["requests"][0]
    finally:
        srv.stop()

