"""The load generator end to end: a short run against the real server (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from tests.support import ROOT


KEYS = {
    "offered_pps", "received_pps", "loss", "jitter_audio_ms", "jitter_video_ms",
    "latency_p50_ms", "latency_p99_ms", "matches", "matches_per_s", "nexts",
    "first_media_p50_ms", "first_media_p99_ms", "server_cpu_us_per_packet", "per_second",
    "sent_while_matched", "received_while_matched", "calls", "visitors", "matches_total",
    "server_wakeups_per_packet",
}


def test_short_run_with_next() -> None:
    visitors = 6
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", "--visitors", str(visitors),
         "--duration", "3", "--next-every", "1.5", "--seed", "1", "--json", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert KEYS <= result.keys(), KEYS - result.keys()
    assert result["matches"] > 0
    assert result["received"] > 0
    assert result["sent_while_matched"] > 0
    assert result["loss"] is not None and result["loss"] < 0.2
    # next happened: visitors were matched again after the first pairs
    assert result["nexts"] >= 1
    assert result["matches_total"] > visitors // 2
    assert result["plis_received"] > 0 and result["keyframes_sent"] > 0
    # the server was woken to forward what the visitors got
    assert result["server_wakeups_per_packet"] > 0


def test_workers_run_splits_the_load_and_reoffers_before_media() -> None:
    """--workers 2: every pair's two visitors end up on one worker (a visitor whose
    pair went elsewhere offered again before its handshake), and CPU is read per worker."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", "--visitors", "16", "--workers", "2",
         "--duration", "3", "--next-every", "100000", "--seed", "1", "--json", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["worker_cpu"]) == 2
    assert result["late_reoffers"] == 0
    assert result["loss"] is not None and result["loss"] < 0.2
    assert result["received"] > 0


def test_soak_samples_memory_descriptors_and_loss() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "0.3", "--sample", "5",
         "--calls", "3", "--next-every", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: not flat (short and noisy)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["samples"]) >= 2
    for row in result["samples"]:
        assert row["rss_mib"] > 0 and row["fds"] > 0 and row["received_pps"] > 0
        assert row["cpu_us_per_packet"] is not None
    assert {"flat", "rss_mib_growth", "fds_growth"} <= result["verdict"].keys()


def test_connections_benchmark_holds_what_it_opens() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.connections", "--connections", "200", "--hold", "3",
         "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["opened"] == result["open_at_end"] == 200
    assert result["bytes_per_connection"] > 0


def test_connections_benchmark_compares_wss_with_ws() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.connections", "--tls", "--connections", "100",
         "--hold", "1", "--repeat", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["all_held"] and result["repeat"] == 1
    assert result["ws_median"] > 0 and result["wss_median"] > 0
    assert len(result["wss_bytes_per_connection"]) == 1
