"""DTLS records (RFC 6347) into the server side of DtlsEndpoint, and split_records.

Input: records (tests.fuzz.common.records), each one datagram fed in order to two
fresh server endpoints, one plain and one with the cookie exchange the SFU uses
(seeds: real ClientHello flights of aiortc and Chromium); the tag's low bit also
fires the retransmission timer after the datagram.

Bug: any exception from receive_datagram/handle_timer/datagrams_to_send (they never
raise for bad input), an outgoing datagram over the MTU that holds more than one
record, split_records disagreeing with the record header lengths, or the cookie
endpoint sending more than the datagram it answers before a cookie came back.
"""

from __future__ import annotations

import struct
from typing import Any

from tests.fuzz.common import main, records

dtls: Any = None
certificate: Any = None
# the peer's fingerprint from the SDP: a certificate the fuzzer cannot present
FINGERPRINT = ("sha-256", ":".join(["AB"] * 32))


def load() -> None:
    global dtls, certificate
    from mediaserver.sfu import dtls as dtls_module

    dtls = dtls_module
    certificate = dtls.DtlsCertificate.generate()


def _check_split(datagram: bytes) -> None:
    parts = dtls.split_records(datagram)
    if parts is None:
        return
    if b"".join(parts) != datagram:
        raise AssertionError("split_records lost or reordered bytes")
    for part in parts:
        length = struct.unpack_from("!H", part, 11)[0]
        if len(part) != 13 + length:
            raise AssertionError("split_records made a record of the wrong length")


def test_one_input(data: bytes) -> None:
    _run(data, dtls.DtlsEndpoint(certificate, "server", [FINGERPRINT]), cookie=False)
    cookie = dtls.DtlsEndpoint(certificate, "server", [FINGERPRINT], cookie_exchange=True)
    _run(data, cookie, cookie=True)


def _run(data: bytes, endpoint: Any, cookie: bool) -> None:
    now = 0.0
    for tag, datagram in records(data, limit=8):
        _check_split(datagram)
        unproven = endpoint.proven_source is None
        endpoint.receive_datagram(datagram, now, ("192.0.2.1", 5000))
        if tag & 1:
            now += 1.5
            endpoint.handle_timer(now)
        sent = endpoint.datagrams_to_send(now)
        for out in sent:
            if len(out) > dtls.DTLS_MTU and len(dtls.split_records(out) or ()) > 1:
                raise AssertionError(f"datagram of {len(out)} bytes packs several records")
        if cookie and unproven and sum(map(len, sent)) > len(datagram):
            raise AssertionError(f"{len(datagram)} bytes in, {sum(map(len, sent))} out")
        while endpoint.next_event() is not None:
            pass
    endpoint.close(now)
    endpoint.datagrams_to_send(now)


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
