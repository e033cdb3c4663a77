"""Side by side: the same offered load against mediaserver and what people would
use instead, in one run.

    python -m benchmarks.compare [--calls 4] [--duration 10] [--repeats 1]
                                 [--targets mediaserver,bare_forwarder,aiortc_relay,janus,pion]
                                 [--no-aiortc-capacity] [--quick] [--read-hold-us 0] [--json]

A call is one synthetic publisher whose video goes to one synthetic subscriber
(real ICE, DTLS and SRTP on 127.0.0.1), at the packet rate of a 640x480 20 fps
VP8 stream (--call-pps; by default that of the clip below, ~126 packets/s).

1. mediaserver and 2. the bare C forwarder (recvmmsg -> sendmmsg, no crypto):
   benchmarks/forward.py's harness, with its C send/receive loops and 1,100-byte
   payloads carrying send stamps (latency = the subscriber's kernel receive time
   minus the send time).
3. aiortc_relay: benchmarks/peers/aiortc_relay.py, aiortc's RTCPeerConnection per
   peer and MediaRelay, in its own process. It decodes and re-encodes, so the
   publishers send a real VP8 clip (encoded once with aiortc's encoder, replayed
   with rewritten sequence numbers and timestamps), and the peers answer its
   ICE checks (benchmarks/peers/fullice.py). What it forwards is its re-encoded
   output (its encoder picks the rate), so "forwarded" counts the packets the
   subscribers get, loss is frames out vs frames in, and there is no latency
   (the send stamps do not survive a re-encode).
   --aiortc-capacity (default, but not with --quick) also doubles its calls
   until frame loss passes 1%: how many calls it holds here.
4. janus: Debian's janus (1.1), VideoCall plugin, with benchmarks/peers/janus/
   configs, driven over its HTTP API on 127.0.0.1 (benchmarks/peers/janus_client.py),
   fed by the same C loops as 1 and 2. Janus never gathers loopback candidates,
   so this target runs (Janus and its peers) inside mediaserver.netns's private
   namespace, on its veth pair; the HTTP API stays on that namespace's loopback.
5. pion: a minimal 1:1 SFU on Pion WebRTC v3 (Go; the library LiveKit is built
   on), benchmarks/peers/pion/main.go, built on first use from Debian's
   golang-go and golang-github-pion-webrtc.v3-dev (benchmarks/peers/pion_client.py),
   signalled over HTTP on 127.0.0.1, fed by the same C loops as 1, 2 and 4. It
   gathers a loopback candidate, so it runs on 127.0.0.1 without the namespace.

CPU per forwarded packet is each server process's CPU (all threads: utime+stime
from /proc, or schedstat run time for short runs) over the run, divided by the
packets it forwarded. Wake-ups per packet is the number of times its threads were
woken (voluntary_ctxt_switches of /proc/PID/task/*/status, before and after the
run) over the same packets: at real call rates a wake-up carries one or two
packets, and that, more than the per-packet work, is what the CPU pays for. calls_per_core = calls / (CPU seconds per second). A target
that cannot run gets {"error": "..."} and the others still run. Every child
process dies with this one; every run stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import sys
import threading
import time
from typing import Any

from benchmarks import forward
from benchmarks.forward import BenchmarkError, ControlledProcess, process_cpu

TARGETS = ("mediaserver", "bare_forwarder", "aiortc_relay", "janus", "pion")
LABELS = {
    "mediaserver": "mediaserver",
    "bare_forwarder": "bare C forwarder",
    "aiortc_relay": "aiortc relay",
    "janus": "Janus VideoCall",
    "pion": "Pion (Go)",
}
PROFILE = "aead-aes-128-gcm"
PAYLOAD = 1100


def _median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def _entry(
    calls: int,
    cpu_us: float | None,
    pps: float | None,
    p99_us: float | None,
    loss: float | None,
    cpu_cores: float | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "calls": calls,
        "cpu_us_per_packet": cpu_us,
        "packets_per_s": pps,
        "p99_latency_ms": None if p99_us is None else p99_us / 1e3,
        "loss": loss,
        "cpu_cores": cpu_cores,
        "calls_per_core": calls / cpu_cores if cpu_cores else None,
        **extra,
    }


# ---- 1 and 2: benchmarks.forward --------------------------------------------------


def run_forward(args: argparse.Namespace, call_pps: float) -> tuple[dict, dict]:
    fargs = forward.parse_args(
        [
            "--pairs",
            str(args.calls),
            "--rate",
            str(args.calls * call_pps),
            "--duration",
            str(args.duration),
            "--size",
            str(PAYLOAD),
            "--profile",
            PROFILE,
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(min(args.warmup, 1.0)),
            "--read-hold-us",
            str(args.read_hold_us),
            *([] if args.socket_thread else ["--no-socket-thread"]),
        ]
    )
    s = forward.run(fargs)
    entries = []
    for prefix, cpu_key in (
        ("", "server_cpu_us_per_packet"),
        ("baseline_", "baseline_cpu_us_per_packet"),
    ):
        cpu_us, pps = s[cpu_key], s[prefix + "forwarded_pps"]
        entries.append(
            _entry(
                args.calls,
                cpu_us,
                pps,
                s[prefix + "latency_p99_us"],
                s[prefix + "loss"],
                cpu_us * pps / 1e6 if cpu_us is not None and pps else None,
                offered_pps=s[prefix + "offered_pps"],
                latency_p50_ms=None
                if s[prefix + "latency_p50_us"] is None
                else s[prefix + "latency_p50_us"] / 1e3,
                context_switches_per_packet=s[prefix + "context_switches_per_packet"],
                wakeups_per_packet=s[prefix + "wakeups_per_packet"],
                cpu_source=s["cpu_source"],
                cpu_us_per_packet_range=[s[cpu_key + "_min"], s[cpu_key + "_max"]],
            )
        )
    entries[0]["srtp_profile"] = s["profile"]
    entries[0]["loop"] = s["server_loop"]
    return entries[0], entries[1]


# ---- 3: the aiortc relay ----------------------------------------------------------


class RelayProcess(ControlledProcess):
    """benchmarks/peers/aiortc_relay.py in a child process."""

    def __init__(self) -> None:
        super().__init__(
            [sys.executable, "-m", "benchmarks.peers.aiortc_relay"], "aiortc relay", quit_timeout=6
        )


def run_aiortc(args: argparse.Namespace, clip: Any) -> dict[str, Any]:
    from benchmarks.peers.fullice import FullIceHandshake, FullIcePeer, VideoLoop
    from benchmarks.peers.webrtc import handshake
    from mediaserver.sfu.dtls import DtlsCertificate

    profile = forward.PROFILES[PROFILE]
    with contextlib.ExitStack() as stack:
        relay = RelayProcess()
        stack.callback(relay.close)
        certificate = DtlsCertificate.generate()
        senders = [
            FullIcePeer(i, "send", certificate, (profile,), False) for i in range(args.calls)
        ]
        receivers = [
            FullIcePeer(i, "recv", certificate, (profile,), False) for i in range(args.calls)
        ]
        for peer in senders + receivers:
            stack.callback(peer.close)
        for s in senders:
            reply = relay.request("publish", offer=s.offer())
            s.accept(reply["id"], reply["answer"])
        for s, r in zip(senders, receivers):
            reply = relay.request("subscribe", pub=s.session_id, offer=r.offer())
            r.accept(reply["id"], reply["answer"])
        handshake(senders + receivers, timeout=30, state_class=FullIceHandshake)
        loop = VideoLoop(senders, receivers, clip)
        loop.run(args.warmup_aiortc)  # the decoders and encoders start on a keyframe
        runs = []
        for _ in range(args.repeats):
            cpu0 = process_cpu(relay.pid)
            counts = loop.run(args.duration)
            cpu = process_cpu(relay.pid) - cpu0
            counts["cpu_s"] = (
                cpu.stat if cpu.stat * forward.CLK_TCK >= forward.MIN_TICKS else cpu.sched
            )
            counts["switches"] = cpu.switches
            counts["wakeups"] = cpu.wakeups
            runs.append(counts)
        if relay.proc.poll() is not None:
            raise BenchmarkError(f"the aiortc relay exited\n{relay.errors()}")

    def med(f: Any) -> float | None:
        return _median([f(r) for r in runs])

    per_run = [r["cpu_s"] * 1e6 / r["received"] for r in runs if r["received"]]
    cpu_us = _median(list(per_run))
    if not any(r["received"] for r in runs):
        raise BenchmarkError(
            f"the aiortc relay forwarded nothing (sent {runs[0]['sent']} packets; "
            f"{runs[0]['srtp_auth_failures']} SRTP failures at the subscribers)"
        )
    return _entry(
        args.calls,
        cpu_us,
        med(lambda r: r["received"] / r["elapsed_s"]),
        None,
        med(
            lambda r: (
                max(0.0, 1 - r["received_frames"] / r["sent_frames"]) if r["sent_frames"] else None
            )
        ),
        med(lambda r: r["cpu_s"] / r["elapsed_s"]),
        offered_pps=med(lambda r: r["sent"] / r["elapsed_s"]),
        cpu_us_per_packet_range=[min(per_run), max(per_run)],
        cpu_us_per_offered_packet=med(
            lambda r: r["cpu_s"] * 1e6 / r["sent"] if r["sent"] else None
        ),
        frames_in_per_s=med(lambda r: r["sent_frames"] / r["elapsed_s"]),
        frames_out_per_s=med(lambda r: r["received_frames"] / r["elapsed_s"]),
        bitrate_out_kbps=med(lambda r: r["received_bytes"] * 8 / r["elapsed_s"] / 1e3),
        context_switches_per_packet=med(
            lambda r: r["switches"] / r["received"] if r["received"] else None
        ),
        wakeups_per_packet=med(lambda r: r["wakeups"] / r["received"] if r["received"] else None),
        note="decodes and re-encodes: forwarded = its re-encoded packets; loss = frames; "
        "no latency (send stamps do not survive a re-encode)",
    )


def aiortc_capacity(args: argparse.Namespace, clip: Any) -> dict[str, Any]:
    """Double the calls (1, 2, 4... up to --aiortc-max-calls) while the relay keeps
    up: frame loss <= 1%. Short single runs; the last step that held is the answer."""
    steps = []
    held = 0
    calls = 1
    while calls <= args.aiortc_max_calls:
        step_args = argparse.Namespace(**vars(args))
        step_args.calls, step_args.repeats = calls, 1
        step_args.duration = min(args.duration, 5.0)
        try:
            e = run_aiortc(step_args, clip)
        except Exception as exc:  # noqa: BLE001
            steps.append({"calls": calls, "error": f"{type(exc).__name__}: {exc}"[:300]})
            break
        steps.append(
            {
                "calls": calls,
                "loss": e["loss"],
                "cpu_cores": e["cpu_cores"],
                "frames_out_per_s": e["frames_out_per_s"],
                "frames_in_per_s": e["frames_in_per_s"],
            }
        )
        if e["loss"] is None or e["loss"] > 0.01:
            break
        held = calls
        calls *= 2
    return {"calls_held": held, "capacity_steps": steps}


# ---- 4: Janus ---------------------------------------------------------------------


def run_janus(args: argparse.Namespace, call_pps: float) -> dict[str, Any]:
    from benchmarks.peers import janus_client

    return janus_client.run(args, call_pps, _entry)


# ---- 5: Pion ----------------------------------------------------------------------


def run_pion(args: argparse.Namespace, call_pps: float) -> dict[str, Any]:
    from benchmarks.peers import pion_client

    return pion_client.run(args, call_pps, _entry)


# ---- table ------------------------------------------------------------------------


def add_ratios(results: dict[str, dict[str, Any]]) -> None:
    base = results.get("mediaserver", {})
    for entry in results.values():
        if "error" in entry or "error" in base:
            continue
        ratios = {}
        for key in (
            "cpu_us_per_packet",
            "wakeups_per_packet",
            "packets_per_s",
            "p99_latency_ms",
            "calls_per_core",
        ):
            a, b = entry.get(key), base.get(key)
            ratios[key] = a / b if a is not None and b else None
        entry["ratio_to_mediaserver"] = ratios


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _spread(entry: dict[str, Any], repeats: int) -> str:
    text = _fmt(entry["cpu_us_per_packet"], ".2f")
    lo_hi = entry.get("cpu_us_per_packet_range")
    if repeats > 1 and lo_hi and None not in lo_hi:
        text += f" [{lo_hi[0]:.2f}-{lo_hi[1]:.2f}]"
    return text


def print_table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    print(
        f"side by side: {meta['calls']} call(s), {meta['call_pps']:.0f} packets/s each "
        f"({meta['calls'] * meta['call_pps']:.0f} offered), {meta['duration']} s x "
        f"{meta['repeats']} repeat(s) (medians), {meta['cpus']} CPUs"
    )
    header = [
        "target",
        "CPU us/pkt",
        "x ms",
        "wake/pkt",
        "x ms",
        "pkts/s",
        "x ms",
        "p99 ms",
        "x ms",
        "loss %",
        "cores",
        "calls/core",
        "x ms",
    ]
    rows = [header]
    errors = []
    for name in TARGETS:
        if name not in results:
            continue
        e = results[name]
        if "error" in e:
            rows.append([LABELS[name], "error"] + [""] * (len(header) - 2))
            errors.append(f"  {LABELS[name]}: {e['error'].splitlines()[0][:300]}")
            continue
        r = e.get("ratio_to_mediaserver", {})
        rows.append(
            [
                LABELS[name],
                _spread(e, meta["repeats"]),
                _fmt(r.get("cpu_us_per_packet"), ".2f"),
                _fmt(e.get("wakeups_per_packet"), ".3f"),
                _fmt(r.get("wakeups_per_packet"), ".2f"),
                _fmt(e["packets_per_s"], ".0f"),
                _fmt(r.get("packets_per_s"), ".2f"),
                _fmt(e["p99_latency_ms"], ".3f"),
                _fmt(r.get("p99_latency_ms"), ".2f"),
                _fmt(None if e["loss"] is None else e["loss"] * 100, ".2f"),
                _fmt(e["cpu_cores"], ".3f"),
                _fmt(e["calls_per_core"], ".0f"),
                _fmt(r.get("calls_per_core"), ".3f"),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  "
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
    print(
        "  (CPU: median [min-max] over the repeats; x ms: ratio to mediaserver; wake/pkt: "
        "times the server's threads were woken (voluntary context switches) per packet "
        "forwarded; calls/core = calls / CPU cores used, at this load)"
    )
    a = results.get("aiortc_relay", {})
    if "error" not in a and a:
        print(
            f"  aiortc relay: {a['frames_in_per_s']:.0f} frames/s in, {a['frames_out_per_s']:.0f} out "
            f"per s, {a['bitrate_out_kbps']:.0f} kbit/s out; {a['cpu_us_per_offered_packet']:.0f} us "
            f"per packet offered; {a['cpu_cores'] / a['calls']:.3f} of a core per stream"
        )
        if "calls_held" in a:
            steps = ", ".join(
                f"{s['calls']}: "
                + (
                    "error"
                    if "error" in s
                    else f"loss {s['loss'] * 100:.1f}% {s['cpu_cores']:.2f} cores"
                )
                for s in a["capacity_steps"]
            )
            print(f"  aiortc relay holds {a['calls_held']} call(s) on this machine ({steps})")
    for line in errors:
        print(line)


# ---- main -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="The same offered load against mediaserver, a bare C forwarder, "
        "an aiortc relay, Janus and Pion.",
    )
    parser.add_argument("--calls", type=int, default=None, help="calls (default 4; --quick 2)")
    parser.add_argument(
        "--call-pps",
        type=float,
        default=None,
        help="packets/s per call (default: the VP8 clip's, ~126: 640x480 20 fps 1.5 Mbit/s)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per measured run (default 10; --quick 4)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per target (default 3; --quick 1)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated, of {','.join(TARGETS)} (default all)",
    )
    parser.add_argument(
        "--aiortc-capacity",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also find how many calls the aiortc relay holds (doubling, frame loss <= 1%%; "
        "default on, off with --quick)",
    )
    parser.add_argument(
        "--aiortc-max-calls", type=int, default=32, help="stop the capacity search there (32)"
    )
    parser.add_argument("--quick", action="store_true", help="short runs: done within 3 minutes")
    parser.add_argument(
        "--read-hold-us",
        type=int,
        default=0,
        help="mediaserver's read hold (its --read-hold-us; default 0: off)",
    )
    parser.add_argument(
        "--no-socket-thread",
        dest="socket_thread",
        action="store_false",
        help="mediaserver reads its media socket on the event loop (its --no-socket-thread)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on the last line"
    )
    args = parser.parse_args(argv)
    args.calls = args.calls or (2 if args.quick else 4)
    args.duration = args.duration or (4.0 if args.quick else 10.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.warmup_aiortc = max(2.0, args.warmup)
    if args.aiortc_capacity is None:
        args.aiortc_capacity = not args.quick
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}: choose from {', '.join(TARGETS)}")
    args.targets = targets
    if args.calls < 1 or args.duration <= 0 or args.repeats < 1:
        parser.error("--calls, --duration and --repeats must be positive")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    clip = None
    call_pps = args.call_pps
    if "aiortc_relay" in args.targets or call_pps is None:
        try:
            from benchmarks.peers.fullice import make_clip

            clip = make_clip()
            call_pps = call_pps or clip.packets_per_second
        except Exception as exc:  # noqa: BLE001
            results["aiortc_relay"] = {"error": f"no VP8 clip: {type(exc).__name__}: {exc}"}
            call_pps = call_pps or 126.0

    def attempt(names: tuple[str, ...], fn: Any) -> None:
        try:
            out = fn()
        except (Exception, BenchmarkError) as exc:  # noqa: BLE001 (reported in its entry)
            for name in names:
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "calls": args.calls}
            return
        for name, entry in zip(names, out):
            results[name] = entry

    if "mediaserver" in args.targets or "bare_forwarder" in args.targets:
        attempt(("mediaserver", "bare_forwarder"), lambda: run_forward(args, call_pps))
        for name in ("mediaserver", "bare_forwarder"):
            if name not in args.targets:
                results.pop(name, None)
    if "aiortc_relay" in args.targets and clip is not None:
        attempt(("aiortc_relay",), lambda: (run_aiortc(args, clip),))
        if args.aiortc_capacity and "error" not in results["aiortc_relay"]:
            results["aiortc_relay"].update(aiortc_capacity(args, clip))
    if "janus" in args.targets:
        attempt(("janus",), lambda: (run_janus(args, call_pps),))
    if "pion" in args.targets:
        attempt(("pion",), lambda: (run_pion(args, call_pps),))
    add_ratios(results)
    import os

    meta = {
        "calls": args.calls,
        "call_pps": call_pps,
        "duration": args.duration,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return {"results": results, "meta": meta}


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        out = run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_table(out["results"], out["meta"])
    if args.json:
        print(
            json.dumps(
                {
                    **{k: out["results"][k] for k in TARGETS if k in out["results"]},
                    "meta": out["meta"],
                },
                sort_keys=True,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
