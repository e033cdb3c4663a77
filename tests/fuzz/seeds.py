"""Write the hand-made seeds into tests/data/fuzz/<target>/: signalling frames, REST
bodies and requests, the SDP offers of tests/data. (Packets come from real peers:
fuzz/capture.py.)

    python -m tests.fuzz.seeds
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgpack

from tests.fuzz.capture import _write
from tests.fuzz.common import pack_records
from tests.fuzz.run import ROOT

ADULT = "1990-05-17"

MESSAGES: list[dict[str, Any]] = [
    {"v": 1, "type": "hello", "age_confirmed": True},
    {
        "v": 1,
        "type": "hello",
        "age_confirmed": True,
        "interests": ["Music", " chess "],
        "language": "en",
        "token": "abc123",
    },
    {"v": 1, "type": "start"},
    {"v": 1, "type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"},
    {"v": 1, "type": "next"},
    {"v": 1, "type": "stop"},
    {"v": 1, "type": "chat", "text": "hello there \u00e9\u6f22"},
    {"v": 1, "type": "typing"},
    {"v": 1, "type": "report", "reason": "spam"},
    {"v": 1, "type": "report", "reason": "harassment", "include_chat": True},
    {"v": 1, "type": "report", "reason": "other", "include_chat": "yes"},
    {"v": 1, "type": "report", "reason": "nudity", "include_chat": True, "include_frame": True},
    {"v": 1, "type": "report", "reason": "other", "include_frame": 1},
    {"v": 1, "type": "block"},
    {"v": 1, "type": "effect", "name": "blur_face", "on": True},
    {"v": 1, "type": "reveal"},
    {"v": 1, "type": "bye"},
    {"v": 2, "type": "hello", "age_confirmed": True},
    {"v": True, "type": "start"},
    {"v": 1, "type": "nope", "extra": [1, 2.5, None, {"a": "b"}]},
    {"v": 1, "type": "hello", "age_confirmed": 1, "interests": "x"},
    {"v": 1, "type": "direct", "conversation_id": "0f3a9c", "text": "hi \u00e9"},
    {"v": 1, "type": "call", "conversation_id": "0f3a9c"},
    {"v": 1, "type": "call_answer", "call_id": "c" * 64},
    {"v": 1, "type": "call_decline", "call_id": ""},
    {"v": 1, "type": "call_hangup", "call_id": 7},
]

PROFILE_BODIES: list[Any] = [
    {"username": "alice", "date_of_birth": ADULT},
    {
        "username": "bob",
        "date_of_birth": ADULT,
        "bio": "hi",
        "interests": ["chess", "music"],
        "language": "en",
        "chat_history_consent": True,
    },
    {"bio": "analytical", "interests": [], "language": None},
    {"username": "young", "date_of_birth": "2015-01-01"},
    {"username": "x", "date_of_birth": "1990-02-30"},
    {"username": "", "date_of_birth": ADULT, "unknown": 1},
    [1, 2, 3],
    {"links": ["https://example.org/me", "http://a.example"], "location": "Porto, Portugal",
     "show_links": True, "show_location": False},
    {"links": ["javascript:alert(1)", "https://"], "location": None},
]

PRIVACY_BODIES: list[Any] = [
    {"type": "restriction"},
    {"type": "objection", "purpose": "chat_history"},
    {"type": "objection", "purpose": "matching_by_interests"},
    {"type": "correction", "fields": {"bio": "corrected", "location": "Lisbon",
                                      "links": ["https://example.org"]}},
    {"type": "correction", "fields": {"username": "renamed"}, "current_password": "x" * 8},
    {"type": "correction", "fields": {}},
    {"type": "access", "purpose": "chat_history"},
]
GUARDIAN_BODIES: list[Any] = [
    {"handle": "alice", "contact_email": "parent@example.org", "details": "looks 12"},
    {"handle": "x", "contact_email": "nope", "details": ""},
    {"username": "carol", "date_of_birth": ADULT, "name": "Carol C", "email": "c@example.org",
     "policy_version": "1"},
    {"name": None, "email": "not-an-address"},
]
MODERATION_BODIES: list[Any] = [
    {"action": "dismiss"},
    {"action": "warn", "note": "keep it civil \u00e9"},
    {"action": "ban", "duration_s": 86400, "note": ""},
    {"action": "ban", "duration_s": None},
    {"action": "ban", "duration_s": 0},
    {"action": "mute", "duration_s": "1d", "extra": 1},
]
APPEAL_BODIES: list[Any] = [
    {"decision_id": "0" * 24, "text": "it was not me"},
    {"report_id": "0" * 24, "text": "please look again \u00e9"},
    {"decision_id": "x", "report_id": "y", "text": ""},
    {"text": 5},
]


def main() -> None:
    counts: dict[str, int] = {}

    def add(target: str, data: bytes) -> None:
        if _write(target, data):
            counts[target] = counts.get(target, 0) + 1

    for message in MESSAGES:
        add("signalling", b"\x00" + json.dumps(message).encode())
        add("signalling", b"\x01" + msgpack.packb(message, use_bin_type=True))
    for raw in (
        b'{"v":1,"type":"chat","text":"\\ud83d\\ude00"}',
        b'{"v":1,"type":NaN}',
        b"[" * 50,
        b'{"v":1e400}',
        b'{"v":1,"type":"chat","text":"\\ud800"}',
    ):
        add("signalling", b"\x00" + raw)
    for body in PROFILE_BODIES:
        encoded = json.dumps(body).encode()
        add("rest_body", bytes([0x25]) + encoded)
        add("rest_body", bytes([0x14]) + encoded)
    add("rest_body", b"\x01" + b'{"username": "a\\u0000b", "date_of_birth": "1990-05-17"}')
    add("rest_body", b"\x01" + b'{"username": "\\ud800", "date_of_birth": "1990-05-17"}')
    add("rest_body", b"\x05" + b"\xff\xfe")
    from mediaserver.api.routes import ROUTE_TABLE

    # the app: one request per record, "METHOD /path\n" then the body (fuzz_rest_app)
    auth = 0x10

    def req(method: str, path: str, body: bytes = b"", tag: int = auth) -> tuple[int, bytes]:
        return tag, f"{method} {path}\n".encode() + body

    create = json.dumps(PROFILE_BODIES[1]).encode()
    add("rest_app", pack_records([req("POST", "/profiles", create, 0)]))
    add(
        "rest_app",
        pack_records(
            [
                req("GET", "/profiles/{id}"),
                req("PATCH", "/profiles/{id}", json.dumps(PROFILE_BODIES[2]).encode()),
                req("POST", "/privacy-requests", b'{"type": "access"}'),
                req("GET", "/privacy-requests"),
            ]
        ),
    )
    add(
        "rest_app",
        pack_records(
            [
                req("POST", "/privacy-requests", b'{"type": "correction"}'),
                req("GET", "/privacy-requests/{id}"),
                req("DELETE", "/profiles/{id}"),
            ]
        ),
    )
    add(
        "rest_app",
        pack_records([req("GET", "/openapi.json", tag=0), req("PUT", "/profiles", b"{}")]),
    )
    add("rest_app", pack_records([req("GET", "/profiles/%0A", tag=0), req("GET", "/nope", tag=0)]))
    # the privacy centre's bodies, then lifting what they did
    add("rest_app", pack_records(
        [req("POST", "/privacy-requests", json.dumps(b).encode()) for b in PRIVACY_BODIES]
        + [req("DELETE", "/profiles/{id}/restriction"),
           req("DELETE", "/profiles/{id}/objections/chat_history")]))
    add("rest_app", pack_records(
        [req("POST", "/reports/underage", json.dumps(b).encode(), tag=0)
         for b in GUARDIAN_BODIES]))
    # the moderation desk (the fuzz profile is a moderator): queue, one report, decisions
    add("rest_app", pack_records(
        [req("GET", "/moderation/reports"),
         req("GET", "/moderation/reports?status=decided&reason=spam"),
         req("GET", "/moderation/reports?status=x"),
         req("GET", "/moderation/reports/{id}"),
         req("GET", "/moderation/reports/{id}/frame")]
        + [req("POST", "/moderation/reports/{id}/decision", json.dumps(b).encode())
           for b in MODERATION_BODIES]
        + [req("POST", "/appeals", json.dumps(b).encode()) for b in APPEAL_BODIES]))
    # connections and conversations (their ids are the profile's here: 404s, still parsed)
    add(
        "rest_app",
        pack_records(
            [
                req("POST", "/connections", b'{"handle": "someone_else"}'),
                req("PATCH", "/conversations/{id}", b'{"keep_history": true, "saved": false}'),
                req("GET", "/conversations/{id}/messages"),
                req("POST", "/connections/{id}/accept"),
            ]
        ),
    )
    for line in sorted({f"{m} {p}" for m, p in ROUTE_TABLE}):
        method, path = line.split(" ", 1)
        add("rest_app", pack_records([req(method, path, b"{}")]))
    # the mail-backed account bodies (api/account.py, api/notices.py)
    add("rest_app", pack_records([
        req("POST", "/profiles/{id}/email/verify", b'{"code": "123456"}'),
        req("POST", "/profiles/{id}/email/code"),
        req("POST", "/password-resets", b'{"email": "a@example.org"}', 0),
        req("POST", "/password-resets/confirm",
            b'{"email": "a@example.org", "code": "123456", "password": "long enough pw"}', 0),
        req("GET", "/profiles/{id}/sessions"),
        req("DELETE", "/profiles/{id}/sessions/x"),
        req("GET", "/policy", tag=0),
        req("POST", "/profiles/{id}/policy", b'{"version": "1"}'),
        req("GET", "/notices"),
        req("POST", "/notices/x/read"),
    ]))
    # a tiny PNG and JPEG for the photo upload (Pillow decodes them)
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
    add("rest_app", pack_records([req("PUT", "/profiles/{id}/photo", png, auth | 0x80)]))
    for name in sorted(os.listdir(os.path.join(ROOT, "tests", "data"))):
        if name.endswith(".sdp"):
            with open(os.path.join(ROOT, "tests", "data", name), "rb") as f:
                add("sdp", f.read())
    for target, count in sorted(counts.items()):
        print(f"  {target}: {count} new seeds")


if __name__ == "__main__":
    main()
