"""SRTP micro-benchmarks: mediaserver._srtp vs libsrtp (pylibsrtp), same run, same packets.

Run: python -m pytest benchmarks/test_bench_srtp.py --benchmark-only

Three groups per profile and direction, on a 1,100-byte payload:
- `py-*`: one Python call per packet, ours vs pylibsrtp: both include the Python
  call, the copy in and the `bytes` out.
- `c-loop-*`: our C function called 1,000 times in a nogil loop per round, so the
  reported time per round in microseconds reads as nanoseconds per packet (the
  figure the forwarding path pays). `extra_info["ns_per_packet"]` holds the
  loop's own clock_gettime figure.
- `extra_info["py_blocks_per_call"]`: Python memory blocks still held per call
  when the results are kept (tracemalloc): the result object only.
"""

import itertools
import struct
import tracemalloc

import pylibsrtp
import pytest

from mediaserver import _srtp
from mediaserver._srtp import Srtp

PAYLOAD = 1100
C_LOOP = 1000
PROFILES = {
    "aes128_cm_sha1_80": (
        _srtp.PROFILE_AES128_CM_SHA1_80,
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    ),
    "aes128_cm_sha1_32": (
        _srtp.PROFILE_AES128_CM_SHA1_32,
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    ),
    "aead_aes_128_gcm": (
        _srtp.PROFILE_AEAD_AES_128_GCM,
        pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    ),
    "aead_aes_256_gcm": (
        _srtp.PROFILE_AEAD_AES_256_GCM,
        pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    ),
}
by_profile = pytest.mark.parametrize("name", list(PROFILES))
by_impl = pytest.mark.parametrize("impl", ["mediaserver", "pylibsrtp"])


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, 90000, 0x11223344) + bytes(PAYLOAD)


def pair(name: str, impl: str):
    """(protect, unprotect) callables of one implementation, sharing a master key."""
    ours, lib = PROFILES[name]
    key_len, salt_len = _srtp.profile_key_salt_lengths(ours)
    key, salt = bytes(range(key_len)), bytes(range(100, 100 + salt_len))
    if impl == "mediaserver":
        srtp = Srtp(ours, key, salt)
        return srtp.protect, srtp.unprotect
    tx = pylibsrtp.Policy(
        key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=lib
    )
    tx.allow_repeat_tx = True  # the protect benchmark sends one packet again and again
    rx = pylibsrtp.Policy(
        key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=lib
    )
    return pylibsrtp.Session(tx).protect, pylibsrtp.Session(rx).unprotect


def blocks_per_call(fn, make_arg, calls: int = 200) -> float:
    args = [make_arg() for _ in range(calls)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [fn(arg) for arg in args]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = after.compare_to(before, "filename")
    blocks = sum(s.count_diff for s in stats if "tracemalloc" not in s.traceback[0].filename)
    del kept
    return (blocks - 1) / calls  # less the list holding the results


@by_profile
@by_impl
def test_py_protect(benchmark, name, impl):
    benchmark.group = f"py-protect-{name}"
    protect, unprotect = pair(name, impl)
    packet = rtp(1)
    assert unprotect(protect(packet)) == packet
    benchmark.extra_info["py_blocks_per_call"] = blocks_per_call(protect, lambda: packet)
    benchmark(protect, packet)


@by_profile
@by_impl
def test_py_unprotect(benchmark, name, impl):
    # every round needs a packet not seen before (replay protection): the setup
    # protects the next sequence number, untimed
    benchmark.group = f"py-unprotect-{name}"
    protect, unprotect = pair(name, impl)
    seqs = itertools.count(1000)
    benchmark.extra_info["py_blocks_per_call"] = blocks_per_call(
        unprotect, lambda: protect(rtp(next(seqs)))
    )

    def setup():
        return (protect(rtp(next(seqs))),), {}

    result = benchmark.pedantic(unprotect, setup=setup, rounds=3000, warmup_rounds=100)
    assert len(result) == 12 + PAYLOAD


@by_profile
def test_c_loop_protect(benchmark, name):
    benchmark.group = f"c-loop-protect-{name} (us per round = ns per packet)"
    profile = PROFILES[name][0]
    ns = benchmark.pedantic(
        _srtp._bench_protect_loop, args=(profile, C_LOOP, PAYLOAD), rounds=200, warmup_rounds=5
    )
    benchmark.extra_info["ns_per_packet"] = round(ns, 1)
    assert ns > 0


@by_profile
def test_c_loop_unprotect(benchmark, name):
    # the hook protects each batch of 128 packets untimed, then times their unprotect;
    # the round time therefore includes the protect: read extra_info["ns_per_packet"]
    benchmark.group = f"c-loop-unprotect-{name} (see extra_info ns_per_packet)"
    profile = PROFILES[name][0]
    samples = []

    def run():
        ns = _srtp._bench_unprotect_loop(profile, C_LOOP, PAYLOAD)
        samples.append(ns)
        return ns

    benchmark.pedantic(run, rounds=100, warmup_rounds=5)
    benchmark.extra_info["ns_per_packet"] = round(min(samples), 1)
    benchmark.extra_info["ns_per_packet_median"] = round(sorted(samples)[len(samples) // 2], 1)
