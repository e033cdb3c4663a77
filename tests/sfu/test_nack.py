"""How much a subscriber's NACKs can make the server resend (issue 20).

The budget (mediaserver/sfu/nack.py) sans-I/O, and the router's cap on resends of
one cached packet through Router.resend without a socket. The whole path, SRTCP
NACK in and resends out of a real Sfu, is in tests/e2e/test_attacks.py.
"""

import random

from mediaserver._router import RESEND_INTERVAL, RESEND_LIMIT
from mediaserver.sfu.nack import MAX_PER_NACK, RESEND_BURST, RESEND_RATE, NackBudget
from tests.sfu.test_router import Wiring


def test_a_nack_repeating_its_sequence_numbers_counts_each_once():
    answer = NackBudget().admit([5, 6, 5, 5, 65536 + 6, 7, 5], now=0.0)
    assert answer.resend == [5, 6, 7]
    assert (answer.duplicates, answer.over_budget) == (4, 0)


def test_one_nack_is_answered_for_at_most_max_per_nack_packets():
    answer = NackBudget().admit(list(range(1000, 1000 + 3 * MAX_PER_NACK)), now=0.0)
    assert answer.resend == list(range(1000, 1000 + MAX_PER_NACK))
    assert answer.over_budget == 2 * MAX_PER_NACK


def test_a_subscriber_gets_at_most_the_rate_whatever_it_sends():
    budget = NackBudget()
    admitted = 0
    for i in range(1000):  # 1,000 NACKs of 64 new numbers each over 2 s
        admitted += len(budget.admit([(64 * i + k) & 0xFFFF for k in range(64)], now=i / 500).resend)
    assert RESEND_BURST + RESEND_RATE <= admitted <= RESEND_BURST + 2 * RESEND_RATE + 1


def test_a_real_lossy_call_is_never_cut():
    # benchmarks/loss.py at 20% loss per leg: ~65 NACKs/s for two pages, each for
    # one or two packets; here 50 NACKs/s for one subscriber, a NACK in ten asking
    # for a packet again, and a lost keyframe of 40 packets every 2 s, for a minute
    rng = random.Random(7)
    budget = NackBudget()
    seq = 0
    for tick in range(60 * 50):
        now = tick / 50
        seq += 3
        lost = [seq, seq + 1][: rng.randint(1, 2)]
        if rng.random() < 0.1:
            lost.append(seq - 6)
        if tick % 100 == 99:
            lost += range(seq + 2, seq + 42)
        answer = budget.admit(lost, now)
        assert (answer.duplicates, answer.over_budget) == (0, 0), now
        assert len(answer.resend) == len(lost)


def test_router_resends_a_cached_packet_a_few_times_and_never_twice_in_a_round_trip():
    w = Wiring(cache_packets=64)
    for seq in range(100, 110):
        w.publish(seq=seq)
    size = len(w.publish(seq=110)[0][0][0])
    # one NACK naming 103 ten times (the budget deduplicates; the router holds anyway)
    assert w.router.resend(w.out, [103] * 10 + [104], 0.0) == []
    counters = w.router.counters()
    assert (counters["retransmitted"], counters["drops"]["nack_too_soon"]) == (2, 9)
    # asked again once the interval passed: resent, up to RESEND_LIMIT times in all
    for k in range(1, RESEND_LIMIT + 2):
        w.router.resend(w.out, [103], 2 * k * RESEND_INTERVAL)
    counters = w.router.counters()
    assert counters["retransmitted"] == RESEND_LIMIT + 1
    assert counters["drops"]["nack_resend_cap"] == 2
    assert counters["retransmitted_bytes"] == (RESEND_LIMIT + 1) * size
    # 167 takes 103's slot in a 64-packet cache: a new packet, resent afresh
    for seq in range(111, 168):
        w.publish(seq=seq)
    assert w.router.resend(w.out, [167, 103], 100.0) == [103]  # 103: evicted, ask the publisher
    assert w.router.counters()["retransmitted"] == RESEND_LIMIT + 2
