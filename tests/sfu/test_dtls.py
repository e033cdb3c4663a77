import datetime
import re
import time
from collections.abc import Callable, Sequence

import pylibsrtp
import pytest
from aiortc.rtp import RtcpRrPacket, RtpPacket
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.sfu.dtls import (
    DEFAULT_PROFILES,
    DTLS_MTU,
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES128_CM_HMAC_SHA1_32,
    SRTP_AES128_CM_HMAC_SHA1_80,
    DtlsCertificate,
    DtlsClosed,
    DtlsConnected,
    DtlsEndpoint,
    DtlsError,
    DtlsEvent,
    DtlsFailed,
    DtlsState,
    split_records,
)

# Generating a key costs a little: one pair of identities for the whole module.
CLIENT_CERT = DtlsCertificate.generate()
SERVER_CERT = DtlsCertificate.generate()

KEY_SALT = {
    SRTP_AES128_CM_HMAC_SHA1_80: (16, 14),
    SRTP_AES128_CM_HMAC_SHA1_32: (16, 14),
    SRTP_AEAD_AES_128_GCM: (16, 12),
    SRTP_AEAD_AES_256_GCM: (32, 12),
}

Drop = Callable[[int, bytes], bool]


def make_pair(
    client_profiles: Sequence[int] = DEFAULT_PROFILES,
    server_profiles: Sequence[int] = DEFAULT_PROFILES,
    client_sees: Sequence[tuple[str, str]] | None = None,
    server_sees: Sequence[tuple[str, str]] | None = None,
    server_cert: DtlsCertificate = SERVER_CERT,
    **kw: int,
) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client = DtlsEndpoint(
        CLIENT_CERT,
        "client",
        client_sees if client_sees is not None else [server_cert.fingerprint()],
        client_profiles,
        **kw,
    )
    server = DtlsEndpoint(
        server_cert,
        "server",
        server_sees if server_sees is not None else [CLIENT_CERT.fingerprint()],
        server_profiles,
        **kw,
    )
    return client, server


class Link:
    """One direction of the wire, with a loss pattern over datagram indexes."""

    def __init__(self, drop: Drop | None = None, source: tuple[str, int] | None = None) -> None:
        self.drop = drop
        self.source = source
        "The sender's address, as the receiver is told it."
        self.sent: list[bytes] = []
        self.dropped: list[bytes] = []


def transfer(sender: DtlsEndpoint, receiver: DtlsEndpoint, now: float, link: Link) -> int:
    """Move sender's datagrams to receiver; return how many were delivered."""
    delivered = 0
    for datagram in sender.datagrams_to_send(now):
        index = len(link.sent) + len(link.dropped)
        if link.drop is not None and link.drop(index, datagram):
            link.dropped.append(datagram)
            continue
        link.sent.append(datagram)
        receiver.receive_datagram(datagram, now, link.source)
        delivered += 1
    return delivered


def run(
    client: DtlsEndpoint,
    server: DtlsEndpoint,
    now: float = 0.0,
    up: Link | None = None,
    down: Link | None = None,
    max_timers: int = 3,
) -> float:
    """Drive both ends until quiet, firing timers; return the virtual time reached.

    OpenSSL keeps its retransmission timer on the real clock (see dtls.py), so
    when a timer must fire the test also sleeps the same span of real time.
    """
    up = up or Link()
    down = down or Link()
    if client.state is DtlsState.NEW:
        client.connect(now)
    timers = 0
    while True:
        while transfer(client, server, now, up) + transfer(server, client, now, down):
            pass
        deadlines = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
        if not deadlines or timers == max_timers:
            return now
        deadline = min(deadlines)
        time.sleep(max(deadline - now, 0.0))
        now = deadline
        client.handle_timer(now)
        server.handle_timer(now)
        timers += 1


def events(endpoint: DtlsEndpoint) -> list[DtlsEvent]:
    out = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def connected(endpoint: DtlsEndpoint) -> DtlsConnected:
    [event] = events(endpoint)
    assert isinstance(event, DtlsConnected), event
    return event


# ---------------------------------------------------------------- certificate


def test_certificate_is_ecdsa_p256_self_signed() -> None:
    cert = SERVER_CERT.certificate
    assert cert.issuer == cert.subject
    assert SERVER_CERT.key.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > (
        datetime.timedelta(days=300)
    )


@pytest.mark.parametrize(
    ("algorithm", "hash_", "size"),
    [
        ("sha-256", hashes.SHA256(), 32),
        ("sha-1", hashes.SHA1(), 20),
        ("SHA-384", hashes.SHA384(), 48),
        ("sha-512", hashes.SHA512(), 64),
    ],
)
def test_fingerprint_sdp_form(algorithm: str, hash_: hashes.HashAlgorithm, size: int) -> None:
    name, value = SERVER_CERT.fingerprint(algorithm)
    assert name == algorithm.lower()
    assert re.fullmatch(r"[0-9A-F]{2}(:[0-9A-F]{2})*", value)
    assert bytes.fromhex(value.replace(":", "")) == SERVER_CERT.certificate.fingerprint(hash_)
    assert len(value.split(":")) == size


def test_fingerprint_default_is_sha256() -> None:
    assert SERVER_CERT.fingerprint()[0] == "sha-256"
    with pytest.raises(DtlsError, match="unsupported fingerprint algorithm 'md5'"):
        SERVER_CERT.fingerprint("md5")


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "auto"}, "role must be 'server' or 'client'"),
        ({"profiles": []}, "at least one SRTP profile"),
        ({"profiles": [3]}, "unknown SRTP protection profile 0x0003"),
        ({"profiles": [1, 1]}, "repeated"),
        ({"remote_fingerprints": []}, "no remote fingerprint"),
        ({"remote_fingerprints": [("md5", "00" * 16)]}, "no remote fingerprint"),
        ({"remote_fingerprints": [("sha-256", "zz")]}, "not colon-separated hex"),
        ({"remote_fingerprints": [("sha-256", "AB:CD")]}, "has 2 bytes, expected 32"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "role": "server",
        "remote_fingerprints": [CLIENT_CERT.fingerprint()],
        "profiles": DEFAULT_PROFILES,
    }
    args.update(kwargs)
    with pytest.raises(DtlsError, match=message):
        DtlsEndpoint(SERVER_CERT, **args)  # type: ignore[arg-type]


def test_connect_only_once_and_only_client() -> None:
    client, server = make_pair()
    with pytest.raises(DtlsError, match="only a client"):
        server.connect(0.0)
    client.connect(0.0)
    with pytest.raises(DtlsError, match="connecting"):
        client.connect(0.0)


# ---------------------------------------------------------------- handshake


def test_handshake_default_profiles() -> None:
    client, server = make_pair()
    assert client.get_timer() is None and server.get_timer() is None
    up, down = Link(), Link()
    run(client, server, up=up, down=down)

    c, s = connected(client), connected(server)
    assert c.profile == s.profile == SRTP_AEAD_AES_128_GCM
    # What one side protects with, the other unprotects with.
    assert (c.local_key, c.local_salt) == (s.remote_key, s.remote_salt)
    assert (c.remote_key, c.remote_salt) == (s.local_key, s.local_salt)
    assert c.local_key != c.remote_key
    assert (len(c.local_key), len(c.local_salt)) == (16, 12)
    assert client.state is server.state is DtlsState.CONNECTED
    assert client.get_timer() is None and server.get_timer() is None
    assert client.retransmissions == server.retransmissions == 0
    assert not client.drops and not server.drops
    # Two flights each way (ClientHello, server flight, client final, server final).
    assert len(up.sent) == 2 and len(down.sent) >= 2
    assert all(len(d) <= DTLS_MTU for d in up.sent + down.sent)


@pytest.mark.parametrize("profile", sorted(KEY_SALT))
def test_each_profile_alone(profile: int) -> None:
    client, server = make_pair([profile], [profile])
    run(client, server)
    c, s = connected(client), connected(server)
    assert c.profile == s.profile == profile
    key_length, salt_length = KEY_SALT[profile]
    for key, salt in ((c.local_key, c.local_salt), (c.remote_key, c.remote_salt)):
        assert (len(key), len(salt)) == (key_length, salt_length)
    assert (c.local_key, c.local_salt, c.remote_key, c.remote_salt) == (
        s.remote_key,
        s.remote_salt,
        s.local_key,
        s.local_salt,
    )


@pytest.mark.parametrize(
    ("client_profiles", "server_profiles", "chosen"),
    [
        ([1, 7], [7, 1], 7),
        ([7, 1], [1, 7], 1),
        ([2, 8, 1], DEFAULT_PROFILES, 1),
        ([8, 2], DEFAULT_PROFILES, 8),
    ],
)
def test_server_preference_wins(
    client_profiles: list[int], server_profiles: list[int], chosen: int
) -> None:
    client, server = make_pair(client_profiles, server_profiles)
    run(client, server)
    assert connected(client).profile == connected(server).profile == chosen


def test_no_common_profile_fails_both() -> None:
    client, server = make_pair([SRTP_AES128_CM_HMAC_SHA1_80], [SRTP_AEAD_AES_128_GCM])
    run(client, server)
    for endpoint in (client, server):
        [event] = events(endpoint)
        assert isinstance(event, DtlsFailed)
        assert endpoint.state is DtlsState.FAILED
    assert server.get_timer() is None and client.get_timer() is None


@pytest.mark.parametrize("algorithm", ["sha-1", "sha-384", "sha-512"])
def test_other_fingerprint_algorithms(algorithm: str) -> None:
    client, server = make_pair(
        client_sees=[SERVER_CERT.fingerprint(algorithm)],
        server_sees=[CLIENT_CERT.fingerprint(algorithm)],
    )
    run(client, server)
    assert connected(client).profile == connected(server).profile


def test_strongest_fingerprint_algorithm_is_the_one_checked() -> None:
    # RFC 8122 5: a matching sha-1 must not save a mismatching sha-256.
    wrong = ("sha-256", CLIENT_CERT.fingerprint()[1])
    client, server = make_pair(client_sees=[SERVER_CERT.fingerprint("sha-1"), wrong])
    run(client, server)
    [event] = events(client)
    assert isinstance(event, DtlsFailed) and "sha-256" in event.reason
    # Unknown algorithms are ignored; any of several values of one algorithm matches.
    client, server = make_pair(
        client_sees=[("md5", "00" * 16), wrong, SERVER_CERT.fingerprint(), ("sha-1", "00" * 20)]
    )
    run(client, server)
    assert isinstance(connected(client), DtlsConnected)


def test_wrong_server_fingerprint_fails_both() -> None:
    # The client checks the server's certificate first, and alerts it.
    client, server = make_pair(client_sees=[CLIENT_CERT.fingerprint()])
    run(client, server)
    [c] = events(client)
    [s] = events(server)
    assert isinstance(c, DtlsFailed)
    assert re.fullmatch(
        "peer certificate sha-256 fingerprint [0-9A-F:]+ matches no remote fingerprint", c.reason
    )
    assert SERVER_CERT.fingerprint()[1] in c.reason
    assert isinstance(s, DtlsFailed) and s.reason.startswith("handshake failed:")
    assert client.state is server.state is DtlsState.FAILED


def test_wrong_client_fingerprint_fails_both() -> None:
    client, server = make_pair(server_sees=[SERVER_CERT.fingerprint()])
    run(client, server)
    [s] = events(server)
    [c] = events(client)
    assert isinstance(s, DtlsFailed) and "matches no remote fingerprint" in s.reason
    assert isinstance(c, DtlsFailed) and c.reason.startswith("handshake failed:")


# ---------------------------------------------------------------- loss and timers


def test_lost_client_hello_is_retransmitted() -> None:
    client, server = make_pair()
    up = Link(drop=lambda index, _: index == 0)
    client.connect(10.0)
    timer = client.get_timer()
    assert timer is not None and 10.5 < timer <= 11.0
    # Before the deadline the timer does nothing.
    client.handle_timer(10.5)
    assert client.retransmissions == 0
    run(client, server, now=10.0, up=up)
    assert len(up.dropped) == 1
    assert client.retransmissions == 1
    # RFC 6347 4.2.4: the ClientHello again, in a record with a new sequence number.
    assert up.sent[0][0] == up.dropped[0][0] == 22
    assert up.sent[0][5:11] != up.dropped[0][5:11]
    assert connected(client).local_key == connected(server).remote_key


def test_lost_server_final_flight_is_answered_again() -> None:
    # The server is connected after the client's final flight; its own CCS+Finished
    # is lost, so the client retransmits and the connected server answers again.
    client, server = make_pair()
    down = Link(drop=lambda index, _: index == 1)
    run(client, server, down=down)
    assert len(down.dropped) == 1
    assert client.retransmissions == 1 and server.retransmissions == 0
    assert connected(client).local_key == connected(server).remote_key
    assert not server.drops


def test_gives_up_after_max_retransmissions() -> None:
    # Nobody answers; with max_retransmissions=0 the first timeout is fatal, and
    # the give-up decision runs on the caller's clock (no real sleep needed).
    client, _ = make_pair(max_retransmissions=0)
    client.connect(0.0)
    assert len(client.datagrams_to_send(0.0)) == 1
    timer = client.get_timer()
    assert timer is not None
    client.handle_timer(timer)
    [event] = events(client)
    assert event == DtlsFailed("handshake timed out after 0 retransmissions")
    assert client.get_timer() is None and client.state is DtlsState.FAILED
    client.receive_datagram(b"\x16" + bytes(20), timer)
    assert client.drops["closed"] == 1


def test_large_certificate_is_fragmented_to_the_mtu() -> None:
    # A certificate bigger than the MTU forces handshake message fragmentation.
    base = SERVER_CERT
    names = [x509.DNSName(f"host{i}.example.invalid") for i in range(150)]
    big = (
        x509.CertificateBuilder()
        .subject_name(base.certificate.subject)
        .issuer_name(base.certificate.issuer)
        .public_key(base.key.public_key())
        .serial_number(1)
        .not_valid_before(base.certificate.not_valid_before_utc)
        .not_valid_after(base.certificate.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(base.key, hashes.SHA256())
    )
    cert = DtlsCertificate(base.key, big)
    assert len(big.public_bytes(Encoding.DER)) > 3 * DTLS_MTU
    client, server = make_pair(server_cert=cert)
    down = Link()
    run(client, server, down=down)
    assert isinstance(connected(client), DtlsConnected)
    assert isinstance(connected(server), DtlsConnected)
    assert len(down.sent) >= 4
    assert all(len(d) <= DTLS_MTU for d in down.sent)
    for datagram in down.sent:
        records = split_records(datagram)
        assert records and b"".join(records) == datagram


# ---------------------------------------------------------------- after the handshake


def test_close_notify() -> None:
    client, server = make_pair()
    run(client, server)
    events(client), events(server)
    client.close(1.0)
    assert client.state is DtlsState.CLOSED
    run(client, server, now=1.0)
    assert events(server) == [DtlsClosed()]
    assert events(client) == []
    assert server.state is DtlsState.CLOSED
    # The server's answering close_notify reached a closed client: counted.
    assert client.drops["closed"] == 1


def test_application_data_is_dropped_and_counted() -> None:
    client, server = make_pair()
    run(client, server)
    events(server)
    # Data channels would send SCTP here; the endpoint has no API for it yet.
    client._ssl.send(b"sctp?")
    client._ssl.send(b"again")
    run(client, server)
    assert server.drops["application_data"] == 2
    assert events(server) == [] and server.state is DtlsState.CONNECTED


def test_not_dtls_and_oversize_datagrams_counted() -> None:
    client, server = make_pair()
    server.receive_datagram(b"", 0.0)
    server.receive_datagram(b"\x00\x01" + bytes(18), 0.0)  # STUN
    server.receive_datagram(b"\x80" + bytes(40), 0.0)  # RTP
    server.receive_datagram(b"\x16" + bytes(20000), 0.0)
    client.receive_datagram(b"\x16" + bytes(20), 0.0)  # before connect()
    assert server.drops == {"not_dtls": 3, "oversize": 1}
    assert client.drops == {"not_started": 1}
    assert server.state is DtlsState.NEW and events(server) == []


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(20, 63))
def test_garbage_before_handshake_never_raises(data: bytes, first: int) -> None:
    _, server = make_pair()
    server.receive_datagram(bytes([first]) + data, 0.0)
    server.datagrams_to_send(0.0)
    assert all(isinstance(e, DtlsFailed) for e in events(server))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5))
def test_garbage_after_handshake_never_raises(datagrams: list[bytes]) -> None:
    client, server = make_pair()
    run(client, server)
    events(client), events(server)
    for data in datagrams:
        for endpoint in (client, server):
            # Keep a DTLS-looking first byte half of the time to reach OpenSSL.
            endpoint.receive_datagram(bytes([22 if data[0] & 1 else data[0]]) + data, 1.0)
            endpoint.datagrams_to_send(1.0)
            assert all(isinstance(e, DtlsFailed) for e in events(endpoint))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_corrupted_handshake_never_raises(position: int, noise: bytes) -> None:
    # A real flight with a few bytes overwritten: OpenSSL drops it or fails.
    client, server = make_pair()
    client.connect(0.0)
    [hello] = client.datagrams_to_send(0.0)
    server.receive_datagram(hello, 0.0)
    for datagram in server.datagrams_to_send(0.0):
        pos = position % len(datagram)
        corrupted = datagram[:pos] + noise + datagram[pos + len(noise) :]
        client.receive_datagram(corrupted, 0.0)
    client.datagrams_to_send(0.0)
    assert all(isinstance(e, DtlsFailed) for e in events(client))


# ---------------------------------------------------------------- cookie exchange

PEER = ("192.0.2.10", 40000)
ELSEWHERE = ("198.51.100.7", 40000)
HANDSHAKE = 22
HELLO_VERIFY_REQUEST = 3  # RFC 6347 4.3.2: HandshakeType hello_verify_request


def cookie_pair(**kw: int) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client, _ = make_pair(**kw)
    server = DtlsEndpoint(SERVER_CERT, "server", [CLIENT_CERT.fingerprint()], cookie_exchange=True)
    return client, server


def is_hello_verify_request(datagram: bytes) -> bool:
    # a record header (13 bytes), then the handshake message type
    return datagram[0] == HANDSHAKE and datagram[13] == HELLO_VERIFY_REQUEST


def test_cookie_exchange_is_for_servers() -> None:
    with pytest.raises(DtlsError, match="only a server"):
        DtlsEndpoint(CLIENT_CERT, "client", [SERVER_CERT.fingerprint()], cookie_exchange=True)


def test_a_client_hello_without_cookie_gets_only_a_smaller_hello_verify_request() -> None:
    # What a spoofed source gets: one small datagram per ClientHello, no flight,
    # no state, no timer (so no retransmission)
    client, server = cookie_pair()
    client.connect(0.0)
    [hello] = client.datagrams_to_send(0.0)
    for i in range(5):
        server.receive_datagram(hello, float(i), PEER)
        [reply] = server.datagrams_to_send(float(i))
        assert is_hello_verify_request(reply) and len(reply) < len(hello), (len(reply), len(hello))
        assert server.get_timer() is None
        server.handle_timer(float(i) + 60.0)
        assert server.datagrams_to_send(float(i) + 60.0) == []
    assert server.state is DtlsState.NEW and server.proven_source is None
    assert server.cookie_requests == 5 and events(server) == []


def test_the_cookie_is_good_only_from_the_source_it_was_sent_to() -> None:
    client, server = cookie_pair()
    client.connect(0.0)
    [hello] = client.datagrams_to_send(0.0)
    server.receive_datagram(hello, 0.0, PEER)
    [verify_request] = server.datagrams_to_send(0.0)
    client.receive_datagram(verify_request, 0.0)
    [hello_with_cookie] = client.datagrams_to_send(0.0)
    assert len(hello_with_cookie) == len(hello) + 16  # our 16-byte cookie

    # the same ClientHello from another address: asked for a cookie again
    server.receive_datagram(hello_with_cookie, 0.0, ELSEWHERE)
    [again] = server.datagrams_to_send(0.0)
    assert is_hello_verify_request(again) and len(again) < len(hello_with_cookie)
    assert server.state is DtlsState.NEW and server.proven_source is None

    # from where the cookie went: the handshake starts and completes
    server.receive_datagram(hello_with_cookie, 0.0, PEER)
    assert server.proven_source == PEER and server.state is DtlsState.CONNECTING
    flight = server.datagrams_to_send(0.0)
    assert sum(map(len, flight)) > 3 * len(hello_with_cookie)  # the certificate flight
    for datagram in flight:
        client.receive_datagram(datagram, 0.0)
    run(client, server, up=Link(source=PEER))
    assert connected(client).local_key == connected(server).remote_key
    assert not server.drops


@pytest.mark.parametrize(
    ("up_lost", "down_lost"),
    [
        ({0}, set()),  # the first ClientHello
        (set(), {0}),  # the HelloVerifyRequest
        ({1}, set()),  # the ClientHello with the cookie
        (set(), {1}),  # the server's first flight: retransmitted by its timer
    ],
)
def test_cookie_exchange_survives_loss(up_lost: set[int], down_lost: set[int]) -> None:
    client, server = cookie_pair()
    up = Link(drop=lambda index, _: index in up_lost, source=PEER)
    down = Link(drop=lambda index, _: index in down_lost)
    run(client, server, up=up, down=down)
    assert connected(client).local_key == connected(server).remote_key
    assert server.proven_source == PEER
    # a retransmitted ClientHello carries the cookie it had: asked for once more
    # only when the HelloVerifyRequest itself was lost
    assert server.cookie_requests == (2 if down_lost == {0} else 1)
    # a lost first flight is the only one the server itself sends again
    assert server.retransmissions == (1 if down_lost == {1} else 0)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(20, 63))
def test_garbage_before_the_cookie_gets_nothing_bigger_back(data: bytes, first: int) -> None:
    _, server = cookie_pair()
    datagram = bytes([first]) + data
    server.receive_datagram(datagram, 0.0, PEER)
    assert all(len(d) <= len(datagram) for d in server.datagrams_to_send(0.0))
    assert server.state is DtlsState.NEW and events(server) == []
    assert server.get_timer() is None


# ---------------------------------------------------------------- keys against libsrtp


def _policy(key: bytes, salt: bytes, profile: int, inbound: bool) -> pylibsrtp.Policy:
    return pylibsrtp.Policy(
        key=key + salt,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        ),
        srtp_profile=profile,  # pylibsrtp uses the IANA ids too
    )


@pytest.mark.parametrize("profile", sorted(KEY_SALT))
def test_exported_keys_work_with_libsrtp(profile: int) -> None:
    client, server = make_pair([profile], [profile])
    run(client, server)
    c, s = connected(client), connected(server)
    rtp = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"x" * 100)
    rtp_bytes = rtp.serialize()
    rtcp = bytes(RtcpRrPacket(ssrc=3))

    for sender, receiver in ((c, s), (s, c)):
        tx = pylibsrtp.Session(_policy(sender.local_key, sender.local_salt, profile, False))
        rx = pylibsrtp.Session(_policy(receiver.remote_key, receiver.remote_salt, profile, True))
        protected = tx.protect(rtp_bytes)
        assert protected != rtp_bytes
        assert rx.unprotect(protected) == rtp_bytes
        assert rx.unprotect_rtcp(tx.protect_rtcp(rtcp)) == rtcp

    # And the keys really are different per direction.
    wrong = pylibsrtp.Session(_policy(c.remote_key, c.remote_salt, profile, True))
    tx = pylibsrtp.Session(_policy(c.local_key, c.local_salt, profile, False))
    with pytest.raises(pylibsrtp.Error):
        wrong.unprotect(tx.protect(rtp_bytes))
