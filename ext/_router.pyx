# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The forwarding path: batched receive, route, rewrite, protect, batched send.

One Router per UDP socket (one per worker process). `drain(now)` reads the
socket with recvmmsg, and for each SRTP packet, in C and without the GIL: finds
the peer by source address, unprotects, looks up the routes for its payload
type, rewrites SSRC / sequence number / timestamp / payload type into the
subscriber's packet cache slot, protects it with the subscriber's context and
queues it for sendmmsg. No Python object is made per packet. Python only sees
what needs a decision: STUN, DTLS and (decrypted) RTCP, through `pop_slow()`.

A read hold (`set_read_hold`, off by default) coalesces reads at rates where a
wake-up finds one or two packets: after such a wake-up, drain sleeps once (at most
the hold, adapted to the measured packet rate) and reads again.

`feed()` runs the same per-packet code on one datagram and returns what would
be sent instead of sending it: the sans-I/O entry point the tests use.

ICE over TCP (RFC 6544, framed per RFC 4571: a 2-byte length before each packet)
goes through the same path: `tcp_read(conn, now)` reads an accepted connection,
reassembles its frames in a per-connection buffer and hands each frame to the
same per-packet code as a datagram. A connection is an address of its own (the
peer's IP and TCP port, marked as TCP: Python sees the port + TCP_PORT_FLAG), so
a session binds it after a valid STUN check like any other, and what is sent to
it goes out framed on that connection (sendmsg, MSG_DONTWAIT: a full socket
buffer drops the packet, counted, rather than queueing it).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from includes.system cimport (
    AF_INET, AF_INET6, EAGAIN, EINTR, EWOULDBLOCK, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_TRUNC,
    SO_DOMAIN, SOL_SOCKET, errno, getsockopt, htons, in_addr, in6_addr, inet_ntop, inet_pton,
    iovec, mmsghdr, msghdr, ntohs, recv, recvmmsg, send, sendmmsg, sendmsg, sendto, sockaddr,
    sockaddr_in, sockaddr_in6, socklen_t, timespec, CLOCK_MONOTONIC, clock_gettime,
    clock_nanosleep,
)
from mediaserver._rtp cimport (
    CACHE_SLOT, RTP_MAX_PACKET, PacketCache, RtpHeader, SentSeqs, cache_commit, cache_init,
    cache_lookup, cache_release, cache_slot, is_rtcp, rtp_parse, rtp_rewrite_into,
    sent_seqs_add, sent_seqs_has, seq_diff,
)
from mediaserver._srtp cimport (
    SRTP_ERR_AUTH, SRTP_ERR_INDEX_USED, SRTP_ERR_REPLAY, SrtpContext, srtcp_protect,
    srtcp_unprotect, srtp_context_free, srtp_context_new, srtp_protect, srtp_unprotect,
)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    int EPOLL_CLOEXEC
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLLIN

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t write(int fd, const void* buf, size_t n)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from *:
    """
    static inline void ms_atomic_add(int* p, int v) { __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
    static inline int ms_atomic_load(int* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    """
    void ms_atomic_add(int* p, int v) nogil
    int ms_atomic_load(int* p) nogil

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_create(pthread_t* t, void* attr, void* (*fn)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t t, void** ret)
    int pthread_mutex_init(pthread_mutex_t* m, const pthread_mutexattr_t* a)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_mutexattr_init(pthread_mutexattr_t* a)
    int pthread_mutexattr_settype(pthread_mutexattr_t* a, int kind)
    int pthread_mutexattr_destroy(pthread_mutexattr_t* a)
    int PTHREAD_MUTEX_RECURSIVE

cdef enum:
    BATCH = 64            # datagrams per recvmmsg / sendmmsg
    RECV_SLOT = 2048      # > RTP_MAX_PACKET, so an oversized datagram shows MSG_TRUNC
    MAX_FANOUT = 4        # subscribers per (publisher, payload type)
    MAX_IN_STREAMS = 8    # SSRCs per peer with reception statistics
    EMPTY = -1
    DELETED = -2
    # resends of one cached packet, at least MIN_RESEND_INTERVAL apart: a real
    # receiver re-asks after a round trip, and at 20% loss needs a 9th resend for
    # 3 in a million lost packets; NACKs repeating one list get no more than this
    MAX_RESENDS = 8
    TCP_RX = 65536        # bytes per recv() of a TCP connection
    TCP_READS = 4         # recv() calls per tcp_read: one busy connection cannot starve the rest
    HOLD_TARGET = 8       # a read hold aims at this many packets per wake-up (and is
                          # not taken after a wake-up that already found as many)
    SLOW_QUEUE = 2048     # slow-path datagrams waiting for Python (pop_slow); more
                          # are dropped, counted: with the socket thread, a stalled
                          # event loop must not grow memory
    THREAD_BATCHES = 16   # recvmmsg batches per hold of the lock by the socket thread

# A read hold sleeps once per wake-up, and that sleep ends in a wake-up of its own:
# it is only taken when the packet rate promises at least this many packets in it
cdef double HOLD_MIN_EXPECTED = 2.0
cdef double RATE_WINDOW = 0.05   # seconds of packets behind the rate estimate

# sin6_flowinfo of a TCP peer's address (sin6_scope_id then holds its connection's
# slot). No received datagram has it: the kernel masks a flow label with 0x0FFFFFFF.
cdef uint32_t TCP_MARK = 0xFFFFFFFF

TCP_PORT_FLAG = 0x10000
"""Added to the port of a TCP peer's address as Python sees it ((host, port)): a
connection and a UDP peer at the same IP and port are two addresses."""
TCP_EOF = -1        # tcp_read: the peer closed the connection
TCP_ERROR = -2      # ... a socket error (reset)
TCP_TOO_BIG = -3    # ... a frame longer than the MTU bound: the stream is not ours

# A NACK for a packet resent less than this ago (seconds) is for the resend still
# on its way (a receiver under load, or an attacker): not answered again
cdef double MIN_RESEND_INTERVAL = 0.02

cdef enum:  # slow-path kinds
    KIND_STUN = 0
    KIND_DTLS = 1
    KIND_RTCP = 2
    KIND_MEDIA = 3

# Slow-path kinds, as pop_slow() reports them
SLOW_STUN = KIND_STUN
SLOW_DTLS = KIND_DTLS
SLOW_RTCP = KIND_RTCP
SLOW_MEDIA = KIND_MEDIA  # decrypted RTP of a tapped payload type (the effects path)
RESEND_LIMIT = MAX_RESENDS  # resends of one cached packet, whatever the NACKs ask
RESEND_INTERVAL = MIN_RESEND_INTERVAL  # ... and never two of them closer than this

cdef enum:  # drop reasons, index into Router.drops
    DROP_UNKNOWN_FIRST_BYTE
    DROP_UNKNOWN_ADDRESS
    DROP_NO_SRTP
    DROP_MALFORMED_RTP
    DROP_SRTP_AUTH
    DROP_SRTP_REPLAY
    DROP_SRTP_OTHER
    DROP_SRTCP_AUTH
    DROP_SRTCP_REPLAY
    DROP_SRTCP_OTHER
    DROP_NO_ROUTE
    DROP_DEST_NOT_READY
    DROP_TOO_BIG
    DROP_PROTECT_FAILED
    DROP_SEND_FAILED
    DROP_TEST_LOSS
    DROP_DTLS_UNKNOWN_ADDRESS
    DROP_PADDING_ONLY
    DROP_OUT_SEQ_USED
    DROP_PROTECT_INDEX_USED
    DROP_NACK_RESEND_CAP
    DROP_NACK_TOO_SOON
    DROP_TCP_BACKPRESSURE
    DROP_TCP_GONE
    DROP_SLOW_QUEUE_FULL
    N_DROPS

DROP_NAMES = (
    "unknown_first_byte", "unknown_address", "no_srtp", "malformed_rtp",
    "srtp_auth", "srtp_replay", "srtp_other", "srtcp_auth", "srtcp_replay",
    "srtcp_other", "no_route", "dest_not_ready", "too_big", "protect_failed",
    "send_failed", "test_loss", "dtls_unknown_address", "padding_only",
    # a late packet whose rewritten sequence number this stream already sent (a
    # source switch or a skipped padding packet moved the numbering): never sent
    # under a used SRTP index, i.e. a used GCM nonce
    "out_seq_used",
    # srtp_protect refused an index it had used (the guard behind out_seq_used)
    "protect_index_used",
    # a NACK asked for a packet already resent MAX_RESENDS times (lost that often
    # only by a request that is not a real receiver's)
    "nack_resend_cap",
    # a NACK asked for a packet resent less than MIN_RESEND_INTERVAL ago
    "nack_too_soon",
    # a TCP peer's socket buffer was full (a slow reader): the packet is dropped,
    # never queued, so a slow connection costs no memory
    "tcp_backpressure",
    # a packet for a TCP connection that is closed
    "tcp_gone",
    # a STUN, DTLS or RTCP datagram (or tapped media) found SLOW_QUEUE others still
    # waiting for Python: the event loop is that far behind
    "slow_queue_full",
)

ctypedef struct InStream:
    # RFC 3550 A.1 / A.8 reception statistics, read by Python for receiver reports
    int used
    uint32_t ssrc
    int payload_type
    uint16_t max_seq
    uint32_t cycles
    uint16_t base_seq
    uint64_t received
    uint64_t octets
    double jitter          # in timestamp units
    double last_transit
    int has_transit

ctypedef struct OutStream:
    # One stream the server sends a subscriber. Its SSRC never changes; when its
    # source changes (a new publisher after "Next") sequence numbers and
    # timestamps continue from where they were, so the subscriber's decoder sees
    # one continuous stream.
    int used
    int peer
    uint32_t ssrc
    uint32_t clock_rate
    int nroutes  # route entries pointing here: removal scans peers only when > 0
    int has_source
    int src_peer
    uint32_t src_ssrc
    uint16_t seq_delta
    uint32_t ts_delta
    uint16_t src_start_seq  # first sequence number (ours) of the current source
    int started
    uint16_t max_seq
    SentSeqs sent         # which numbers up to max_seq went out (one SRTP index each)
    uint32_t last_ts
    double last_time
    uint64_t packets
    uint64_t octets
    PacketCache cache

ctypedef union SockAddr:
    # a peer's address as the socket gives and takes it: sockaddr_in on an IPv4
    # socket, sockaddr_in6 on an IPv6 (dual-stack) one, where an IPv4 peer is
    # ::ffff:a.b.c.d
    sockaddr sa
    sockaddr_in v4
    sockaddr_in6 v6

ctypedef struct AddrKey:
    # the address table's key: the 16-byte IPv6 address (IPv4 as ::ffff:a.b.c.d, so
    # an IPv4 peer has one key whichever socket family it came through) and the port
    uint64_t hi
    uint64_t lo
    uint32_t port

ctypedef struct Peer:
    int used
    int bound
    SockAddr addr
    SrtpContext* rx        # unprotects what the peer sends
    SrtpContext* tx        # protects what we send the peer
    double last_rx         # router time of the last authenticated packet from it
    int32_t routes[128][MAX_FANOUT]    # out stream per inbound payload type, EMPTY-terminated
    uint8_t route_pt[128][MAX_FANOUT]  # the subscriber's payload type for it
    uint32_t clock[128]                # clock rate per inbound payload type (for jitter)
    uint8_t tap[128]                   # 1: hand this payload type to Python, not the routes
    InStream ins[MAX_IN_STREAMS]

ctypedef struct TcpConn:
    # one accepted ICE-TCP connection (malloc'd on open, freed on close)
    int fd
    SockAddr addr         # the peer's, as AF_INET6 (IPv4 mapped), marked TCP_MARK
    int have              # bytes of the frame being reassembled in buf, its prefix included
    int out_off           # the unsent tail of a frame a partial write left: out[out_off:out_len]
    int out_len
    double last_rx        # router time of its last read
    uint8_t buf[2 + RTP_MAX_PACKET]
    uint8_t out[2 + RECV_SLOT]

ctypedef struct SlowItem:
    # a datagram for Python, copied out of the receive slot (which the next
    # batch reuses, maybe before Python runs: the socket thread does not wait)
    int kind
    int peer
    int length
    SockAddr addr
    uint8_t data[RECV_SLOT]


cdef inline void addr_key(const SockAddr* a, AddrKey* k) noexcept nogil:
    cdef uint8_t mapped[8]
    if a.sa.sa_family == AF_INET6:
        memcpy(&k.hi, &a.v6.sin6_addr, 8)
        memcpy(&k.lo, (<const uint8_t*>&a.v6.sin6_addr) + 8, 8)
        k.port = a.v6.sin6_port
        if a.v6.sin6_flowinfo == TCP_MARK:
            k.port |= 0x10000
    else:
        mapped[0] = 0
        mapped[1] = 0
        mapped[2] = 0xFF
        mapped[3] = 0xFF
        memcpy(&mapped[4], &a.v4.sin_addr, 4)
        k.hi = 0
        memcpy(&k.lo, mapped, 8)
        k.port = a.v4.sin_port


cdef inline int addr_slot(const AddrKey* k, int mask) noexcept nogil:
    cdef uint64_t h = (k.lo ^ (k.hi * <uint64_t>0xC2B2AE3D27D4EB4F) ^ (<uint64_t>k.port << 16))
    return <int>((h * <uint64_t>0x9E3779B97F4A7C15) >> 40) & mask


cdef inline bint addr_key_eq(const AddrKey* a, const AddrKey* b) noexcept nogil:
    return a.lo == b.lo and a.hi == b.hi and a.port == b.port


cdef inline bint is_v4_mapped(const uint8_t* a) noexcept nogil:
    cdef int i
    for i in range(10):
        if a[i]:
            return False
    return a[10] == 0xFF and a[11] == 0xFF


cdef inline double monotonic_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Router:
    cdef int fd
    cdef int max_peers
    cdef int max_streams
    cdef int cache_packets
    cdef int af             # of the socket: AF_INET, or AF_INET6 (dual-stack)
    cdef socklen_t addrlen  # sizeof the sockaddr of that family
    cdef Peer* peers
    cdef OutStream* outs
    # address -> peer: open addressing, linear probing
    cdef AddrKey* addr_keys
    cdef int32_t* addr_vals
    cdef int addr_mask
    cdef int addr_used      # live + deleted entries
    # receive batch
    cdef uint8_t* rx_buf
    cdef mmsghdr rx_msgs[BATCH]
    cdef iovec rx_iov[BATCH]
    cdef SockAddr rx_addr[BATCH]
    # send batch: iovecs point into packet cache slots
    cdef mmsghdr tx_msgs[BATCH]
    cdef iovec tx_iov[BATCH]
    cdef SockAddr tx_addr[BATCH]
    cdef int ntx
    cdef SlowItem* slow_items   # SLOW_QUEUE of them, touched only as far as used
    cdef int nslow
    cdef list slow
    cdef uint8_t scratch[RECV_SLOT]
    # counters
    cdef uint64_t drops[N_DROPS]
    cdef uint64_t rx_datagrams
    cdef uint64_t rx_bytes
    cdef uint64_t forwarded_packets
    cdef uint64_t forwarded_bytes
    cdef uint64_t retransmitted
    cdef uint64_t retransmitted_bytes
    cdef uint64_t slow_datagrams
    cdef uint64_t recv_errors
    cdef uint64_t batches
    # read hold (set_read_hold): after a wake-up that found few packets, sleep up to
    # hold_ns and read again, so that one wake-up carries several packets
    cdef uint64_t hold_ns
    cdef double rate        # packets/s received, over the last RATE_WINDOW
    cdef double rate_t0
    cdef uint64_t rate_rx0
    cdef uint64_t holds
    cdef uint64_t held_packets
    # ICE-TCP connections, by slot
    cdef TcpConn** tcp
    cdef int max_tcp
    cdef uint8_t* tcp_rx
    cdef int tcp_batch     # frames of the current tcp_read in rx_buf
    cdef int tcp_ep        # epoll instance over the connections (tcp_drain), or -1
    cdef uint64_t tcp_frames
    cdef uint64_t tcp_bytes
    cdef uint64_t tcp_too_big
    cdef uint64_t tcp_partial_writes
    # test hook: drop a fraction of inbound SRTP/SRTCP, or of forwarded packets
    # after they are cached (so the subscriber's NACKs can be answered)
    cdef uint32_t loss_threshold
    cdef uint32_t out_loss_threshold
    cdef uint64_t rng
    cdef double now        # router time of the batch being processed

    # Everything above is shared by the socket thread (start_thread) and the
    # Python methods: each holds `mu` while it touches it (recursive: a method may
    # call another). The thread never takes the GIL, so holding both is safe.
    cdef pthread_mutex_t mu
    cdef bint mu_ready
    cdef pthread_t thread
    cdef bint threaded
    cdef int stop_fd       # eventfd that ends the thread's poll
    cdef int notify_fd     # eventfd the thread writes when pop_slow() has work
    cdef uint64_t thread_wakeups
    cdef uint64_t notifies
    cdef int py_waiting    # Python calls waiting for `mu` (atomic): the thread yields to them
    cdef uint64_t yields

    def __cinit__(self, int fd=-1, int max_peers=4096, int max_streams=8192,
                  int cache_packets=512, int family=0, int max_tcp=1024):
        cdef int i, cap
        cdef socklen_t length = sizeof(int)
        cdef pthread_mutexattr_t attr
        self.tcp_ep = -1   # first: __dealloc__ runs after a __cinit__ that raised, too
        self.stop_fd = -1
        self.notify_fd = -1
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE)
        if pthread_mutex_init(&self.mu, &attr) != 0:
            pthread_mutexattr_destroy(&attr)
            raise MemoryError()
        pthread_mutexattr_destroy(&attr)
        self.mu_ready = True
        if max_peers < 1 or max_streams < 1 or max_tcp < 0:
            raise ValueError("max_peers and max_streams must be positive, max_tcp not negative")
        if cache_packets < BATCH or cache_packets & (cache_packets - 1):
            raise ValueError(f"cache_packets must be a power of two >= {BATCH}")
        if family == 0:
            # the socket's own family; a socketless router (tests) is dual-stack
            family = AF_INET6
            if fd >= 0 and getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &length) < 0:
                raise OSError(errno, "getsockopt(SO_DOMAIN) failed on the router's socket")
        if family != AF_INET and family != AF_INET6:
            raise ValueError(f"the router's socket must be AF_INET or AF_INET6, not {family}")
        self.af = family
        self.addrlen = sizeof(sockaddr_in6) if family == AF_INET6 else sizeof(sockaddr_in)
        self.fd = fd
        self.max_peers = max_peers
        self.max_streams = max_streams
        self.cache_packets = cache_packets
        self.slow = []
        self.peers = <Peer*>calloc(max_peers, sizeof(Peer))
        self.outs = <OutStream*>calloc(max_streams, sizeof(OutStream))
        cap = 16
        while cap < 2 * max_peers:
            cap <<= 1
        self.addr_keys = <AddrKey*>calloc(cap, sizeof(AddrKey))
        self.addr_vals = <int32_t*>calloc(cap, sizeof(int32_t))
        self.rx_buf = <uint8_t*>calloc(BATCH, RECV_SLOT)
        self.max_tcp = max_tcp
        self.tcp = <TcpConn**>calloc(max_tcp + 1, sizeof(TcpConn*))
        self.slow_items = <SlowItem*>calloc(SLOW_QUEUE, sizeof(SlowItem))
        if not (self.peers and self.outs and self.addr_keys and self.addr_vals and self.rx_buf
                and self.tcp and self.slow_items):
            raise MemoryError()
        self.addr_mask = cap - 1
        for i in range(cap):
            self.addr_vals[i] = EMPTY
        for i in range(BATCH):
            self.rx_iov[i].iov_base = self.rx_buf + i * RECV_SLOT
            self.rx_iov[i].iov_len = RECV_SLOT
            self.rx_msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.rx_msgs[i].msg_hdr.msg_iovlen = 1
            self.rx_msgs[i].msg_hdr.msg_name = &self.rx_addr[i]
            self.tx_msgs[i].msg_hdr.msg_iov = &self.tx_iov[i]
            self.tx_msgs[i].msg_hdr.msg_iovlen = 1
            self.tx_msgs[i].msg_hdr.msg_name = &self.tx_addr[i]
            self.tx_msgs[i].msg_hdr.msg_namelen = self.addrlen
        self.rng = 0x9E3779B97F4A7C15

    def __dealloc__(self):
        cdef int i
        self._stop_thread()
        if self.mu_ready:
            pthread_mutex_destroy(&self.mu)
        free(self.slow_items)
        if self.peers != NULL:
            for i in range(self.max_peers):
                if self.peers[i].used:
                    self._free_srtp(&self.peers[i])
            free(self.peers)
        if self.outs != NULL:
            for i in range(self.max_streams):
                if self.outs[i].used:
                    cache_release(&self.outs[i].cache)
            free(self.outs)
        free(self.addr_keys)
        free(self.addr_vals)
        free(self.rx_buf)
        if self.tcp != NULL:
            for i in range(self.max_tcp):
                free(self.tcp[i])
            free(self.tcp)
        free(self.tcp_rx)
        if self.tcp_ep >= 0:
            close(self.tcp_ep)

    # ---- the address table ------------------------------------------------

    cdef inline int _lookup(self, const SockAddr* a) noexcept nogil:
        cdef AddrKey key
        addr_key(a, &key)
        cdef int i = addr_slot(&key, self.addr_mask)
        cdef int32_t v
        while True:
            v = self.addr_vals[i]
            if v == EMPTY:
                return -1
            if v >= 0 and addr_key_eq(&self.addr_keys[i], &key):
                return v
            i = (i + 1) & self.addr_mask

    cdef void _addr_delete(self, const SockAddr* a) noexcept nogil:
        cdef AddrKey key
        addr_key(a, &key)
        cdef int i = addr_slot(&key, self.addr_mask)
        while self.addr_vals[i] != EMPTY:
            if self.addr_vals[i] >= 0 and addr_key_eq(&self.addr_keys[i], &key):
                self.addr_vals[i] = DELETED
                return
            i = (i + 1) & self.addr_mask

    cdef void _addr_rebuild(self) noexcept nogil:
        cdef int i, j
        cdef AddrKey key
        for i in range(self.addr_mask + 1):
            self.addr_vals[i] = EMPTY
        self.addr_used = 0
        for j in range(self.max_peers):
            if self.peers[j].used and self.peers[j].bound:
                addr_key(&self.peers[j].addr, &key)
                i = addr_slot(&key, self.addr_mask)
                while self.addr_vals[i] != EMPTY:
                    i = (i + 1) & self.addr_mask
                self.addr_keys[i] = key
                self.addr_vals[i] = j
                self.addr_used += 1

    cdef void _addr_insert(self, const SockAddr* a, int peer) noexcept nogil:
        cdef AddrKey key
        addr_key(a, &key)
        cdef int i
        if 2 * (self.addr_used + 1) > self.addr_mask + 1:
            self._addr_rebuild()   # drop tombstones; live entries are <= max_peers
        i = addr_slot(&key, self.addr_mask)
        while self.addr_vals[i] >= 0:
            i = (i + 1) & self.addr_mask
        if self.addr_vals[i] == EMPTY:
            self.addr_used += 1
        self.addr_keys[i] = key
        self.addr_vals[i] = peer

    # ---- peers, streams, routes (control plane, from Python) ---------------

    cdef Peer* _peer(self, int peer) except NULL:
        if peer < 0 or peer >= self.max_peers or not self.peers[peer].used:
            raise KeyError(f"no peer {peer}")
        return &self.peers[peer]

    cdef OutStream* _out(self, int idx) except NULL:
        if idx < 0 or idx >= self.max_streams or not self.outs[idx].used:
            raise KeyError(f"no out stream {idx}")
        return &self.outs[idx]

    cdef void _free_srtp(self, Peer* p) noexcept nogil:
        if p.rx != NULL:
            srtp_context_free(p.rx)
            p.rx = NULL
        if p.tx != NULL:
            srtp_context_free(p.tx)
            p.tx = NULL

    def add_peer(self):
        """Allocate a peer slot and return its id."""
        cdef int i
        cdef Peer* p
        self._lock()
        try:
            for i in range(self.max_peers):
                if not self.peers[i].used:
                    p = &self.peers[i]
                    memset(p, 0, sizeof(Peer))
                    memset(p.routes, 0xFF, sizeof(p.routes))   # all EMPTY
                    p.used = 1
                    return i
            raise RuntimeError(f"router full: {self.max_peers} peers")
        finally:
            self._unlock()

    def remove_peer(self, int peer):
        """Unbind the peer's address, free its SRTP state, drop every route
        from it and every out stream it receives."""
        cdef Peer* p = self._peer(peer)
        cdef int i, pt, k
        self._lock()
        try:
            if p.bound:
                self._addr_delete(&p.addr)
            self._free_srtp(p)
            # its own routes go, and the out streams they fed count them no more
            for pt in range(128):
                for k in range(MAX_FANOUT):
                    if p.routes[pt][k] != EMPTY:
                        self.outs[p.routes[pt][k]].nroutes -= 1
                        p.routes[pt][k] = EMPTY
            for i in range(self.max_streams):
                if self.outs[i].used and self.outs[i].peer == peer:
                    self.remove_out_stream(i)
            p.used = 0
        finally:
            self._unlock()

    cdef int _parse_address(self, str host, int port, SockAddr* out) except -1:
        # text -> the socket's sockaddr: IPv4 text is ::ffff:a.b.c.d on an IPv6
        # socket; ::ffff:a.b.c.d is plain IPv4 on an IPv4 one
        cdef in_addr v4
        cdef in6_addr v6
        cdef bytes text = host.encode()
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        memset(out, 0, sizeof(SockAddr))
        if inet_pton(AF_INET, text, &v4) == 1:
            pass
        elif inet_pton(AF_INET6, text, &v6) == 1:
            if self.af == AF_INET6:
                out.v6.sin6_family = AF_INET6
                out.v6.sin6_port = htons(port)
                out.v6.sin6_addr = v6
                return 0
            if not is_v4_mapped(v6.s6_addr):
                raise ValueError(f"an IPv6 address on an IPv4 socket: {host!r}")
            memcpy(&v4, &v6.s6_addr[12], 4)
        else:
            raise ValueError(f"not an IP address: {host!r}")
        if self.af == AF_INET6:
            out.v6.sin6_family = AF_INET6
            out.v6.sin6_port = htons(port)
            out.v6.sin6_addr.s6_addr[10] = 0xFF
            out.v6.sin6_addr.s6_addr[11] = 0xFF
            memcpy(&out.v6.sin6_addr.s6_addr[12], &v4, 4)
        else:
            out.v4.sin_family = AF_INET
            out.v4.sin_port = htons(port)
            out.v4.sin_addr = v4
        return 0

    @property
    def family(self):
        """The socket family: socket.AF_INET, or AF_INET6 (dual-stack: IPv4 peers too)."""
        return self.af

    def bind_address(self, int peer, str host, int port):
        """Media from (host, port) belongs to `peer` (after ICE validated it).
        Returns False, leaving the peer unbound, for a TCP address whose
        connection has closed."""
        cdef Peer* p = self._peer(peer)
        cdef SockAddr a
        cdef int other, slot
        self._lock()
        try:
            if port & TCP_PORT_FLAG:
                slot = self._tcp_find(host, port)
                if slot < 0:
                    if p.bound:
                        self._addr_delete(&p.addr)
                        p.bound = 0
                    return False
                a = self.tcp[slot].addr
            else:
                self._parse_address(host, port, &a)
            if p.bound:
                self._addr_delete(&p.addr)
            other = self._lookup(&a)
            if other >= 0 and other != peer:
                self._addr_delete(&a)
                self.peers[other].bound = 0
            p.addr = a
            p.bound = 1
            self._addr_insert(&a, peer)
            return True
        finally:
            self._unlock()

    def set_srtp(self, int peer, int profile, bytes rx_key, bytes rx_salt,
                 bytes tx_key, bytes tx_salt):
        """Install the SRTP contexts exported by the peer's DTLS handshake:
        rx unprotects what it sends, tx protects what we send it."""
        cdef Peer* p = self._peer(peer)
        cdef SrtpContext* rx = srtp_context_new(profile, rx_key, len(rx_key), rx_salt, len(rx_salt))
        cdef SrtpContext* tx = srtp_context_new(profile, tx_key, len(tx_key), tx_salt, len(tx_salt))
        self._lock()
        try:
            if rx == NULL or tx == NULL:
                if rx != NULL:
                    srtp_context_free(rx)
                if tx != NULL:
                    srtp_context_free(tx)
                raise ValueError(f"bad SRTP parameters for profile {profile}")
            self._free_srtp(p)
            p.rx = rx
            p.tx = tx
        finally:
            self._unlock()

    def set_clock_rate(self, int peer, int payload_type, uint32_t clock_rate):
        """Clock rate of an inbound payload type, for interarrival jitter."""
        cdef Peer* p = self._peer(peer)
        self._lock()
        try:
            if not 0 <= payload_type < 128:
                raise ValueError("payload type out of range")
            p.clock[payload_type] = clock_rate
        finally:
            self._unlock()

    def add_out_stream(self, int peer, uint32_t ssrc, uint32_t clock_rate):
        """Create a stream the server sends `peer` with a fixed SSRC; returns its id."""
        cdef int i
        cdef OutStream* o
        self._lock()
        try:
            self._peer(peer)
            for i in range(self.max_streams):
                if not self.outs[i].used:
                    o = &self.outs[i]
                    memset(o, 0, sizeof(OutStream))
                    # the NACK cache (cache_packets x 1,500 bytes) comes with the first
                    # packet sent: sessions that never connect cost none of it
                    o.used = 1
                    o.peer = peer
                    o.ssrc = ssrc
                    o.clock_rate = clock_rate
                    return i
            raise RuntimeError(f"router full: {self.max_streams} out streams")
        finally:
            self._unlock()

    def remove_out_stream(self, int idx):
        cdef OutStream* o = self._out(idx)
        cdef int i
        self._lock()
        try:
            # sessions are disconnected before they close, and never-connected ones
            # have no routes: no scan of every peer x 128 payload types for them
            if o.nroutes > 0:
                for i in range(self.max_peers):
                    if self.peers[i].used:
                        self._unroute(&self.peers[i], idx)
            cache_release(&o.cache)
            o.used = 0
        finally:
            self._unlock()

    cdef void _unroute(self, Peer* p, int out_idx) noexcept nogil:
        cdef int pt, k, j
        for pt in range(128):
            k = 0
            while k < MAX_FANOUT and p.routes[pt][k] != EMPTY:
                if p.routes[pt][k] == out_idx:
                    self.outs[out_idx].nroutes -= 1
                    for j in range(k, MAX_FANOUT - 1):
                        p.routes[pt][j] = p.routes[pt][j + 1]
                        p.route_pt[pt][j] = p.route_pt[pt][j + 1]
                    p.routes[pt][MAX_FANOUT - 1] = EMPTY
                else:
                    k += 1

    def add_route(self, int src_peer, int payload_type, int out_idx, int out_payload_type):
        """Forward src_peer's packets of `payload_type` to out stream `out_idx`,
        sent with `out_payload_type` (the subscriber's id for the same codec)."""
        cdef Peer* p = self._peer(src_peer)
        cdef int k
        self._lock()
        try:
            self._out(out_idx)
            if not (0 <= payload_type < 128 and 0 <= out_payload_type < 128):
                raise ValueError("payload type out of range")
            for k in range(MAX_FANOUT):
                if p.routes[payload_type][k] == out_idx or p.routes[payload_type][k] == EMPTY:
                    if p.routes[payload_type][k] == EMPTY:
                        self.outs[out_idx].nroutes += 1
                    p.routes[payload_type][k] = out_idx
                    p.route_pt[payload_type][k] = out_payload_type
                    return
            raise RuntimeError(f"more than {MAX_FANOUT} subscribers for one payload type")
        finally:
            self._unlock()

    def set_tap(self, int peer, int payload_type, bint on):
        """Divert the peer's packets of this payload type to pop_slow()
        (decrypted, kind SLOW_MEDIA) instead of forwarding them."""
        cdef Peer* p = self._peer(peer)
        self._lock()
        try:
            if not 0 <= payload_type < 128:
                raise ValueError("payload type out of range")
            p.tap[payload_type] = on
        finally:
            self._unlock()

    def inject(self, int src_peer, bytes packet, int out_idx, int out_payload_type, double now):
        """Send a plaintext RTP packet made in Python (e.g. re-encoded video) on
        out stream `out_idx` as if `src_peer` had sent it: same rewrite, cache
        and protection as forwarded packets.

        Returns:
            The protected bytes sent (the router has no socket: not sent), or
            None when the subscriber is not ready or the packet lands on a
            sequence number this stream already sent (counted as drops).
        """
        cdef RtpHeader h
        cdef int n = len(packet)
        self._lock()
        try:
            self._peer(src_peer)
            self._out(out_idx)
            if n > RTP_MAX_PACKET or rtp_parse(<const uint8_t*><char*>packet, n, &h) < 0:
                raise ValueError("not an RTP packet that fits the MTU")
            if not 0 <= out_payload_type < 128:
                raise ValueError("payload type out of range")
            self.now = now
            if self.ntx:
                self._flush()
            self._forward(src_peer, <const uint8_t*><char*>packet, n, &h, out_idx, out_payload_type)
            if not self.ntx:
                return None
            sent = PyBytes_FromStringAndSize(<char*>self.tx_iov[0].iov_base, self.tx_iov[0].iov_len)
            if self.fd >= 0:
                self._flush()
            self.ntx = 0
            return sent
        finally:
            self._unlock()

    def remove_route(self, int src_peer, int out_idx):
        """Stop forwarding anything of src_peer to out stream out_idx."""
        self._lock()
        try:
            self._unroute(self._peer(src_peer), out_idx)
        finally:
            self._unlock()

    # ---- the per-packet path (C, no GIL) -----------------------------------

    cdef inline bint _lose(self, uint32_t threshold) noexcept nogil:
        # xorshift64: cheap and reproducible from the seed
        self.rng ^= self.rng << 13
        self.rng ^= self.rng >> 7
        self.rng ^= self.rng << 17
        return <uint32_t>(self.rng >> 32) < threshold

    cdef inline void _drop(self, int reason) noexcept nogil:
        self.drops[reason] += 1

    cdef void _slow(self, int kind, int peer, int slot, int length) noexcept nogil:
        cdef SlowItem* s
        if self.nslow == SLOW_QUEUE:
            self._drop(DROP_SLOW_QUEUE_FULL)
            return
        s = &self.slow_items[self.nslow]
        s.kind = kind
        s.peer = peer
        s.length = length
        s.addr = self.rx_addr[slot]
        memcpy(s.data, self.rx_buf + slot * RECV_SLOT, length)
        self.nslow += 1

    cdef void _handle(self, int slot, int length, int flags) noexcept nogil:
        cdef uint8_t* buf = self.rx_buf + slot * RECV_SLOT
        cdef const SockAddr* src = &self.rx_addr[slot]
        cdef uint8_t b0
        cdef int peer, n
        cdef Peer* p
        self.rx_datagrams += 1
        self.rx_bytes += <uint64_t>length
        if flags & MSG_TRUNC or length > RTP_MAX_PACKET:
            self._drop(DROP_TOO_BIG)
            return
        if length < 1:
            self._drop(DROP_UNKNOWN_FIRST_BYTE)
            return
        # RFC 7983 7: demultiplex by the first byte
        b0 = buf[0]
        if b0 <= 3:
            self.slow_datagrams += 1
            self._slow(KIND_STUN, self._lookup(src), slot, length)
            return
        if 20 <= b0 <= 63:
            # DTLS only from an address ICE verified: a flood from anywhere else
            # is counted here, never handed to Python
            peer = self._lookup(src)
            if peer < 0:
                self._drop(DROP_DTLS_UNKNOWN_ADDRESS)
                return
            self.slow_datagrams += 1
            self._slow(KIND_DTLS, peer, slot, length)
            return
        if not (128 <= b0 <= 191):
            self._drop(DROP_UNKNOWN_FIRST_BYTE)
            return
        if self.loss_threshold and self._lose(self.loss_threshold):
            self._drop(DROP_TEST_LOSS)
            return
        peer = self._lookup(src)
        if peer < 0:
            self._drop(DROP_UNKNOWN_ADDRESS)
            return
        p = &self.peers[peer]
        if p.rx == NULL:
            self._drop(DROP_NO_SRTP)
            return
        if is_rtcp(buf, length):
            n = srtcp_unprotect(p.rx, buf, length)
            if n < 0:
                self._drop(DROP_SRTCP_AUTH if n == SRTP_ERR_AUTH else
                           DROP_SRTCP_REPLAY if n == SRTP_ERR_REPLAY else DROP_SRTCP_OTHER)
                return
            p.last_rx = self.now
            self.slow_datagrams += 1
            self._slow(KIND_RTCP, peer, slot, n)
            return
        n = srtp_unprotect(p.rx, buf, length)
        if n < 0:
            self._drop(DROP_SRTP_AUTH if n == SRTP_ERR_AUTH else
                       DROP_SRTP_REPLAY if n == SRTP_ERR_REPLAY else DROP_SRTP_OTHER)
            return
        p.last_rx = self.now
        self._route(peer, p, buf, n)

    cdef void _route(self, int peer, Peer* p, uint8_t* buf, int n) noexcept nogil:
        cdef RtpHeader h
        cdef int k, out_idx
        if rtp_parse(buf, n, &h) < 0:
            self._drop(DROP_MALFORMED_RTP)
            return
        self._count_in(p, &h, n)
        if p.tap[h.payload_type]:
            # an effect is on: Python decodes, processes and re-injects the stream
            self.slow_datagrams += 1
            self._slow(KIND_MEDIA, peer, <int>((buf - self.rx_buf) // RECV_SLOT), n)
            return
        if p.routes[h.payload_type][0] == EMPTY:
            self._drop(DROP_NO_ROUTE)
            return
        for k in range(MAX_FANOUT):
            out_idx = p.routes[h.payload_type][k]
            if out_idx == EMPTY:
                break
            self._forward(peer, buf, n, &h, out_idx, p.route_pt[h.payload_type][k])

    cdef void _count_in(self, Peer* p, const RtpHeader* h, int n) noexcept nogil:
        cdef InStream* s = NULL
        cdef int i, d
        cdef double transit, delta
        cdef uint32_t clock
        for i in range(MAX_IN_STREAMS):
            if p.ins[i].used and p.ins[i].ssrc == h.ssrc:
                s = &p.ins[i]
                break
        if s == NULL:
            for i in range(MAX_IN_STREAMS):
                if not p.ins[i].used:
                    s = &p.ins[i]
                    memset(s, 0, sizeof(InStream))
                    s.used = 1
                    s.ssrc = h.ssrc
                    s.payload_type = h.payload_type
                    s.base_seq = h.seq
                    s.max_seq = h.seq
                    break
            if s == NULL:
                return   # more SSRCs than we keep statistics for: still forwarded
        # RFC 3550 A.1: extended highest sequence number
        d = seq_diff(h.seq, s.max_seq)
        if d > 0:
            if h.seq < s.max_seq:
                s.cycles += 65536
            s.max_seq = h.seq
        s.received += 1
        s.octets += n - h.header_len
        # RFC 3550 A.8: interarrival jitter, in timestamp units
        clock = p.clock[h.payload_type]
        if clock:
            transit = self.now * clock - h.timestamp
            if s.has_transit:
                delta = transit - s.last_transit
                if delta < 0:
                    delta = -delta
                if delta < clock * 10.0:   # ignore timestamp jumps (a new source)
                    s.jitter += (delta - s.jitter) / 16.0
            s.last_transit = transit
            s.has_transit = 1

    cdef void _forward(self, int src_peer, const uint8_t* buf, int n, const RtpHeader* h,
                       int out_idx, int out_pt) noexcept nogil:
        cdef OutStream* o = &self.outs[out_idx]
        cdef Peer* d = &self.peers[o.peer]
        cdef uint16_t seq
        cdef uint32_t ts, gap
        cdef uint8_t* slot
        cdef int m
        if not d.bound or d.tx == NULL:
            self._drop(DROP_DEST_NOT_READY)
            return
        if h.padding_len and n - h.header_len - h.padding_len <= 0:
            # padding only (a sender's bandwidth probe): nothing to decode, and some
            # receivers (aiortc) take the empty frame for the end of the stream; not
            # forwarded, and when it is the next packet our numbering skips it so the
            # subscriber sees no gap. Out of order it stays a gap: skipping it then would
            # map the late packets before it onto numbers already sent.
            if (o.has_source and o.src_peer == src_peer and o.src_ssrc == h.ssrc
                    and <uint16_t>(h.seq + o.seq_delta) == <uint16_t>(o.max_seq + 1)):
                o.seq_delta -= 1
            self._drop(DROP_PADDING_ONLY)
            return
        if o.cache.data == NULL and cache_init(&o.cache, self.cache_packets) < 0:
            self._drop(DROP_PROTECT_FAILED)  # out of memory
            return
        if not o.has_source or o.src_peer != src_peer or o.src_ssrc != h.ssrc:
            # A new source for this subscriber stream: continue its numbering.
            if o.started:
                o.seq_delta = <uint16_t>(o.max_seq + 1 - h.seq)
                gap = <uint32_t>((self.now - o.last_time) * o.clock_rate)
                if gap < 1:
                    gap = 1
                o.ts_delta = o.last_ts + gap - h.timestamp
            o.has_source = 1
            o.src_peer = src_peer
            o.src_ssrc = h.ssrc
            o.src_start_seq = <uint16_t>(h.seq + o.seq_delta)
        seq = <uint16_t>(h.seq + o.seq_delta)
        if o.started and sent_seqs_has(&o.sent, o.max_seq, seq):
            # one SRTP index, one packet: a late packet that lands on a number already
            # sent is dropped (before its cache slot, which holds the first, is touched)
            self._drop(DROP_OUT_SEQ_USED)
            return
        ts = h.timestamp + o.ts_delta
        slot = cache_slot(&o.cache, seq)
        o.cache.lengths[seq & o.cache.mask] = 0
        m = rtp_rewrite_into(slot, buf, n, h, o.ssrc, seq, ts, out_pt)
        m = srtp_protect(d.tx, slot, m, CACHE_SLOT)
        if m < 0:
            self._drop(DROP_PROTECT_INDEX_USED if m == SRTP_ERR_INDEX_USED else DROP_PROTECT_FAILED)
            return
        cache_commit(&o.cache, seq, m)
        sent_seqs_add(&o.sent, o.max_seq if o.started else seq, seq)
        if not o.started or seq_diff(seq, o.max_seq) > 0:
            o.max_seq = seq
            o.last_ts = ts
            o.last_time = self.now
            o.started = 1
        o.packets += 1
        o.octets += n - h.header_len
        if self.out_loss_threshold and self._lose(self.out_loss_threshold):
            self._drop(DROP_TEST_LOSS)
            return
        self._queue(slot, m, &d.addr)

    cdef inline void _queue(self, uint8_t* data, int length, const SockAddr* addr) noexcept nogil:
        if addr.sa.sa_family == AF_INET6 and addr.v6.sin6_flowinfo == TCP_MARK:
            if self._tcp_send(addr.v6.sin6_scope_id, data, length) == length:
                self.forwarded_packets += 1
                self.forwarded_bytes += length
            return
        self.tx_iov[self.ntx].iov_base = data
        self.tx_iov[self.ntx].iov_len = length
        self.tx_addr[self.ntx] = addr[0]
        self.ntx += 1
        self.forwarded_packets += 1
        self.forwarded_bytes += length
        if self.ntx == BATCH and self.fd >= 0:
            self._flush()

    cdef void _flush(self) noexcept nogil:
        cdef int done = 0, r
        while done < self.ntx:
            r = sendmmsg(self.fd, &self.tx_msgs[done], self.ntx - done, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                # socket buffer full (or an ICMP error): these packets are lost
                self.drops[DROP_SEND_FAILED] += self.ntx - done
                break
            done += r
        self.ntx = 0

    # ---- the event-loop side -----------------------------------------------

    def drain(self, double now, int max_batches=16):
        """Read and process what the socket holds, in batches; send what is
        forwarded. Returns how many slow-path datagrams wait in pop_slow().

        With a read hold (set_read_hold), a drain that found fewer than
        HOLD_TARGET packets may sleep once, for at most the hold, and read again."""
        if self.fd < 0:
            raise ValueError("router has no socket")
        if self.threaded:
            raise RuntimeError("the socket thread reads this socket")
        self._lock()
        try:
            self.now = now
            with nogil:
                self._read_batches(max_batches, False)
            if self.nslow:
                self._collect_slow()
            return len(self.slow)
        finally:
            self._unlock()

    cdef void _read_batches(self, int max_batches, bint unlock_to_hold) noexcept nogil:
        # the read loop of drain and of the socket thread (the caller holds `mu`
        # and has set self.now; the thread lets go of `mu` during a hold)
        cdef int b, i, n
        cdef uint64_t rx0 = self.rx_datagrams, rx_held = 0
        cdef bint held = False
        cdef timespec pause
        for b in range(max_batches):
            for i in range(BATCH):
                self.rx_msgs[i].msg_hdr.msg_namelen = sizeof(SockAddr)
                self.rx_msgs[i].msg_hdr.msg_flags = 0
            n = recvmmsg(self.fd, self.rx_msgs, BATCH, MSG_DONTWAIT, NULL)
            if n > 0:
                self.batches += 1
                for i in range(n):
                    self._handle(i, self.rx_msgs[i].msg_len, self.rx_msgs[i].msg_hdr.msg_flags)
                if self.ntx:
                    self._flush()
            if n < 0:
                if errno != EAGAIN and errno != EWOULDBLOCK and errno != EINTR:
                    self.recv_errors += 1   # e.g. ICMP port unreachable from a gone peer
                    continue
                break
            if n < BATCH:
                if held or self.hold_ns == 0 or not self._hold_time(self.rx_datagrams - rx0, &pause):
                    break
                # what was read is already sent: only what arrives during the
                # pause waits, for at most the pause
                held = True
                rx_held = self.rx_datagrams
                if unlock_to_hold:
                    pthread_mutex_unlock(&self.mu)
                clock_nanosleep(CLOCK_MONOTONIC, 0, &pause, NULL)
                if unlock_to_hold:
                    pthread_mutex_lock(&self.mu)
                    self.now = monotonic_now()
                self.holds += 1
        if held:
            self.held_packets += self.rx_datagrams - rx_held

    cdef bint _hold_time(self, uint64_t found, timespec* pause) noexcept nogil:
        # whether to hold after a wake-up that found `found` packets, and for how
        # long: long enough for HOLD_TARGET - found more at the current rate, capped
        # by hold_ns; not at all when the cap would not even bring HOLD_MIN_EXPECTED
        cdef double t, hold
        t = monotonic_now()
        if t - self.rate_t0 >= RATE_WINDOW:
            if self.rate_t0 > 0:
                self.rate = (self.rx_datagrams - self.rate_rx0) / (t - self.rate_t0)
            self.rate_t0 = t
            self.rate_rx0 = self.rx_datagrams
        if found == 0 or found >= HOLD_TARGET:
            return False
        hold = self.hold_ns * 1e-9
        if self.rate * hold < HOLD_MIN_EXPECTED:
            return False
        if (HOLD_TARGET - found) / self.rate < hold:
            hold = (HOLD_TARGET - found) / self.rate
        pause.tv_sec = 0
        pause.tv_nsec = <long>(hold * 1e9)
        return True

    # ---- the socket thread -------------------------------------------------

    cdef inline void _lock(self) noexcept nogil:
        # a waiting Python call is announced: the thread, which would otherwise take
        # the mutex again at once under a flood (a mutex is not fair), lets it in
        ms_atomic_add(&self.py_waiting, 1)
        pthread_mutex_lock(&self.mu)
        ms_atomic_add(&self.py_waiting, -1)

    cdef inline void _unlock(self) noexcept nogil:
        pthread_mutex_unlock(&self.mu)

    def start_thread(self, int notify_fd):
        """Read the socket from a thread of our own, in C and without the GIL,
        from now on: it blocks in poll(), reads, routes and sends, and queues only
        STUN, DTLS, RTCP and tapped media for Python; when that queue becomes
        non-empty it writes 1 to the eventfd `notify_fd`, whose reader calls
        pop_slow(). A media packet then wakes neither Python nor the event loop.
        Time is CLOCK_MONOTONIC (what asyncio's and uvloop's loop.time() read).
        drain() must not be called while it runs; stop_thread() ends it."""
        cdef int err
        if self.fd < 0:
            raise ValueError("router has no socket")
        if self.threaded:
            raise RuntimeError("the socket thread is running already")
        self.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self.stop_fd < 0:
            raise OSError(errno, "eventfd failed")
        self.notify_fd = notify_fd
        self.threaded = True
        err = pthread_create(&self.thread, NULL, _socket_thread_main, <void*>self)
        if err != 0:
            self.threaded = False
            close(self.stop_fd)
            self.stop_fd = -1
            self.notify_fd = -1
            raise OSError(err, "pthread_create failed")

    def stop_thread(self):
        """End the socket thread (it finishes its batch) and wait for it; what it
        queued stays in pop_slow(). Nothing when none runs."""
        self._stop_thread()

    cdef void _stop_thread(self) noexcept:
        cdef uint64_t one = 1
        if not self.threaded:
            return
        with nogil:
            write(self.stop_fd, &one, 8)
            pthread_join(self.thread, NULL)
        close(self.stop_fd)
        self.stop_fd = -1
        self.notify_fd = -1
        self.threaded = False

    @property
    def thread_running(self):
        return bool(self.threaded)

    cdef void _thread_loop(self) noexcept nogil:
        cdef pollfd fds[2]
        cdef int r, before, spins
        cdef uint64_t one = 1
        fds[0].fd = self.fd
        fds[0].events = POLLIN
        fds[1].fd = self.stop_fd
        fds[1].events = POLLIN
        while True:
            r = poll(fds, 2, -1)
            if r < 0:
                if errno == EINTR:
                    continue
                return   # cannot happen with valid descriptors: nothing to wait on
            if fds[1].revents:
                return
            pthread_mutex_lock(&self.mu)
            self.thread_wakeups += 1
            before = self.nslow
            self.now = monotonic_now()
            self._read_batches(THREAD_BATCHES, True)
            r = self.nslow
            pthread_mutex_unlock(&self.mu)
            # the event loop (holding the GIL) waits for the mutex: let it in before
            # the next batch, or a flood would keep it out and stall the loop
            spins = 0
            while ms_atomic_load(&self.py_waiting) > 0 and spins < 10000:
                sched_yield()
                spins += 1
            if spins:
                self.yields += 1
            if before == 0 and r > 0:
                # one write per empty -> non-empty: the reader empties the queue
                self.notifies += 1
                write(self.notify_fd, &one, 8)

    def set_read_hold(self, int hold_us):
        """Coalesce reads: after a drain that found fewer than HOLD_TARGET packets,
        sleep at most `hold_us` microseconds (adapted to the packet rate; 0: never,
        the default) and read again. Adds at most the hold to a packet's delivery."""
        self._lock()
        try:
            if not 0 <= hold_us <= 100_000:
                raise ValueError("read hold must be within 0..100000 us")
            self.hold_ns = <uint64_t>hold_us * 1000
        finally:
            self._unlock()

    @property
    def read_hold_us(self):
        return self.hold_ns // 1000

    cdef object _addr_tuple(self, const SockAddr* a):
        # (host, port) as Python sees it everywhere: an IPv4 peer is dotted-quad text
        # whether it came as sockaddr_in or ::ffff:a.b.c.d (the scope id of a
        # link-local peer is not kept: peers reach the announced global address)
        cdef char text[64]
        if a.sa.sa_family == AF_INET6:
            if is_v4_mapped(a.v6.sin6_addr.s6_addr):
                inet_ntop(AF_INET, &a.v6.sin6_addr.s6_addr[12], text, 64)
            else:
                inet_ntop(AF_INET6, &a.v6.sin6_addr, text, 64)
            return (text.decode(), ntohs(a.v6.sin6_port)
                    + (TCP_PORT_FLAG if a.v6.sin6_flowinfo == TCP_MARK else 0))
        inet_ntop(AF_INET, &a.v4.sin_addr, text, 64)
        return (text.decode(), ntohs(a.v4.sin_port))

    cdef void _collect_slow(self) except *:
        cdef int i
        cdef SlowItem* s
        for i in range(self.nslow):
            s = &self.slow_items[i]
            self.slow.append((
                s.kind, s.peer, self._addr_tuple(&s.addr),
                PyBytes_FromStringAndSize(<char*>s.data, s.length),
            ))
        self.nslow = 0

    def pop_slow(self):
        """The datagrams Python must handle: a list of (kind, peer or -1,
        (host, port), data). RTCP data is already SRTCP-unprotected."""
        self._lock()
        try:
            if self.nslow:
                self._collect_slow()
            items = self.slow
            self.slow = []
            return items
        finally:
            self._unlock()

    def feed(self, bytes data, str host, int port, double now):
        """Run the per-packet path on one datagram without a socket.

        Returns:
            (sent, slow): sent is a list of (data, (host, port)) the router would
            send; slow the same as pop_slow() would return.
        """
        cdef int length = len(data)
        cdef int i
        cdef list sent = []
        self._lock()
        try:
            if length > RECV_SLOT:
                length = RECV_SLOT
            self._parse_address(host, port, &self.rx_addr[0])
            memcpy(self.rx_buf, <char*>data, length)
            self.now = now
            self.ntx = 0
            self._handle(0, length, MSG_TRUNC if len(data) > RECV_SLOT else 0)
            for i in range(self.ntx):
                sent.append((
                    PyBytes_FromStringAndSize(<char*>self.tx_iov[i].iov_base, self.tx_iov[i].iov_len),
                    self._addr_tuple(&self.tx_addr[i]),
                ))
            self.ntx = 0
            self._collect_slow()
            return sent, self.pop_slow()
        finally:
            self._unlock()

    # ---- slow-path sends and statistics (from Python) ----------------------

    cdef int _send(self, Peer* p, const uint8_t* data, int length):
        if p.addr.sa.sa_family == AF_INET6 and p.addr.v6.sin6_flowinfo == TCP_MARK:
            return self._tcp_send(p.addr.v6.sin6_scope_id, data, length)
        if self.fd < 0:
            return length
        return sendto(self.fd, data, length, MSG_DONTWAIT, &p.addr.sa, self.addrlen)

    def protect_rtcp(self, int peer, bytes data):
        """SRTCP-protect `data` for `peer` and return the bytes (no send)."""
        cdef Peer* p = self._peer(peer)
        cdef int n = len(data)
        self._lock()
        try:
            if p.tx == NULL:
                raise ValueError("peer has no SRTP context yet")
            if n + 32 > RECV_SLOT:
                raise ValueError("RTCP packet too large")
            memcpy(self.scratch, <char*>data, n)
            n = srtcp_protect(p.tx, self.scratch, n, RECV_SLOT)
            if n < 0:
                raise ValueError(f"SRTCP protect failed ({n})")
            return PyBytes_FromStringAndSize(<char*>self.scratch, n)
        finally:
            self._unlock()

    def send_rtcp(self, int peer, bytes data):
        """SRTCP-protect `data` and send it to the peer. Returns False when the
        peer is not connected yet or the send failed."""
        cdef Peer* p = self._peer(peer)
        self._lock()
        try:
            if not p.bound or p.tx == NULL:
                return False
            protected = self.protect_rtcp(peer, data)
            return self._send(p, <const uint8_t*><char*>protected, len(protected)) > 0
        finally:
            self._unlock()

    def resend(self, int out_idx, seqs, double now):
        """Answer a NACK at router time `now`: resend the cached packets of out
        stream `out_idx` with these sequence numbers (each at most RESEND_LIMIT
        times, RESEND_INTERVAL apart; the caller deduplicates and rate-limits,
        mediaserver/sfu/nack.py).

        Returns:
            The publisher's sequence numbers of those not in the cache but sent
            by the current source (lost on the way in: ask the publisher), as a
            list; empty when every packet was resent.
        """
        cdef OutStream* o = self._out(out_idx)
        cdef Peer* d = &self.peers[o.peer]
        cdef int n, count = 0
        cdef uint16_t seq
        cdef int i
        self._lock()
        try:
            missing = []
            if not d.bound:
                return missing
            for s in seqs:
                seq = <uint16_t>(s & 0xFFFF)
                n = cache_lookup(&o.cache, seq)
                if n:
                    i = seq & o.cache.mask
                    if o.cache.resends[i] and now - o.cache.resent_at[i] < MIN_RESEND_INTERVAL:
                        self._drop(DROP_NACK_TOO_SOON)
                        continue
                    if o.cache.resends[i] >= MAX_RESENDS:
                        self._drop(DROP_NACK_RESEND_CAP)
                        continue
                    o.cache.resends[i] += 1
                    o.cache.resent_at[i] = now
                    self._send(d, cache_slot(&o.cache, seq), n)
                    count += 1
                    self.retransmitted_bytes += n
                elif o.has_source and seq_diff(seq, o.src_start_seq) >= 0:
                    missing.append(<uint16_t>(seq - o.seq_delta))
            self.retransmitted += count
            return missing
        finally:
            self._unlock()

    def in_stats(self, int peer):
        """Reception statistics of what `peer` sends: a list of dicts with ssrc,
        payload_type, ext_highest_seq, received, octets, jitter, base_seq."""
        cdef Peer* p = self._peer(peer)
        cdef int i
        self._lock()
        try:
            out = []
            for i in range(MAX_IN_STREAMS):
                if p.ins[i].used:
                    out.append({
                        "ssrc": p.ins[i].ssrc,
                        "payload_type": p.ins[i].payload_type,
                        "base_seq": p.ins[i].base_seq,
                        "ext_highest_seq": p.ins[i].cycles + p.ins[i].max_seq,
                        "received": p.ins[i].received,
                        "octets": p.ins[i].octets,
                        "jitter": p.ins[i].jitter,
                    })
            return out
        finally:
            self._unlock()

    def last_rx(self, int peer):
        """Router time of the last authenticated SRTP/SRTCP packet from the
        peer, or None if none arrived yet (media liveness)."""
        cdef Peer* p = self._peer(peer)
        self._lock()
        try:
            return p.last_rx if p.last_rx > 0 else None
        finally:
            self._unlock()

    def out_stats(self, int out_idx):
        """What out stream `out_idx` sent: ssrc, packets, octets, last RTP
        timestamp and when (router time), and its current source."""
        cdef OutStream* o = self._out(out_idx)
        self._lock()
        try:
            return {
                "ssrc": o.ssrc,
                "peer": o.peer,
                "packets": o.packets,
                "octets": o.octets,
                "started": bool(o.started),
                "last_timestamp": o.last_ts,
                "last_time": o.last_time,
                "clock_rate": o.clock_rate,
                "source_peer": o.src_peer if o.has_source else None,
                "source_ssrc": o.src_ssrc if o.has_source else None,
            }
        finally:
            self._unlock()

    def counters(self):
        """Totals since start: datagrams, forwarded packets/bytes, drops by reason."""
        cdef int i
        self._lock()
        try:
            return {
                "rx_datagrams": self.rx_datagrams,
                "rx_bytes": self.rx_bytes,
                "forwarded_packets": self.forwarded_packets,
                "forwarded_bytes": self.forwarded_bytes,
                "retransmitted": self.retransmitted,
                "retransmitted_bytes": self.retransmitted_bytes,
                "slow_datagrams": self.slow_datagrams,
                "recv_errors": self.recv_errors,
                "batches": self.batches,
                "read_holds": self.holds,
                "held_packets": self.held_packets,
                "thread_wakeups": self.thread_wakeups,
                "thread_notifies": self.notifies,
                "thread_yields": self.yields,
                "tcp_connections": sum(1 for i in range(self.max_tcp) if self.tcp[i] != NULL),
                "tcp_frames": self.tcp_frames,
                "tcp_bytes": self.tcp_bytes,
                "tcp_too_big": self.tcp_too_big,
                "tcp_partial_writes": self.tcp_partial_writes,
                "drops": {DROP_NAMES[i]: self.drops[i] for i in range(N_DROPS)},
            }
        finally:
            self._unlock()

    def set_loss(self, double inbound=0.0, double outbound=0.0, uint64_t seed=1):
        """Test hook: drop these fractions (0..1) at random, of inbound
        SRTP/SRTCP before it is read, and of forwarded packets after they are
        cached (what a lossy last mile does: NACKs can recover them)."""
        self._lock()
        try:
            if not (0.0 <= inbound <= 1.0 and 0.0 <= outbound <= 1.0):
                raise ValueError("loss rate must be within 0..1")
            self.loss_threshold = <uint32_t>(inbound * 4294967295.0)
            self.out_loss_threshold = <uint32_t>(outbound * 4294967295.0)
            self.rng = seed * <uint64_t>0x9E3779B97F4A7C15 + 1
        finally:
            self._unlock()

    # ---- ICE over TCP ------------------------------------------------------

    def tcp_open(self, int fd, str host, int port):
        """Take an accepted connection from (host, port) (the caller owns `fd`
        and closes it after tcp_close). Returns (slot, address): the slot for
        tcp_read / tcp_send / tcp_close, and its address as pop_slow reports it.

        Raises:
            RuntimeError: max_tcp connections are open already.
        """
        cdef in_addr v4
        cdef in6_addr v6
        cdef bytes text = host.encode()
        cdef TcpConn* c
        cdef int slot = -1, i
        cdef epoll_event ev
        self._lock()
        try:
            if not 0 <= port <= 65535:
                raise ValueError(f"port out of range: {port}")
            for i in range(self.max_tcp):
                if self.tcp[i] == NULL:
                    slot = i
                    break
            if slot < 0:
                raise RuntimeError(f"router full: {self.max_tcp} TCP connections")
            memset(&v6, 0, sizeof(v6))
            if inet_pton(AF_INET, text, &v4) == 1:
                v6.s6_addr[10] = 0xFF
                v6.s6_addr[11] = 0xFF
                memcpy(&v6.s6_addr[12], &v4, 4)
            elif inet_pton(AF_INET6, text, &v6) != 1:
                raise ValueError(f"not an IP address: {host!r}")
            if self.tcp_rx == NULL:
                self.tcp_rx = <uint8_t*>calloc(1, TCP_RX)
            c = <TcpConn*>calloc(1, sizeof(TcpConn))
            if c == NULL or self.tcp_rx == NULL:
                free(c)
                raise MemoryError()
            c.fd = fd
            c.addr.v6.sin6_family = AF_INET6
            c.addr.v6.sin6_port = htons(port)
            c.addr.v6.sin6_addr = v6
            c.addr.v6.sin6_flowinfo = TCP_MARK
            c.addr.v6.sin6_scope_id = slot
            c.last_rx = self.now
            if self.tcp_ep >= 0:
                ev.events = EPOLLIN
                ev.data.u64 = 0
                ev.data.u32 = slot
                if epoll_ctl(self.tcp_ep, EPOLL_CTL_ADD, fd, &ev) < 0:
                    free(c)
                    raise OSError(errno, "epoll_ctl(ADD) failed")
            self.tcp[slot] = c
            return slot, self._addr_tuple(&c.addr)
        finally:
            self._unlock()

    def tcp_epoll(self):
        """The descriptor to watch for readable ICE-TCP connections: an epoll
        instance over every connection opened from now on. When it is readable,
        tcp_drain() reads them all in one call."""
        self._lock()
        try:
            if self.tcp_ep < 0:
                self.tcp_ep = epoll_create1(EPOLL_CLOEXEC)
                if self.tcp_ep < 0:
                    raise OSError(errno, "epoll_create1 failed")
            return self.tcp_ep
        finally:
            self._unlock()

    def tcp_drain(self, double now):
        """Read every connection with data (tcp_epoll), as tcp_read does each, in
        one batch: forwarded media is sent, STUN, DTLS and RTCP wait in
        pop_slow(). Returns [(slot, status)] of the connections to close (status
        TCP_EOF, TCP_ERROR or TCP_TOO_BIG), usually empty."""
        cdef epoll_event events[BATCH]
        cdef int n, i, status
        cdef uint32_t slot
        self._lock()
        try:
            closes = []
            if self.tcp_ep < 0 or self.fd < 0:
                raise ValueError("router has no socket or no tcp_epoll()")
            self.now = now
            self.tcp_batch = 0
            n = epoll_wait(self.tcp_ep, events, BATCH, 0)
            for i in range(n if n > 0 else 0):
                slot = events[i].data.u32
                if slot >= <uint32_t>self.max_tcp or self.tcp[slot] == NULL:
                    continue
                status = self._tcp_read(self.tcp[slot])
                if status < 0:
                    closes.append((slot, status))
            self._tcp_batch_end()
            return closes
        finally:
            self._unlock()

    def tcp_last_rx(self, int slot):
        """Router time of the connection's last read (of tcp_open if none)."""
        self._lock()
        try:
            return self._tcp(slot).last_rx
        finally:
            self._unlock()

    cdef TcpConn* _tcp(self, int slot) except NULL:
        if slot < 0 or slot >= self.max_tcp or self.tcp[slot] == NULL:
            raise KeyError(f"no TCP connection {slot}")
        return self.tcp[slot]

    cdef int _tcp_find(self, str host, int port) except -2:
        # the open connection with this address (port with TCP_PORT_FLAG), or -1
        cdef int i
        for i in range(self.max_tcp):
            if self.tcp[i] != NULL and self._addr_tuple(&self.tcp[i].addr) == (host, port):
                return i
        return -1

    def tcp_close(self, int slot):
        """Forget the connection (the caller closes its fd): the peer bound to
        it, if any, is unbound, so nothing is sent to a reused descriptor."""
        cdef TcpConn* c = self._tcp(slot)
        cdef int peer = self._lookup(&c.addr)
        cdef epoll_event ev
        self._lock()
        try:
            if self.tcp_ep >= 0:
                epoll_ctl(self.tcp_ep, EPOLL_CTL_DEL, c.fd, &ev)   # ENOENT if opened before
            if peer >= 0:
                self._addr_delete(&c.addr)
                self.peers[peer].bound = 0
            free(c)
            self.tcp[slot] = NULL
        finally:
            self._unlock()

    def tcp_pending(self, int slot):
        """Bytes of a partly written frame waiting for the connection's socket."""
        cdef TcpConn* c = self._tcp(slot)
        self._lock()
        try:
            return c.out_len - c.out_off
        finally:
            self._unlock()

    def tcp_send(self, int slot, bytes data):
        """Send one framed packet (STUN, DTLS, SRTCP from Python) on the connection.
        Returns False when it was dropped (socket buffer full, or too big)."""
        self._lock()
        try:
            self._tcp(slot)
            return self._tcp_send(slot, <const uint8_t*><char*>data, len(data)) == len(data)
        finally:
            self._unlock()

    def tcp_read(self, int slot, double now):
        """Read what the connection holds, split it into frames and run each
        through the per-packet path (forwarded media is sent; STUN, DTLS and RTCP
        wait in pop_slow()). Returns 0, or TCP_EOF / TCP_ERROR / TCP_TOO_BIG:
        the caller then closes the connection (pop_slow() first: frames before
        the end were handled)."""
        cdef TcpConn* c = self._tcp(slot)
        cdef int status
        self._lock()
        try:
            if self.fd < 0:
                raise ValueError("router has no socket")
            self.now = now
            self.tcp_batch = 0
            status = self._tcp_read(c)
            self._tcp_batch_end()
            return status
        finally:
            self._unlock()

    cdef int _tcp_read(self, TcpConn* c) except -9:
        cdef int rounds, status = 0
        cdef ssize_t r
        c.last_rx = self.now
        for rounds in range(TCP_READS):
            r = recv(c.fd, self.tcp_rx, TCP_RX, MSG_DONTWAIT)
            if r == 0:
                status = TCP_EOF
                break
            if r < 0:
                if errno == EINTR:
                    continue
                if errno != EAGAIN and errno != EWOULDBLOCK:
                    status = TCP_ERROR
                break
            self.tcp_bytes += <uint64_t>r
            if self._tcp_consume(c, self.tcp_rx, <int>r) < 0:
                self.tcp_too_big += 1
                status = TCP_TOO_BIG
                break
            if r < TCP_RX:
                break
        return status

    cdef int _tcp_consume(self, TcpConn* c, const uint8_t* data, int n) except -2:
        # RFC 4571 reassembly: a frame whole in `data` is handed on from there; one
        # split across reads is completed in c.buf. Returns -1 for a frame over the
        # MTU bound (no peer of ours sends one: the stream is garbage).
        cdef int i = 0, need, take, length
        while i < n:
            if c.have < 2:
                c.buf[c.have] = data[i]
                c.have += 1
                i += 1
                continue
            length = (c.buf[0] << 8) | c.buf[1]
            if length > RTP_MAX_PACKET:
                return -1
            if c.have == 2 and n - i >= length:
                self._tcp_frame(c, data + i, length)
                i += length
                c.have = 0
                continue
            need = 2 + length - c.have
            take = need if need < n - i else n - i
            memcpy(c.buf + c.have, data + i, take)
            c.have += take
            i += take
            if c.have == 2 + length:
                self._tcp_frame(c, c.buf + 2, length)
                c.have = 0
        if c.have >= 2 and ((c.buf[0] << 8) | c.buf[1]) > RTP_MAX_PACKET:
            return -1
        return 0

    cdef int _tcp_frame(self, TcpConn* c, const uint8_t* data, int length) except -1:
        # one frame is one datagram: into a receive slot (SRTP works in place)
        cdef int slot = self.tcp_batch
        memcpy(self.rx_buf + slot * RECV_SLOT, data, length)
        self.rx_addr[slot] = c.addr
        self.tcp_frames += 1
        self._handle(slot, length, 0)
        self.tcp_batch += 1
        if self.tcp_batch == BATCH:
            self._tcp_batch_end()
        return 0

    cdef int _tcp_batch_end(self) except -1:
        if self.ntx:
            self._flush()   # media from a TCP peer to UDP subscribers
        if self.nslow:
            self._collect_slow()
        self.tcp_batch = 0
        return 0

    cdef int _tcp_send(self, uint32_t slot, const uint8_t* data, int length) noexcept nogil:
        # one frame: the 2-byte length, then the packet, in one sendmsg. A partial
        # write keeps its tail (the stream must stay framed), and the next frame is
        # dropped until that tail is out. Returns `length`, or -1 (dropped, counted).
        cdef TcpConn* c
        cdef uint8_t hdr[2]
        cdef iovec iov[2]
        cdef msghdr m
        cdef ssize_t r
        cdef int rest
        if slot >= <uint32_t>self.max_tcp or self.tcp[slot] == NULL:
            self._drop(DROP_TCP_GONE)
            return -1
        c = self.tcp[slot]
        if length > RECV_SLOT:
            self._drop(DROP_TOO_BIG)
            return -1
        if c.out_len:
            r = send(c.fd, c.out + c.out_off, c.out_len - c.out_off, MSG_DONTWAIT | MSG_NOSIGNAL)
            if r > 0:
                c.out_off += <int>r
            if c.out_off < c.out_len:
                self._drop(DROP_TCP_BACKPRESSURE)
                return -1
            c.out_off = 0
            c.out_len = 0
        hdr[0] = <uint8_t>(length >> 8)
        hdr[1] = <uint8_t>(length & 0xFF)
        iov[0].iov_base = hdr
        iov[0].iov_len = 2
        iov[1].iov_base = <void*>data
        iov[1].iov_len = length
        memset(&m, 0, sizeof(m))
        m.msg_iov = iov
        m.msg_iovlen = 2
        r = sendmsg(c.fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL)
        if r <= 0:
            self._drop(DROP_TCP_BACKPRESSURE if r == 0 or errno == EAGAIN or errno == EWOULDBLOCK
                       else DROP_SEND_FAILED)
            return -1
        if r < 2 + length:
            # the socket took part of it: the rest goes before anything else
            self.tcp_partial_writes += 1
            rest = 2 + length - <int>r
            if r < 2:
                c.out[0] = hdr[1]
                memcpy(c.out + 2 - r, data, length)
            else:
                memcpy(c.out, data + (r - 2), rest)
            c.out_off = 0
            c.out_len = rest
        return length


cdef void* _socket_thread_main(void* arg) noexcept nogil:
    # the Router outlives its thread: __dealloc__ and stop_thread join it first
    (<Router>arg)._thread_loop()
    return NULL
