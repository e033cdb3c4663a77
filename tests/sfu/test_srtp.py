"""mediaserver._srtp against the RFC 3711 / RFC 6188 / RFC 7714 test vectors and
against libsrtp (pylibsrtp) as the oracle, in both directions, for every profile."""

import struct

import pylibsrtp
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mediaserver import _srtp
from mediaserver._srtp import SRTP_ERR_INDEX_USED, Srtp, SrtpError

CM80 = _srtp.PROFILE_AES128_CM_SHA1_80
CM32 = _srtp.PROFILE_AES128_CM_SHA1_32
GCM128 = _srtp.PROFILE_AEAD_AES_128_GCM
GCM256 = _srtp.PROFILE_AEAD_AES_256_GCM
PROFILES = [CM80, CM32, GCM128, GCM256]
PROFILE_IDS = ["cm_sha1_80", "cm_sha1_32", "aead_aes_128_gcm", "aead_aes_256_gcm"]
LIBSRTP_PROFILE = {
    CM80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    CM32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    GCM128: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    GCM256: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
# bytes protect adds: (SRTP, SRTCP)
OVERHEAD = {CM80: (10, 14), CM32: (4, 14), GCM128: (16, 20), GCM256: (16, 20)}

by_profile = pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def master(profile: int) -> tuple[bytes, bytes]:
    key_len, salt_len = _srtp.profile_key_salt_lengths(profile)
    return bytes(range(1, key_len + 1)), bytes(range(0xA0, 0xA0 + salt_len))


def rtp(seq: int, ssrc: int = 0x5501A0B2, payload: bytes = b"", *, ts: int = 0x8041F8D3,
        csrcs: tuple[int, ...] = (), extension: bytes | None = None) -> bytes:
    """An RTP packet (RFC 3550 5.1); extension: the words after the 4-byte extension header."""
    first = 0x80 | (0x10 if extension is not None else 0) | len(csrcs)
    data = struct.pack("!BBHII", first, 96, seq & 0xFFFF, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        assert len(extension) % 4 == 0
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return data + (payload or bytes(range(seq % 7, 160)))


# RFC 7714 17: a sender report with SSRC 0x4d617273 (56 bytes, length field 13)
RTCP_SR = h("""81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
               deadbeef deadbeef deadbeef deadbeef deadbeef""")


def rtcp(ssrc: int = 0x4D617273) -> bytes:
    return RTCP_SR[:4] + struct.pack("!I", ssrc) + RTCP_SR[8:]


def libsrtp_pair(profile: int, key: bytes, salt: bytes, allow_repeat_tx: bool = False):
    """libsrtp sessions protecting (any outbound SSRC) and unprotecting (any inbound)."""
    lib = LIBSRTP_PROFILE[profile]
    out = pylibsrtp.Policy(key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                           srtp_profile=lib)
    out.allow_repeat_tx = allow_repeat_tx
    inb = pylibsrtp.Policy(key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                           srtp_profile=lib)
    return pylibsrtp.Session(out), pylibsrtp.Session(inb)


def accepts(receive, packet: bytes) -> bool:
    try:
        receive(packet)
    except (SrtpError, pylibsrtp.Error):
        return False
    return True


# --- profiles and construction ----------------------------------------------------


@pytest.mark.parametrize(
    "profile, lengths",
    [(CM80, (16, 14)), (CM32, (16, 14)), (GCM128, (16, 12)), (GCM256, (32, 12))],
    ids=PROFILE_IDS,
)
def test_profile_key_salt_lengths(profile, lengths):
    assert _srtp.profile_key_salt_lengths(profile) == lengths


def test_profile_ids_are_the_iana_ones():
    # RFC 5764 4.1.2, RFC 7714 14.2
    assert (CM80, CM32, GCM128, GCM256) == (0x0001, 0x0002, 0x0007, 0x0008)


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="unknown SRTP profile 0x0003"):
        _srtp.profile_key_salt_lengths(3)
    with pytest.raises(ValueError, match="unknown SRTP profile 0x0003"):
        Srtp(3, bytes(16), bytes(14))


@pytest.mark.parametrize(
    "profile, key_len, salt_len, message",
    [
        (CM80, 32, 14, "master key must be 16 bytes for this profile, got 32"),
        (CM80, 16, 12, "master salt must be 14 bytes for this profile, got 12"),
        (GCM128, 16, 14, "master salt must be 12 bytes for this profile, got 14"),
        (GCM256, 16, 12, "master key must be 32 bytes for this profile, got 16"),
    ],
)
def test_bad_master_lengths_are_refused(profile, key_len, salt_len, message):
    with pytest.raises(ValueError) as info:
        Srtp(profile, bytes(key_len), bytes(salt_len))
    assert str(info.value) == message
    assert not isinstance(info.value, SrtpError)


def test_status_messages():
    assert issubclass(SrtpError, ValueError)
    assert _srtp.status_message(_srtp.SRTP_ERR_MALFORMED) == "malformed packet"
    assert _srtp.status_message(_srtp.SRTP_ERR_AUTH) == "authentication failed"
    assert _srtp.status_message(_srtp.SRTP_ERR_REPLAY) == "replayed packet"
    assert _srtp.status_message(_srtp.SRTP_ERR_STREAMS) == "too many SSRCs in one context"
    assert _srtp.status_message(_srtp.SRTP_ERR_KEY_LIMIT) == "packet index space used up: rekey"
    assert _srtp.status_message(SRTP_ERR_INDEX_USED).startswith("packet index already used")
    assert _srtp.status_message(-99) == "unknown SRTP status -99"


# --- key derivation: RFC 3711 B.3, RFC 6188 7.2 ------------------------------------

B3_MASTER_KEY = h("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = h("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = h("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = h("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY = h("""CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                   E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
                   6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2""")


def test_kdf_rfc3711_b3():
    assert _srtp._kdf(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16) == B3_CIPHER_KEY
    assert _srtp._kdf(B3_MASTER_KEY, B3_MASTER_SALT, 2, 14) == B3_CIPHER_SALT
    # 94 bytes: several AES-CM blocks of the PRF
    assert _srtp._kdf(B3_MASTER_KEY, B3_MASTER_SALT, 1, 94) == B3_AUTH_KEY


def test_kdf_rfc6188_aes256_prf():
    # the AES_256_CM_PRF that AEAD_AES_256_GCM uses (RFC 7714 11)
    key = h("F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6")
    salt = h("3B04803DE51EE7C96423AB5B78D2")
    assert _srtp._kdf(key, salt, 0, 32) == h(
        "5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4")
    assert _srtp._kdf(key, salt, 2, 14) == h("FA31791685CA444A9E07C6C64E93")
    assert _srtp._kdf(key, salt, 1, 20) == h("FD9C32D39ED5FBB5A9DC96B30818454D1313DC05")


def test_contexts_use_the_derived_session_keys():
    # the B.3 master key through the constructor == the B.3 session keys given directly
    derived = Srtp(CM80, B3_MASTER_KEY, B3_MASTER_SALT)
    direct = Srtp._from_session_keys(
        CM80, B3_CIPHER_KEY, B3_CIPHER_SALT,
        rtcp_key=_srtp._kdf(B3_MASTER_KEY, B3_MASTER_SALT, 3, 16),
        rtcp_salt=_srtp._kdf(B3_MASTER_KEY, B3_MASTER_SALT, 5, 14),
        rtp_auth=B3_AUTH_KEY[:20],
        rtcp_auth=_srtp._kdf(B3_MASTER_KEY, B3_MASTER_SALT, 4, 20),
    )
    packet = rtp(0x1234, ssrc=0xCAFEBABE)
    assert derived.protect(packet) == direct.protect(packet)
    assert derived.protect_rtcp(RTCP_SR) == direct.protect_rtcp(RTCP_SR)


# --- AES-CM keystream: RFC 3711 B.2 --------------------------------------------------


def test_aes_cm_keystream_rfc3711_b2():
    # SSRC 0 and index 0 make the IV the session salt * 2^16, so a zero payload
    # encrypts to the keystream itself.
    srtp = Srtp._from_session_keys(
        CM80, h("2B7E151628AED2A6ABF7158809CF4F3C"), h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
        rtp_auth=bytes(20),
    )
    blocks = 0xFF02
    header = rtp(0, ssrc=0, ts=0xDECAFBAD, payload=b"\x00")[:12]
    protected = srtp.protect(header + bytes(16 * blocks))
    assert protected[:12] == header
    keystream = protected[12:-10]
    assert len(keystream) == 16 * blocks

    def block(i):
        return keystream[16 * i : 16 * i + 16]

    assert block(0) == h("E03EAD0935C95E80E166B16DD92B4EB4")
    assert block(1) == h("D23513162B02D0F72A43A2FE4A5F97AB")
    assert block(2) == h("41E95B3BB0A2E8DD477901E4FCA894C0")
    assert block(0xFEFF) == h("EC8CDF7398607CB0F2D21675EA9EA1E4")
    assert block(0xFF00) == h("362B7C3C6773516318A077D7FC5073AE")
    assert block(0xFF01) == h("6A2CC3787889374FBEB4C81B17BA6C44")


# --- AEAD: RFC 7714 16 and 17 --------------------------------------------------------

GCM_KEY = {GCM128: bytes(range(16)), GCM256: bytes(range(32))}
GCM_SALT = h("517569642070726f2071756f")  # "Quid pro quo"
RFC7714_RTP = h("""8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
                   69736120 696e2070 61727465 73207472 6573""")
RFC7714_SRTP = {
    GCM128: h("""8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
                 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439
                 0cce"""),
    GCM256: h("""8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
                 9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7
                 6c13"""),
}
RFC7714_SRTCP = {
    GCM128: h("""81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
                 c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
                 45d9eade 800005d4"""),
    GCM256: h("""81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
                 a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c
                 b26ac3be 800005d4"""),
}
# E flag clear: authenticated, not encrypted
RFC7714_SRTCP_AUTH_ONLY = {
    GCM128: RTCP_SR + h("841dd968 3dd78ec9 2ae58790 125f62b3 000005d4"),
    GCM256: RTCP_SR + h("91db4afb feee5a97 8fab4393 ed2615fe 000005d4"),
}
gcm_profiles = pytest.mark.parametrize("profile", [GCM128, GCM256], ids=["128", "256"])


def rfc7714(profile: int) -> Srtp:
    # RFC 7714 16-17 state session keys, the same for SRTP and SRTCP
    return Srtp._from_session_keys(profile, GCM_KEY[profile], GCM_SALT)


@gcm_profiles
def test_rfc7714_16_srtp(profile):
    srtp = rfc7714(profile)
    assert srtp.protect(RFC7714_RTP) == RFC7714_SRTP[profile]
    assert srtp.unprotect(RFC7714_SRTP[profile]) == RFC7714_RTP


@gcm_profiles
def test_rfc7714_17_srtcp(profile):
    srtp = rfc7714(profile)
    srtp._set_rtcp_index(0x5D4)
    assert srtp.protect_rtcp(RTCP_SR) == RFC7714_SRTCP[profile]
    assert srtp.unprotect_rtcp(RFC7714_SRTCP[profile]) == RTCP_SR


@gcm_profiles
def test_rfc7714_17_srtcp_authenticated_only(profile):
    packet = RFC7714_SRTCP_AUTH_ONLY[profile]
    assert rfc7714(profile).unprotect_rtcp(packet) == RTCP_SR
    # the clear payload is covered by the tag
    forged = bytearray(packet)
    forged[20] ^= 1
    with pytest.raises(SrtpError, match="^authentication failed$"):
        rfc7714(profile).unprotect_rtcp(bytes(forged))


# --- libsrtp as the oracle, both directions --------------------------------------------


@by_profile
def test_srtp_matches_libsrtp(profile):
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    packets = [rtp(seq) for seq in (65530, 65531, 65535, 0, 1, 7)]
    packets += [
        rtp(8, csrcs=(1, 2, 3)),
        rtp(9, extension=b"\x10\xaa\x00\x00"),
        rtp(10, csrcs=(7,), extension=bytes(12)),
        rtp(11, payload=b"\x01"),
        rtp(12, payload=bytes(1200)),
    ]
    for packet in packets:
        protected = ours.protect(packet)
        assert len(protected) == len(packet) + OVERHEAD[profile][0]
        assert protected == lib_tx.protect(packet)
        assert lib_rx.unprotect(protected) == packet
        assert ours.unprotect(protected) == packet


@by_profile
def test_srtp_from_libsrtp_to_ours(profile):
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    lib_tx, _ = libsrtp_pair(profile, key, salt)
    for seq in range(65500, 65600):
        packet = rtp(seq, ssrc=0x01020304)
        assert ours.unprotect(lib_tx.protect(packet)) == packet


@by_profile
def test_srtcp_matches_libsrtp(profile):
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    # libsrtp increments its SRTCP index before the first packet, so it starts at 1
    ours._set_rtcp_index(1)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    for i in range(5):
        packet = rtcp() + bytes(4 * i)
        protected = ours.protect_rtcp(packet)
        assert len(protected) == len(packet) + OVERHEAD[profile][1]
        assert protected == lib_tx.protect_rtcp(packet)
        assert lib_rx.unprotect_rtcp(protected) == packet
        assert ours.unprotect_rtcp(protected) == packet


@by_profile
def test_srtcp_index_starts_at_zero_and_libsrtp_accepts_it(profile):
    # RFC 3711 3.4: the SRTCP index is zero for the first packet sent
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    _, lib_rx = libsrtp_pair(profile, key, salt)
    for index in range(3):
        protected = ours.protect_rtcp(RTCP_SR)
        trailer = protected[-4:] if profile in (GCM128, GCM256) else protected[-14:-10]
        assert trailer == struct.pack("!I", 0x80000000 | index)
        assert lib_rx.unprotect_rtcp(protected) == RTCP_SR


@by_profile
def test_srtcp_from_libsrtp_to_ours(profile):
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    lib_tx, _ = libsrtp_pair(profile, key, salt)
    for ssrc in (1, 2, 0xFFFFFFFF):
        for _ in range(3):
            packet = rtcp(ssrc)
            assert ours.unprotect_rtcp(lib_tx.protect_rtcp(packet)) == packet


@by_profile
def test_rollover_over_70000_packets_both_directions(profile):
    # start near the top so the sequence number wraps twice (ROC 0 -> 1 -> 2)
    key, salt = master(profile)
    ours_tx, ours_rx = Srtp(profile, key, salt), Srtp(profile, key, salt)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    payload = bytes(40)
    for n in range(70_000):
        packet = rtp(65_000 + n, ssrc=0xABCDEF01, payload=payload)
        mine = ours_tx.protect(packet)
        theirs = lib_tx.protect(packet)
        assert mine == theirs
        assert lib_rx.unprotect(mine) == packet
        assert ours_rx.unprotect(theirs) == packet


def test_receiver_estimates_roc_for_packets_reordered_across_the_wrap():
    key, salt = master(CM80)
    lib_tx, _ = libsrtp_pair(CM80, key, salt)
    sent = {seq: lib_tx.protect(rtp(seq)) for seq in (65533, 65534, 65535, 0, 1, 2, 3)}
    ours = Srtp(CM80, key, salt)
    for seq in (65533, 0, 65535, 1, 65534, 3, 2):
        assert ours.unprotect(sent[seq]) == rtp(seq)
    for seq in sent:
        with pytest.raises(SrtpError, match="^replayed packet$"):
            ours.unprotect(sent[seq])


def test_receiver_follows_a_gap_across_the_wrap():
    key, salt = master(GCM128)
    lib_tx, _ = libsrtp_pair(GCM128, key, salt)
    sent = {seq: lib_tx.protect(rtp(seq)) for seq in (65000, 300, 301)}
    ours = Srtp(GCM128, key, salt)
    for seq in (65000, 300, 301):
        assert ours.unprotect(sent[seq]) == rtp(seq)


@by_profile
def test_late_packet_after_the_wrap_uses_the_old_roc(profile):
    # 65534 protected after 0 and 1 went out belongs to ROC 0, as libsrtp decides
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    for seq in (65535, 0, 1):
        assert ours.protect(rtp(seq)) == lib_tx.protect(rtp(seq))
    late = ours.protect(rtp(65534))
    assert late == lib_tx.protect(rtp(65534))
    assert lib_rx.unprotect(late) == rtp(65534)


@by_profile
def test_protect_never_uses_an_index_twice(profile):
    # Same SSRC and index is the same nonce: with GCM two plaintexts under it give
    # away the keystream and the GHASH key. A resend is the cached bytes, never a
    # second protect; so a second protect of an index is refused, whatever it holds.
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    for seq in (65530, 65535, 0, 3, 200):
        ours.protect(rtp(seq, payload=b"first"))
    for seq, payload in ((65535, b"other"), (0, b"first"), (3, b"x" * 40), (200, b"")):
        with pytest.raises(SrtpError) as refused:
            ours.protect(rtp(seq, payload=payload))
        assert refused.value.status == SRTP_ERR_INDEX_USED
    # older than the window of 128 indexes below the highest sent: cannot be told
    # apart from one sent, so refused too, while a never-sent index inside it works
    with pytest.raises(SrtpError, match="already used"):
        ours.protect(rtp(65531))
    ours.protect(rtp(100, payload=b"late"))
    ours.protect(rtp(199, payload=b"late"))
    # another SSRC has its own indexes
    ours.protect(rtp(200, ssrc=0x5555, payload=b"other"))


@by_profile
def test_srtcp_index_is_never_reused_across_ssrcs_or_at_the_limit(profile):
    # the RTCP direction: one counter per context, whatever the SSRC, and at 2^31
    # a refusal (rekey), never a wrap to an index already used
    key, salt = master(profile)
    ours = Srtp(profile, key, salt)
    indexes = []
    for ssrc in (1, 2, 1, 3, 2):
        protected = ours.protect_rtcp(rtcp(ssrc))
        word = protected[-4:] if profile in (GCM128, GCM256) else protected[-14:-10]
        indexes.append(struct.unpack("!I", word)[0] & 0x7FFFFFFF)
    assert indexes == [0, 1, 2, 3, 4]
    ours._set_rtcp_index(0x7FFFFFFF)
    ours.protect_rtcp(rtcp(1))
    for _ in range(2):
        with pytest.raises(SrtpError) as refused:
            ours.protect_rtcp(rtcp(1))
        assert refused.value.status == _srtp.SRTP_ERR_KEY_LIMIT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    profile=st.sampled_from(PROFILES),
    base=st.sampled_from([0, 1000, 65400]),
    order=st.lists(st.integers(0, 299), min_size=1, max_size=120),
)
def test_replay_decisions_match_libsrtp(profile, base, order):
    key, salt = master(profile)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    sent = [lib_tx.protect(rtp(base + i)) for i in range(300)]
    ours = Srtp(profile, key, salt)
    for i in order:
        theirs_ok = accepts(lib_rx.unprotect, sent[i])
        assert accepts(ours.unprotect, sent[i]) == theirs_ok, i


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    profile=st.sampled_from(PROFILES),
    order=st.lists(st.integers(0, 299), min_size=1, max_size=120),
)
def test_srtcp_replay_decisions_match_libsrtp(profile, order):
    key, salt = master(profile)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    sent = [lib_tx.protect_rtcp(rtcp()) for _ in range(300)]
    ours = Srtp(profile, key, salt)
    for i in order:
        theirs_ok = accepts(lib_rx.unprotect_rtcp, sent[i])
        assert accepts(ours.unprotect_rtcp, sent[i]) == theirs_ok, i


# --- rejections ---------------------------------------------------------------------


@by_profile
def test_replayed_packets_are_rejected(profile):
    srtp = Srtp(profile, *master(profile))
    protected = srtp.protect(rtp(10))
    srtp.unprotect(protected)
    with pytest.raises(SrtpError, match="^replayed packet$") as info:
        srtp.unprotect(protected)
    assert info.value.status == _srtp.SRTP_ERR_REPLAY

    protected = srtp.protect_rtcp(RTCP_SR)
    srtp.unprotect_rtcp(protected)
    with pytest.raises(SrtpError, match="^replayed packet$"):
        srtp.unprotect_rtcp(protected)


@by_profile
def test_replay_window_is_128_packets(profile):
    srtp = Srtp(profile, *master(profile))
    sent = [srtp.protect(rtp(seq)) for seq in range(201)]
    srtp.unprotect(sent[200])
    assert srtp.unprotect(sent[73]) == rtp(73)  # 200 - 127: still in the window
    for old in (72, 0):  # 200 - 128 and older: too old
        with pytest.raises(SrtpError, match="^replayed packet$"):
            srtp.unprotect(sent[old])
    assert srtp.unprotect(sent[199]) == rtp(199)  # out of order inside the window
    assert srtp.unprotect(sent[150]) == rtp(150)

    sent = [srtp.protect_rtcp(RTCP_SR) for _ in range(201)]
    srtp.unprotect_rtcp(sent[200])
    assert srtp.unprotect_rtcp(sent[73]) == RTCP_SR
    with pytest.raises(SrtpError, match="^replayed packet$"):
        srtp.unprotect_rtcp(sent[72])
    assert srtp.unprotect_rtcp(sent[199]) == RTCP_SR


@by_profile
def test_truncated_packets_are_rejected(profile):
    srtp = Srtp(profile, *master(profile))
    protected = srtp.protect(rtp(1))
    with pytest.raises(SrtpError, match="^authentication failed$") as info:
        srtp.unprotect(protected[:-1])
    assert info.value.status == _srtp.SRTP_ERR_AUTH
    rtp_tag, rtcp_trailer = OVERHEAD[profile]
    for size in (0, 1, 11, 12 + rtp_tag - 1):
        with pytest.raises(SrtpError, match="^malformed packet$") as info:
            srtp.unprotect(protected[:size])
        assert info.value.status == _srtp.SRTP_ERR_MALFORMED
    assert srtp.unprotect(protected) == rtp(1)  # the failures changed nothing

    protected = srtp.protect_rtcp(RTCP_SR)
    with pytest.raises(SrtpError, match="^authentication failed$"):
        srtp.unprotect_rtcp(protected[:-1])
    for size in (0, 7, 8 + rtcp_trailer - 1):
        with pytest.raises(SrtpError, match="^malformed packet$"):
            srtp.unprotect_rtcp(protected[:size])
    assert srtp.unprotect_rtcp(protected) == RTCP_SR


@by_profile
def test_bit_flips_are_rejected_and_change_no_state(profile):
    srtp = Srtp(profile, *master(profile))
    packet = rtp(500, csrcs=(9,))
    protected = srtp.protect(packet)
    positions = list(range(16)) + [20, len(protected) // 2] + list(
        range(len(protected) - OVERHEAD[profile][0], len(protected)))
    for pos in positions:
        for bit in range(8):
            forged = bytearray(protected)
            forged[pos] ^= 1 << bit
            with pytest.raises(SrtpError) as info:
                srtp.unprotect(bytes(forged))
            # a flipped version bit or CSRC count breaks the header; anything else the tag
            assert info.value.status in (_srtp.SRTP_ERR_AUTH, _srtp.SRTP_ERR_MALFORMED)
            if pos >= 4:
                assert info.value.status == _srtp.SRTP_ERR_AUTH
    assert srtp.unprotect(protected) == packet

    protected = srtp.protect_rtcp(RTCP_SR)
    for pos in range(len(protected)):
        forged = bytearray(protected)
        forged[pos] ^= 0x80  # includes the E flag
        with pytest.raises(SrtpError):
            srtp.unprotect_rtcp(bytes(forged))
    assert srtp.unprotect_rtcp(protected) == RTCP_SR


@by_profile
def test_wrong_key_fails_authentication(profile):
    key, salt = master(profile)
    other = Srtp(profile, bytes(len(key)), salt)
    srtp = Srtp(profile, key, salt)
    with pytest.raises(SrtpError, match="^authentication failed$"):
        srtp.unprotect(other.protect(rtp(1)))
    with pytest.raises(SrtpError, match="^authentication failed$"):
        srtp.unprotect_rtcp(other.protect_rtcp(RTCP_SR))


@by_profile
def test_forged_packets_do_not_move_the_window_or_roc(profile):
    key, salt = master(profile)
    srtp = Srtp(profile, key, salt)
    forger = Srtp(profile, bytes(len(key)), salt)
    good = Srtp(profile, key, salt)
    sent = {seq: good.protect(rtp(seq)) for seq in (10, 11, 12)}
    assert srtp.unprotect(sent[10]) == rtp(10)
    # a forged jump of 40000 would, if accepted, move s_l past 32768 and make 11 look
    # like ROC 1; a forged 11 must not mark 11 as seen
    for seq in (40000, 11):
        with pytest.raises(SrtpError, match="^authentication failed$"):
            srtp.unprotect(forger.protect(rtp(seq)))
    assert srtp.unprotect(sent[11]) == rtp(11)
    assert srtp.unprotect(sent[12]) == rtp(12)

    sent = [good.protect_rtcp(RTCP_SR) for _ in range(3)]
    assert srtp.unprotect_rtcp(sent[0]) == RTCP_SR
    forger._set_rtcp_index(1_000_000)
    with pytest.raises(SrtpError, match="^authentication failed$"):
        srtp.unprotect_rtcp(forger.protect_rtcp(RTCP_SR))
    assert srtp.unprotect_rtcp(sent[1]) == RTCP_SR  # 1 is 999,999 behind the forgery


@by_profile
def test_only_authenticated_packets_take_stream_slots(profile):
    key, salt = master(profile)
    srtp = Srtp(profile, key, salt)
    for ssrc in range(100, 140):
        forged = Srtp(profile, bytes(len(key)), salt).protect(rtp(1, ssrc=ssrc))
        with pytest.raises(SrtpError, match="^authentication failed$"):
            srtp.unprotect(forged)
    good = Srtp(profile, key, salt)
    for ssrc in range(_srtp.SRTP_MAX_STREAMS):
        assert srtp.unprotect(good.protect(rtp(1, ssrc=ssrc))) == rtp(1, ssrc=ssrc)
    # RTCP from a known SSRC shares its slot
    assert srtp.unprotect_rtcp(good.protect_rtcp(rtcp(ssrc=3))) == rtcp(ssrc=3)
    newcomer = Srtp(profile, key, salt)
    with pytest.raises(SrtpError, match="^too many SSRCs in one context$") as info:
        srtp.unprotect(newcomer.protect(rtp(1, ssrc=999)))
    assert info.value.status == _srtp.SRTP_ERR_STREAMS
    with pytest.raises(SrtpError, match="^too many SSRCs in one context$"):
        srtp.unprotect_rtcp(newcomer.protect_rtcp(rtcp(ssrc=999)))
    # the sending side has the same limit
    with pytest.raises(SrtpError, match="^too many SSRCs in one context$"):
        good.protect(rtp(1, ssrc=999))


@by_profile
def test_malformed_packets_are_rejected(profile):
    srtp = Srtp(profile, *master(profile))
    good = rtp(1, csrcs=(1, 2), extension=bytes(8))
    bad_version = bytes([0x40]) + good[1:]
    too_many_csrcs = bytes([0x8F]) + good[1:40]  # 15 CSRCs need 72 bytes
    ext_too_long = good[:20] + b"\xbe\xde\x00\x40" + good[24:]  # 64 words
    for packet in (b"", good[:11], bad_version, too_many_csrcs, ext_too_long):
        with pytest.raises(SrtpError, match="^malformed packet$"):
            srtp.protect(packet)
    for packet in (b"", RTCP_SR[:7], bytes([0x01]) + RTCP_SR[1:]):
        with pytest.raises(SrtpError, match="^malformed packet$"):
            srtp.protect_rtcp(packet)
    # AES-CM's keystream for one packet ends at 2^16 blocks: 1 MiB is the cap
    largest = rtp(3, payload=bytes((1 << 20) - 12))
    assert srtp.unprotect(srtp.protect(largest)) == largest
    with pytest.raises(SrtpError, match="^malformed packet$"):
        srtp.protect(largest + b"\x00")
    with pytest.raises(SrtpError, match="^malformed packet$"):
        srtp.protect_rtcp(RTCP_SR + bytes((1 << 20) - len(RTCP_SR) + 1))
    # a bare header with no payload is valid (RFC 3550 allows an empty payload)
    bare = rtp(2)[:12]
    assert srtp.unprotect(srtp.protect(bare)) == bare


def test_uninitialised_srtp_is_refused():
    srtp = Srtp.__new__(Srtp)
    with pytest.raises(ValueError, match="^Srtp is not initialised$"):
        srtp.protect(rtp(1))


@by_profile
def test_srtcp_index_exhaustion_asks_for_a_rekey(profile):
    srtp = Srtp(profile, *master(profile))
    srtp._set_rtcp_index(0x7FFFFFFF)
    assert srtp.unprotect_rtcp(srtp.protect_rtcp(RTCP_SR)) == RTCP_SR
    with pytest.raises(SrtpError, match="^packet index space used up: rekey$") as info:
        srtp.protect_rtcp(RTCP_SR)
    assert info.value.status == _srtp.SRTP_ERR_KEY_LIMIT


# --- properties ------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def rtp_packets(draw):
    csrcs = draw(st.lists(u32, max_size=15))
    extension = None
    if draw(st.booleans()):
        words = draw(st.integers(0, 6))
        extension = draw(st.binary(min_size=4 * words, max_size=4 * words))
    packet = rtp(draw(st.integers(0, 0xFFFF)), ssrc=draw(u32), ts=draw(u32),
                 csrcs=tuple(csrcs), extension=extension, payload=b"\x00")
    packet = packet[:-1] + draw(st.binary(max_size=1300))
    if draw(st.booleans()):  # marker and payload type are opaque to SRTP
        packet = packet[:1] + bytes([draw(st.integers(0, 255))]) + packet[2:]
    return packet


@st.composite
def rtcp_packets(draw):
    first = 0x80 | draw(st.integers(0, 0x3F))
    return bytes([first, draw(st.integers(192, 223))]) + draw(st.binary(min_size=6, max_size=1300))


@settings(max_examples=200, deadline=None)
@given(profile=st.sampled_from(PROFILES), packet=rtp_packets())
def test_unprotect_inverts_protect(profile, packet):
    srtp = Srtp(profile, *master(profile))
    protected = srtp.protect(packet)
    assert len(protected) == len(packet) + OVERHEAD[profile][0]
    assert srtp.unprotect(protected) == packet


@settings(max_examples=100, deadline=None)
@given(profile=st.sampled_from(PROFILES), packet=rtcp_packets())
def test_unprotect_rtcp_inverts_protect_rtcp(profile, packet):
    srtp = Srtp(profile, *master(profile))
    protected = srtp.protect_rtcp(packet)
    assert len(protected) == len(packet) + OVERHEAD[profile][1]
    assert srtp.unprotect_rtcp(protected) == packet


@settings(max_examples=100, deadline=None)
@given(profile=st.sampled_from(PROFILES), packet=rtp_packets())
def test_random_packets_match_libsrtp(profile, packet):
    assume(len(packet) <= 1500 - 144)  # pylibsrtp's buffer less its largest trailer
    key, salt = master(profile)
    lib_tx, lib_rx = libsrtp_pair(profile, key, salt)
    srtp = Srtp(profile, key, salt)
    protected = srtp.protect(packet)
    assert protected == lib_tx.protect(packet)
    assert lib_rx.unprotect(protected) == packet


RECEIVERS = {profile: Srtp(profile, *master(profile)) for profile in PROFILES}
garbage = st.one_of(
    st.binary(max_size=120),
    st.binary(max_size=300).map(lambda b: b"\x80" + b),  # gets past the version check
    st.binary(max_size=300).map(lambda b: b"\x90\x00" + b),  # with an extension
)


@settings(max_examples=300, deadline=None)
@given(profile=st.sampled_from(PROFILES), data=garbage)
def test_unprotect_of_random_bytes_only_raises_srtp_error(profile, data):
    # no packet ever authenticates, so the shared receivers never change state
    receiver = RECEIVERS[profile]
    with pytest.raises(SrtpError) as info:
        receiver.unprotect(data)
    assert info.value.status in (_srtp.SRTP_ERR_MALFORMED, _srtp.SRTP_ERR_AUTH)
    with pytest.raises(SrtpError) as info:
        receiver.unprotect_rtcp(data)
    assert info.value.status in (_srtp.SRTP_ERR_MALFORMED, _srtp.SRTP_ERR_AUTH)


@settings(max_examples=200, deadline=None)
@given(profile=st.sampled_from(PROFILES), packet=rtp_packets(), data=st.data())
def test_any_changed_byte_is_rejected(profile, packet, data):
    sender = Srtp(profile, *master(profile))
    protected = bytearray(sender.protect(packet))
    pos = data.draw(st.integers(0, len(protected) - 1))
    protected[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SrtpError) as info:
        Srtp(profile, *master(profile)).unprotect(bytes(protected))
    assert info.value.status in (_srtp.SRTP_ERR_MALFORMED, _srtp.SRTP_ERR_AUTH)
