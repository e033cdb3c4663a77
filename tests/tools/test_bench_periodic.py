"""benchmarks/periodic.py end to end, short: the real server with --count-timers, its
/metrics counts, CPU and wake-ups from /proc, for idle and a few visitors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_periodic_benchmark_reports_each_state_with_timer_sources() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.periodic",
            "--duration",
            "1.5",
            "--visitors",
            "5",
            "--json",
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    idle, visitors = result["states"]["idle"], result["states"]["visitors"]
    assert visitors["open_at_end"] == 5
    for state in (idle, visitors):
        assert state["cpu_ms_per_s"] > 0
        assert state["wakeups_main_per_s"] > 0
        # the lag watch sleeps 0.5 s: about 2 a second, named by its coroutine
        lag = state["timers_by_source"][
            "_set_result_unless_cancelled in mediaserver.metrics.Metrics.watch_loop_lag"
        ]
        assert 1 <= lag <= 3
    # every visitor is pinged: uvicorn's keepalive (or our sweep) shows up as a source
    assert any("ping" in source.lower() for source in visitors["timers_by_source"])
    assert "timer callbacks per second, idle:" in out.stdout
