"""A short run of every fuzz target (fuzz/), as CI does: about a minute in all.

Each target runs in its own process (libFuzzer via atheris) for a few seconds over
the kept inputs (tests/data/fuzz/<target>/ and tests/fuzz/corpus/<target>/, read only) with the
normal build of the extensions (the AddressSanitizer build is `make fuzz`'s). A
crash, a hang or memory past the limit fails the test with libFuzzer's report; the
input is kept under pytest's tmp_path (copy it to tests/fuzz/crashes/ and add a
regression test).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.fuzz import run

SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "4"))


@pytest.mark.parametrize("target", run.TARGETS)
def test_fuzz_target_short_run(target, tmp_path):
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is not installed: pip install atheris (the [test] extra)")
    result = run.run_target(
        target,
        runs=10**9,
        max_time=SECONDS,
        asan_dir=None,
        merge=False,
        cpu=None,
        quiet=True,
        crashes=str(tmp_path),
    )
    assert result["exit"] == 0, (
        f"fuzz target {target} failed; input in {tmp_path}:\n{result.get('log_tail', '')}"
    )
    kept = [os.path.join(d, target) for d in (run.CORPUS, run.SEEDS)]
    count = sum(len(os.listdir(d)) for d in kept if os.path.isdir(d))
    # it really ran: every kept input, then new ones
    assert result["runs"] > count, result
    assert result["peak_rss_mb"] < run.RSS_LIMIT_MB, result
