"""Forwarding benchmark: CPU per forwarded SRTP packet, against a bare C forwarder.

    python -m benchmarks.forward [--pairs 10] [--rate 20000] [--duration 10]
                                 [--size 1100] [--profile aead-aes-128-gcm]
                                 [--repeats 1] [--family 4] [--transport udp] [--json]

N synthetic publishers and N subscribers on 127.0.0.1, each with its own UDP
socket, connect to the SFU (running alone in a child process, on uvloop) with
real ICE (STUN Binding + USE-CANDIDATE), DTLS (the server is the DTLS server)
and SRTP with the negotiated profile and exported keys; publisher i is
forwarded to subscriber i. The generator offers a fixed total packet rate,
round robin over the publishers, for a fixed time; each payload carries a
sequence number and its send time, so the subscribers (which SRTP-unprotect
everything with their own contexts) measure loss and one-way latency. Like
browsers, every peer also sends an SRTCP receiver report each second and a STUN
consent check every 5 s, so sessions stay up through long runs.

In the same run, the same load (plain RTP of the same size on the wire) goes
through benchmarks/peers/bare_forwarder.c (recvmmsg -> sendmmsg, no crypto),
compiled here with gcc -O2: the floor. Each process's CPU is its utime+stime
from /proc/PID/stat over the run, divided by the packets it forwarded; the
headline figure is the ratio server / baseline (BENCHMARKS.md: <= 1.4).

Latency is the subscriber socket's kernel receive timestamp (SO_TIMESTAMPNS)
minus the send time stamped into the packet just before it was protected: the
server's whole trip, not the receiving loop's wake-up delay (reported apart as
"app" latency).

`--family 6` measures IPv6 against IPv4 in one run: the SFU binds its default
dual-stack socket (`::`, IPV6_V6ONLY off) and announces 127.0.0.1 and ::1; a second
set of N pairs on ::1 connects beside the IPv4 pairs, and the two sets take turns
under the same load (the bare forwarder stays on IPv4). The IPv6 figures and the
ratio IPv6 / IPv4 of CPU per packet come out beside the others.

`--transport tcp` measures ICE over TCP against UDP in one run the same way: the
SFU also listens on a TCP port (passive candidates, RFC 4571 framing); a second set
of N pairs connects over TCP (synthetic peers with a FramedStream: the generator
writes each burst as frames in one blocking send, the receivers split the stream)
and takes turns with the UDP pairs under the same load. TCP receivers get no
kernel timestamp per packet: their latency is the receive loop's ("app").

Everything stays on loopback, every run stops by itself (bounded time and
packet counts), and the child processes die with this one (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.peers import loadgen
from benchmarks.peers.webrtc import (
    LOOPBACK,
    SOCKET_BUFFER,
    VIDEO_PT,
    KeepAlive,
    SyntheticPeer,
    check_loopback,
    drain,
    handshake,
)

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK6 = "::1"
FORWARDER_SOURCE = Path(__file__).resolve().parent / "peers" / "bare_forwarder.c"

PROFILES = {
    "aead-aes-128-gcm": 0x0007,
    "aes-cm-128-hmac-sha1-80": 0x0001,
    "aead-aes-256-gcm": 0x0008,
}
PROFILE_NAMES = {v: k for k, v in PROFILES.items()}
# Below this many clock ticks of CPU (10 ms each), utime+stime is too coarse for
# a per-packet figure and the schedstat run time (ns) is used for both sides.
MIN_TICKS = 50
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchmarkError(RuntimeError):
    """The benchmark could not run (a child failed, a handshake timed out...)."""


# ---- CPU accounting -------------------------------------------------------------


@dataclass(frozen=True)
class Cpu:
    stat: float
    """utime + stime of every thread, seconds (/proc/PID/stat, clock ticks)."""
    sched: float
    """Run time of every thread, seconds (/proc/PID/task/*/schedstat, ns)."""
    switches: int
    """Context switches of every thread, voluntary (a wait) or not (preempted)."""
    wakeups: int = 0
    """Voluntary context switches of every thread: each one is a wait that ended in
    a wake-up (the figure that per-packet batching or coalescing would cut)."""

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.stat - other.stat,
            self.sched - other.sched,
            self.switches - other.switches,
            self.wakeups - other.wakeups,
        )


def process_cpu(pid: int) -> Cpu:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    ticks = int(fields[11]) + int(fields[12])
    sched_ns = switches = wakeups = 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(f"{task}/schedstat") as f:
                sched_ns += int(f.read().split()[0])
            with open(f"{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        wakeups += int(line.split()[1])
                        switches += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just exited
    return Cpu(ticks / CLK_TCK, sched_ns / 1e9, switches, wakeups)


def udp_drops(ports: set[int]) -> dict[int, int]:
    """The kernel's drop count (receive buffer full...) of the UDP sockets bound
    to these local ports, from /proc/net/udp: says where lost packets were lost."""
    drops = dict.fromkeys(ports, 0)
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in drops:
                drops[port] += int(fields[-1])
    return drops


# ---- child processes ------------------------------------------------------------


def _read_line(stream: Any, timeout: float, what: str) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise BenchmarkError(f"{what}: no answer within {timeout} s")
    line = stream.readline()
    if not line:
        raise BenchmarkError(f"{what}: the process exited")
    return line


class ControlledProcess:
    """A child process driven with JSON lines on stdin/stdout: it greets with one
    JSON object (at least its pid), answers {"op": ...} with {"ok": ...}, and
    leaves on {"op": "quit"}. Its stderr is kept for error messages."""

    def __init__(self, args: list[str], name: str, quit_timeout: float = 3.0) -> None:
        self.name = name
        self.quit_timeout = quit_timeout
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        try:
            self.hello = json.loads(_read_line(self.proc.stdout, 30, f"{name} start"))
        except (BenchmarkError, ValueError) as exc:
            self.close()
            raise BenchmarkError(f"{exc}\n{self.errors()}") from None
        self.pid = int(self.hello["pid"])

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def request(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(_read_line(self.proc.stdout, 30, f"{self.name} {op}"))
        except (BenchmarkError, BrokenPipeError, ValueError) as exc:
            raise BenchmarkError(f"{exc}\n{self.errors()}") from None
        if not reply.get("ok"):
            raise BenchmarkError(f"{self.name} {op}: {reply.get('error')}")
        return dict(reply)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=self.quit_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]
        self.stderr.close()


class ServerProcess(ControlledProcess):
    """benchmarks/sfu_harness.py in a child process: the SFU under test."""

    def __init__(
        self,
        asyncio_loop: bool = False,
        dual_stack: bool = False,
        tcp: bool = False,
        read_hold_us: int = 0,
        socket_thread: bool = True,
    ) -> None:
        args = [sys.executable, "-m", "benchmarks.sfu_harness", "--host", LOOPBACK]
        if dual_stack:
            args = [*args[:-1], "::", "--announced-ip", f"{LOOPBACK},{LOOPBACK6}"]
        if asyncio_loop:
            args.append("--asyncio")
        if tcp:
            args.append("--tcp")
        if read_hold_us:
            args += ["--read-hold-us", str(read_hold_us)]
        if not socket_thread:
            args.append("--no-socket-thread")
        super().__init__(args, "SFU harness")
        self.port = int(self.hello["port"])
        self.loop = self.hello.get("loop", "?")

    def counters(self) -> dict[str, Any]:
        counters = self.request("counters")["counters"]
        return {
            "forwarded": int(counters["forwarded_packets"]),
            "received": int(counters["rx_datagrams"]),
            "drops": {k: int(v) for k, v in counters["drops"].items() if isinstance(v, int)},
        }


def build_forwarder(directory: str) -> str:
    gcc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if gcc is None:
        raise BenchmarkError("no C compiler (gcc) to build the bare forwarder")
    exe = os.path.join(directory, "bare_forwarder")
    proc = subprocess.run(
        [gcc, "-O2", "-o", exe, str(FORWARDER_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchmarkError(f"building bare_forwarder.c failed:\n{proc.stderr}")
    return exe


class ForwarderProcess:
    """The bare C forwarder: 127.0.0.1:src -> 127.0.0.1:dst for each pair."""

    def __init__(self, exe: str, pairs: list[tuple[int, int]], max_seconds: int) -> None:
        self.proc = subprocess.Popen(
            [exe, str(max_seconds), *(f"{s}:{d}" for s, d in pairs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = _read_line(self.proc.stdout, 10, "bare forwarder start")
        except BenchmarkError:
            self.close()
            raise
        self.pid = self.proc.pid
        self.port = int(line.split()[1])

    def counters(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchmarkError("the bare forwarder exited") from None
        fields = _read_line(self.proc.stdout, 10, "bare forwarder stats").split()
        received, forwarded, unmapped, send_failed, _ = (int(x) for x in fields[1:6])
        return {
            "forwarded": forwarded,
            "received": received,
            "drops": {"unmapped": unmapped, "send_failed": send_failed},
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            self.proc.stdout.close()  # type: ignore[union-attr]


# ---- one measured run -------------------------------------------------------------


@dataclass
class Target:
    """What one phase loads: a forwarder process and the generator's two halves."""

    name: str
    pid: int
    counters: Callable[[], dict[str, Any]]
    sender: Any  # loadgen.Sender
    receiver: Any  # loadgen.Receiver
    pairs: int
    port: int
    """The forwarder's UDP port."""
    receiver_ports: set[int]
    results: list[dict[str, Any]] = field(default_factory=list)


def server_target_for(
    module: Any, server: Any, senders: list[Any], receivers: list[Any], profile: int,
    size: int, pairs: int, name: str = "mediaserver", framed: bool = False,
) -> Target:
    """The server under test as a Target: its process and counters, and the C
    sender and receiver loops over the connected synthetic peers' sockets and keys."""
    return Target(
        name=name,
        pid=server.pid,
        counters=server.counters,
        sender=module.Sender(
            [p.sock.fileno() for p in senders],
            [p.server_addr for p in senders],
            [p.video_ssrc for p in senders],
            VIDEO_PT,
            size,
            profile,
            [(p.keys.tx_key, p.keys.tx_salt) for p in senders],
            0,
            int(framed),
        ),
        receiver=module.Receiver(
            [p.sock.fileno() for p in receivers],
            profile,
            [(p.keys.rx_key, p.keys.rx_salt) for p in receivers],
            4,
            int(framed),
        ),
        pairs=pairs,
        port=server.port,
        receiver_ports=set() if framed else {p.port for p in receivers},
    )


def run_once(
    target: Target, run_id: int, rate: float, duration: float, tick: float, grace: float
) -> dict[str, Any]:
    total = max(1, round(rate * duration))
    per_receiver = math.ceil(total / target.pairs) + 1
    ctrl_r, ctrl_w = os.pipe()
    received: dict[str, Any] = {}
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            received.update(
                target.receiver.run(run_id, per_receiver, ctrl_r, 2 * duration + grace + 10)
            )
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(exc)

    thread = threading.Thread(target=receive, name=f"receive-{target.name}", daemon=True)
    stopped = False
    try:
        before = target.counters()
        ports = {target.port} | target.receiver_ports
        drops0 = udp_drops(ports)
        cpu0 = process_cpu(target.pid)
        gen0 = process_cpu(os.getpid())
        thread.start()
        sent = target.sender.run(run_id, rate, total, tick)
        os.write(ctrl_w, struct.pack("=qq", sent["sent"], time.monotonic_ns() + int(grace * 1e9)))
        stopped = True
        thread.join()
        cpu = process_cpu(target.pid) - cpu0
        gen = process_cpu(os.getpid()) - gen0
        drops1 = udp_drops(ports)
        after = target.counters()
    finally:
        if not stopped:
            with contextlib.suppress(OSError):
                os.write(ctrl_w, struct.pack("=qq", 0, 0))  # stop the receiver now
            thread.join(timeout=5)
        os.close(ctrl_w)
        os.close(ctrl_r)
    if errors:
        raise errors[0]

    forwarded = after["forwarded"] - before["forwarded"]
    drops = {k: v - before["drops"].get(k, 0) for k, v in after["drops"].items()}
    elapsed = sent["elapsed"] or duration
    unique = received["unique"]
    p50, p99, p999 = loadgen.percentiles(received["hist_kernel"], (50, 99, 99.9))
    a50, a99 = loadgen.percentiles(received["hist_app"], (50, 99))
    return {
        "target": target.name,
        "run_id": run_id,
        "sent": sent["sent"],
        "elapsed_s": elapsed,
        "offered_pps": sent["sent"] / elapsed,
        "received": unique,
        "forwarded_pps": unique / elapsed,
        "loss": 1 - unique / sent["sent"] if sent["sent"] else 0.0,
        "forwarded": forwarded,
        "drops": {k: v for k, v in drops.items() if v},
        "kernel_drops_forwarder_socket": drops1[target.port] - drops0[target.port],
        "kernel_drops_receiver_sockets": sum(drops1[p] - drops0[p] for p in target.receiver_ports),
        "cpu_s": cpu.stat,
        "cpu_sched_s": cpu.sched,
        "context_switches_per_packet": cpu.switches / forwarded if forwarded else None,
        "wakeups_per_packet": cpu.wakeups / forwarded if forwarded else None,
        "generator_cpu_sched_s": gen.sched,
        "latency_p50_us": p50,
        "latency_p99_us": p99,
        "latency_p999_us": p999,
        "app_latency_p50_us": a50,
        "app_latency_p99_us": a99,
        "srtp_auth_failures": received["srtp_auth_failures"],
        "misrouted": received["misrouted"],
        "duplicates": received["duplicates"],
        "malformed": received["malformed"],
        "stale": received["stale"],
        "rtcp_received": received["rtcp"],
        "send_errors": sent["send_errors"] + sent["protect_errors"],
        "generator_max_lag_ms": sent["max_lag"] * 1e3,
        "samples": received["samples"],
    }


def per_packet(run: dict[str, Any], source: str) -> float | None:
    cpu = run["cpu_s"] if source == "stat" else run["cpu_sched_s"]
    return cpu * 1e6 / run["forwarded"] if run["forwarded"] else None


# ---- summary ------------------------------------------------------------------------


def spread(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    vs = [v for v in values if v is not None]
    if not vs:
        return None, None, None
    return statistics.median(vs), min(vs), max(vs)


def cpu_source(runs: list[dict[str, Any]]) -> str:
    """Which CPU figure is fine-grained enough for all of `runs`."""
    ticks = min(r["cpu_s"] for r in runs) * CLK_TCK
    return "stat" if ticks >= MIN_TICKS else "schedstat"


def summarize(
    server: list[dict[str, Any]], baseline: list[dict[str, Any]], meta: dict[str, Any],
    source: str | None = None,
) -> dict[str, Any]:
    runs = server + baseline
    source = source or cpu_source(runs)
    out: dict[str, Any] = dict(meta)
    out["cpu_source"] = source
    for prefix, rs in (("", server), ("baseline_", baseline)):
        for key in (
            "forwarded_pps",
            "offered_pps",
            "loss",
            "latency_p50_us",
            "latency_p99_us",
            "latency_p999_us",
            "app_latency_p50_us",
            "app_latency_p99_us",
            "context_switches_per_packet",
            "wakeups_per_packet",
        ):
            med, lo, hi = spread([r[key] for r in rs])
            out[prefix + key] = med
            out[prefix + key + "_min"] = lo
            out[prefix + key + "_max"] = hi
        name = "server_cpu_us_per_packet" if not prefix else "baseline_cpu_us_per_packet"
        med, lo, hi = spread([per_packet(r, source) for r in rs])
        out[name], out[name + "_min"], out[name + "_max"] = med, lo, hi
        med, lo, hi = spread(
            [r["generator_cpu_sched_s"] * 1e6 / r["sent"] if r["sent"] else None for r in rs]
        )
        out[prefix + "generator_cpu_us_per_packet"] = med
    ratios = []
    for s, b in zip(server, baseline):
        sp, bp = per_packet(s, source), per_packet(b, source)
        ratios.append(sp / bp if sp is not None and bp else None)
    out["ratio"], out["ratio_min"], out["ratio_max"] = spread(ratios)
    out["srtp_auth_failures"] = sum(r["srtp_auth_failures"] for r in server)
    out["misrouted"] = sum(r["misrouted"] + r["duplicates"] for r in runs)
    out["server_drops"] = _sum_drops(server)
    out["baseline_drops"] = _sum_drops(baseline)
    for prefix, rs in (("", server), ("baseline_", baseline)):
        out[prefix + "kernel_drops"] = {
            "forwarder_socket": sum(r["kernel_drops_forwarder_socket"] for r in rs),
            "receiver_sockets": sum(r["kernel_drops_receiver_sockets"] for r in rs),
        }
    out["runs"] = [{k: v for k, v in r.items() if k != "samples"} for r in runs]
    return out


def _sum_drops(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in runs:
        for k, v in r["drops"].items():
            total[k] = total.get(k, 0) + v
    return total


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _cell(s: dict[str, Any], key: str, spec: str, scale: float = 1.0) -> str:
    """The median, and [min-max] when there were several runs."""
    text = _fmt(s[key], spec, scale)
    if s["repeats"] > 1 and s.get(key + "_min") is not None:
        text += f" [{_fmt(s[key + '_min'], spec, scale)}-{_fmt(s[key + '_max'], spec, scale)}]"
    return text


def print_table(s: dict[str, Any]) -> None:
    # (label, server key, baseline key, format, scale)
    rows = [
        ("offered pps", "offered_pps", "baseline_offered_pps", ".0f", 1.0),
        ("forwarded pps", "forwarded_pps", "baseline_forwarded_pps", ".0f", 1.0),
        ("loss %", "loss", "baseline_loss", ".3f", 100.0),
        ("latency p50 us", "latency_p50_us", "baseline_latency_p50_us", ".0f", 1.0),
        ("latency p99 us", "latency_p99_us", "baseline_latency_p99_us", ".0f", 1.0),
        ("app latency p50 us", "app_latency_p50_us", "baseline_app_latency_p50_us", ".0f", 1.0),
        ("app latency p99 us", "app_latency_p99_us", "baseline_app_latency_p99_us", ".0f", 1.0),
        ("CPU us/packet", "server_cpu_us_per_packet", "baseline_cpu_us_per_packet", ".2f", 1.0),
        ("wake-ups/packet", "wakeups_per_packet", "baseline_wakeups_per_packet", ".3f", 1.0),
        (
            "context switches/packet",
            "context_switches_per_packet",
            "baseline_context_switches_per_packet",
            ".3f",
            1.0,
        ),
    ]
    print(
        f"forwarding: {s['pairs']} pairs, {s['target_pps']:.0f} packets/s for {s['duration']} s, "
        f"{s['payload_size']}-byte payloads ({s['packet_size']} bytes on the wire), "
        f"{s['profile']}, {s['repeats']} repeat(s), CPU from {s['cpu_source']}"
    )
    six = s.get("family") == "6"
    tcp = s.get("transport") == "tcp"
    prefix, vlabel, base, over = (
        ("ipv6_", "IPv6", "IPv4", "ipv6_over_ipv4")
        if six
        else ("tcp_", "ICE-TCP", "UDP", "tcp_over_udp")
    )
    six = six or tcp  # a variant column
    first = f"mediaserver ({s['server_loop']})" + (f", {base}" if six else "")
    table = [["", first, *([f"mediaserver, {vlabel}"] if six else []), "bare C forwarder"]]
    for label, key, base_key, spec, scale in rows:
        table.append([
            label,
            _cell(s, key, spec, scale),
            *([_cell(s, prefix + key, spec, scale)] if six else []),
            _cell(s, base_key, spec, scale),
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [f"{row[0]:<{widths[0]}}"] + [f"{c:>{w}}" for c, w in zip(row[1:], widths[1:])]
        print("  " + "  ".join(cells))
    print(f"ratio server/baseline CPU per packet: {_cell(s, 'ratio', '.2f')}")
    if six:
        print(f"ratio {vlabel}/baseline CPU per packet: {_cell(s, prefix + 'ratio', '.2f')}")
        print(f"ratio {vlabel}/{base} CPU per packet (same run): {_cell(s, over, '.3f')}")
    notes = []
    if s["srtp_auth_failures"]:
        notes.append(f"{s['srtp_auth_failures']} SRTP auth failures at the subscribers")
    if s["misrouted"]:
        notes.append(f"{s['misrouted']} misrouted or duplicate packets")
    check = s.get("libsrtp_check") or {}
    if check.get("available"):
        notes.append(f"libsrtp check of forwarded packets: {check['ok']}/{check['checked']} ok")
    if s.get("read_hold_us"):
        notes.append(
            f"read hold {s['read_hold_us']} us: {s.get('read_holds', 0)} holds, "
            f"{_fmt(s.get('packets_per_read'), '.2f')} packets per read (the whole sitting)"
        )
    if s.get("slow_per_datagram") is not None:
        notes.append(
            f"{'socket thread' if s.get('socket_thread') else 'event-loop reader'}: "
            f"{_fmt(s['slow_per_datagram'], '.4f')} slow-path datagrams and "
            f"{_fmt(s.get('loop_notices_per_datagram'), '.4f')} event-loop notices per "
            "datagram (the whole sitting)"
        )
    if s["server_drops"]:
        notes.append(f"server drops: {s['server_drops']}")
    if s["baseline_drops"]:
        notes.append(f"baseline drops: {s['baseline_drops']}")
    for prefix, name in (("", "server"), ("baseline_", "bare forwarder")):
        kd = s[prefix + "kernel_drops"]
        if kd["forwarder_socket"] or kd["receiver_sockets"]:
            notes.append(
                f"{name}: kernel dropped {kd['forwarder_socket']} at its socket (it fell behind), "
                f"{kd['receiver_sockets']} at the subscribers' sockets (the generator fell behind)"
            )
    notes.append(
        f"generator CPU: {_fmt(s['generator_cpu_us_per_packet'], '.2f')} us/packet (SRTP), "
        f"{_fmt(s['baseline_generator_cpu_us_per_packet'], '.2f')} (plain)"
    )
    for note in notes:
        print("  " + note)


# ---- main ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.forward",
        description="CPU per forwarded SRTP packet: the SFU against a bare C forwarder, same load.",
    )
    parser.add_argument(
        "--pairs", type=int, default=10, help="publisher/subscriber pairs (default 10)"
    )
    parser.add_argument(
        "--rate", type=float, default=20000, help="packets/s offered in all (default 20000)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measured run (default 10)"
    )
    parser.add_argument("--size", type=int, default=1100, help="RTP payload bytes (default 1100)")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="aead-aes-128-gcm",
        help="SRTP profile the peers offer (the only one, so the server takes it)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="measured runs of each (medians reported)"
    )
    parser.add_argument(
        "--tick",
        type=float,
        default=0.001,
        help="generator pacing: a burst every TICK seconds (default 0.001)",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured seconds before (default 0.5)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=0.5,
        help="seconds to wait for late packets after the last send (default 0.5)",
    )
    parser.add_argument(
        "--audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add an Opus m-section to the offers (default on; no audio is sent)",
    )
    parser.add_argument(
        "--asyncio", action="store_true", help="run the SFU on the stdlib loop, not uvloop"
    )
    parser.add_argument(
        "--family",
        choices=("4", "6"),
        default="4",
        help="6: also N pairs over IPv6 (::1) through the server's dual-stack socket, "
        "measured against the IPv4 pairs in the same run (default 4: IPv4 only)",
    )
    parser.add_argument(
        "--transport",
        choices=("udp", "tcp"),
        default="udp",
        help="tcp: also N pairs over ICE-TCP (the server's passive TCP candidate), "
        "measured against the UDP pairs in the same run (default udp: UDP only)",
    )
    parser.add_argument(
        "--read-hold-us",
        type=int,
        default=0,
        help="the server's read hold (--read-hold-us of the server; default 0: off)",
    )
    parser.add_argument(
        "--no-socket-thread",
        dest="socket_thread",
        action="store_false",
        help="the server reads its media socket on the event loop (--no-socket-thread), "
        "not the router's C thread",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on the last line"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.rate <= 0 or args.duration <= 0 or args.repeats < 1:
        parser.error("--pairs, --rate, --duration and --repeats must be positive")
    if args.rate * args.duration > 50_000_000:
        parser.error("more than 50 million packets per run: lower --rate or --duration")
    if args.family == "6" and args.transport == "tcp":
        parser.error("--family 6 and --transport tcp: one variant per run")
    if not 36 <= args.size <= 1400:
        parser.error("--size must be within 36..1400 (the payload carries a 36-byte stamp)")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mediaserver._srtp import Srtp
    from mediaserver.sfu.dtls import DtlsCertificate

    module = loadgen.load()
    profile = PROFILES[args.profile]
    longest = args.repeats * 2 * (args.duration * 2 + args.grace + 12) + 120
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="msbench-"))
        exe = build_forwarder(tmp)

        # -- the SFU, and the peers it serves (with --family 6, a second set on ::1)
        dual = args.family == "6"
        tcp = args.transport == "tcp"
        server = ServerProcess(
            asyncio_loop=args.asyncio,
            dual_stack=dual,
            tcp=tcp,
            read_hold_us=args.read_hold_us,
            socket_thread=args.socket_thread,
        )
        stack.callback(server.close)
        certificate = DtlsCertificate.generate()
        sets = [(LOOPBACK, "udp"), (LOOPBACK6, "udp")] if dual else [(LOOPBACK, "udp")]
        if tcp:
            sets.append((LOOPBACK, "tcp"))
        groups = [
            connect_peers(stack, server, certificate, profile, args, host, transport)
            for host, transport in sets
        ]
        peers = [p for senders, receivers in groups for p in senders + receivers]
        keepalive = KeepAlive(peers)
        keepalive.start()
        stack.callback(keepalive.stop)
        drain(peers)

        senders, receivers = groups[0]
        probe = bytes([0x80, VIDEO_PT]) + bytes(10) + bytes(args.size)
        k0 = senders[0].keys
        assert k0 is not None
        tag = len(Srtp(profile, k0.tx_key, k0.tx_salt).protect(probe)) - len(probe)
        server_target = server_target_for(
            module, server, senders, receivers, profile, args.size, args.pairs
        )
        variant = "IPv6" if dual else "ICE-TCP" if tcp else None
        server6_target = (
            server_target_for(
                module, server, *groups[1], profile, args.size, args.pairs, variant, tcp
            )
            if variant is not None
            else None
        )

        # -- the floor: plain RTP, same size on the wire, through the bare forwarder
        plain_senders, plain_receivers = [], []
        for opt, group in ((socket.SO_SNDBUF, plain_senders), (socket.SO_RCVBUF, plain_receivers)):
            for _ in range(args.pairs):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                stack.callback(sock.close)
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                sock.bind((LOOPBACK, 0))
                sock.setblocking(False)
                group.append(sock)
        forwarder = ForwarderProcess(
            exe,
            [
                (s.getsockname()[1], r.getsockname()[1])
                for s, r in zip(plain_senders, plain_receivers)
            ],
            max_seconds=int(longest),
        )
        stack.callback(forwarder.close)
        baseline_target = Target(
            name="bare forwarder",
            pid=forwarder.pid,
            counters=forwarder.counters,
            sender=module.Sender(
                [s.fileno() for s in plain_senders],
                [(LOOPBACK, forwarder.port)] * args.pairs,
                [p.video_ssrc for p in senders],
                VIDEO_PT,
                args.size,
                0,
                None,
                tag,
            ),
            receiver=module.Receiver([s.fileno() for s in plain_receivers], 0),
            pairs=args.pairs,
            port=forwarder.port,
            receiver_ports={s.getsockname()[1] for s in plain_receivers},
        )

        run_id = 1
        samples = None  # the subscribers' first SRTP packets (rollover counter 0)
        targets = [server_target, baseline_target]
        if server6_target is not None:
            targets.insert(1, server6_target)
        if args.warmup > 0:
            for target in targets:
                result = run_once(target, run_id, args.rate, args.warmup, args.tick, args.grace)
                run_id += 1
                if target is server_target:
                    samples = result["samples"]
        for repeat in range(args.repeats):
            # each repeat in another order: none is always first (a cold cache) or last
            order = targets[repeat % len(targets) :] + targets[: repeat % len(targets)]
            for target in order:
                result = run_once(target, run_id, args.rate, args.duration, args.tick, args.grace)
                run_id += 1
                result["repeat"] = repeat
                target.results.append(result)
                if samples is None and target is server_target:
                    samples = result["samples"]

        check = loadgen.check_with_libsrtp(
            samples,
            profile,
            [(p.keys.rx_key, p.keys.rx_salt) for p in receivers],  # type: ignore[union-attr]
        )
        meta = {
            "pairs": args.pairs,
            "target_pps": args.rate,
            "duration": args.duration,
            "payload_size": args.size,
            "packet_size": 12 + args.size + tag,
            "profile": args.profile,
            "repeats": args.repeats,
            "tick_ms": args.tick * 1e3,
            "server_loop": server.loop,
            "libsrtp_check": check,
            "consent_checks_sent": keepalive.consent_sent,
            "rtcp_reports_sent": keepalive.rtcp_sent,
            "family": args.family,
            "transport": args.transport,
            "read_hold_us": args.read_hold_us,
            "socket_thread": args.socket_thread,
        }
        router = server.request("counters")["counters"]
        if router.get("batches"):
            # what the read hold did over the whole sitting (warm-up included)
            meta["read_holds"] = router.get("read_holds", 0)
            meta["held_packets"] = router.get("held_packets", 0)
            meta["packets_per_read"] = router["rx_datagrams"] / router["batches"]
        if router.get("rx_datagrams"):
            # how often Python had to run, per datagram received (the whole sitting):
            # the slow path (STUN, DTLS, RTCP) and, with the socket thread, the
            # eventfd notices that woke the event loop for it
            meta["slow_per_datagram"] = router["slow_datagrams"] / router["rx_datagrams"]
            meta["loop_notices_per_datagram"] = (
                router.get("thread_notifies", 0) / router["rx_datagrams"]
            )
        runs = [r for t in targets for r in t.results]
        summary = summarize(
            server_target.results, baseline_target.results, meta, cpu_source(runs)
        )
        if server6_target is not None:
            add_ipv6(summary, server_target.results, server6_target.results,
                     baseline_target.results, *(("tcp_", "tcp_over_udp") if tcp else ()))  # fmt: skip
        return summary


def connect_peers(
    stack: contextlib.ExitStack, server: ServerProcess, certificate: Any, profile: int,
    args: argparse.Namespace, host: str, transport: str = "udp",
) -> tuple[list[SyntheticPeer], list[SyntheticPeer]]:
    """args.pairs publishers and subscribers on `host`, through ICE and DTLS with the
    server, publisher i forwarded to subscriber i: (senders, receivers)."""
    senders = [
        SyntheticPeer(i, "send", certificate, (profile,), args.audio, host, transport)
        for i in range(args.pairs)
    ]
    receivers = [
        SyntheticPeer(i, "recv", certificate, (profile,), args.audio, host, transport)
        for i in range(args.pairs)
    ]
    peers = senders + receivers
    for peer in peers:
        stack.callback(peer.close)
    for peer in peers:
        reply = server.request("create", offer=peer.offer())
        peer.accept(reply["id"], reply["answer"])
    handshake(peers, timeout=max(20.0, 0.2 * len(peers)))
    for s, r in zip(senders, receivers):
        server.request("connect", pub=s.session_id, sub=r.session_id)
    deadline = time.monotonic() + 10
    while True:
        states = server.request("sessions")["sessions"]
        if all(states.get(p.session_id) == "connected" for p in peers):
            break
        if time.monotonic() > deadline:
            raise BenchmarkError(f"sessions not connected on the server: {states}")
        time.sleep(0.05)
    for peer in peers:
        assert peer.keys is not None and peer.keys.profile == profile, "negotiated another profile"
        assert peer.server_addr is not None
        check_loopback(peer.server_addr[0])
        # each set reaches the server over its own family
        assert (":" in peer.server_addr[0]) == (":" in host), peer.server_addr
    return senders, receivers


def add_ipv6(
    summary: dict[str, Any], v4: list[dict[str, Any]], v6: list[dict[str, Any]],
    baseline: list[dict[str, Any]], prefix: str = "ipv6_", over: str = "ipv6_over_ipv4",
) -> None:
    """The IPv6 set's figures, beside the IPv4 ones (same CPU source), and the ratio
    IPv6 / IPv4 of CPU per packet, repeat by repeat (median [min-max]); the same for
    the ICE-TCP set against the UDP one with prefix "tcp_", over "tcp_over_udp"."""
    source = summary["cpu_source"]
    six = summarize(v6, baseline, {"repeats": summary["repeats"]}, source)
    for key in (
        "forwarded_pps", "offered_pps", "loss", "latency_p50_us", "latency_p99_us",
        "latency_p999_us", "context_switches_per_packet", "wakeups_per_packet",
        "server_cpu_us_per_packet", "app_latency_p50_us", "app_latency_p99_us",
    ):
        for suffix in ("", "_min", "_max"):
            summary[prefix + key + suffix] = six[key + suffix]
    summary[prefix + "ratio"], summary[prefix + "ratio_min"], summary[prefix + "ratio_max"] = (
        six["ratio"], six["ratio_min"], six["ratio_max"]
    )
    ratios = []
    for a, b in zip(v4, v6):
        pa, pb = per_packet(a, source), per_packet(b, source)
        ratios.append(pb / pa if pa and pb is not None else None)
    summary[over], summary[over + "_min"], summary[over + "_max"] = (
        spread(ratios)
    )
    summary["srtp_auth_failures"] += six["srtp_auth_failures"]
    summary["misrouted"] += sum(r["misrouted"] + r["duplicates"] for r in v6)
    summary[prefix + "server_drops"] = six["server_drops"]
    summary[prefix + "kernel_drops"] = six["kernel_drops"]
    summary["runs"] += [{k: v for k, v in r.items() if k != "samples"} for r in v6]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup, as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_table(summary)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
