"""STUN (RFC 5389/8445) into the ICE-lite server: IceLiteServer.receive_datagram.

Input: records (tests.fuzz.common.records), each one datagram; the tag picks the source
port (tag % 24) so address binding, nomination and eviction get exercised. One
session exists with the credentials below: the seeds are real checks from aiortc
and Chromium re-signed with them, so MESSAGE-INTEGRITY passes and the fuzzer
reaches the response path.

Bug: any exception (the method promises never to raise), a response to an address
that sent nothing, or a response that is not a well-formed signed STUN message.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.common import main, records

LOCAL_UFRAG = "fuzzUfrg"
LOCAL_PWD = "fuzzPasswordFuzzPassword"  # 24 ice-chars
REMOTE_UFRAG = "peer"
HOST = "10.77.0.2"

ice: Any = None
stun: Any = None


def load() -> None:
    global ice, stun
    from aioice import stun as stun_module

    from mediaserver.sfu import ice as ice_module

    ice, stun = ice_module, stun_module


def test_one_input(data: bytes) -> None:
    server = ice.IceLiteServer(consent_timeout=30.0)
    server.add_session("s", LOCAL_UFRAG, LOCAL_PWD, REMOTE_UFRAG, now=0.0)
    now = 0.0
    for tag, datagram in records(data):
        now += 0.5
        addr = (HOST, 50000 + tag % 24)
        server.receive_datagram(datagram, addr, now)
        for response, to in server.datagrams_to_send(now):
            if to != addr:
                raise AssertionError(f"response to {to}, the request came from {addr}")
            message = stun.parse_message(response)
            if not message.check_message_integrity(LOCAL_PWD.encode()):
                raise AssertionError("response not signed with the session's password")
        while server.next_event() is not None:
            pass
    server.handle_timer(now + 60.0)
    while server.next_event() is not None:
        pass
    if "s" in server:
        raise AssertionError("consent did not expire")


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver", "aioice"])
