"""DTLS records (RFC 6347) into the server side of DtlsEndpoint, and split_records.

Input: records (tests.fuzz.common.records), each one datagram fed to a fresh server
endpoint in order (seeds: real ClientHello flights of aiortc and Chromium); the
tag's low bit also fires the retransmission timer after the datagram.

Bug: any exception from receive_datagram/handle_timer/datagrams_to_send (they never
raise for bad input), an outgoing datagram over the MTU that holds more than one
record, or split_records disagreeing with the record header lengths.
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
    endpoint = dtls.DtlsEndpoint(certificate, "server", [FINGERPRINT])
    now = 0.0
    for tag, datagram in records(data, limit=8):
        _check_split(datagram)
        endpoint.receive_datagram(datagram, now)
        if tag & 1:
            now += 1.5
            endpoint.handle_timer(now)
        for out in endpoint.datagrams_to_send(now):
            if len(out) > dtls.DTLS_MTU and len(dtls.split_records(out) or ()) > 1:
                raise AssertionError(f"datagram of {len(out)} bytes packs several records")
        while endpoint.next_event() is not None:
            pass
    endpoint.close(now)
    endpoint.datagrams_to_send(now)


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
