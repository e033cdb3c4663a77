"""Signalling frames (docs/protocol.md): protocol.decode, then protocol.validate.

Input: byte 0's low bit picks the frame kind: 0 a text frame (JSON; the rest of the
input decoded as UTF-8 with replacement, as the WebSocket layer only hands over
valid UTF-8), 1 a binary frame (msgpack). Seeds: every client message of the
protocol in both encodings, plus the frames of tests/signalling/test_signalling.py.

What the hub does with a frame: decode, validate, and for an error reply encode
an `error` message that quotes the failing type (ref). Bug: any exception but
ProtocolError from decode/validate; a ProtocolError whose reply cannot be encoded
in the frame's own encoding; a validated message that cannot be re-encoded.
"""

from __future__ import annotations

from typing import Any

from tests.fuzz.common import main

protocol: Any = None


def load() -> None:
    global protocol
    from mediaserver.signalling import protocol as protocol_module

    protocol = protocol_module


def test_one_input(data: bytes) -> None:
    if not data:
        return
    binary = bool(data[0] & 1)
    frame: str | bytes = data[1:] if binary else data[1:].decode("utf-8", "replace")
    try:
        message = protocol.validate(protocol.decode(frame))
    except protocol.ProtocolError as exc:
        reply = protocol.error(exc.code, exc.message, exc.ref)
        encoded = protocol.encode(reply, binary)
        if isinstance(encoded, str):
            encoded.encode("utf-8")
        return
    if message["type"] not in protocol.CLIENT_MESSAGES:
        raise AssertionError(f"validated an unknown type {message['type']!r}")
    if not _encodes(message):
        # validate() refuses lone surrogates ("\ud800" in JSON): a partner's frame
        # could not carry them
        raise AssertionError(f"validated text that cannot be encoded: {message!r}")
    encoded = protocol.encode(protocol.message("echo", **message), binary)
    if isinstance(encoded, str):
        encoded.encode("utf-8")


def _encodes(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(_encodes(item) for item in value)
    if isinstance(value, dict):
        return all(_encodes(k) and _encodes(v) for k, v in value.items())
    return True


if __name__ == "__main__":
    main(test_one_input, load, instrument=["mediaserver"])
