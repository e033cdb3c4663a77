"""The coordinator stream's frame codec, without sockets."""

from __future__ import annotations

import struct

import msgpack
import pytest

from mediaserver.node import messages as m
from mediaserver.node.framing import FrameDecoder, FrameTooLarge, encode_frame

FRAMES = [
    m.Hello("n.w0"),
    m.LoadReport(m.NodeInfo("n.w0", sessions=4)),
    m.RelayTo("n.w1", bytes(range(256))),
    m.MatchFound("a/1", "b/2", ("film",)),
    m.CallResult(3, value=12),
]


def test_a_frame_split_at_every_byte_comes_out_once_whole():
    stream = b"".join(encode_frame(f) for f in FRAMES)
    decoder = FrameDecoder()
    out: list[m.NodeMessage] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == FRAMES


def test_several_frames_in_one_chunk():
    stream = b"".join(encode_frame(f) for f in FRAMES)
    assert FrameDecoder().feed(stream) == FRAMES


def test_a_partial_frame_waits_for_the_rest():
    frame = encode_frame(FRAMES[2])
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.feed(frame[-1:] + encode_frame(FRAMES[0])) == [FRAMES[2], FRAMES[0]]


def test_an_oversize_frame_stops_the_stream():
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(encode_frame(FRAMES[0])) == [FRAMES[0]]
    with pytest.raises(FrameTooLarge, match="frame of 101 bytes"):
        decoder.feed(struct.pack(">I", 101))


def test_garbage_bodies_are_dropped_and_counted_and_the_next_frame_still_read():
    def raw(body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + body

    stream = (
        raw(b"\xc1\xc1")  # not msgpack
        + raw(msgpack.packb([1, 2]))  # not a map
        + raw(msgpack.packb({"t": "hello"}))  # a field missing
        + raw(msgpack.packb({"t": "peer", "to": "a", "by": "b", "ev": "x"}))  # a bus body
        + encode_frame(FRAMES[0])
    )
    decoder = FrameDecoder()
    assert decoder.feed(stream) == [FRAMES[0]]
    assert decoder.dropped == 4
    assert str(decoder.last_error) == "'peer' does not go between a worker and its coordinator"
