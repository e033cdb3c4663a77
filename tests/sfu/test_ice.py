"""Tests for mediaserver.sfu.ice: the ICE-lite server, driven with virtual time.

Requests are built the way a browser builds them (aioice's STUN codec with
USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY and
FINGERPRINT). The last test runs a real aioice agent against the server over UDP
inside the private network namespace.
"""

from __future__ import annotations

import asyncio
import re
import struct
from typing import cast

import pytest
from aioice import Candidate, Connection, stun
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver import netns
from mediaserver.sfu.ice import (
    MAX_ADDRESSES_PER_SESSION,
    AddressBound,
    ConsentExpired,
    IceEvent,
    IceLiteServer,
    generate_credentials,
)

LOCAL_UFRAG = "srvU"
LOCAL_PWD = "serverpasswordserverpw"  # 22 ice-chars
REMOTE_UFRAG = "brws"
PEER = ("192.0.2.10", 50000)
PEER2 = ("198.51.100.7", 61000)
PEER6 = ("2001:db8::1", 40000)


def make_request(
    *,
    username: str | None = f"{LOCAL_UFRAG}:{REMOTE_UFRAG}",
    pwd: str | None = LOCAL_PWD,
    use_candidate: bool = False,
    controlled: bool = False,
    fingerprint: bool = True,
    message_class: stun.Class = stun.Class.REQUEST,
    method: stun.Method = stun.Method.BINDING,
    transaction_id: bytes | None = None,
) -> bytes:
    """A Binding request as Chromium sends one (RFC 8445 section 7.2.2)."""
    message = stun.Message(
        message_method=method, message_class=message_class, transaction_id=transaction_id
    )
    if username is not None:
        message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853824767
    if controlled:
        message.attributes["ICE-CONTROLLED"] = 0x1234567890ABCDEF
    else:
        message.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    if pwd is not None:
        if fingerprint:
            message.add_message_integrity(pwd.encode())  # adds FINGERPRINT too
        else:
            message.attributes["MESSAGE-INTEGRITY"] = stun.message_integrity(
                bytes(message), pwd.encode()
            )
    elif fingerprint:
        message.add_fingerprint()
    return bytes(message)


def make_server(now: float = 0.0, key: str = "s1") -> IceLiteServer:
    server = IceLiteServer()
    server.add_session(key, LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now=now)
    return server


def drain(server: IceLiteServer) -> list[IceEvent]:
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    return events


def assert_dropped(server: IceLiteServer, data: bytes, reason: str) -> None:
    before = server.drops.copy()
    owner = server.session_for_address(PEER)
    server.receive_datagram(data, PEER, 1.0)
    before[reason] += 1
    assert server.drops == before
    assert server.datagrams_to_send(1.0) == []
    assert drain(server) == []
    assert server.session_for_address(PEER) == owner


# Valid checks


def test_valid_request_gets_signed_response() -> None:
    server = make_server()
    tid = bytes(range(12))
    server.receive_datagram(make_request(transaction_id=tid), PEER, 1.0)

    [(data, addr)] = server.datagrams_to_send(1.0)
    assert addr == PEER
    response = stun.parse_message(data)  # checks FINGERPRINT
    assert response.message_method == stun.Method.BINDING
    assert response.message_class == stun.Class.RESPONSE
    assert response.transaction_id == tid
    assert response.attributes["XOR-MAPPED-ADDRESS"] == PEER
    assert "FINGERPRINT" in response.attributes
    assert response.check_message_integrity(LOCAL_PWD.encode())
    assert not response.check_message_integrity(b"some other password!!!")
    # Never more bytes back than the peer sent (no amplification).
    assert len(data) <= len(make_request(transaction_id=tid))

    assert drain(server) == [AddressBound(key="s1", addr=PEER, nominated=False)]
    assert server.session_for_address(PEER) == "s1"
    assert server.nominated_address("s1") is None
    assert server.last_seen("s1") == 1.0
    assert server.datagrams_to_send(1.0) == []
    assert sum(server.drops.values()) == 0


def test_xor_mapped_address_ipv6() -> None:
    server = make_server()
    server.receive_datagram(make_request(), PEER6, 1.0)
    [(data, addr)] = server.datagrams_to_send(1.0)
    assert addr == PEER6
    assert stun.parse_message(data).attributes["XOR-MAPPED-ADDRESS"] == PEER6


def test_request_without_fingerprint_is_accepted() -> None:
    # FINGERPRINT is checked when present; RFC 8445 requires it, but some stacks
    # only add it on requests they send over multiplexed ports.
    server = make_server()
    server.receive_datagram(make_request(fingerprint=False), PEER, 1.0)
    assert len(server.datagrams_to_send(1.0)) == 1


def test_repeated_checks_emit_one_event() -> None:
    server = make_server()
    for t in (1.0, 2.0, 3.0):
        server.receive_datagram(make_request(), PEER, t)
    assert len(server.datagrams_to_send(3.0)) == 3
    assert drain(server) == [AddressBound(key="s1", addr=PEER, nominated=False)]
    assert server.last_seen("s1") == 3.0


def test_nomination() -> None:
    server = make_server()
    # Regular nomination: a plain check first, then USE-CANDIDATE on the same pair.
    server.receive_datagram(make_request(), PEER, 1.0)
    server.receive_datagram(make_request(use_candidate=True), PEER, 1.1)
    assert drain(server) == [
        AddressBound(key="s1", addr=PEER, nominated=False),
        AddressBound(key="s1", addr=PEER, nominated=True),
    ]
    assert server.nominated_address("s1") == PEER

    # Browsers keep USE-CANDIDATE on later checks of the selected pair: no news.
    server.receive_datagram(make_request(use_candidate=True), PEER, 2.5)
    assert drain(server) == []

    # A check from another address does not move the media...
    server.receive_datagram(make_request(), PEER2, 3.0)
    assert drain(server) == [AddressBound(key="s1", addr=PEER2, nominated=False)]
    assert server.nominated_address("s1") == PEER

    # ...until the peer nominates it (network change, ICE renomination).
    server.receive_datagram(make_request(use_candidate=True), PEER2, 4.0)
    assert drain(server) == [AddressBound(key="s1", addr=PEER2, nominated=True)]
    assert server.nominated_address("s1") == PEER2
    assert len(server.datagrams_to_send(4.0)) == 5


def test_first_check_with_use_candidate() -> None:
    # Aggressive nomination: one event, already nominated.
    server = make_server()
    server.receive_datagram(make_request(use_candidate=True), PEER, 1.0)
    assert drain(server) == [AddressBound(key="s1", addr=PEER, nominated=True)]


REMOTE_PWD = "browserpasswordbrowserp"  # the peer's ice-pwd, from its offer


def make_guarded_server() -> IceLiteServer:
    """A session that knows the peer's password, so it can check a new address."""
    server = IceLiteServer()
    server.add_session("s1", LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now=0.0, remote_pwd=REMOTE_PWD)
    return server


def make_proven_server(nominate: bool = True) -> IceLiteServer:
    """A guarded session whose DTLS completed at PEER, its events and replies taken."""
    server = make_guarded_server()
    server.receive_datagram(make_request(use_candidate=nominate), PEER, 1.0)
    server.confirm_address("s1", PEER)  # DTLS completed with PEER
    server.datagrams_to_send(1.0)
    drain(server)
    return server


def answer_probe(probe: bytes, pwd: str = REMOTE_PWD) -> bytes:
    """The success response a browser sends to the server's check."""
    request = stun.parse_message(probe)
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = PEER2
    response.add_message_integrity(pwd.encode())
    return bytes(response)


# ICE restart (RFC 8445 section 9): new credentials on the same session

NEW_UFRAG, NEW_PWD = "srv2", "serverpassword2serverp"
NEW_REMOTE_UFRAG, NEW_REMOTE_PWD = "brw2", "browserpassword2browser"


def restarted(server: IceLiteServer) -> IceLiteServer:
    server.restart_session("s1", NEW_UFRAG, NEW_PWD, NEW_REMOTE_UFRAG, NEW_REMOTE_PWD)
    return server


def new_check(use_candidate: bool = True) -> bytes:
    return make_request(
        username=f"{NEW_UFRAG}:{NEW_REMOTE_UFRAG}", pwd=NEW_PWD, use_candidate=use_candidate
    )


def test_after_a_restart_only_the_new_credentials_are_answered() -> None:
    server = restarted(make_proven_server())

    server.receive_datagram(make_request(use_candidate=True), PEER, 2.0)  # the old ones
    assert server.drops["stun_unknown_user"] == 1
    assert server.datagrams_to_send(2.0) == []

    server.receive_datagram(new_check(), PEER, 2.1)
    [(data, to)] = server.datagrams_to_send(2.1)
    assert to == PEER
    response = stun.parse_message(data)
    assert response.message_class == stun.Class.RESPONSE
    assert response.check_message_integrity(NEW_PWD.encode())
    assert server.last_seen("s1") == 2.1
    assert server.nominated_address("s1") == PEER  # the same address: nothing moves
    assert drain(server) == []


def test_after_a_restart_a_new_address_gets_media_only_once_it_answers_our_check() -> None:
    server = restarted(make_proven_server())

    server.receive_datagram(new_check(), PEER2, 2.0)
    [(probe, to)] = server.datagrams_to_send(2.0)
    message = stun.parse_message(probe)
    # the check uses the restart's credentials, both ways
    assert to == PEER2
    assert message.attributes["USERNAME"] == f"{NEW_REMOTE_UFRAG}:{NEW_UFRAG}"
    assert message.check_message_integrity(NEW_REMOTE_PWD.encode())
    assert server.nominated_address("s1") == PEER
    assert drain(server) == []

    # an answer signed with the old password proves nothing
    server.receive_datagram(answer_probe(probe, pwd=REMOTE_PWD), PEER2, 2.1)
    assert server.nominated_address("s1") == PEER
    server.receive_datagram(answer_probe(probe, pwd=NEW_REMOTE_PWD), PEER2, 2.2)
    assert server.nominated_address("s1") == PEER2
    assert drain(server) == [AddressBound(key="s1", addr=PEER2, nominated=True)]
    # the withheld check is answered now, with the new password
    [(data, to)] = server.datagrams_to_send(2.2)
    response = stun.parse_message(data)
    assert to == PEER2 and response.message_class == stun.Class.RESPONSE
    assert response.check_message_integrity(NEW_PWD.encode())


def test_a_restart_forgets_a_check_signed_with_the_old_password() -> None:
    server = make_proven_server()
    server.receive_datagram(make_request(use_candidate=True), PEER2, 2.0)
    [(probe, _)] = server.datagrams_to_send(2.0)
    restarted(server)
    server.receive_datagram(answer_probe(probe), PEER2, 2.1)
    assert server.nominated_address("s1") == PEER
    assert server.drops["stun_not_request"] == 1


def test_a_restart_checks_its_credentials() -> None:
    server = make_proven_server()
    server.add_session("s2", "othr", LOCAL_PWD, REMOTE_UFRAG, now=0.0)
    with pytest.raises(ValueError, match="no session 'nope'"):
        server.restart_session("nope", NEW_UFRAG, NEW_PWD, NEW_REMOTE_UFRAG, NEW_REMOTE_PWD)
    with pytest.raises(ValueError, match="already used by another session"):
        server.restart_session("s1", "othr", NEW_PWD, NEW_REMOTE_UFRAG, NEW_REMOTE_PWD)
    with pytest.raises(ValueError, match="remote_pwd is not 22 to 256 ice-chars"):
        server.restart_session("s1", NEW_UFRAG, NEW_PWD, NEW_REMOTE_UFRAG, "short")
    with pytest.raises(ValueError, match="local_pwd"):
        server.restart_session("s1", NEW_UFRAG, "x", NEW_REMOTE_UFRAG, NEW_REMOTE_PWD)
    # nothing changed: the old credentials still work
    server.receive_datagram(make_request(use_candidate=True), PEER, 2.0)
    assert len(server.datagrams_to_send(2.0)) == 1


def test_nomination_before_dtls_moves_media_at_once() -> None:
    # Nothing is proven before DTLS completes, and nothing flows either.
    server = make_guarded_server()
    server.receive_datagram(make_request(use_candidate=True), PEER, 1.0)
    server.receive_datagram(make_request(use_candidate=True), PEER2, 1.1)
    assert server.nominated_address("s1") == PEER2
    assert all(
        stun.parse_message(d).message_class == stun.Class.RESPONSE
        for d, _ in server.datagrams_to_send(1.1)
    )


def test_nomination_away_from_a_proven_address_waits_for_its_answer() -> None:
    server = make_proven_server()

    check = make_request(use_candidate=True)
    server.receive_datagram(check, PEER2, 2.0)
    # No answer to the check, no move: one check of ours, signed with the peer's
    # password, no bigger than the one that came in.
    [(probe, to)] = server.datagrams_to_send(2.0)
    assert to == PEER2 and len(probe) <= len(check)
    message = stun.parse_message(probe)
    assert message.message_class == stun.Class.REQUEST
    assert message.attributes["USERNAME"] == f"{REMOTE_UFRAG}:{LOCAL_UFRAG}"
    assert "ICE-CONTROLLED" in message.attributes
    assert message.check_message_integrity(REMOTE_PWD.encode())
    assert drain(server) == []
    assert server.nominated_address("s1") == PEER
    assert server.drops["stun_unverified_nomination"] == 1

    # More nominations within a second send nothing more.
    server.receive_datagram(check, PEER2, 2.5)
    assert server.datagrams_to_send(2.5) == []

    # Answers that do not prove the address move nothing: from elsewhere, or
    # signed with another key.
    server.receive_datagram(answer_probe(probe), PEER, 2.6)
    server.receive_datagram(answer_probe(probe, pwd="x" * 22), PEER2, 2.6)
    assert server.nominated_address("s1") == PEER
    assert server.drops["stun_bad_integrity"] == 1

    # The right answer from the right address moves the media, and the latest
    # nomination from there is answered now (the peer need not wait to retry it).
    latest = make_request(use_candidate=True, transaction_id=b"L" * 12)
    server.receive_datagram(latest, PEER2, 2.65)
    assert server.datagrams_to_send(2.65) == []
    server.receive_datagram(answer_probe(probe), PEER2, 2.7)
    assert drain(server) == [AddressBound(key="s1", addr=PEER2, nominated=True)]
    [(reply, to)] = server.datagrams_to_send(2.7)
    message = stun.parse_message(reply)
    assert to == PEER2 and message.message_class == stun.Class.RESPONSE
    assert message.transaction_id == b"L" * 12
    assert message.check_message_integrity(LOCAL_PWD.encode())
    assert server.nominated_address("s1") == PEER2
    assert server.last_seen("s1") == 2.7
    # ...and is used up: a replay of it does nothing.
    server.receive_datagram(answer_probe(probe), PEER2, 2.8)
    assert drain(server) == []
    assert server.drops["stun_not_request"] == 2

    # The new address is proven, so nominating it again is answered at once.
    server.receive_datagram(make_request(use_candidate=True), PEER2, 3.0)
    [(response, _)] = server.datagrams_to_send(3.0)
    assert stun.parse_message(response).message_class == stun.Class.RESPONSE


def test_a_late_answer_moves_nothing() -> None:
    server = make_proven_server()
    server.receive_datagram(make_request(use_candidate=True), PEER2, 2.0)
    [(probe, _)] = server.datagrams_to_send(2.0)
    server.receive_datagram(answer_probe(probe), PEER2, 8.0)  # after PROBE_LIFETIME
    assert drain(server) == []
    assert server.nominated_address("s1") == PEER
    # A second probe a second later replaces the first one.
    server.receive_datagram(make_request(use_candidate=True), PEER2, 9.0)
    [(second, _)] = server.datagrams_to_send(9.0)
    assert second[8:20] != probe[8:20]
    server.receive_datagram(answer_probe(probe), PEER2, 9.1)
    assert server.nominated_address("s1") == PEER


def test_a_stripped_check_gets_no_bigger_probe() -> None:
    # Never more bytes out than in to an unproven address: a check without
    # PRIORITY and ICE-CONTROLLING is smaller than our probe, so none is sent.
    server = make_proven_server()
    stripped = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    stripped.attributes["USERNAME"] = f"{LOCAL_UFRAG}:{REMOTE_UFRAG}"
    stripped.attributes["USE-CANDIDATE"] = None
    stripped.attributes["MESSAGE-INTEGRITY"] = stun.message_integrity(
        bytes(stripped), LOCAL_PWD.encode()
    )
    server.receive_datagram(bytes(stripped), PEER2, 2.0)
    assert server.datagrams_to_send(2.0) == []
    assert server.nominated_address("s1") == PEER
    assert server.drops["stun_unverified_nomination"] == 1


def test_an_unnominated_proven_address_is_guarded_too() -> None:
    # A peer that never nominates, with DTLS done at its first address: its
    # nomination of another address still waits for an answer.
    server = make_proven_server(nominate=False)
    server.receive_datagram(make_request(use_candidate=True), PEER2, 2.0)
    assert drain(server) == []
    [(probe, to)] = server.datagrams_to_send(2.0)
    assert to == PEER2 and stun.parse_message(probe).message_class == stun.Class.REQUEST


def test_removing_a_session_forgets_its_probe() -> None:
    server = make_proven_server()
    server.receive_datagram(make_request(use_candidate=True), PEER2, 2.0)
    probe = server.datagrams_to_send(2.0)[-1][0]
    server.remove_session("s1")
    server.receive_datagram(answer_probe(probe), PEER2, 2.1)
    assert server.drops["stun_not_request"] == 1
    server.confirm_address("s1", PEER)  # unknown keys are ignored


def two_sessions_a_at_peer() -> IceLiteServer:
    """Sessions a and b; a's peer checked in from PEER and nominated it."""
    server = IceLiteServer()
    server.add_session("a", "ufrA", "passwordpasswordpassAA", "peerA", now=0.0)
    server.add_session("b", "ufrB", "passwordpasswordpassBB", "peerB", now=0.0)
    server.receive_datagram(
        make_request(username="ufrA:peerA", pwd="passwordpasswordpassAA", use_candidate=True),
        PEER,
        1.0,
    )
    return server


def test_a_proven_address_is_not_taken_by_another_session() -> None:
    server = two_sessions_a_at_peer()
    server.confirm_address("a", PEER)
    server.datagrams_to_send(1.0)
    drain(server)
    # b's owner signs a check for b from a's address: a keeps its peer.
    server.receive_datagram(
        make_request(username="ufrB:peerB", pwd="passwordpasswordpassBB", use_candidate=True),
        PEER,
        2.0,
    )
    assert server.session_for_address(PEER) == "a"
    assert server.nominated_address("a") == PEER
    assert server.nominated_address("b") is None
    assert server.datagrams_to_send(2.0) == [] and drain(server) == []
    assert server.drops["stun_address_in_use"] == 1


def test_sessions_are_routed_by_username() -> None:
    server = IceLiteServer()
    server.add_session("a", "ufrA", "passwordpasswordpassAA", "peerA", now=0.0)
    server.add_session("b", "ufrB", "passwordpasswordpassBB", "peerB", now=0.0)
    server.receive_datagram(
        make_request(username="ufrB:peerB", pwd="passwordpasswordpassBB"), PEER, 1.0
    )
    server.receive_datagram(
        make_request(username="ufrA:peerA", pwd="passwordpasswordpassAA"), PEER2, 1.0
    )
    assert drain(server) == [
        AddressBound(key="b", addr=PEER, nominated=False),
        AddressBound(key="a", addr=PEER2, nominated=False),
    ]
    [(first, _), (second, _)] = server.datagrams_to_send(1.0)
    assert stun.parse_message(first).check_message_integrity(b"passwordpasswordpassBB")
    assert stun.parse_message(second).check_message_integrity(b"passwordpasswordpassAA")
    # One session's password does not open another.
    assert_dropped(
        server,
        make_request(username="ufrA:peerA", pwd="passwordpasswordpassBB"),
        "stun_bad_integrity",
    )


def test_address_moves_between_sessions() -> None:
    server = two_sessions_a_at_peer()
    server.receive_datagram(
        make_request(username="ufrB:peerB", pwd="passwordpasswordpassBB"), PEER, 2.0
    )
    assert server.session_for_address(PEER) == "b"
    assert server.nominated_address("a") is None


def test_addresses_per_session_are_bounded() -> None:
    server = make_server()
    server.receive_datagram(make_request(use_candidate=True), PEER, 0.5)
    addrs = [("203.0.113.1", 1000 + i) for i in range(MAX_ADDRESSES_PER_SESSION + 4)]
    for i, addr in enumerate(addrs):
        server.receive_datagram(make_request(), addr, 1.0 + i)
    known = [a for a in [PEER, *addrs] if server.session_for_address(a) == "s1"]
    assert len(known) == MAX_ADDRESSES_PER_SESSION
    # The nominated address is kept; the least recently seen others are forgotten.
    assert PEER in known
    assert known[-MAX_ADDRESSES_PER_SESSION + 1 :] == addrs[-MAX_ADDRESSES_PER_SESSION + 1 :]


def test_role_conflict_gets_487() -> None:
    # RFC 8445 section 7.3.1.1: a peer that also thinks it is controlled is told to
    # switch; the lite server keeps its role and binds nothing.
    server = make_server()
    server.receive_datagram(make_request(controlled=True), PEER, 1.0)
    [(data, addr)] = server.datagrams_to_send(1.0)
    assert addr == PEER
    response = stun.parse_message(data)
    assert response.message_class == stun.Class.ERROR
    assert response.error_code == 487
    assert response.check_message_integrity(LOCAL_PWD.encode())
    assert drain(server) == []
    assert server.drops["stun_role_conflict"] == 1
    assert server.last_seen("s1") is None


# Invalid checks: dropped, counted, never answered


def test_wrong_password() -> None:
    assert_dropped(make_server(), make_request(pwd="wrongpasswordwrongpass"), "stun_bad_integrity")


def test_unknown_local_ufrag() -> None:
    assert_dropped(make_server(), make_request(username="nope:brws"), "stun_unknown_user")


def test_wrong_remote_ufrag() -> None:
    assert_dropped(
        make_server(), make_request(username=f"{LOCAL_UFRAG}:other"), "stun_unknown_user"
    )


def test_username_without_colon() -> None:
    assert_dropped(make_server(), make_request(username=LOCAL_UFRAG), "stun_unknown_user")


def test_missing_username() -> None:
    assert_dropped(make_server(), make_request(username=None), "stun_missing_username")


def test_missing_integrity() -> None:
    assert_dropped(make_server(), make_request(pwd=None), "stun_missing_integrity")
    assert_dropped(
        make_server(), make_request(pwd=None, fingerprint=False), "stun_missing_integrity"
    )


def test_bad_fingerprint() -> None:
    data = bytearray(make_request())
    data[-1] ^= 0x01
    assert_dropped(make_server(), bytes(data), "stun_bad_fingerprint")


def test_tampered_body() -> None:
    # A flipped bit inside USERNAME: FINGERPRINT catches it first when present,
    # MESSAGE-INTEGRITY otherwise.
    good = make_request()
    index = good.index(REMOTE_UFRAG.encode())
    data = bytearray(good)
    data[index] ^= 0x20
    assert_dropped(make_server(), bytes(data), "stun_bad_fingerprint")
    good = make_request(fingerprint=False)
    data = bytearray(good)
    data[index] ^= 0x20
    assert_dropped(make_server(), bytes(data), "stun_unknown_user")
    data = bytearray(good)
    data[good.index(b"\x00\x24\x00\x04") + 4] ^= 0x01  # inside PRIORITY
    assert_dropped(make_server(), bytes(data), "stun_bad_integrity")


def test_fingerprint_not_last() -> None:
    good = make_request(fingerprint=False)
    fingerprint = struct.pack("!HHI", 0x8028, 4, 0)
    data = good[:24] + fingerprint + good[24:]
    data = data[:2] + struct.pack("!H", len(data) - 20) + data[4:]
    assert_dropped(make_server(), data, "stun_malformed")


def test_truncated_requests() -> None:
    server = make_server()
    data = make_request(use_candidate=True)
    for size in range(len(data)):
        server.receive_datagram(data[:size], PEER, 1.0)
    assert server.drops["stun_malformed"] == len(data)
    assert server.datagrams_to_send(1.0) == []
    assert drain(server) == []


def test_bad_cookie() -> None:
    data = bytearray(make_request())
    data[4] ^= 0xFF
    assert_dropped(make_server(), bytes(data), "stun_malformed")


def test_attribute_overruns_message() -> None:
    data = bytearray(make_request())
    data[22:24] = struct.pack("!H", 0x0400)  # first attribute's length
    assert_dropped(make_server(), bytes(data), "stun_malformed")


def test_attribute_of_wrong_size() -> None:
    # Well framed, but PRIORITY is 2 bytes: aioice's unpack raises struct.error.
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"{LOCAL_UFRAG}:{REMOTE_UFRAG}"
    body = bytes(message)
    attr = struct.pack("!HHH2x", 0x0024, 2, 1)
    data = body[:2] + struct.pack("!H", len(body) - 20 + len(attr)) + body[4:] + attr
    assert_dropped(make_server(), data, "stun_malformed")


def test_indication_and_responses_are_ignored() -> None:
    assert_dropped(
        make_server(), make_request(message_class=stun.Class.INDICATION), "stun_not_request"
    )
    assert_dropped(
        make_server(), make_request(message_class=stun.Class.RESPONSE), "stun_not_request"
    )
    assert_dropped(make_server(), make_request(message_class=stun.Class.ERROR), "stun_not_request")


def test_other_methods_are_ignored() -> None:
    assert_dropped(make_server(), make_request(method=stun.Method.ALLOCATE), "stun_not_binding")
    data = bytearray(make_request(fingerprint=False))
    data[0:2] = struct.pack("!H", 0x0EEF)  # a request of a method nobody defined
    assert_dropped(make_server(), bytes(data), "stun_not_binding")


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    server = make_server()
    server.receive_datagram(data, PEER, 1.0)
    assert server.datagrams_to_send(1.0) == []
    assert drain(server) == []
    assert sum(server.drops.values()) == 1


_ATTR_TYPES = st.sampled_from(
    [0x0001, 0x0006, 0x0008, 0x0009, 0x0020, 0x0024, 0x0025, 0x8028, 0x8029, 0x802A, 0xC057]
)


@settings(max_examples=500)
@given(
    st.lists(st.tuples(_ATTR_TYPES | st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=6),
    st.sampled_from([0x0001, 0x0011, 0x0101, 0x0111, 0x0003]),
)
def test_well_framed_garbage_never_raises(
    attributes: list[tuple[int, bytes]], message_type: int
) -> None:
    # Random attributes inside a valid header reach aioice's parser, which random
    # bytes almost never do (they fail the magic cookie first).
    body = b"".join(struct.pack("!HH", t, len(v)) + v + bytes(-len(v) % 4) for t, v in attributes)
    data = struct.pack("!HHI12s", message_type, len(body), stun.COOKIE, b"x" * 12) + body
    server = make_server()
    server.receive_datagram(data, PEER, 1.0)
    assert server.datagrams_to_send(1.0) == []
    assert drain(server) == []
    assert sum(server.drops.values()) == 1


# Consent (RFC 7675) and timers


def test_consent_expires_without_checks() -> None:
    server = IceLiteServer(consent_timeout=30.0)
    assert server.get_timer() is None
    server.add_session("s1", LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now=100.0)
    assert server.get_timer() == 130.0
    server.handle_timer(129.9)
    assert drain(server) == []
    server.handle_timer(130.0)
    assert drain(server) == [ConsentExpired(key="s1")]
    assert "s1" not in server
    assert server.get_timer() is None


def test_checks_keep_consent() -> None:
    server = make_server(now=0.0)
    server.receive_datagram(make_request(use_candidate=True), PEER, 10.0)
    assert server.get_timer() == 40.0
    server.handle_timer(30.0)  # the old deadline: nothing happens
    assert drain(server) == [AddressBound(key="s1", addr=PEER, nominated=True)]
    server.receive_datagram(make_request(), PEER, 35.0)
    server.handle_timer(40.0)
    assert drain(server) == []
    assert server.get_timer() == 65.0
    server.handle_timer(65.0)
    assert drain(server) == [ConsentExpired(key="s1")]

    # Expired means forgotten: its checks are now from an unknown user.
    assert server.session_for_address(PEER) is None
    server.datagrams_to_send(65.0)
    assert_dropped(server, make_request(), "stun_unknown_user")


def test_invalid_checks_do_not_keep_consent() -> None:
    server = make_server(now=0.0)
    server.receive_datagram(make_request(pwd="wrongpasswordwrongpass"), PEER, 20.0)
    assert server.get_timer() == 30.0


def test_timers_of_many_sessions() -> None:
    server = IceLiteServer(consent_timeout=10.0)
    for i in range(5):
        server.add_session(str(i), f"ufr{i}", LOCAL_PWD, REMOTE_UFRAG, now=float(i))
    server.remove_session("0")
    assert server.get_timer() == 11.0
    server.receive_datagram(make_request(username=f"ufr1:{REMOTE_UFRAG}"), PEER, 5.0)
    assert server.get_timer() == 12.0
    server.handle_timer(14.0)
    assert [e for e in drain(server) if isinstance(e, ConsentExpired)] == [
        ConsentExpired(key="2"),
        ConsentExpired(key="3"),
        ConsentExpired(key="4"),
    ]
    assert server.get_timer() == 15.0
    assert len(server) == 1


def test_remove_and_readd_session() -> None:
    server = make_server(now=0.0)
    server.receive_datagram(make_request(), PEER, 1.0)
    server.remove_session("s1")
    server.remove_session("s1")  # already gone: ignored
    assert server.session_for_address(PEER) is None
    assert server.get_timer() is None
    server.datagrams_to_send(1.0)
    drain(server)
    assert_dropped(server, make_request(), "stun_unknown_user")

    # The same key and ufrag may be used again; the old timer entry is stale.
    server.add_session("s1", LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now=50.0)
    assert server.get_timer() == 80.0
    server.handle_timer(79.0)
    assert drain(server) == []


# Sessions and credentials


def test_add_session_errors() -> None:
    server = make_server()
    with pytest.raises(ValueError, match=re.escape("session 's1' already exists")):
        server.add_session("s1", "othr", LOCAL_PWD, REMOTE_UFRAG, now=0.0)
    with pytest.raises(
        ValueError, match=re.escape("local ufrag 'srvU' is already used by another session")
    ):
        server.add_session("s2", LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now=0.0)
    with pytest.raises(
        ValueError,
        match=re.escape("local_ufrag 'a:b' is not 4 to 256 ice-chars (RFC 8839 section 5.4)"),
    ):
        server.add_session("s2", "a:b", LOCAL_PWD, REMOTE_UFRAG, now=0.0)
    with pytest.raises(ValueError, match=re.escape("local_pwd 'short' is not 22 to 256")):
        server.add_session("s2", "abcd", "short", REMOTE_UFRAG, now=0.0)
    with pytest.raises(ValueError, match=re.escape("remote_ufrag 'xyz' is not 4 to 256")):
        server.add_session("s2", "abcd", LOCAL_PWD, "xyz", now=0.0)
    with pytest.raises(ValueError, match="consent_timeout must be positive"):
        IceLiteServer(consent_timeout=0)
    with pytest.raises(KeyError):
        server.nominated_address("missing")


def test_generate_credentials() -> None:
    seen = set()
    for _ in range(200):
        ufrag, pwd = generate_credentials()
        assert re.fullmatch(r"[A-Za-z0-9+/]{4,}", ufrag)
        assert re.fullmatch(r"[A-Za-z0-9+/]{22,}", pwd)
        seen.add(ufrag)
    assert len(seen) == 200
    # They are usable as they are.
    ufrag, pwd = generate_credentials()
    server = IceLiteServer()
    server.add_session("k", ufrag, pwd, REMOTE_UFRAG, now=0.0)
    server.receive_datagram(make_request(username=f"{ufrag}:{REMOTE_UFRAG}", pwd=pwd), PEER, 1.0)
    assert len(server.datagrams_to_send(1.0)) == 1


# A real agent


class _Shell(asyncio.DatagramProtocol):
    """A minimal asyncio shell: feed the server, send what it queues."""

    def __init__(self, server: IceLiteServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self.loop.time()
        if data[0] < 4:  # RFC 7983: STUN
            self.server.receive_datagram(data, addr, now)
        assert self.transport is not None
        for datagram, to in self.server.datagrams_to_send(now):
            self.transport.sendto(datagram, to)


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_aioice_agent_connects() -> None:
    # aioice as the browser: a full, controlling agent that knows the server is
    # lite, so it nominates with a second check carrying USE-CANDIDATE. It skips
    # loopback, so this runs in the namespace, where it gathers only the veth
    # addresses that exist nowhere else.
    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = IceLiteServer()
        ufrag, pwd = generate_credentials()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Shell(server), local_addr=(netns.SERVER_IP, 0)
        )
        port = transport.get_extra_info("sockname")[1]
        agent = Connection(ice_controlling=True, use_ipv6=False)
        agent.remote_is_lite = True
        agent.remote_username = ufrag
        agent.remote_password = pwd
        server.add_session("peer", ufrag, pwd, agent.local_username, now=loop.time())
        try:
            await agent.gather_candidates()
            assert {c.host for c in agent.local_candidates} <= {
                netns.SERVER_IP,
                netns.CLIENT_IP,
            }
            await agent.add_remote_candidate(
                Candidate(
                    foundation="1",
                    component=1,
                    transport="udp",
                    priority=2130706431,
                    host=netns.SERVER_IP,
                    port=port,
                    type="host",
                )
            )
            await agent.add_remote_candidate(None)
            await asyncio.wait_for(agent.connect(), 10)

            events = drain(server)
            nominated = [e for e in events if isinstance(e, AddressBound) and e.nominated]
            assert len(nominated) == 1
            addr = nominated[0].addr
            assert server.nominated_address("peer") == addr
            assert addr[0] in {c.host for c in agent.local_candidates}
            assert server.session_for_address(addr) == "peer"
            assert sum(server.drops.values()) == 0
        finally:
            await agent.close()
            transport.close()

    asyncio.run(run())
