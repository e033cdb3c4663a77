"""Prometheus metrics for /metrics.

Router, SFU and hub numbers are read at scrape time by a custom collector (the
per-packet path is never touched); the queue wait and the event loop lag are
observed as they happen. Every series has a `worker` label.
"""

from __future__ import annotations

import asyncio
from collections import Counter as _Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mediaserver.node.auth import REASONS
from mediaserver.signalling.calls import CALL_ENDINGS

if TYPE_CHECKING:
    from mediaserver.sfu.server import Sfu
    from mediaserver.signalling.hub import SignallingHub
    from mediaserver.store import Store

LAG_INTERVAL = 0.5

# (metric name, help, key in Sfu.counters())
_SFU_COUNTERS = (
    ("mediaserver_received_datagrams", "UDP datagrams received (inbound: from peers)", "rx_datagrams"),
    ("mediaserver_received_bytes", "UDP bytes received (inbound: from peers)", "rx_bytes"),
    ("mediaserver_forwarded_packets", "RTP/RTCP packets forwarded (outbound: to subscribers)",
     "forwarded_packets"),
    ("mediaserver_forwarded_bytes", "bytes forwarded (outbound: to subscribers)", "forwarded_bytes"),
    ("mediaserver_retransmitted_packets", "packets resent from the cache for NACKs", "retransmitted"),
    ("mediaserver_retransmitted_bytes", "bytes resent from the cache for NACKs", "retransmitted_bytes"),
    ("mediaserver_nack_received", "NACK feedback messages received", "nack_received"),
    ("mediaserver_nack_lost_packets", "packets named lost in received NACKs", "nack_packets"),
    ("mediaserver_nack_relayed", "NACKed sequence numbers relayed to publishers", "nack_relayed"),
    ("mediaserver_pli_received", "PLI/FIR keyframe requests received", "pli_received"),
    ("mediaserver_pli_sent", "PLIs sent to publishers", "pli_sent"),
    ("mediaserver_media_sessions_created", "SFU sessions created", "sessions_created"),
    ("mediaserver_media_sessions_connected", "SFU sessions that finished ICE+DTLS", "sessions_connected"),
)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        yield from self.collect_mail()  # first: the SFU part below may return early
        yield from self.collect_moderation()
        yield from self.collect_timers()
        m, w = self.m, self.m.worker
        hub, sfu = m.hub, m.sfu
        states = _Counter(v.state.value for v in hub.visitors.values())
        peers = GaugeMetricFamily(
            "mediaserver_peers", "signalling visitors by state", labels=["worker", "state"]
        )
        for state in ("new", "idle", "queued", "matched"):
            peers.add_metric([w, state], states.get(state, 0))
        yield peers
        yield _gauge(
            "mediaserver_pairs", "matched pairs (one split over two workers: half on each)", w,
            hub.pairs(),
        )
        yield _gauge(
            "mediaserver_queue_length", "tickets in the match queue", w, m.queue_length
        )
        yield _gauge(
            "mediaserver_websocket_connections", "open signalling WebSockets", w, len(hub.visitors)
        )
        yield _counter(
            "mediaserver_websocket_connections_opened", "signalling WebSockets opened", w,
            hub.stats.get("connections", 0),
        )
        yield _counter("mediaserver_matches", "matches made", w, hub.stats.get("matches", 0))
        yield _counter(
            "mediaserver_welcomes_with_turn",
            "welcomes that carried TURN credentials",
            w,
            hub.stats.get("welcomes_with_turn", 0),
        )
        yield from _connect_metrics(w, hub.stats)
        refused = CounterMetricFamily(
            "mediaserver_websocket_refused",
            "signalling WebSockets refused: a foreign Origin, or the address at its limit",
            labels=["worker", "reason"],
        )
        for reason in ("origin", "per_address"):
            refused.add_metric([w, reason], hub.stats.get(f"ws_refused:{reason}", 0))
        yield refused
        yield _counter(
            "mediaserver_offers_refused_per_address",
            "offers refused with too_many_sessions (the address holds its limit)", w,
            hub.stats.get("error:too_many_sessions", 0),
        )
        yield _gauge(
            "mediaserver_nack_cache_committed_bytes",
            "NACK cache bytes the open media sessions may grow to (--max-media-memory)", w,
            sfu.cache_committed,
        )
        rejected = _Counter(hub.bus.rejected)  # and the sealed match channel's:
        rejected.update(getattr(hub.matchmaker, "rejected", {}))
        yield _node_rejections(w, rejected)
        sessions = _Counter(s.state.value for s in sfu.sessions.values())
        media = GaugeMetricFamily(
            "mediaserver_media_sessions", "SFU sessions by state", labels=["worker", "state"]
        )
        for state in ("new", "checking", "connected"):
            media.add_metric([w, state], sessions.get(state, 0))
        yield media
        if sfu.udp is None:
            return
        counters = sfu.counters()
        for name, text, key in _SFU_COUNTERS:
            value = counters.get(key, 0)
            yield _counter(name, text, w, value if isinstance(value, int) else 0)
        restarts = CounterMetricFamily(
            "mediaserver_ice_restarts",
            "ICE restarts (a second offer on a session): answered; moved (media went to a"
            " new address); rejected (the offer changed more than the ICE credentials)",
            labels=["worker", "outcome"],
        )
        for outcome, key in (
            ("answered", "ice_restarts"),
            ("moved", "ice_restarts_completed"),
            ("rejected", "ice_restarts_rejected"),
        ):
            count = counters.get(key, 0)
            restarts.add_metric([w, outcome], count if isinstance(count, int) else 0)
        yield restarts
        drops = counters.get("drops", {})
        assert isinstance(drops, dict)
        family = CounterMetricFamily(
            "mediaserver_dropped_packets", "datagrams dropped, by reason", labels=["worker", "reason"]
        )
        srtp = CounterMetricFamily(
            "mediaserver_srtp_failures", "SRTP/SRTCP unprotect failures, by reason",
            labels=["worker", "reason"],
        )
        for reason, n in sorted(drops.items()):
            family.add_metric([w, reason], n)
            if reason.startswith(("srtp_", "srtcp_")):
                srtp.add_metric([w, reason], n)
        yield family
        yield srtp
        yield _gauge("mediaserver_effect_streams", "senders with an effect on", w, len(sfu.effects))
        yield _counter(
            "mediaserver_effect_frames_dropped", "video frames effect streams dropped", w,
            m.effect_frames_dropped(),
        )
        stills = CounterMetricFamily(
            "mediaserver_report_stills",
            "stills of a reported video for moderators, by outcome (busy: refused over "
            "the limit; timeout: no keyframe in time)", labels=["worker", "outcome"],
        )
        for outcome in ("taken", "busy", "timeout", "failed"):
            value = counters.get(f"stills_{outcome}", 0)
            stills.add_metric([w, outcome], value if isinstance(value, int) else 0)
        yield stills

    def collect_moderation(self) -> Iterator[Any]:
        """The moderation desk (worker 0 of a node with a store, at its last render)."""
        if self.m.moderation is not None:
            yield from _moderation_metrics(self.m.worker, self.m.moderation)

    def collect_timers(self) -> Iterator[Any]:
        """Fired timer callbacks by source, with --count-timers (timer_counts.py)."""
        if self.m.timer_counts is None:
            return
        family = CounterMetricFamily(
            "mediaserver_timer_callbacks", "event loop timer callbacks fired, by source",
            labels=["worker", "source"],
        )
        for source, n in sorted(self.m.timer_counts().items()):
            family.add_metric([self.m.worker, source], n)
        yield family

    def collect_mail(self) -> Iterator[Any]:
        """The mail sender's counts (the process running it; zeros elsewhere)."""
        counts, w = self.m.mail_counts(), self.m.worker
        yield _counter("mediaserver_mail_sent", "mails delivered", w, counts.get("sent", 0))
        yield _counter("mediaserver_mail_failed_attempts",
                       "mail delivery attempts that failed (retried with backoff)", w,
                       counts.get("failed", 0))
        yield _counter("mediaserver_mail_given_up", "mails dropped after their last retry", w,
                       counts.get("given_up", 0))


def _moderation_metrics(worker: str, stats: Mapping[str, Any]) -> Iterator[Any]:
    yield _gauge("mediaserver_moderation_open_reports", "reports waiting for a moderator",
                 worker, stats["open_reports"])
    yield _gauge("mediaserver_moderation_oldest_open_report_age_seconds",
                 "how long the oldest open report has waited (0: none open)", worker,
                 stats["oldest_open_age"])
    decisions = CounterMetricFamily(
        "mediaserver_moderation_decisions", "moderators' decisions, by action",
        labels=["worker", "action"])
    for action, n in sorted(stats["decisions"].items()):
        decisions.add_metric([worker, action], n)
    yield decisions
    bans = GaugeMetricFamily(
        "mediaserver_moderation_bans_in_force",
        "accounts and address hashes a ban holds on now, by kind", labels=["worker", "kind"])
    for kind, n in sorted(stats["bans"].items()):
        bans.add_metric([worker, kind], n)
    yield bans


def _connect_metrics(worker: str, stats: Mapping[str, int]) -> Iterator[Any]:
    """Direct messages and calls between connections, placed on this worker."""
    yield _counter("mediaserver_direct_messages", "direct messages between connections sent",
                   worker, stats.get("direct", 0))
    calls = CounterMetricFamily(
        "mediaserver_calls", "calls between connections placed here, by outcome",
        labels=["worker", "outcome"])
    calls.add_metric([worker, "placed"], stats.get("calls", 0))
    calls.add_metric([worker, "answered"], stats.get("calls_answered", 0))
    for outcome in CALL_ENDINGS:
        calls.add_metric([worker, outcome], stats.get(f"calls_ended:{outcome}", 0))
    yield calls


def _node_rejections(worker: str, rejected: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "mediaserver_node_messages_rejected",
        "node messages and registry entries dropped: unsigned, badly signed, replayed...",
        labels=["worker", "reason"],
    )
    for reason in REASONS:
        family.add_metric([worker, reason], rejected.get(reason, 0))
    return family


def _gauge(name: str, text: str, worker: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, text, labels=["worker"])
    g.add_metric([worker], value)
    return g


def _counter(name: str, text: str, worker: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, text, labels=["worker"])
    c.add_metric([worker], value)
    return c


class Metrics:
    """One worker's metrics in their own registry."""

    def __init__(
        self, hub: SignallingHub, sfu: Sfu, worker: str = "0", store: Store | None = None
    ) -> None:
        self.hub, self.sfu, self.worker = hub, sfu, worker
        self.store = store
        self.moderation: Mapping[str, Any] | None = None
        """The moderation desk's figures, read from the store at each scrape."""
        self.registry = CollectorRegistry()
        self.queue_length = 0
        self.mail_counts: Callable[[], Mapping[str, int]] = dict
        """The mail sender's counts (app.py points it at the sender's MailStats)."""
        self.timer_counts: Callable[[], Mapping[str, int]] | None = None
        """Fired timer callbacks by source (--count-timers); None: not counted."""
        self._dropped_closed = 0
        self._dropped_seen: dict[str, tuple[object, int]] = {}
        self.queue_wait = Histogram(
            "mediaserver_queue_wait_seconds",
            "time from queued to matched",
            ["worker"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
        ).labels(worker)
        self.loop_lag = Gauge(
            "mediaserver_event_loop_lag_seconds",
            f"how late a {LAG_INTERVAL} s sleep woke up (last)",
            ["worker"],
            registry=self.registry,
        ).labels(worker)
        self.loop_lag_hist = Histogram(
            "mediaserver_event_loop_lag_observed_seconds",
            f"how late {LAG_INTERVAL} s sleeps woke up, seconds",
            ["worker"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        ).labels(worker)
        self.registry.register(_Collector(self))
        hub.on_queue_wait = self.queue_wait.observe

    def effect_frames_dropped(self) -> int:
        """Monotonic total: streams that closed keep the count last seen."""
        current: dict[str, tuple[object, int]] = {}
        for sid, stream in self.sfu.effects.items():
            current[sid] = (stream, stream.frames_dropped)
        for sid, (seen, n) in self._dropped_seen.items():
            now = current.get(sid)
            if now is None or now[0] is not seen:
                self._dropped_closed += n
        self._dropped_seen = current
        return self._dropped_closed + sum(n for _, n in current.values())

    async def render(self) -> bytes:
        try:
            self.queue_length = await self.hub.matchmaker.queue_length()
        except Exception:  # noqa: BLE001 - Redis down: this node's own count
            self.queue_length = sum(1 for v in self.hub.visitors.values() if v.state.value == "queued")
        if self.store is not None and self.worker == "0":
            # the workers of a node share its database: one of them reports it
            try:
                self.moderation = await asyncio.to_thread(self.store.moderation_stats)
            except Exception:  # noqa: BLE001 - the store is down: no figures this time
                self.moderation = None
        return generate_latest(self.registry)

    async def watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, loop.time() - start - LAG_INTERVAL)
            self.loop_lag.set(lag)
            self.loop_lag_hist.observe(lag)


def merge_expositions(texts: list[str]) -> bytes:
    """Several workers' /metrics texts as one (each series keeps its worker label)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Any] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            have = families.get(family.name)
            if have is None:
                families[family.name] = family
            else:
                have.samples.extend(family.samples)

    class _Merged(Collector):
        def collect(self) -> Iterator[Any]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)
