"""Privacy controls at the store: restriction and objection requests, correction
requests carrying fields, legal holds, guardians' under-age reports, and the profile's
links and location. Real SQLite files, a fake clock."""

import json
import sqlite3

import pytest

from mediaserver.store import Conflict, Invalid, NotFound, Store
from mediaserver.store.privacy import REQUEST_DUE_SECONDS
from mediaserver.store.schema import MIGRATIONS, SCHEMA_VERSION
from mediaserver.store.sealed_fields import seal_profile_fields
from tests.support.store import KEY, Clock, file_bytes, make


def completed(store, user_id, rtype, **kw):
    r = store.submit_request(user_id, rtype, **kw)
    store.process_pending()
    return store.get_request(user_id, r.id)


def handles(store, viewer_id, **kw):
    return [c["handle"] for c in store.browse(viewer_id, **kw)[0]]


# -- restriction -----------------------------------------------------------------------


def test_restriction_stops_listing_sharing_and_chat_until_the_owner_lifts_it(store, clock):
    viewer, _ = make(store, "viewer")
    p, _ = make(store, discoverable=True, chat_history_consent=True, interests=["chess"])
    assert store.store_chat_message(p.id, "c", "me", "before")
    assert handles(store, viewer.id) == ["alice"]
    r = completed(store, p.id, "restriction")
    assert (r.status, r.due_at) == ("completed", r.received_at + REQUEST_DUE_SECONDS)
    assert [a["event"] for a in store.audit_log(r.id)] == ["received", "verified", "completed"]
    assert store.get_profile(p.id).restricted
    assert handles(store, viewer.id) == []
    assert handles(store, viewer.id, interest="chess") == []
    with pytest.raises(Conflict):
        store.share_profile_card(p.id)
    assert store.store_chat_message(p.id, "c", "me", "after") is False
    # stored, not processed: the owner still reads and exports it
    assert [m["text"] for m in store.chat_history(p.id)] == ["before"]
    export = completed(store, p.id, "access").export
    assert export["profile"]["restricted"] is True
    assert [(x.type, x.status) for x in store.list_requests(p.id)] == [
        ("restriction", "completed"), ("access", "completed")]
    with pytest.raises(NotFound):
        store.lift_restriction(viewer.id)  # nothing to lift there
    store.lift_restriction(p.id)
    assert not store.get_profile(p.id).restricted
    assert handles(store, viewer.id) == ["alice"]
    assert store.store_chat_message(p.id, "c", "me", "again")
    assert store.share_profile_card(p.id)["handle"] == "alice"
    assert any(e["event"] == "restriction_lifted" for e in store.audit_log())


@pytest.mark.parametrize("request_kw", [
    {"rtype": "restriction"}, {"rtype": "objection", "purpose": "matching_by_interests"}])
def test_a_restricted_or_objecting_viewers_interests_rank_no_one(store, request_kw):
    viewer, _ = make(store, "viewer", interests=["chess"])
    people = [make(store, f"p_{n}", discoverable=True)[0] for n in range(20)]  # one page
    # the shared interest goes to the one whose id sorts last: ranked by id alone (ids
    # are random) it would come last, so only the interest can put it first
    last = max(people, key=lambda p: p.id)
    store.update_profile(last.id, interests=["chess"])
    assert handles(store, viewer.id)[0] == last.username  # shared interest first
    completed(store, viewer.id, **request_kw)
    assert handles(store, viewer.id) == [p.username for p in sorted(people, key=lambda p: p.id)]


# -- objection -------------------------------------------------------------------------


def test_objection_to_chat_history_deletes_it_and_keeps_nothing_while_it_stands(store, path):
    p, _ = make(store, chat_history_consent=True)
    store.store_chat_message(p.id, "c", "me", "objected-chat-text")
    with pytest.raises(Invalid) as e:
        store.submit_request(p.id, "objection", purpose="advertising")
    assert e.value.field == "purpose"
    with pytest.raises(Invalid):
        store.submit_request(p.id, "objection")  # a purpose is required
    with pytest.raises(Invalid):
        store.submit_request(p.id, "access", purpose="chat_history")
    r = completed(store, p.id, "objection", purpose="chat_history")
    assert (r.status, r.purpose) == ("completed", "chat_history")
    assert store.chat_history(p.id) == []
    assert store.audit_log(r.id)[-1]["detail"] == {"purpose": "chat_history",
                                                   "chat_messages_deleted": 1}
    store.checkpoint()
    assert b"objected-chat-text" not in file_bytes(path)
    prof = store.update_profile(p.id, chat_history_consent=True)
    assert prof.objections == ("chat_history",) and prof.chat_history_consent
    assert store.store_chat_message(p.id, "c", "me", "x") is False  # the objection wins
    store.lift_objection(p.id, "chat_history")
    with pytest.raises(NotFound):
        store.lift_objection(p.id, "chat_history")
    assert store.store_chat_message(p.id, "c", "me", "y") is True


def test_objection_to_matching_by_interests_leaves_interests_out_of_browsing(store):
    viewer, _ = make(store, "viewer", interests=["chess"])
    make(store, "no_match", discoverable=True)
    p, _ = make(store, "objector", discoverable=True, interests=["chess"])
    assert handles(store, viewer.id) == ["objector", "no_match"]  # shared interest first
    completed(store, p.id, "objection", purpose="matching_by_interests")
    assert store.get_profile(p.id).objections == ("matching_by_interests",)
    assert handles(store, viewer.id, interest="chess") == []
    cards = store.browse(viewer.id)[0]
    assert {c["handle"] for c in cards} == {"objector", "no_match"}
    assert [c["interests"] for c in cards if c["handle"] == "objector"] == [["chess"]]


# -- correction ------------------------------------------------------------------------


def test_correction_request_carries_fields_sealed_and_applies_them(store, path, clock):
    p, _ = make(store, bio="old-bio-text")
    make(store, "taken_name")
    for fields, field in (({"bio": 7}, "bio"), ({"nope": 1}, "nope"), ({}, "fields"),
                          ({"links": ["ftp://x.example"]}, "links")):
        with pytest.raises(Invalid) as e:
            store.submit_request(p.id, "correction", fields=fields)
        assert e.value.field == field
    with pytest.raises(Invalid):
        store.submit_request(p.id, "deletion", fields={"bio": "x"})
    r = store.submit_request(p.id, "correction", fields={
        "bio": "corrected-bio-text", "location": "Lisbon, Portugal"})
    store.checkpoint()
    assert b"corrected-bio-text" not in file_bytes(path)  # sealed while it waits
    assert store.get_profile(p.id).bio == "old-bio-text"
    store.process_pending()
    assert store.get_request(p.id, r.id).status == "completed"
    prof = store.get_profile(p.id)
    assert (prof.bio, prof.location) == ("corrected-bio-text", "Lisbon, Portugal")
    assert [a["event"] for a in store.audit_log(r.id)] == [
        "received", "verified", "corrected", "completed"]
    assert store.audit_log(r.id)[2]["detail"] == {"fields": ["bio", "location"]}
    assert store._conn.execute("SELECT fields_sealed FROM privacy_requests WHERE id = ?",
                               (r.id,)).fetchone() == (None,)
    store.checkpoint()
    assert b"old-bio-text" not in file_bytes(path)
    # a username taken by the time it is applied: rejected, with the reason
    r2 = completed(store, p.id, "correction", fields={"username": "Taken_Name"})
    assert (r2.status, r2.reason) == ("rejected", "username is taken")
    assert store.get_profile(p.id).username == "alice"
    # without fields it records the ask, as before
    assert completed(store, p.id, "correction").status == "completed"


# -- legal hold ------------------------------------------------------------------------


def test_a_held_account_survives_every_deletion_path_and_goes_once_released(store, clock):
    reporter, _ = make(store, "reporter")
    p, token = make(store, bio="held-bio", chat_history_consent=True)
    store.store_chat_message(p.id, "c", "me", "kept")
    with pytest.raises(Invalid):
        store.place_legal_hold(p.id, "  ")
    with pytest.raises(NotFound):
        store.place_legal_hold("nobody", "case 17")
    store.place_legal_hold(p.id, "court order 2026/17")
    # 1. a deletion request stays open and says so; later requests do not wait for it
    deletion = store.submit_request(p.id, "deletion")
    access = store.submit_request(p.id, "access")
    clock.advance(1)
    store.process_pending()
    store.process_pending()  # again: noted once
    held = store.get_request(p.id, deletion.id)
    assert (held.status, held.on_hold) == ("verified", True)
    assert [x.on_hold for x in store.list_requests(p.id)] == [True, False]
    assert [a["event"] for a in store.audit_log(deletion.id)] == ["received", "verified", "held"]
    assert store.get_request(p.id, access.id).status == "completed"
    # 2. the account delete endpoint's call opens (here: finds) the waiting request
    assert store.delete_user(p.id) == deletion.id
    # 3. retention: inactive 12 months + 30 days, flagged, not deleted (the reporter is)
    report = store.report_account(reporter.id, "alice", "underage")
    clock.advance(366)
    store.run_retention()
    clock.advance(31)
    assert store.run_retention()["deleted"] == 1
    with pytest.raises(NotFound):
        store.get_profile(reporter.id)
    # 4. a confirmed under-age report
    with pytest.raises(Conflict):
        store.confirm_underage(report)
    assert store.get_profile(p.id).bio == "held-bio"
    assert [m["text"] for m in store.chat_history(p.id)] == ["kept"]
    placed = [e for e in store.audit_log() if e["event"] == "legal_hold_placed"]
    assert placed[0]["detail"] == {"by": "operator", "user_id": p.id,
                                   "reason": "court order 2026/17"}
    # released: the waiting deletion completes
    assert store.release_legal_hold(p.id) == 1
    with pytest.raises(NotFound):
        store.release_legal_hold(p.id)
    assert store.process_pending() == 1
    assert store._conn.execute("SELECT status, user_id FROM privacy_requests WHERE id = ?",
                               (deletion.id,)).fetchone() == ("completed", None)
    with pytest.raises(NotFound):
        store.get_profile(p.id)
    assert any(e["event"] == "legal_hold_released" for e in store.audit_log())


def test_released_hold_lets_retention_and_the_delete_call_delete(store, clock):
    idle, _ = make(store, "idle_one")
    other, _ = make(store, "other_one")
    for user in (idle, other):
        store.place_legal_hold(user.id, "litigation")
    request_id = store.delete_user(other.id)
    assert request_id is not None
    assert store.get_request(other.id, request_id).on_hold
    clock.advance(366)
    store.run_retention()
    clock.advance(31)
    store.run_retention()
    assert store.get_profile(idle.id)
    store.release_legal_hold(idle.id)
    store.release_legal_hold(other.id)
    assert store.run_retention()["deleted"] == 2  # idle, and other (just as idle)
    for user in (idle, other):
        with pytest.raises(NotFound):
            store.get_profile(user.id)
    rows = store._conn.execute("SELECT status FROM privacy_requests WHERE id = ?",
                               (request_id,)).fetchall()
    assert rows == [("verified",)]
    store.process_pending()  # its account went meanwhile: rejected, as any such request
    assert store._conn.execute("SELECT status FROM privacy_requests WHERE id = ?",
                               (request_id,)).fetchone() == ("rejected",)
    # without a hold the call deletes at once
    now, _ = make(store, "deleted_now")
    assert store.delete_user(now.id) is None


# -- guardians' reports ----------------------------------------------------------------


def test_guardian_report_is_sealed_listed_by_source_and_confirmed(store, path, clock):
    reporter, _ = make(store, "reporter")
    minor, _ = make(store, "looks_young")
    account_report = store.report_account(reporter.id, "looks_young", "underage")
    clock.advance(1)
    store.report_underage_by_guardian("Looks_Young", "parent@example.org",
                                      "my-child-is-twelve")
    store.report_underage_by_guardian("nobody_has_it", "parent@example.org", "x")
    for args, field in ((("bad handle!", "a@b.example", "x"), "handle"),
                        (("looks_young", "not-an-address", "x"), "contact_email"),
                        (("looks_young", "a@b.example", ""), "details"),
                        (("looks_young", "a@b.example", "d" * 2001), "details")):
        with pytest.raises(Invalid) as e:
            store.report_underage_by_guardian(*args)
        assert e.value.field == field
    store.checkpoint()
    data = file_bytes(path)
    assert b"parent@example.org" not in data and b"my-child-is-twelve" not in data
    reports = store.underage_reports()
    assert [(r["source"], r["reported_user_id"]) for r in reports] == [
        ("account", minor.id), ("guardian", minor.id)]
    assert reports[0]["report_id"] == account_report
    assert (reports[1]["contact_email"], reports[1]["details"]) == (
        "parent@example.org", "my-child-is-twelve")
    store.confirm_underage(reports[1]["report_id"])
    with pytest.raises(NotFound):
        store.get_profile(minor.id)
    assert store.underage_reports() == []


# -- links and location ----------------------------------------------------------------


def test_links_and_location_are_sealed_shown_only_when_turned_on_and_exported(store, path):
    viewer, _ = make(store, "viewer")
    p, _ = make(store, discoverable=True, links=["https://example.org/my-page-xyz"],
                location="Porto-Unique-Town")
    assert (p.links, p.location, p.show_links, p.show_location) == (
        ("https://example.org/my-page-xyz",), "Porto-Unique-Town", False, False)
    store.checkpoint()
    data = file_bytes(path)
    assert b"my-page-xyz" not in data and b"Porto-Unique-Town" not in data
    (card,) = store.browse(viewer.id)[0]
    assert "links" not in card and "location" not in card
    assert "links" not in store.share_profile_card(p.id)
    store.update_profile(p.id, show_links=True)
    (card,) = store.browse(viewer.id)[0]
    assert card["links"] == ["https://example.org/my-page-xyz"] and "location" not in card
    store.update_profile(p.id, show_location=True, show_links=False)
    (card,) = store.browse(viewer.id)[0]
    assert card["location"] == "Porto-Unique-Town" and "links" not in card
    assert store.share_profile_card(p.id)["location"] == "Porto-Unique-Town"
    store.update_profile(p.id, show_location=False)
    export = completed(store, p.id, "access").export["profile"]
    assert (export["links"], export["location"]) == (
        ["https://example.org/my-page-xyz"], "Porto-Unique-Town")
    # corrected: the old values leave the file
    prof = store.update_profile(p.id, links=["http://new.example"], location=" ")
    assert (prof.links, prof.location) == (("http://new.example",), None)
    store.checkpoint()
    assert b"my-page-xyz" not in file_bytes(path)


@pytest.mark.parametrize("links", [
    "https://a.example", ["https://a.example"] * 0 + [f"https://{n}.example" for n in range(6)],
    ["javascript:alert(1)"], ["https://"], ["https://a.example/" + "x" * 2048],
    ["https://a.example/with space"], [7], ["mailto:a@b.example"],
])
def test_links_that_are_refused(store, links):
    with pytest.raises(Invalid) as e:
        make(store, links=links)
    assert e.value.field == "links"


def test_location_bounds(store):
    with pytest.raises(Invalid) as e:
        make(store, location="x" * 101)
    assert e.value.field == "location"
    with pytest.raises(Invalid):
        make(store, location="a\nb")
    assert make(store, location="y" * 100)[0].location == "y" * 100


def test_a_database_from_before_the_step_migrates_and_reads(tmp_path):
    path = str(tmp_path / "old.db")
    step = next(i for i, s in enumerate(MIGRATIONS) if isinstance(s, list)
                and "ALTER TABLE users ADD COLUMN links_sealed BLOB" in s)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for earlier in MIGRATIONS[:step]:  # the database as the steps before this one left it
        if callable(earlier):
            earlier(conn, KEY)
        else:
            for statement in earlier:
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {step}")
    values = seal_profile_fields(KEY, "old-user", {
        "username": "older_user", "date_of_birth": "1980-01-01", "bio": "",
        "interests": [], "language": None})
    conn.execute(
        f"INSERT INTO users (id, {', '.join(values)}, created_at, updated_at, last_seen_at)"
        f" VALUES (?, {', '.join('?' for _ in values)}, 0, 0, 0)", ("old-user", *values.values()))
    conn.close()
    with Store(path, KEY, clock=Clock()) as store:
        assert store.migrations_applied == SCHEMA_VERSION - step
        prof = store.get_profile("old-user")
        assert (prof.username, prof.links, prof.location, prof.restricted, prof.objections) == (
            "older_user", (), None, False, ())
        json.dumps(completed(store, "old-user", "access").export)
        assert store.update_profile("old-user", links=["https://x.example"]).links == (
            "https://x.example",)
