# RTP header parse/rewrite and the NACK packet cache, as inline C helpers shared
# by ext/_router.pyx (compiled into it: no cross-module call per packet) and
# ext/_rtp.pyx (Python wrappers for tests). Nothing here builds a Python object.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t
from libc.string cimport memcpy

cdef enum:
    RTP_HEADER_MIN = 12
    RTP_MAX_PACKET = 1500      # larger inbound datagrams are dropped (MTU)
    CACHE_SLOT = 1536          # a rewritten packet plus the largest SRTP tag

ctypedef struct RtpHeader:
    int marker
    int payload_type
    uint16_t seq
    uint32_t timestamp
    uint32_t ssrc
    int csrc_count
    int ext_offset      # offset of the 4-byte extension header, 0 when X is unset
    int ext_len         # length of the extension block with its header, in bytes
    int header_len      # 12 + 4*CC + ext_len: where the payload starts
    int padding_len     # trailing padding bytes (P bit), counted from the end

cdef inline uint16_t load16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t load32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void store16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF

cdef inline void store32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF

# RFC 5761 4: with rtcp-mux, RTCP packet types 192..223 sit where RTP has M+PT,
# so a second byte of 192..223 means RTCP (RTP payload types 64..95 are not used).
cdef inline bint is_rtcp(const uint8_t* buf, int length) noexcept nogil:
    return length >= 2 and 192 <= buf[1] <= 223

# RFC 3550 5.1
#   0                   1                   2                   3
#  |V=2|P|X|  CC   |M|     PT      |       sequence number         |
#  |                           timestamp                           |
#  |           synchronization source (SSRC) identifier            |
#  |            contributing source (CSRC) identifiers  (CC x 32)  |
#  | defined by profile            |           length (words)      |  RFC 3550 5.3.1
# Returns 0, or -1 when the bytes are not a well-formed RTP packet.
cdef inline int rtp_parse(const uint8_t* buf, int length, RtpHeader* h) noexcept nogil:
    cdef int pos, words
    if length < RTP_HEADER_MIN or (buf[0] >> 6) != 2:
        return -1
    h.csrc_count = buf[0] & 0x0F
    h.marker = buf[1] >> 7
    h.payload_type = buf[1] & 0x7F
    h.seq = load16(buf + 2)
    h.timestamp = load32(buf + 4)
    h.ssrc = load32(buf + 8)
    pos = RTP_HEADER_MIN + 4 * h.csrc_count
    h.ext_offset = 0
    h.ext_len = 0
    if buf[0] & 0x10:
        if pos + 4 > length:
            return -1
        words = load16(buf + pos + 2)
        h.ext_offset = pos
        h.ext_len = 4 + 4 * words
        pos += h.ext_len
    if pos > length:
        return -1
    h.header_len = pos
    h.padding_len = 0
    if buf[0] & 0x20:
        h.padding_len = buf[length - 1]
        if h.padding_len == 0 or pos + h.padding_len > length:
            return -1
    return 0

# Copy `src` (a parsed plaintext packet) into `dst` with a new SSRC, sequence
# number, timestamp and payload type, dropping the header extension: extension
# ids are negotiated per peer, so the publisher's ids mean nothing to the
# subscriber (who demultiplexes by the SSRC signalled in its answer).
# Returns the new length (<= the old one).
cdef inline int rtp_rewrite_into(uint8_t* dst, const uint8_t* src, int length,
                                 const RtpHeader* h, uint32_t ssrc, uint16_t seq,
                                 uint32_t timestamp, int payload_type) noexcept nogil:
    cdef int csrc_bytes = 4 * h.csrc_count
    cdef int payload_len = length - h.header_len
    dst[0] = src[0] & 0xEF   # clear X
    dst[1] = (src[1] & 0x80) | (payload_type & 0x7F)
    store16(dst + 2, seq)
    store32(dst + 4, timestamp)
    store32(dst + 8, ssrc)
    if csrc_bytes:
        memcpy(dst + RTP_HEADER_MIN, src + RTP_HEADER_MIN, csrc_bytes)
    memcpy(dst + RTP_HEADER_MIN + csrc_bytes, src + h.header_len, payload_len)
    return RTP_HEADER_MIN + csrc_bytes + payload_len

# Signed distance a - b between two 16-bit sequence numbers (RFC 1982 arithmetic).
cdef inline int seq_diff(uint16_t a, uint16_t b) noexcept nogil:
    return <int16_t>(<uint16_t>(a - b))

# The numbers an outbound stream sent, up to its highest (`highest`, kept by the
# caller): bit k of bits0 (k < 64) or of bits1 (k - 64) stands for highest - k.
# Each number is one SRTP index, and an index must never protect two packets.
cdef enum:
    SENT_WINDOW = 128

ctypedef struct SentSeqs:
    uint64_t bits0
    uint64_t bits1

# True when seq went out already, or is too old to tell (older than the window).
cdef inline bint sent_seqs_has(const SentSeqs* w, uint16_t highest, uint16_t seq) noexcept nogil:
    cdef int d = seq_diff(seq, highest)
    if d > 0:
        return False
    d = -d
    if d >= SENT_WINDOW:
        return True
    if d < 64:
        return (w.bits0 >> d) & 1
    return (w.bits1 >> (d - 64)) & 1

# Record seq as sent, before the caller moves `highest` to it (the first time:
# highest == seq).
cdef inline void sent_seqs_add(SentSeqs* w, uint16_t highest, uint16_t seq) noexcept nogil:
    cdef int d = seq_diff(seq, highest)
    if d > 0:
        if d >= SENT_WINDOW:
            w.bits0 = 0
            w.bits1 = 0
        elif d >= 64:
            w.bits1 = w.bits0 << (d - 64)
            w.bits0 = 0
        else:
            w.bits1 = (w.bits1 << d) | (w.bits0 >> (64 - d))
            w.bits0 = w.bits0 << d
        w.bits0 |= 1
    elif -d < 64:
        w.bits0 |= (<uint64_t>1) << (-d)
    else:
        w.bits1 |= (<uint64_t>1) << (-d - 64)

# The packet cache: the last N protected packets of one outbound stream, slot
# chosen by sequence number, so a NACK is answered by resending the same bytes.
# N is a power of two; the router sends straight out of the slot (no copy).
ctypedef struct PacketCache:
    uint8_t* data        # N * CACHE_SLOT bytes
    uint16_t* lengths    # 0 = empty
    uint16_t* seqs
    uint8_t* resends     # times the packet in the slot was resent (NACKs)
    double* resent_at    # when it was last resent (router time)
    int mask             # N - 1

cdef inline uint8_t* cache_slot(PacketCache* c, uint16_t seq) noexcept nogil:
    return c.data + (seq & c.mask) * CACHE_SLOT

cdef inline void cache_commit(PacketCache* c, uint16_t seq, int length) noexcept nogil:
    c.lengths[seq & c.mask] = length
    c.seqs[seq & c.mask] = seq
    c.resends[seq & c.mask] = 0

# Returns the stored length (the bytes are at cache_slot) or 0 when evicted/absent.
cdef inline int cache_lookup(PacketCache* c, uint16_t seq) noexcept nogil:
    cdef int i = seq & c.mask
    if c.lengths == NULL:  # not allocated yet: nothing was sent on this stream
        return 0
    if c.lengths[i] and c.seqs[i] == seq:
        return c.lengths[i]
    return 0

from libc.stdlib cimport calloc, free

# n: a power of two. Returns 0, or -1 when out of memory.
cdef inline int cache_init(PacketCache* c, int n) noexcept nogil:
    c.data = <uint8_t*>calloc(n, CACHE_SLOT)
    c.lengths = <uint16_t*>calloc(n, sizeof(uint16_t))
    c.seqs = <uint16_t*>calloc(n, sizeof(uint16_t))
    c.resends = <uint8_t*>calloc(n, sizeof(uint8_t))
    c.resent_at = <double*>calloc(n, sizeof(double))
    c.mask = n - 1
    if (c.data == NULL or c.lengths == NULL or c.seqs == NULL or c.resends == NULL
            or c.resent_at == NULL):
        cache_release(c)
        return -1
    return 0

cdef inline void cache_release(PacketCache* c) noexcept nogil:
    free(c.data)
    free(c.lengths)
    free(c.seqs)
    free(c.resends)
    free(c.resent_at)
    c.data = NULL
    c.lengths = NULL
    c.seqs = NULL
    c.resends = NULL
    c.resent_at = NULL
