# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The load generator's packet loops, in C: paced SRTP senders and receivers.

Compiled at run time by benchmarks/peers/loadgen.py (setup.py only builds
ext/*.pyx). Both loops run without the GIL, so the sender (main thread) and the
receiver (a second thread) run side by side, and the generator stays cheap next
to the server it loads on the same 2 cores.

SRTP comes from the project's own C transforms (mediaserver._srtp, cimported):
the generator protects with one context per sender and the receivers unprotect
with their own contexts. loadgen.py checks a sample of what the receivers got
with libsrtp (pylibsrtp) too, so the server's output is checked by an
independent implementation as well.

Payload of every RTP packet, after the 12-byte header (big endian):

    0  magic "MSBF"     4  sender index     8  sequence number (64 bits)
    16 send time, CLOCK_MONOTONIC ns        24 send time, CLOCK_REALTIME ns
    32 run id           36  filler up to the payload size
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memmove, memset

from mediaserver._srtp cimport (
    SrtpContext, srtp_context_free, srtp_context_new, srtp_overhead, srtp_protect,
    srtp_unprotect, srtcp_unprotect,
)

from includes.system cimport (
    AF_INET, AF_INET6, CLOCK_MONOTONIC, CLOCK_REALTIME, CMSG_DATA, CMSG_FIRSTHDR, CMSG_NXTHDR,
    EINTR, MSG_DONTWAIT, MSG_NOSIGNAL, SCM_TIMESTAMPNS, SO_TIMESTAMPNS, SOL_SOCKET, TIMER_ABSTIME,
    clock_gettime, clock_nanosleep, cmsghdr, errno, htons, inet_pton, iovec, mmsghdr,
    msghdr, recv, recvmmsg, send, sendmmsg, setsockopt, sockaddr, sockaddr_in, sockaddr_in6, socklen_t,
    timespec,
)
from mediaserver._rtp cimport load16, load32, store16, store32

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void* buf, size_t n)

cdef extern from "Python.h":
    int PyErr_CheckSignals()    # no `except`: the error is raised by _pending() below

cdef enum:
    BATCH = 64
    SLOT = 2048
    HEADER = 12
    STAMP = 36              # magic .. run id
    CMSG_SLOT = 64          # >= CMSG_SPACE(sizeof(struct timespec))
    HIST_BUCKETS = 200000   # latency histogram: 1 us buckets up to 200 ms
    MAGIC = 0x4D534246      # "MSBF"
    REORDER = 1024          # sequence numbers tracked below a run's first arrival
    AUDIO_PT_C = 111
    VIDEO_PT_C = 96
    STREAM_BUF = 262144     # a framed (ICE-TCP) receiver's reassembly buffer

cdef int _pending() except -1:
    """Propagate the exception a signal handler left (Ctrl-C in a nogil loop)."""
    return -1


cdef inline int64_t clock_ns(int clk) noexcept nogil:
    cdef timespec ts
    clock_gettime(clk, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec

cdef inline void store64(uint8_t* p, uint64_t v) noexcept nogil:
    store32(p, <uint32_t>(v >> 32))
    store32(p + 4, <uint32_t>v)

cdef inline uint64_t load64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>load32(p) << 32) | load32(p + 4)


def overhead(int profile):
    """Bytes SRTP adds to an RTP packet under `profile` (the auth tag)."""
    return srtp_overhead(profile)


cdef socklen_t fill_addr(sockaddr_in6* storage, str host, int port) except 0:
    """(host, port) -> a sockaddr of its family in `storage`; returns its length."""
    cdef sockaddr_in* a = <sockaddr_in*>storage
    memset(storage, 0, sizeof(sockaddr_in6))
    if ":" in host:
        storage.sin6_family = AF_INET6
        storage.sin6_port = htons(port)
        if inet_pton(AF_INET6, host.encode(), &storage.sin6_addr) != 1:
            raise ValueError(f"not an IPv6 address: {host!r}")
        return sizeof(sockaddr_in6)
    a.sin_family = AF_INET
    a.sin_port = htons(port)
    if inet_pton(AF_INET, host.encode(), &a.sin_addr) != 1:
        raise ValueError(f"not an IPv4 address: {host!r}")
    return sizeof(sockaddr_in)


cdef SrtpContext* new_context(int profile, tuple key_salt) except NULL:
    cdef bytes key = key_salt[0]
    cdef bytes salt = key_salt[1]
    cdef SrtpContext* ctx = srtp_context_new(profile, key, len(key), salt, len(salt))
    if ctx == NULL:
        raise ValueError(f"bad SRTP parameters for profile {profile}")
    return ctx


ctypedef struct TxPeer:
    int fd
    sockaddr_in6 dst        # or a sockaddr_in in its first bytes (dstlen says which)
    socklen_t dstlen
    uint32_t ssrc
    uint16_t seq
    uint64_t count          # packets this sender made (the payload's sequence number)
    SrtpContext* ctx


cdef class Sender:
    """N paced RTP senders, each with its own socket, destination and SRTP context.

    Args:
        fds: the senders' UDP sockets (bound, nonblocking).
        dests: (host, port) each sender sends to.
        ssrcs: each sender's SSRC.
        payload_type: RTP payload type.
        payload_size: bytes of RTP payload.
        profile: SRTP profile id, or 0 to send plain RTP padded by `pad` bytes
            (so a plain packet is as large on the wire as an SRTP one).
        keys: (master key, master salt) per sender when profile != 0.
        framed: the sockets are ICE-TCP connections (RFC 4571): each burst goes
            out as 2-byte-length frames in one blocking send (TCP's own flow
            control paces it), not as datagrams.
    """
    cdef int n
    cdef int framed
    cdef uint8_t* fbuf
    cdef TxPeer* peers
    cdef int payload_size
    cdef int payload_type
    cdef int pad
    cdef uint8_t* bufs
    cdef uint8_t* filler
    cdef mmsghdr msgs[BATCH]
    cdef iovec iov[BATCH]
    cdef int64_t t_base

    def __cinit__(self, list fds, list dests, list ssrcs, int payload_type, int payload_size,
                  int profile=0, list keys=None, int pad=0, int framed=0):
        cdef int i
        self.n = len(fds)
        self.framed = framed
        self.fbuf = <uint8_t*>calloc(BATCH, SLOT + 2)
        if self.fbuf == NULL:
            raise MemoryError()
        if self.n < 1 or len(dests) != self.n or len(ssrcs) != self.n:
            raise ValueError("one destination and one SSRC per socket")
        if not STAMP <= payload_size <= SLOT - HEADER - 64 - pad:
            raise ValueError(f"payload size must be within {STAMP}..{SLOT - HEADER - 64 - pad}")
        self.payload_size = payload_size
        self.payload_type = payload_type
        self.pad = pad
        self.peers = <TxPeer*>calloc(self.n, sizeof(TxPeer))
        self.bufs = <uint8_t*>calloc(BATCH, SLOT)
        self.filler = <uint8_t*>calloc(SLOT, 1)
        if self.peers == NULL or self.bufs == NULL or self.filler == NULL:
            raise MemoryError()
        for i in range(SLOT):
            self.filler[i] = <uint8_t>(i * 7 + 3)
        for i in range(self.n):
            self.peers[i].fd = fds[i]
            self.peers[i].dstlen = fill_addr(&self.peers[i].dst, dests[i][0], dests[i][1])
            self.peers[i].ssrc = ssrcs[i]
            self.peers[i].seq = (ssrcs[i] * 2654435761) & 0xFFFF
            if profile:
                self.peers[i].ctx = new_context(profile, keys[i])
        memset(self.msgs, 0, sizeof(self.msgs))
        for i in range(BATCH):
            self.iov[i].iov_base = self.bufs + i * SLOT
            self.msgs[i].msg_hdr.msg_iov = &self.iov[i]
            self.msgs[i].msg_hdr.msg_iovlen = 1
        self.t_base = clock_ns(CLOCK_MONOTONIC)

    def __dealloc__(self):
        cdef int i
        if self.peers != NULL:
            for i in range(self.n):
                if self.peers[i].ctx != NULL:
                    srtp_context_free(self.peers[i].ctx)
            free(self.peers)
        free(self.bufs)
        free(self.filler)
        free(self.fbuf)

    cdef int _send(self, TxPeer* p, int count, uint32_t run_id, uint64_t* errors) noexcept nogil:
        """Build `count` (<= BATCH) packets for one sender and send them in one sendmmsg."""
        cdef int j, m, done = 0, r
        cdef uint8_t* b
        cdef int64_t mono
        cdef uint32_t ts
        for j in range(count):
            b = self.bufs + j * SLOT
            mono = clock_ns(CLOCK_MONOTONIC)
            ts = <uint32_t>((mono - self.t_base) * 9 // 100000)   # 90 kHz
            b[0] = 0x80
            b[1] = self.payload_type & 0x7F
            store16(b + 2, p.seq)
            store32(b + 4, ts)
            store32(b + 8, p.ssrc)
            memcpy(b + HEADER, self.filler, self.payload_size + self.pad)
            store32(b + HEADER, MAGIC)
            store32(b + HEADER + 4, <uint32_t>(p - self.peers))
            store64(b + HEADER + 8, p.count)
            store64(b + HEADER + 16, <uint64_t>mono)
            store64(b + HEADER + 24, <uint64_t>clock_ns(CLOCK_REALTIME))
            store32(b + HEADER + 32, run_id)
            m = HEADER + self.payload_size
            if p.ctx != NULL:
                m = srtp_protect(p.ctx, b, m, SLOT)
                if m < 0:
                    errors[0] += 1
                    m = 0
            else:
                m += self.pad
            self.iov[j].iov_len = m
            self.msgs[j].msg_hdr.msg_name = &p.dst
            self.msgs[j].msg_hdr.msg_namelen = p.dstlen
            p.seq += 1
            p.count += 1
        if self.framed:
            return self._send_framed(p, count, errors)
        while done < count:
            r = sendmmsg(p.fd, &self.msgs[done], count - done, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                errors[1] += count - done     # socket buffer full: lost at the sender
                break
            done += r
        return done

    cdef int _send_framed(self, TxPeer* p, int count, uint64_t* errors) noexcept nogil:
        cdef int j, pos = 0, length
        cdef ssize_t r, done = 0
        for j in range(count):
            length = <int>self.iov[j].iov_len
            store16(self.fbuf + pos, <uint16_t>length)
            memcpy(self.fbuf + pos + 2, self.bufs + j * SLOT, length)
            pos += 2 + length
        while done < pos:
            r = send(p.fd, self.fbuf + done, pos - done, MSG_NOSIGNAL)
            if r < 0:
                if errno == EINTR:
                    continue
                errors[1] += count     # the connection failed: the burst is lost
                return 0
            done += r
        return count

    def run(self, uint32_t run_id, double rate, long long total, double tick=0.001,
            double max_seconds=0.0):
        """Send `total` packets at `rate` packets/s in all, round robin over the
        senders, in bursts every `tick` seconds; stop early after `max_seconds`
        (default: twice the planned time plus 2 s) if the machine cannot keep up.

        Returns:
            dict: sent, elapsed (s), protect_errors, send_errors, max_lag (s: how
            far behind schedule the sender fell), wakeups.
        """
        cdef int64_t t0, now, due, sent = 0, limit, tick_ns, next_wake, lag, max_lag = 0
        cdef int64_t per_wake_cap, burst, g, stop_at, next_signal_check
        cdef int interrupted = 0
        cdef uint64_t errors[2]
        cdef uint64_t wakeups = 0
        cdef int i, k, c, first
        cdef int* counts = <int*>calloc(self.n, sizeof(int))
        cdef timespec ts
        cdef double period_ns
        if counts == NULL:
            raise MemoryError()
        if rate <= 0 or total < 0:
            raise ValueError("rate must be positive and total not negative")
        errors[0] = errors[1] = 0
        tick_ns = <int64_t>(tick * 1e9)
        if tick_ns < 10000:
            tick_ns = 10000
        period_ns = 1e9 / rate
        if max_seconds <= 0:
            max_seconds = 2.0 * total / rate + 2.0
        per_wake_cap = <int64_t>self.n * BATCH
        with nogil:
            t0 = clock_ns(CLOCK_MONOTONIC)
            stop_at = t0 + <int64_t>(max_seconds * 1e9)
            next_wake = t0
            next_signal_check = t0
            while sent < total:
                now = clock_ns(CLOCK_MONOTONIC)
                if now >= stop_at:
                    break
                if now >= next_signal_check:
                    next_signal_check = now + 50000000
                    with gil:
                        interrupted = PyErr_CheckSignals()
                    if interrupted:
                        break
                wakeups += 1
                due = <int64_t>((now - t0) / period_ns) + 1
                if due > total:
                    due = total
                lag = now - (t0 + <int64_t>(sent * period_ns))
                if due > sent and lag > max_lag:
                    max_lag = lag
                burst = due - sent
                if burst > per_wake_cap:
                    burst = per_wake_cap
                if burst > 0:
                    # packet g of the run goes to sender g % n
                    for i in range(self.n):
                        counts[i] = <int>(burst // self.n)
                    first = <int>(sent % self.n)
                    for k in range(<int>(burst % self.n)):
                        counts[(first + k) % self.n] += 1
                    for k in range(self.n):
                        i = (first + k) % self.n
                        c = counts[i]
                        while c > 0:
                            self._send(&self.peers[i], c if c < BATCH else BATCH, run_id, errors)
                            c -= BATCH
                    sent += burst
                    if sent < due:
                        continue        # behind schedule: no sleep
                next_wake += tick_ns
                if next_wake < now:
                    next_wake = now + tick_ns
                ts.tv_sec = next_wake // 1000000000
                ts.tv_nsec = next_wake % 1000000000
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)
            now = clock_ns(CLOCK_MONOTONIC)
        free(counts)
        if interrupted:
            _pending()
        return {
            "sent": sent,
            "elapsed": (now - t0) / 1e9,
            "protect_errors": errors[0],
            "send_errors": errors[1],
            "max_lag": max_lag / 1e9,
            "wakeups": wakeups,
        }


ctypedef struct RxPeer:
    int fd
    SrtpContext* ctx
    uint8_t* seen            # bitmap of payload sequence numbers, this run
    int64_t seen_bits
    int64_t base             # payload sequence number of bit 0 (the first of the run)
    int has_base
    int kept                 # raw datagrams kept this run (samples)


cdef class Receiver:
    """N receivers: receiver i expects sender i's packets (its pair in the SFU).

    Args:
        fds: the receivers' UDP sockets (bound, nonblocking).
        profile: SRTP profile id, or 0 for plain RTP.
        keys: (master key, master salt) per receiver, to unprotect what it gets.
        samples: how many raw datagrams to keep per receiver per run, for an
            independent check (loadgen.py runs them through libsrtp).
        framed: the sockets are ICE-TCP connections (RFC 4571): read as streams
            and split into frames (no kernel timestamp per packet: only the
            receive loop's latency is measured).
    """
    cdef int n
    cdef int framed
    cdef uint8_t* sbuf
    cdef int* shave
    cdef RxPeer* peers
    cdef pollfd* pfds
    cdef uint8_t* bufs
    cdef uint8_t* cbufs
    cdef mmsghdr msgs[BATCH]
    cdef iovec iov[BATCH]
    cdef uint32_t* hist_kernel
    cdef uint32_t* hist_app
    cdef int samples
    # counters of the current run
    cdef uint64_t c_datagrams, c_rtp, c_unique, c_dup, c_auth, c_rtcp, c_stun, c_other
    cdef uint64_t c_stale, c_misrouted, c_malformed, c_no_stamp, c_over_kernel, c_over_app
    cdef uint64_t c_wakeups, c_syscalls

    def __cinit__(self, list fds, int profile=0, list keys=None, int samples=0, int framed=0):
        cdef int i, on = 1
        self.n = len(fds)
        if self.n < 1:
            raise ValueError("no receivers")
        self.framed = framed
        if framed:
            self.sbuf = <uint8_t*>calloc(self.n, STREAM_BUF)
            self.shave = <int*>calloc(self.n, sizeof(int))
            if self.sbuf == NULL or self.shave == NULL:
                raise MemoryError()
        self.samples = samples
        self.peers = <RxPeer*>calloc(self.n, sizeof(RxPeer))
        self.pfds = <pollfd*>calloc(self.n + 1, sizeof(pollfd))
        self.bufs = <uint8_t*>calloc(BATCH, SLOT)
        self.cbufs = <uint8_t*>calloc(BATCH, CMSG_SLOT)
        self.hist_kernel = <uint32_t*>calloc(HIST_BUCKETS, sizeof(uint32_t))
        self.hist_app = <uint32_t*>calloc(HIST_BUCKETS, sizeof(uint32_t))
        if not (self.peers and self.pfds and self.bufs and self.cbufs and self.hist_kernel
                and self.hist_app):
            raise MemoryError()
        for i in range(self.n):
            self.peers[i].fd = fds[i]
            if profile:
                self.peers[i].ctx = new_context(profile, keys[i])
            # kernel receive timestamps: latency without the receiver's own wake-up delay
            if setsockopt(fds[i], SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0:
                raise OSError(errno, "setsockopt(SO_TIMESTAMPNS)")
            self.pfds[i].fd = fds[i]
            self.pfds[i].events = POLLIN
        memset(self.msgs, 0, sizeof(self.msgs))
        for i in range(BATCH):
            self.iov[i].iov_base = self.bufs + i * SLOT
            self.iov[i].iov_len = SLOT
            self.msgs[i].msg_hdr.msg_iov = &self.iov[i]
            self.msgs[i].msg_hdr.msg_iovlen = 1

    def __dealloc__(self):
        cdef int i
        if self.peers != NULL:
            for i in range(self.n):
                if self.peers[i].ctx != NULL:
                    srtp_context_free(self.peers[i].ctx)
                free(self.peers[i].seen)
            free(self.peers)
        free(self.pfds)
        free(self.bufs)
        free(self.sbuf)
        free(self.shave)
        free(self.cbufs)
        free(self.hist_kernel)
        free(self.hist_app)

    cdef void _datagram(self, int index, uint8_t* b, int length, msghdr* hdr, int64_t app_ns,
                        uint32_t run_id) noexcept nogil:
        cdef RxPeer* p = &self.peers[index]
        cdef cmsghdr* c
        cdef timespec* kts
        cdef int64_t kernel_ns = -1, lat, bit
        cdef int pos, m
        cdef uint64_t seq
        cdef const uint8_t* s
        self.c_datagrams += 1
        if length < 1:
            self.c_other += 1
            return
        if b[0] < 4:
            self.c_stun += 1           # consent responses
            return
        if not 128 <= b[0] <= 191:
            self.c_other += 1          # DTLS (a retransmitted flight), garbage
            return
        if length >= 2 and 192 <= b[1] <= 223:
            self.c_rtcp += 1           # the SFU's SR/RR/PLI (RFC 5761 4)
            return
        c = CMSG_FIRSTHDR(hdr)
        while c != NULL:
            if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
                kts = <timespec*>CMSG_DATA(c)
                kernel_ns = <int64_t>kts.tv_sec * 1000000000 + kts.tv_nsec
            c = CMSG_NXTHDR(hdr, c)
        m = length
        if p.ctx != NULL:
            m = srtp_unprotect(p.ctx, b, length)
            if m < 0:
                self.c_auth += 1
                return
        if m < HEADER or (b[0] >> 6) != 2:
            self.c_malformed += 1
            return
        pos = HEADER + 4 * (b[0] & 0x0F)
        if b[0] & 0x10:
            if pos + 4 > m:
                self.c_malformed += 1
                return
            pos += 4 + 4 * ((b[pos + 2] << 8) | b[pos + 3])
        if pos + STAMP > m:
            self.c_malformed += 1
            return
        s = b + pos
        if load32(s) != MAGIC:
            self.c_malformed += 1
            return
        if load32(s + 32) != run_id:
            self.c_stale += 1          # a late packet of an earlier run
            return
        self.c_rtp += 1
        if load32(s + 4) != <uint32_t>index:
            self.c_misrouted += 1      # another sender's packet reached this receiver
            return
        seq = load64(s + 8)
        if not p.has_base:
            # room below the first arrival, in case the next ones arrive out of order
            p.has_base = 1
            p.base = <int64_t>seq - REORDER if seq > REORDER else 0
        bit = <int64_t>seq - p.base
        if bit < 0 or bit >= p.seen_bits:
            self.c_malformed += 1
            return
        if p.seen[bit >> 3] & (1 << (bit & 7)):
            self.c_dup += 1
            return
        p.seen[bit >> 3] |= <uint8_t>(1 << (bit & 7))
        self.c_unique += 1
        if kernel_ns >= 0:
            lat = (kernel_ns - <int64_t>load64(s + 24)) // 1000
            if lat < 0:
                lat = 0
            if lat < HIST_BUCKETS:
                self.hist_kernel[lat] += 1
            else:
                self.c_over_kernel += 1
        else:
            self.c_no_stamp += 1
        lat = (app_ns - <int64_t>load64(s + 16)) // 1000
        if lat < 0:
            lat = 0
        if lat < HIST_BUCKETS:
            self.hist_app[lat] += 1
        else:
            self.c_over_app += 1

    cdef void _read_frames(self, int i, uint32_t run_id) noexcept nogil:
        # what the connection holds, split into RFC 4571 frames; a partial frame
        # waits at the front of the peer's buffer for the next read
        cdef uint8_t* buf = self.sbuf + <size_t>i * STREAM_BUF
        cdef ssize_t r
        cdef int pos, length
        cdef int64_t app_ns
        cdef msghdr none
        memset(&none, 0, sizeof(none))   # no control data: no kernel timestamp
        while True:
            r = recv(self.peers[i].fd, buf + self.shave[i], STREAM_BUF - self.shave[i],
                     MSG_DONTWAIT)
            self.c_syscalls += 1
            if r <= 0:
                return
            self.shave[i] += <int>r
            app_ns = clock_ns(CLOCK_MONOTONIC)
            pos = 0
            while self.shave[i] - pos >= 2:
                length = load16(buf + pos)
                if self.shave[i] - pos < 2 + length:
                    break
                self._datagram(i, buf + pos + 2, length, &none, app_ns, run_id)
                pos += 2 + length
            memmove(buf, buf + pos, self.shave[i] - pos)
            self.shave[i] -= pos

    def run(self, uint32_t run_id, long long per_receiver, int ctrl_fd, double max_seconds):
        """Receive until told to stop (see below) or `max_seconds` pass.

        `ctrl_fd` is the read end of a pipe: 16 bytes written to it, two native
        int64 (expected unique packets in all, deadline in CLOCK_MONOTONIC ns),
        make the loop stop once that many packets of this run arrived or at the
        deadline. `per_receiver` bounds the sequence numbers one receiver tracks.

        Returns:
            dict of counters, and the two latency histograms (1 us buckets) as
            bytes of native uint32: kernel receive timestamp minus send time
            (CLOCK_REALTIME), and receive-loop time minus send time
            (CLOCK_MONOTONIC).
        """
        cdef int i, j, n, r
        cdef int64_t expected = -1, deadline, now, msg[2]
        cdef int64_t app_ns
        cdef uint64_t got
        cdef int keep
        cdef list kept = [[] for _ in range(self.n)]
        cdef uint8_t* b
        self.c_datagrams = self.c_rtp = self.c_unique = self.c_dup = self.c_auth = 0
        self.c_rtcp = self.c_stun = self.c_other = self.c_stale = self.c_misrouted = 0
        self.c_malformed = self.c_no_stamp = self.c_over_kernel = self.c_over_app = 0
        self.c_wakeups = self.c_syscalls = 0
        memset(self.hist_kernel, 0, HIST_BUCKETS * sizeof(uint32_t))
        memset(self.hist_app, 0, HIST_BUCKETS * sizeof(uint32_t))
        for i in range(self.n):
            free(self.peers[i].seen)
            self.peers[i].seen_bits = per_receiver + 2 * REORDER
            self.peers[i].seen = <uint8_t*>calloc(<size_t>(self.peers[i].seen_bits // 8 + 1), 1)
            self.peers[i].has_base = 0
            self.peers[i].kept = 0
            if self.peers[i].seen == NULL:
                raise MemoryError()
        self.pfds[self.n].fd = ctrl_fd
        self.pfds[self.n].events = POLLIN
        with nogil:
            deadline = clock_ns(CLOCK_MONOTONIC) + <int64_t>(max_seconds * 1e9)
            while True:
                now = clock_ns(CLOCK_MONOTONIC)
                if now >= deadline or (expected >= 0 and <int64_t>self.c_unique >= expected):
                    break
                r = poll(self.pfds, self.n + 1, 20)
                self.c_wakeups += 1
                if r <= 0:
                    continue
                if self.pfds[self.n].revents:
                    if read(ctrl_fd, msg, 16) == 16:
                        expected = msg[0]
                        deadline = msg[1]
                    else:
                        deadline = 0       # the writer closed: stop
                for i in range(self.n):
                    if not self.pfds[i].revents:
                        continue
                    if self.framed:
                        self._read_frames(i, run_id)
                        continue
                    while True:
                        for j in range(BATCH):
                            self.msgs[j].msg_hdr.msg_control = self.cbufs + j * CMSG_SLOT
                            self.msgs[j].msg_hdr.msg_controllen = CMSG_SLOT
                            self.msgs[j].msg_hdr.msg_flags = 0
                        n = recvmmsg(self.peers[i].fd, self.msgs, BATCH, MSG_DONTWAIT, NULL)
                        self.c_syscalls += 1
                        if n <= 0:
                            break
                        app_ns = clock_ns(CLOCK_MONOTONIC)
                        for j in range(n):
                            b = self.bufs + j * SLOT
                            if (self.peers[i].kept < self.samples and self.msgs[j].msg_len > 12
                                    and 128 <= b[0] <= 191 and not 192 <= b[1] <= 223):
                                self.peers[i].kept += 1
                                with gil:   # a few per run: keep the raw SRTP for libsrtp
                                    kept[i].append(PyBytes_FromStringAndSize(
                                        <char*>b, self.msgs[j].msg_len))
                            self._datagram(i, self.bufs + j * SLOT, self.msgs[j].msg_len,
                                           &self.msgs[j].msg_hdr, app_ns, run_id)
                        if n < BATCH:
                            break
        return {
            "datagrams": self.c_datagrams,
            "rtp": self.c_rtp,
            "unique": self.c_unique,
            "duplicates": self.c_dup,
            "srtp_auth_failures": self.c_auth,
            "rtcp": self.c_rtcp,
            "stun": self.c_stun,
            "other": self.c_other,
            "stale": self.c_stale,
            "misrouted": self.c_misrouted,
            "malformed": self.c_malformed,
            "no_kernel_timestamp": self.c_no_stamp,
            "latency_over_range_kernel": self.c_over_kernel,
            "latency_over_range_app": self.c_over_app,
            "wakeups": self.c_wakeups,
            "recv_calls": self.c_syscalls,
            "hist_kernel": PyBytes_FromStringAndSize(<char*>self.hist_kernel,
                                                     HIST_BUCKETS * sizeof(uint32_t)),
            "hist_app": PyBytes_FromStringAndSize(<char*>self.hist_app,
                                                  HIST_BUCKETS * sizeof(uint32_t)),
            "samples": kept,
        }


# ---- visitors: frame-paced audio + video, both directions, dynamic pairing --------------
#
# Used by benchmarks/loadgen.py (the end-to-end load generator). Every visitor sends
# audio (one packet every 20 ms) and video (frames at `fps`, each split into packets
# of at most `max_packet` payload bytes, marker on the last, a keyframe-sized frame
# after a PLI/FIR from the server) and receives its partner's, whoever that is now.
#
# Payload of every RTP packet, after the 12-byte header (big endian):
#
#     0  magic "MSBV"   4  sender visitor index   8  pair generation (0: not matched)
#     12 kind (0 video, 1 audio)   16 sequence (64 bits)   24 send time CLOCK_MONOTONIC ns
#     32 send time CLOCK_REALTIME ns   40 filler

cdef enum:
    VMAGIC = 0x4D534256     # "MSBV"
    VSTAMP = 40
    GEN_SLOTS = 8

ctypedef struct Vis:
    int fd
    int active
    sockaddr_in6 dst        # or a sockaddr_in in its first bytes (dstlen says which)
    socklen_t dstlen
    SrtpContext* tx
    SrtpContext* rx
    SrtpContext* rxc
    uint32_t assrc
    uint32_t vssrc
    uint16_t aseq
    uint16_t vseq
    uint32_t gen
    int keyframe
    int64_t next_audio
    int64_t next_video
    uint64_t count
    uint64_t sent_pkts
    uint64_t sent_bytes
    uint64_t send_errors
    uint64_t keyframes
    uint64_t plis
    uint64_t sent_gen[GEN_SLOTS]
    uint64_t recv_gen[GEN_SLOTS]    # packets FROM this visitor that a partner received
    int first_from
    int64_t first_ns
    int jfrom[2]
    int64_t jlast[2]
    double jitter[2]


cdef class Visitors:
    """N visitors' media, sent from one thread (run_sender) and received in another
    (run_receiver), both without the GIL. Python sets keys, activity and the pair
    generation of each visitor while the loops run (plain int fields)."""
    cdef int n
    cdef Vis* v
    cdef pollfd* pfds
    cdef uint8_t* tbufs
    cdef uint8_t* rbufs
    cdef uint8_t* cbufs
    cdef uint8_t* filler
    cdef mmsghdr tmsgs[BATCH]
    cdef iovec tiov[BATCH]
    cdef mmsghdr rmsgs[BATCH]
    cdef iovec riov[BATCH]
    cdef uint32_t* hist
    cdef uint32_t* hist_recent
    cdef int64_t t_base
    cdef int64_t frame_ns
    cdef int frame_bytes, key_bytes, audio_bytes, max_packet
    cdef volatile int stop_tx, stop_rx
    cdef uint64_t r_datagrams, r_rtp, r_bytes, r_rtcp, r_stun, r_other, r_auth, r_malformed
    cdef uint64_t r_unmatched, r_over, r_wakeups, t_wakeups, r_plis

    def __cinit__(self, int n, double fps=30.0, double video_kbps=1000.0,
                  double keyframe_factor=6.0, int audio_bytes=100, int max_packet=1200):
        cdef int i
        if n < 1:
            raise ValueError("no visitors")
        self.n = n
        self.v = <Vis*>calloc(n, sizeof(Vis))
        self.pfds = <pollfd*>calloc(n, sizeof(pollfd))
        self.tbufs = <uint8_t*>calloc(BATCH, SLOT)
        self.rbufs = <uint8_t*>calloc(BATCH, SLOT)
        self.cbufs = <uint8_t*>calloc(BATCH, CMSG_SLOT)
        self.filler = <uint8_t*>calloc(SLOT, 1)
        self.hist = <uint32_t*>calloc(HIST_BUCKETS, sizeof(uint32_t))
        self.hist_recent = <uint32_t*>calloc(HIST_BUCKETS, sizeof(uint32_t))
        if not (self.v and self.pfds and self.tbufs and self.rbufs and self.cbufs
                and self.filler and self.hist and self.hist_recent):
            raise MemoryError()
        for i in range(SLOT):
            self.filler[i] = <uint8_t>(i * 7 + 3)
        if not VSTAMP <= max_packet <= SLOT - HEADER - 64:
            raise ValueError("max_packet out of range")
        self.max_packet = max_packet
        self.frame_ns = <int64_t>(1e9 / fps) if fps > 0 else 0
        self.frame_bytes = <int>(video_kbps * 1000.0 / 8.0 / fps) if fps > 0 else 0
        if self.frame_bytes < VSTAMP:
            self.frame_bytes = VSTAMP
        self.key_bytes = <int>(self.frame_bytes * keyframe_factor)
        self.audio_bytes = audio_bytes if audio_bytes >= VSTAMP else VSTAMP
        for i in range(n):
            self.v[i].fd = -1
            self.pfds[i].fd = -1            # poll() skips it until setup()
            self.v[i].first_from = -1
            self.v[i].jfrom[0] = self.v[i].jfrom[1] = -1
        for i in range(BATCH):
            self.tiov[i].iov_base = self.tbufs + i * SLOT
            self.tmsgs[i].msg_hdr.msg_iov = &self.tiov[i]
            self.tmsgs[i].msg_hdr.msg_iovlen = 1
            self.riov[i].iov_base = self.rbufs + i * SLOT
            self.riov[i].iov_len = SLOT
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
        self.t_base = clock_ns(CLOCK_MONOTONIC)

    def __dealloc__(self):
        cdef int i
        if self.v != NULL:
            for i in range(self.n):
                if self.v[i].tx != NULL:
                    srtp_context_free(self.v[i].tx)
                if self.v[i].rx != NULL:
                    srtp_context_free(self.v[i].rx)
                if self.v[i].rxc != NULL:
                    srtp_context_free(self.v[i].rxc)
            free(self.v)
        free(self.pfds)
        free(self.tbufs)
        free(self.rbufs)
        free(self.cbufs)
        free(self.filler)
        free(self.hist)
        free(self.hist_recent)

    @property
    def size(self):
        return self.n

    def setup(self, int i, int fd, str host, int port, uint32_t audio_ssrc, uint32_t video_ssrc):
        """Visitor i's socket, the server's address and its SSRCs (before keys)."""
        cdef int on = 1
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.v[i].fd = fd
        self.v[i].dstlen = fill_addr(&self.v[i].dst, host, port)
        self.v[i].assrc = audio_ssrc
        self.v[i].vssrc = video_ssrc
        self.v[i].aseq = (audio_ssrc * 2654435761) & 0xFFFF
        self.v[i].vseq = (video_ssrc * 2654435761) & 0xFFFF
        if setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0:
            raise OSError(errno, "setsockopt(SO_TIMESTAMPNS)")
        self.pfds[i].fd = fd
        self.pfds[i].events = POLLIN

    def set_keys(self, int i, int profile, bytes tx_key, bytes tx_salt, bytes rx_key,
                 bytes rx_salt):
        """SRTP keys (call once, before activate)."""
        if self.v[i].tx != NULL:
            raise ValueError("keys already set")
        self.v[i].rxc = new_context(profile, (rx_key, rx_salt))
        self.v[i].rx = new_context(profile, (rx_key, rx_salt))
        self.v[i].tx = new_context(profile, (tx_key, tx_salt))

    def activate(self, int i, bint on, double phase=0.0):
        """Start (stop) sending; the first audio packet and video frame go out after
        `phase` seconds (spread the visitors' frames over time)."""
        cdef int64_t now = clock_ns(CLOCK_MONOTONIC)
        if on and self.v[i].tx == NULL:
            raise ValueError("no keys")
        if on and not self.v[i].active:
            self.v[i].next_audio = now + <int64_t>(phase * 20000000)
            self.v[i].next_video = now + <int64_t>(phase * self.frame_ns)
            self.v[i].keyframe = 1
        self.v[i].active = 1 if on else 0

    def set_gen(self, int i, uint32_t gen):
        self.v[i].gen = gen

    def take_slot(self, int i, uint32_t gen):
        """(packets sent by visitor i with pair generation `gen`, of those how many
        its partner received), and clear the slot for reuse."""
        cdef int s = gen % GEN_SLOTS
        cdef uint64_t sent = self.v[i].sent_gen[s], got = self.v[i].recv_gen[s]
        self.v[i].sent_gen[s] = 0
        self.v[i].recv_gen[s] = 0
        return sent, got

    def reset_first(self, int i):
        self.v[i].first_from = -1
        self.v[i].first_ns = 0

    def first(self, int i):
        """(index of the visitor whose packet visitor i got first since
        reset_first, its arrival CLOCK_MONOTONIC ns)."""
        return self.v[i].first_from, self.v[i].first_ns

    def jitter(self, int i):
        """RFC 3550 interarrival jitter (ns) of the audio and video visitor i receives."""
        return self.v[i].jitter[1], self.v[i].jitter[0]

    def visitor(self, int i):
        return {"sent": self.v[i].sent_pkts, "keyframes": self.v[i].keyframes,
                "plis": self.v[i].plis}

    def counters(self):
        cdef int i
        cdef uint64_t sent = 0, sent_bytes = 0, errors = 0, keyframes = 0
        for i in range(self.n):
            sent += self.v[i].sent_pkts
            sent_bytes += self.v[i].sent_bytes
            errors += self.v[i].send_errors
            keyframes += self.v[i].keyframes
        return {
            "sent": sent, "sent_bytes": sent_bytes, "send_errors": errors,
            "keyframes_sent": keyframes, "plis_received": self.r_plis,
            "datagrams": self.r_datagrams, "received": self.r_rtp, "received_bytes": self.r_bytes,
            "rtcp": self.r_rtcp, "stun": self.r_stun, "other": self.r_other,
            "srtp_auth_failures": self.r_auth, "malformed": self.r_malformed,
            "latency_over_range": self.r_over, "rx_wakeups": self.r_wakeups,
            "tx_wakeups": self.t_wakeups,
        }

    def histogram(self, bint recent=False):
        """Latency histogram (1 us buckets, native uint32): kernel receive time minus
        send time. recent=True: since the last such call (then cleared)."""
        cdef uint32_t* h = self.hist_recent if recent else self.hist
        data = PyBytes_FromStringAndSize(<char*>h, HIST_BUCKETS * sizeof(uint32_t))
        if recent:
            memset(self.hist_recent, 0, HIST_BUCKETS * sizeof(uint32_t))
        return data

    def stop(self):
        self.stop_tx = 1
        self.stop_rx = 1

    # ---- sending ----------------------------------------------------------------

    cdef int _build(self, Vis* p, int j, int kind, int size, int marker, uint32_t ts,
                    uint32_t gen) noexcept nogil:
        cdef uint8_t* b = self.tbufs + j * SLOT
        cdef int m
        b[0] = 0x80
        if kind:
            b[1] = AUDIO_PT_C
            store16(b + 2, p.aseq)
            p.aseq += 1
            store32(b + 8, p.assrc)
        else:
            b[1] = VIDEO_PT_C | (0x80 if marker else 0)
            store16(b + 2, p.vseq)
            p.vseq += 1
            store32(b + 8, p.vssrc)
        store32(b + 4, ts)
        memcpy(b + HEADER, self.filler, size)
        store32(b + HEADER, VMAGIC)
        store32(b + HEADER + 4, <uint32_t>(p - self.v))
        store32(b + HEADER + 8, gen)
        store32(b + HEADER + 12, <uint32_t>kind)
        store64(b + HEADER + 16, p.count)
        store64(b + HEADER + 24, <uint64_t>clock_ns(CLOCK_MONOTONIC))
        store64(b + HEADER + 32, <uint64_t>clock_ns(CLOCK_REALTIME))
        p.count += 1
        m = srtp_protect(p.tx, b, HEADER + size, SLOT)
        if m < 0:
            m = 0
        self.tiov[j].iov_len = m
        self.tmsgs[j].msg_hdr.msg_name = &p.dst
        self.tmsgs[j].msg_hdr.msg_namelen = p.dstlen
        return m

    cdef void _flush(self, Vis* p, int count, uint32_t gen) noexcept nogil:
        cdef int done = 0, r, j
        while done < count:
            r = sendmmsg(p.fd, &self.tmsgs[done], count - done, MSG_DONTWAIT)
            if r < 0:
                if errno == EINTR:
                    continue
                p.send_errors += count - done
                break
            done += r
        for j in range(done):
            p.sent_bytes += self.tiov[j].iov_len
        p.sent_pkts += done
        if gen:
            p.sent_gen[gen % GEN_SLOTS] += done

    def run_sender(self, double tick=0.002, double max_seconds=3600.0):
        """Send every active visitor's audio and video on schedule until stop()
        (or max_seconds). Returns the number of packets sent."""
        cdef int64_t now, t0, wake, tick_ns = <int64_t>(tick * 1e9), stop_at
        cdef int64_t late = 200000000     # more than 200 ms behind: skip, don't burst
        cdef int i, cnt, k, npk, size, rem, kind
        cdef uint32_t gen, ts
        cdef Vis* p
        cdef timespec tsp
        cdef uint64_t total = 0
        self.stop_tx = 0
        with nogil:
            t0 = clock_ns(CLOCK_MONOTONIC)
            stop_at = t0 + <int64_t>(max_seconds * 1e9)
            wake = t0
            while not self.stop_tx:
                now = clock_ns(CLOCK_MONOTONIC)
                if now >= stop_at:
                    break
                self.t_wakeups += 1
                for i in range(self.n):
                    p = &self.v[i]
                    if not p.active:
                        continue
                    gen = p.gen
                    cnt = 0
                    if now - p.next_audio > late:
                        p.next_audio = now
                    if now - p.next_video > late:
                        p.next_video = now
                    while p.next_audio <= now:
                        ts = <uint32_t>((p.next_audio - self.t_base) * 48 // 1000000)
                        self._build(p, cnt, 1, self.audio_bytes, 0, ts, gen)
                        cnt += 1
                        p.next_audio += 20000000
                        if cnt == BATCH:
                            self._flush(p, cnt, gen)
                            cnt = 0
                    while self.frame_ns and p.next_video <= now:
                        ts = <uint32_t>((p.next_video - self.t_base) * 9 // 100000)
                        size = self.frame_bytes
                        if p.keyframe:
                            p.keyframe = 0
                            p.keyframes += 1
                            size = self.key_bytes
                        npk = (size + self.max_packet - 1) // self.max_packet
                        rem = size
                        for k in range(npk):
                            kind = rem // (npk - k)        # even split
                            if kind < VSTAMP:
                                kind = VSTAMP
                            rem -= kind
                            self._build(p, cnt, 0, kind, k == npk - 1, ts, gen)
                            cnt += 1
                            if cnt == BATCH:
                                self._flush(p, cnt, gen)
                                cnt = 0
                        p.next_video += self.frame_ns
                    if cnt:
                        self._flush(p, cnt, gen)
                wake += tick_ns
                if wake < now:
                    wake = now + tick_ns
                tsp.tv_sec = wake // 1000000000
                tsp.tv_nsec = wake % 1000000000
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tsp, NULL)
        for i in range(self.n):
            total += self.v[i].sent_pkts
        return total

    # ---- receiving --------------------------------------------------------------

    cdef void _rtcp(self, Vis* p, uint8_t* b, int length) noexcept nogil:
        cdef int m, off = 0, plen
        self.r_rtcp += 1
        if p.rxc == NULL:
            return
        m = srtcp_unprotect(p.rxc, b, length)
        if m < 0:
            self.r_auth += 1
            return
        while off + 4 <= m:
            plen = (((b[off + 2] << 8) | b[off + 3]) + 1) * 4
            if b[off + 1] == 206 and ((b[off] & 0x1F) == 1 or (b[off] & 0x1F) == 4):
                p.keyframe = 1          # PLI or FIR: the next frame is a keyframe
                p.plis += 1
                self.r_plis += 1
            off += plen

    cdef void _datagram(self, int index, uint8_t* b, int length, msghdr* hdr,
                        int64_t app_ns) noexcept nogil:
        cdef Vis* p = &self.v[index]
        cdef Vis* src
        cdef cmsghdr* c
        cdef timespec* kts
        cdef int64_t kernel_ns = -1, lat, transit, d, sent_rt
        cdef int pos, m, kind
        cdef uint32_t sender, gen
        cdef const uint8_t* s
        self.r_datagrams += 1
        if length < 1:
            self.r_other += 1
            return
        if b[0] < 4:
            self.r_stun += 1
            return
        if not 128 <= b[0] <= 191:
            self.r_other += 1
            return
        if length >= 2 and 192 <= b[1] <= 223:
            self._rtcp(p, b, length)
            return
        if p.rx == NULL:
            self.r_other += 1
            return
        c = CMSG_FIRSTHDR(hdr)
        while c != NULL:
            if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
                kts = <timespec*>CMSG_DATA(c)
                kernel_ns = <int64_t>kts.tv_sec * 1000000000 + kts.tv_nsec
            c = CMSG_NXTHDR(hdr, c)
        m = srtp_unprotect(p.rx, b, length)
        if m < 0:
            self.r_auth += 1
            return
        if m < HEADER:
            self.r_malformed += 1
            return
        pos = HEADER + 4 * (b[0] & 0x0F)
        if b[0] & 0x10:
            if pos + 4 > m:
                self.r_malformed += 1
                return
            pos += 4 + 4 * ((b[pos + 2] << 8) | b[pos + 3])
        if pos + VSTAMP > m:
            self.r_malformed += 1
            return
        s = b + pos
        if load32(s) != VMAGIC:
            self.r_malformed += 1
            return
        sender = load32(s + 4)
        if sender >= <uint32_t>self.n:
            self.r_malformed += 1
            return
        gen = load32(s + 8)
        kind = load32(s + 12) & 1
        self.r_rtp += 1
        self.r_bytes += length
        src = &self.v[sender]
        if gen:
            src.recv_gen[gen % GEN_SLOTS] += 1
        else:
            self.r_unmatched += 1
        if p.first_from != <int>sender:
            p.first_from = <int>sender
            p.first_ns = app_ns
        sent_rt = <int64_t>load64(s + 32)
        if kernel_ns < 0:
            kernel_ns = app_ns - <int64_t>load64(s + 24) + sent_rt
        transit = kernel_ns - sent_rt
        # RFC 3550 6.4.1 / A.8: J += (|D| - J) / 16, per stream (reset on a new sender)
        if p.jfrom[kind] == <int>sender:
            d = transit - p.jlast[kind]
            if d < 0:
                d = -d
            p.jitter[kind] += (d - p.jitter[kind]) / 16.0
        else:
            p.jfrom[kind] = <int>sender
            p.jitter[kind] = 0
        p.jlast[kind] = transit
        lat = transit // 1000
        if lat < 0:
            lat = 0
        if lat < HIST_BUCKETS:
            self.hist[lat] += 1
            self.hist_recent[lat] += 1
        else:
            self.r_over += 1

    def run_receiver(self, double max_seconds=3600.0):
        """Receive on every visitor's socket until stop() (or max_seconds)."""
        cdef int i, j, n, r
        cdef int64_t app_ns, deadline
        self.stop_rx = 0
        with nogil:
            deadline = clock_ns(CLOCK_MONOTONIC) + <int64_t>(max_seconds * 1e9)
            while not self.stop_rx and clock_ns(CLOCK_MONOTONIC) < deadline:
                r = poll(self.pfds, self.n, 20)
                self.r_wakeups += 1
                if r <= 0:
                    continue
                for i in range(self.n):
                    if not self.pfds[i].revents:
                        continue
                    while True:
                        for j in range(BATCH):
                            self.rmsgs[j].msg_hdr.msg_control = self.cbufs + j * CMSG_SLOT
                            self.rmsgs[j].msg_hdr.msg_controllen = CMSG_SLOT
                            self.rmsgs[j].msg_hdr.msg_flags = 0
                        n = recvmmsg(self.v[i].fd, self.rmsgs, BATCH, MSG_DONTWAIT, NULL)
                        if n <= 0:
                            break
                        app_ns = clock_ns(CLOCK_MONOTONIC)
                        for j in range(n):
                            self._datagram(i, self.rbufs + j * SLOT, self.rmsgs[j].msg_len,
                                           &self.rmsgs[j].msg_hdr, app_ns)
                        if n < BATCH:
                            break
        return self.r_rtp
