"""Run the fuzz targets one after the other and report runs, exec/s and peak RSS.

    python -m tests.fuzz.run [TARGET ...] [--runs N] [--max-time S] [--asan DIR] [--merge]
                       [--cpu C] [--json FILE]

Each target runs as ``python -m tests.fuzz.fuzz_<target>`` (libFuzzer via atheris) over
a scratch corpus plus the kept ones, tests/data/fuzz/<target>/ (real captured packets
and hand-made seeds) and tests/fuzz/corpus/<target>/ (what fuzzing added), both read
only: new inputs go to the scratch directory. ``--asan DIR``: the native targets (NATIVE) import
the extensions from DIR, built with MEDIASERVER_SANITIZE=address,fuzzer-no-link
(make fuzz does it), with atheris' asan_with_fuzzer.so preloaded. ``--merge``
afterwards minimises tests/fuzz/corpus/<target>/ + new inputs into tests/fuzz/corpus/<target>/
(libFuzzer -merge=1), keeping only what the seeds do not already cover. A crash, a timeout (-timeout) or going over -rss_limit_mb stops the
target; the input is written to tests/fuzz/crashes/<target>-crash-<sha1>, and the run
exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
SEEDS = os.path.join(ROOT, "tests", "data", "fuzz")  # captured and hand-made seeds
CRASHES = os.path.join(HERE, "crashes")

TARGETS = (
    "stun",
    "dtls",
    "rtp",
    "rtcp",
    "srtp",
    "router",
    "sdp",
    "signalling",
    "rest_body",
    "rest_app",
)
NATIVE = ("rtp", "srtp", "router")
MAX_LEN = {
    "sdp": 16384,
    "rest_app": 4096,
    "rest_body": 4096,
    "signalling": 4096,
    "dtls": 4096,
    "stun": 2048,
    "router": 4096,
}
RSS_LIMIT_MB = 2048
TIMEOUT_S = 10


def target_env(target: str, asan_dir: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LD_PRELOAD", None)
    env.pop("MEDIASERVER_FUZZ_EXT_DIR", None)
    if asan_dir and target in NATIVE:
        atheris: Any = importlib.import_module("atheris")
        preload = os.path.join(atheris.path(), "asan_with_fuzzer.so")
        if not os.path.exists(preload):
            raise SystemExit(
                f"{preload} is missing: install atheris from source with clang "
                "(make fuzz does: pip install --no-binary atheris atheris)"
            )
        env["LD_PRELOAD"] = preload
        env["MEDIASERVER_FUZZ_EXT_DIR"] = os.path.abspath(asan_dir)
        # Python's own allocations are not leaks; a failed malloc is a Python MemoryError
        env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=64"
    return env


def command(target: str, flags: list[str], dirs: list[str], cpu: int | None) -> list[str]:
    cmd = [sys.executable, "-m", f"tests.fuzz.fuzz_{target}", *flags, *dirs]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return cmd


def run_target(
    target: str,
    runs: int,
    max_time: int,
    asan_dir: str | None,
    merge: bool,
    cpu: int | None,
    quiet: bool = False,
    crashes: str = CRASHES,
) -> dict[str, Any]:
    """Run one target (see the module doc); returns its figures as a dict."""
    seeds = os.path.join(CORPUS, target)
    os.makedirs(seeds, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f"fuzz-{target}-")
    flags = [
        f"-runs={runs}",
        f"-max_total_time={max_time}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-timeout={TIMEOUT_S}",
        f"-max_len={MAX_LEN.get(target, 2048)}",
        "-print_final_stats=1",
        f"-artifact_prefix={os.path.join(crashes, target)}-",
    ]
    kept = os.path.join(SEEDS, target)
    inputs = [seeds, kept] if os.path.isdir(kept) else [seeds]
    cmd = command(target, flags, [scratch, *inputs], cpu)
    env = target_env(target, asan_dir)
    # the targets' own files (rest_app's SQLite): tmpfs if there is one, removed below
    tmp = tempfile.mkdtemp(
        prefix=f"fuzz-{target}-tmp-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    env["TMPDIR"] = tmp
    started = time.monotonic()
    proc = subprocess.run(
        cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, errors="replace"
    )
    wall = time.monotonic() - started
    log = proc.stdout + proc.stderr
    result: dict[str, Any] = {
        "target": target,
        "asan": bool(env.get("LD_PRELOAD")),
        "exit": proc.returncode,
        "wall_s": round(wall, 1),
        "command": " ".join(cmd),
    }
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    result["runs"] = int(stats.get("number_of_executed_units", 0))
    result["exec_per_s"] = round(result["runs"] / wall) if wall else 0
    result["peak_rss_mb"] = int(stats.get("peak_rss_mb", 0))
    # memory over the run: right after the corpus is loaded, half way, at the end
    rss = [
        (int(n), int(mb))
        for n, mb in re.findall(r"#(\d+)\s+(?:INITED|pulse|NEW|REDUCE|DONE).*? rss: (\d+)Mb", log)
    ]
    result["rss_after_init_mb"] = rss[0][1] if rss else None
    half = [mb for n, mb in rss if n <= result["runs"] // 2]
    result["rss_half_way_mb"] = half[-1] if half else None
    result["rss_end_mb"] = rss[-1][1] if rss else None
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    result["cov"], result["ft"] = (int(cov[-1][0]), int(cov[-1][1])) if cov else (0, 0)
    if proc.returncode != 0:
        result["log_tail"] = log[-4000:]
    if merge and proc.returncode == 0:
        result.update(_merge(target, env, cpu, seeds, scratch, inputs[1:]))
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}), flush=True)
        if "log_tail" in result:
            print(result["log_tail"], file=sys.stderr, flush=True)
    return result


def report(path: str) -> str:
    """The Markdown table of fuzz/RESULTS.md, from a --json file."""
    rows = [
        (
            "| target | ASan | runs | wall s | exec/s | RSS after init / half way / end, MB"
            " | peak RSS MB | coverage (cov / ft) | corpus files | result |"
        ),
        "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: | --- |",
    ]
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rss = (
                f"{r.get('rss_after_init_mb')} / {r.get('rss_half_way_mb')} / {r.get('rss_end_mb')}"
            )
            result = "no crash, no hang" if r["exit"] == 0 else f"exit {r['exit']}"
            rows.append(
                f"| {r['target']} | {'yes' if r['asan'] else 'no'} | {r['runs']:,} | {r['wall_s']}"
                f" | {r['exec_per_s']:,} | {rss} | {r['peak_rss_mb']} | {r['cov']} / {r['ft']}"
                f" | {r.get('corpus_files', '-')} | {result} |"
            )
    return "\n".join(rows)


def _merge(
    target: str,
    env: dict[str, str],
    cpu: int | None,
    corpus: str,
    scratch: str,
    captured: list[str],
) -> dict[str, Any]:
    """Minimise corpus + scratch into corpus with libFuzzer's -merge=1, keeping only
    what the captured seeds (tests/data/fuzz/<target>/, kept apart) do not cover."""
    merged = tempfile.mkdtemp(prefix=f"fuzz-{target}-merged-")
    seed_names = set()
    for directory in captured:
        for name in os.listdir(directory):
            shutil.copy(os.path.join(directory, name), merged)
            seed_names.add(name)
    flags = ["-merge=1", f"-max_len={MAX_LEN.get(target, 2048)}", f"-timeout={TIMEOUT_S}"]
    mcmd = command(target, flags, [merged, corpus, scratch], cpu)
    m = subprocess.run(
        mcmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, errors="replace"
    )
    for name in seed_names:
        os.remove(os.path.join(merged, name))
    if m.returncode != 0:
        shutil.rmtree(merged)
        return {"merge_error": (m.stdout + m.stderr)[-2000:]}
    shutil.rmtree(corpus)
    shutil.move(merged, corpus)
    return {"corpus_files": len(os.listdir(corpus))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--max-time", type=int, default=0, help="seconds per target (0: none)")
    parser.add_argument(
        "--asan", metavar="DIR", help="sanitized extensions (build_ext --build-lib)"
    )
    parser.add_argument("--merge", action="store_true", help="minimise into tests/fuzz/corpus/")
    parser.add_argument("--cpu", type=int, help="pin each run to this CPU (taskset)")
    parser.add_argument("--json", metavar="FILE", help="append one JSON line per target")
    parser.add_argument(
        "--report", metavar="FILE", help="print the Markdown table of a --json file"
    )
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return 0
    failed = []
    for target in args.targets:
        if target not in TARGETS:
            parser.error(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
        result = run_target(target, args.runs, args.max_time, args.asan, args.merge, args.cpu)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")
        if result["exit"] != 0:
            failed.append(target)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
