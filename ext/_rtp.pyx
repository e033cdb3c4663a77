# cython: boundscheck=False, wraparound=False
"""RTP header parse and rewrite, and the NACK packet cache.

The C functions are inline in mediaserver._rtp.pxd and compiled into the
router; this module wraps them for tests (checked against aiortc's RtpPacket)
and for Python slow paths.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t

# The C helpers come from this module's own .pxd (ext/mediaserver._rtp.pxd).
from libc.string cimport memcpy


def parse_header(const uint8_t[:] data):
    """Parse an RTP header.

    Returns:
        dict with marker, payload_type, sequence_number, timestamp, ssrc,
        csrc_count, extension_offset, extension_length, header_length,
        padding_length.

    Raises:
        ValueError: the bytes are not a well-formed RTP packet.
    """
    cdef RtpHeader h
    if data.shape[0] == 0 or rtp_parse(&data[0], data.shape[0], &h) < 0:
        raise ValueError("malformed RTP packet")
    return {
        "marker": h.marker,
        "payload_type": h.payload_type,
        "sequence_number": h.seq,
        "timestamp": h.timestamp,
        "ssrc": h.ssrc,
        "csrc_count": h.csrc_count,
        "extension_offset": h.ext_offset,
        "extension_length": h.ext_len,
        "header_length": h.header_len,
        "padding_length": h.padding_len,
    }


def rewrite(const uint8_t[:] data, uint32_t ssrc, uint16_t seq, uint32_t timestamp,
            int payload_type):
    """Return the packet with a new SSRC, sequence number, timestamp and
    payload type, its header extension removed (what the router does)."""
    cdef RtpHeader h
    cdef bytearray out
    cdef int n
    if data.shape[0] == 0 or rtp_parse(&data[0], data.shape[0], &h) < 0:
        raise ValueError("malformed RTP packet")
    out = bytearray(data.shape[0])
    n = rtp_rewrite_into(<uint8_t*><char*>out, &data[0], data.shape[0], &h, ssrc, seq,
                         timestamp, payload_type)
    return bytes(out[:n])


def is_rtcp_packet(const uint8_t[:] data):
    """True when a demultiplexed RTP/RTCP datagram is RTCP (RFC 5761 4)."""
    if data.shape[0] < 2:
        return False
    return is_rtcp(&data[0], data.shape[0])


cdef class RtpPacketCache:
    """The router's per-stream packet cache, for tests: put(seq, data), get(seq)."""
    cdef PacketCache cache

    def __cinit__(self, int size):
        if size < 1 or size & (size - 1):
            raise ValueError("cache size must be a power of two")
        if cache_init(&self.cache, size) < 0:
            raise MemoryError()

    def __dealloc__(self):
        cache_release(&self.cache)

    def put(self, uint16_t seq, const uint8_t[:] data):
        if data.shape[0] > CACHE_SLOT or data.shape[0] == 0:
            raise ValueError("packet does not fit a cache slot")
        memcpy(cache_slot(&self.cache, seq), &data[0], data.shape[0])
        cache_commit(&self.cache, seq, data.shape[0])

    def get(self, uint16_t seq):
        cdef int n = cache_lookup(&self.cache, seq)
        if n == 0:
            return None
        return bytes((<char*>cache_slot(&self.cache, seq))[:n])
