"""mediaserver against Janus with real Chromium pairs: CPU per forwarded packet.

    python -m mediaserver.netns -- python -m benchmarks.chromium_compare
        [--pairs 2] [--duration 20] [--repeats 3] [--warmup 3]
        [--targets mediaserver,mediaserver-loop,janus] [--json]

(Started outside the private namespace, it re-runs itself inside one.)

A pair is two headless Chromium pages (Debian's /usr/bin/chromium driven by
Playwright, fake camera and microphone) in a call through the server, sending
video and audio both ways. Targets (benchmarks/peers/chromium_targets.py):

- mediaserver: `mediaserver` with one worker, its media socket read by the C
  socket thread (the default), and its own web client in Random mode: the pages
  press Start and the matchmaker pairs them.
- mediaserver-loop: the same with --no-socket-thread (the event-loop reader).
- janus: Janus 1.1's VideoCall plugin (benchmarks/peers/janus/ configs), driven
  from the browser over its HTTP API by benchmarks/peers/janus_page/.

Both see the same media: getUserMedia's video is fixed to 640x480 at 30 fps by
an init script on every page, and once media flows every video sender is set to
degradationPreference "maintain-resolution" (Chromium otherwise scales a loaded
sender down); VP8 (mediaserver's answer picks it; the Janus page prefers it), Opus
audio. A repeat where resolutions or packet rates still differ is named in a warning. The table shows each target's packets/s, frames/s and
bit rate so a reader can check that the loads match: the senders' bandwidth
estimate follows each server's feedback, so they need not be identical.

Measured over a window that starts once every page decodes video (framesDecoded
grows) plus --warmup seconds: the server process's CPU (every thread;
benchmarks/forward.py's process_cpu: utime+stime, or schedstat run time when the
window is short), and packets forwarded = the sum over pages of their inbound-rtp
packetsReceived (audio + video) deltas from getStats(). CPU us per packet = CPU /
packets; wake-ups per packet = voluntary context switches of the server's threads
/ packets. Each repeat runs every target once, in turn, fresh (server and
browser), and the ratios Janus / mediaserver are taken within each repeat; the
table gives medians over the repeats. Chromium (four pages encode and decode
640x480 video) shares the machine's cores with the server, so the figures are
noisy on a small machine: compare ratios within a run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import re
import statistics
import sys
import time
from typing import Any

from benchmarks import forward
from benchmarks.peers.chromium_targets import JanusTarget, MediaserverTarget, TargetError
from mediaserver import netns

TARGETS = ("mediaserver", "mediaserver-loop", "janus")
LABELS = {
    "mediaserver": "mediaserver (socket thread)",
    "mediaserver-loop": "mediaserver (event loop)",
    "janus": "Janus VideoCall",
}
CHROMIUM = "/usr/bin/chromium"
VIDEO = {"width": 640, "height": 480, "fps": 30}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--use-fake-ui-for-media-stream",
    f"--use-fake-device-for-media-stream=fps={VIDEO['fps']}",
]
# Before any page script: getUserMedia's video constraints are the same on every page.
CAMERA_JS = """
(() => {
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) return;
  const original = md.getUserMedia.bind(md);
  const video = VIDEO_CONSTRAINTS;
  md.getUserMedia = (c) => original({...(c || {}), video: c && c.video ? video : false});
})();
""".replace(
    "VIDEO_CONSTRAINTS",
    json.dumps(
        {
            "width": {"exact": VIDEO["width"]},
            "height": {"exact": VIDEO["height"]},
            # ideal: the fake camera refuses an exact rate; its --use-fake-device flag sets 30
            "frameRate": {"ideal": VIDEO["fps"]},
        }
    ),
)
STATS_JS = """
async () => {
  const pc = (window.mediaserverClient && window.mediaserverClient.pc) || window.pc;
  const out = {packets: 0, audio: 0, video: 0, bytes: 0, frames: 0, codec: '',
               width: 0, height: 0, state: pc ? pc.connectionState : 'none'};
  if (!pc) return out;
  const stats = await pc.getStats();
  for (const s of stats.values()) {
    if (s.type !== 'inbound-rtp') continue;
    out.packets += s.packetsReceived || 0;
    out.bytes += s.bytesReceived || 0;
    if (s.kind === 'audio') out.audio += s.packetsReceived || 0;
    if (s.kind === 'video') {
      out.video += s.packetsReceived || 0;
      out.frames += s.framesDecoded || 0;
      out.width = s.frameWidth || 0;
      out.height = s.frameHeight || 0;
      const codec = s.codecId && stats.get(s.codecId);
      if (codec) out.codec = codec.mimeType;
    }
  }
  return out;
}
"""

# Chromium scales the camera down when it thinks its CPU or the path is overloaded
# (seen here: 320x240 on one target, 640x480 on the other, in the same repeat): keep
# the resolution on every page, so both targets carry the same frames.
KEEP_RESOLUTION_JS = """
async () => {
  const pc = (window.mediaserverClient && window.mediaserverClient.pc) || window.pc;
  let done = 0;
  for (const sender of pc ? pc.getSenders() : []) {
    if (!sender.track || sender.track.kind !== 'video') continue;
    const params = sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    await sender.setParameters(params);
    done += 1;
  }
  return done;
}
"""
PAGE_ERROR_JS = "() => (window.janusPage && window.janusPage.error) || null"


def _median(values: list[Any]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def thread_cpu(pid: int) -> dict[str, float]:
    """Run time (s, schedstat) of the process's threads, summed by thread name: says
    which part (event loop, socket thread, Janus's loops...) the CPU went to.
    "hloop 4366389" (Janus: a loop per handle) counts as "hloop"; the process's
    first thread is "main" (mediaserver's event loop); threads named like it
    (mediaserver's C socket thread has no name of its own) are "python (other)"."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/comm") as f:
            main_name = f.read().strip()
    except OSError:
        return out
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(f"{task}/comm") as f:
                comm = f.read().strip()
            name = re.sub(r"[\s\d]+$", "", comm) or comm
            if task.endswith(f"/{pid}"):
                name = "main"
            elif comm == main_name:
                name = f"{comm} (other)"
            with open(f"{task}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just exited
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def _thread_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each thread name's share of the window's run time, largest first."""
    spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
    total = sum(v for v in spent.values() if v > 0)
    if total <= 0:
        return {}
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])
    return {k: round(v / total, 3) for k, v in ranked if v / total >= 0.01}


async def _stats(pages: list[Any]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(p.evaluate(STATS_JS) for p in pages)))


async def _wait_flowing(pages: list[Any], target: Any, timeout: float) -> None:
    """Until every page has decoded frames, and more since the first look."""
    first = await _stats(pages)
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.sleep(0.5)
        now = await _stats(pages)
        if all(n["frames"] >= f["frames"] + 10 and n["frames"] > 0 for f, n in zip(first, now)):
            return
        if not target.alive():
            raise TargetError(f"the server exited:\n{target.errors()}")
        errors = [await p.evaluate(PAGE_ERROR_JS) for p in pages]
        if any(errors):
            raise TargetError(f"a page failed: {errors}")
        if time.monotonic() > deadline:
            phases = [
                await p.evaluate(
                    "() => (window.janusPage && window.janusPage.phase) ||"
                    " (document.querySelector('#status') || {}).textContent"
                )
                for p in pages
            ]
            raise TargetError(
                f"media did not flow on every page within {timeout:.0f} s: frames "
                f"{[n['frames'] for n in now]}, states {[n['state'] for n in now]}, "
                f"pages say {phases}"
            )


def _make_target(name: str, pages: int) -> Any:
    if name == "janus":
        return JanusTarget(pages)
    return MediaserverTarget(pages, socket_thread=name == "mediaserver")


async def run_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh run: start the server, open 2 x pairs pages, call, measure."""
    from playwright.async_api import async_playwright

    with _make_target(name, 2 * args.pairs) as target:
        # the non-localhost page origins get getUserMedia as a secure context
        secure = ",".join(u.split("?")[0].rstrip("/") for u in target.urls[1:])
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=[*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={secure}"],
            )
            try:
                context = await browser.new_context()
                await context.add_init_script(CAMERA_JS)
                pages = []
                for url in target.urls:
                    page = await context.new_page()
                    await page.goto(url)
                    pages.append(page)
                await target.start_calls(pages, args.setup_timeout)
                await _wait_flowing(pages, target, args.setup_timeout)
                kept = await asyncio.gather(*(p.evaluate(KEEP_RESOLUTION_JS) for p in pages))
                if not all(kept):
                    raise TargetError(f"a page has no video sender: {kept}")
                await asyncio.sleep(args.warmup)
                s0 = await _stats(pages)
                threads0 = thread_cpu(target.pid)
                cpu0, t0 = forward.process_cpu(target.pid), time.monotonic()
                await asyncio.sleep(args.duration)
                cpu, elapsed = forward.process_cpu(target.pid) - cpu0, time.monotonic() - t0
                threads = _thread_shares(threads0, thread_cpu(target.pid))
                s1 = await _stats(pages)
                if not target.alive():
                    raise TargetError(f"the server exited during the run:\n{target.errors()}")
            finally:
                await browser.close()
    packets = sum(b["packets"] - a["packets"] for a, b in zip(s0, s1))
    video = sum(b["video"] - a["video"] for a, b in zip(s0, s1))
    use_stat = cpu.stat * forward.CLK_TCK >= forward.MIN_TICKS
    cpu_s = cpu.stat if use_stat else cpu.sched
    return {
        "cpu_us_per_packet": cpu_s * 1e6 / packets if packets else None,
        "wakeups_per_packet": cpu.wakeups / packets if packets else None,
        "packets_per_s": packets / elapsed,
        "video_packets_per_s": video / elapsed,
        "audio_packets_per_s": (packets - video) / elapsed,
        "kbit_per_s": sum(b["bytes"] - a["bytes"] for a, b in zip(s0, s1)) * 8 / elapsed / 1e3,
        "frames_per_s_per_page": sum(b["frames"] - a["frames"] for a, b in zip(s0, s1))
        / elapsed
        / len(s1),
        "cpu_cores": cpu_s / elapsed,
        "cpu_source": "stat" if use_stat else "schedstat",
        "codecs": sorted({s["codec"] for s in s1}),
        "resolutions": sorted({f"{s['width']}x{s['height']}" for s in s1}),
        "packets": packets,
        "elapsed_s": elapsed,
        "cpu_share_by_thread": threads,
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or "error" in a or "error" in b:
        return None
    x, y = a.get(key), b.get(key)
    return x / y if x is not None and y else None


def summarize(runs: list[dict[str, dict[str, Any]]], targets: list[str]) -> dict[str, Any]:
    """Medians per target over the repeats, and the Janus / mediaserver ratios
    taken within each repeat (then their median)."""
    results: dict[str, dict[str, Any]] = {}
    for name in targets:
        ok = [r[name] for r in runs if name in r and "error" not in r[name]]
        if not ok:
            errors = [r[name]["error"] for r in runs if name in r]
            results[name] = {"error": errors[0] if errors else "did not run"}
            continue
        entry: dict[str, Any] = {
            key: _median([r[key] for r in ok])
            for key in (
                "cpu_us_per_packet",
                "wakeups_per_packet",
                "packets_per_s",
                "video_packets_per_s",
                "audio_packets_per_s",
                "kbit_per_s",
                "frames_per_s_per_page",
                "cpu_cores",
            )
        }
        cpus = [r["cpu_us_per_packet"] for r in ok if r["cpu_us_per_packet"] is not None]
        entry["cpu_us_per_packet_range"] = [min(cpus), max(cpus)] if cpus else None
        entry["codecs"] = sorted({c for r in ok for c in r["codecs"]})
        entry["resolutions"] = sorted({c for r in ok for c in r["resolutions"]})
        entry["cpu_source"] = sorted({r["cpu_source"] for r in ok})
        names = {n for r in ok for n in r.get("cpu_share_by_thread", {})}
        shares = {n: _median([r["cpu_share_by_thread"].get(n, 0.0) for r in ok]) for n in names}
        entry["cpu_share_by_thread"] = dict(sorted(shares.items(), key=lambda kv: -(kv[1] or 0)))
        entry["runs"] = len(ok)
        failed = [r[name]["error"] for r in runs if name in r and "error" in r[name]]
        if failed:
            entry["failed_runs"] = failed
        results[name] = entry
    for base in ("mediaserver", "mediaserver-loop"):
        if any("error" in results.get(name, {"error": ""}) for name in ("janus", base)):
            continue
        ratios: dict[str, Any] = {}
        for key in ("cpu_us_per_packet", "wakeups_per_packet", "packets_per_s"):
            per_run = [_ratio(r.get("janus"), r.get(base), key) for r in runs]
            ratios[key] = _median(per_run)
            ratios[key + "_per_run"] = per_run
        results["janus"]["ratio_to_" + base.replace("-", "_")] = ratios
    return results


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def comparability_warnings(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """Where the targets did not carry the same media: a resolution other than the
    camera's, or a repeat whose packet rates differ by more than a quarter."""
    size = f"{meta['video']['width']}x{meta['video']['height']}"
    out = []
    for name in TARGETS:
        other = [r for r in results.get(name, {}).get("resolutions", []) if r != size]
        if other:
            out.append(f"{LABELS[name]} received {', '.join(other)} in some repeat (not {size})")
    for key, r in results.get("janus", {}).items():
        if not key.startswith("ratio_to_"):
            continue
        off = [v for v in r["packets_per_s_per_run"] if v is not None and not 0.8 <= v <= 1.25]
        if off:
            out.append(
                f"packets/s Janus / {key[len('ratio_to_') :]} was {', '.join(f'{v:.2f}' for v in off)}"
                " in some repeat: that repeat's loads differ"
            )
    return out


def print_table(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    print(
        f"real Chromium pairs: {meta['pairs']} pair(s) = {2 * meta['pairs']} pages, "
        f"{meta['video']['width']}x{meta['video']['height']} {meta['video']['fps']} fps fake "
        f"camera + audio, {meta['duration']} s x {meta['repeats']} repeat(s) (medians), "
        f"{meta['cpus']} CPUs shared with Chromium"
    )
    header = ["target", "CPU us/pkt", "wake/pkt", "pkts/s", "video", "audio", "kbit/s",
              "fps/page", "cores", "codec"]  # fmt: skip
    rows = [header]
    errors = []
    for name in TARGETS:
        e = results.get(name)
        if e is None:
            continue
        if "error" in e:
            rows.append([LABELS[name], "error"] + [""] * (len(header) - 2))
            errors.append(f"  {LABELS[name]}: {e['error'].splitlines()[0][:300]}")
            continue
        cpu = _fmt(e["cpu_us_per_packet"], ".1f")
        lo_hi = e.get("cpu_us_per_packet_range")
        if meta["repeats"] > 1 and lo_hi:
            cpu += f" [{lo_hi[0]:.1f}-{lo_hi[1]:.1f}]"
        rows.append(
            [
                LABELS[name],
                cpu,
                _fmt(e["wakeups_per_packet"], ".3f"),
                _fmt(e["packets_per_s"], ".0f"),
                _fmt(e["video_packets_per_s"], ".0f"),
                _fmt(e["audio_packets_per_s"], ".0f"),
                _fmt(e["kbit_per_s"], ".0f"),
                _fmt(e["frames_per_s_per_page"], ".1f"),
                _fmt(e["cpu_cores"], ".3f"),
                ",".join(c.split("/")[-1] for c in e["codecs"]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print("  " + "  ".join(cells))
    for name in TARGETS:
        shares = results.get(name, {}).get("cpu_share_by_thread")
        if shares:
            top = ", ".join(f"{n} {v * 100:.0f}%" for n, v in list(shares.items())[:5])
            print(f"  {LABELS[name]}: CPU by thread: {top}")
    janus = results.get("janus", {})
    for base in ("mediaserver", "mediaserver-loop"):
        r = janus.get("ratio_to_" + base.replace("-", "_"))
        if r and r["cpu_us_per_packet"] is not None:
            per_run = ", ".join(_fmt(v, ".2f") for v in r["cpu_us_per_packet_per_run"])
            print(
                f"  Janus / {LABELS[base]}: CPU per packet x{_fmt(r['cpu_us_per_packet'], '.2f')}"
                f" (per repeat: {per_run}), wake-ups per packet "
                f"x{_fmt(r['wakeups_per_packet'], '.2f')}, packets/s x{_fmt(r['packets_per_s'], '.2f')}"
            )
    for line in comparability_warnings(results, meta):
        print("  warning: " + line)
    print(
        "  (CPU: the server process, all threads, median [min-max] over the repeats; packets: "
        "inbound-rtp packetsReceived summed over the pages, audio + video; wake/pkt: voluntary "
        "context switches of the server's threads per packet; the ratios are taken within "
        "each repeat)"
    )
    for line in errors:
        print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chromium_compare",
        description="CPU per forwarded packet of mediaserver and Janus with real Chromium pairs.",
    )
    parser.add_argument("--pairs", type=int, default=2, help="calls, 2 pages each (default 2)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every target (3)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds after media flows, unmeasured: the senders' bandwidth estimate ramps (5)",
    )
    parser.add_argument(
        "--setup-timeout", type=float, default=45.0, help="seconds for the calls to start (45)"
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated, of {','.join(TARGETS)} (default all)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"unknown targets {unknown}: choose from {', '.join(TARGETS)}")
    args.targets = targets
    if args.pairs < 1 or args.duration <= 0 or args.repeats < 1 or args.warmup < 0:
        parser.error("--pairs, --duration and --repeats must be positive")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, dict[str, Any]]] = []
    for _ in range(args.repeats):
        run_: dict[str, dict[str, Any]] = {}
        for name in args.targets:
            try:
                run_[name] = await run_target(name, args)
            except Exception as exc:  # noqa: BLE001 (reported in its entry)
                run_[name] = {"error": f"{type(exc).__name__}: {exc}"}
        runs.append(run_)
    meta = {
        "pairs": args.pairs,
        "duration": args.duration,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "video": VIDEO,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return {"results": summarize(runs, args.targets), "runs": runs, "meta": meta}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not netns.inside():
        # Chromium and Janus skip loopback: run in the private namespace
        return netns.main([sys.executable, "-m", "benchmarks.chromium_compare", *argv])
    with contextlib.suppress(KeyboardInterrupt):
        out = asyncio.run(run(args))
        print_table(out["results"], out["meta"])
        if args.json:
            print(json.dumps({**out["results"], "runs": out["runs"], "meta": out["meta"]}))
        return 0
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
