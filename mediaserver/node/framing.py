"""The coordinator's Unix-socket stream, sans-I/O: bytes in, messages out.

    +---------------------------+--------------------------------------+
    | length, 4 bytes, big-end. | msgpack map of a message (messages.py) |
    +---------------------------+--------------------------------------+

`FrameDecoder.feed(chunk)` takes whatever the socket read (part of a frame,
several frames) and returns the messages completed; `encode_frame(message)`
makes the bytes of one. Nothing here reads or writes a socket.
"""

from __future__ import annotations

import struct

from mediaserver.node.messages import COORDINATOR_MESSAGES, CoordinatorMessage, pack, unpack

MAX_FRAME = 1 << 20
"""Bytes a frame may hold; a longer one means the stream is not ours (or broken)."""
_LENGTH = struct.Struct(">I")


class FrameTooLarge(ValueError):
    """A frame announced more than MAX_FRAME bytes: the stream cannot go on."""


def encode_frame(message: CoordinatorMessage) -> bytes:
    """The bytes of one frame holding `message`."""
    data = pack(message)
    return _LENGTH.pack(len(data)) + data


def decode_frame_body(body: bytes) -> CoordinatorMessage:
    """The message in one frame's body.

    Raises:
        ValueError: not msgpack, not a message, or not one that goes over this stream.
    """
    message = unpack(body)
    if not isinstance(message, COORDINATOR_MESSAGES):
        raise ValueError(f"{message.TYPE!r} does not go between a worker and its coordinator")
    return message  # type: ignore[return-value]


class FrameDecoder:
    """Splits a byte stream into messages.

    A frame whose body is not a coordinator message is dropped and counted
    (`dropped`, `last_error`): its length still says where the next one starts.

    Args:
        max_frame: the longest body taken.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self.dropped = 0
        """Frames dropped for a body that is no message."""
        self.last_error: ValueError | None = None
        """Why the last one was dropped."""

    def feed(self, data: bytes) -> list[CoordinatorMessage]:
        """The messages completed by `data` (none while a frame is partial).

        Raises:
            FrameTooLarge: a frame announced more than `max_frame` bytes; the
                stream cannot be read further.
        """
        buffer = self._buffer
        buffer += data
        messages: list[CoordinatorMessage] = []
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if size > self.max_frame:
                raise FrameTooLarge(f"frame of {size} bytes (at most {self.max_frame})")
            end = _LENGTH.size + size
            if len(buffer) < end:
                break
            body = bytes(buffer[_LENGTH.size : end])
            del buffer[:end]
            try:
                messages.append(decode_frame_body(body))
            except ValueError as exc:
                self.dropped += 1
                self.last_error = exc
        return messages
