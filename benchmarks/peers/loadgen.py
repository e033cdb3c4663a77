"""Build and load the C packet loops (_loadgen.pyx), and read their results.

setup.py builds only ext/*.pyx, so the generator's Cython module is compiled
here, on first use, into build/benchmarks/loadgen-<hash>/ (reused while the
source, the SRTP declarations and the Python version stay the same). The build
runs in a child process so compiler output never mixes with a benchmark's table.

    loadgen = load()                  # the compiled module: Sender, Receiver
    percentiles(result["hist_kernel"], (50, 99))
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCE = HERE / "_loadgen.pyx"
SRTP_PXD = ROOT / "ext" / "mediaserver._srtp.pxd"
RTP_PXD = ROOT / "ext" / "mediaserver._rtp.pxd"
SYSTEM_PXD = ROOT / "ext" / "includes" / "system.pxd"
MODULE = "msbench_loadgen"

_module: ModuleType | None = None


def build_dir() -> Path:
    base = os.environ.get("MEDIASERVER_BENCH_BUILD")
    return Path(base) if base else ROOT / "build" / "benchmarks"


def _digest() -> str:
    h = hashlib.sha256()
    for path in (SOURCE, SRTP_PXD, RTP_PXD, SYSTEM_PXD):  # everything it cimports
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    try:
        import Cython

        h.update(Cython.__version__.encode())
    except ImportError:
        pass
    return h.hexdigest()[:16]


def _find(directory: Path) -> Path | None:
    for path in directory.glob(f"{MODULE}*.so"):
        return path
    return None


def _compile(out_dir: Path) -> None:
    """Cythonize and compile into out_dir (runs in a child process)."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    with tempfile.TemporaryDirectory(prefix="msbench-build-") as tmp:
        pyx = Path(tmp) / f"{MODULE}.pyx"
        shutil.copyfile(SOURCE, pyx)
        extension = Extension(
            MODULE,
            [str(pyx)],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
        )
        modules = cythonize(
            [extension],
            include_path=[str(ROOT / "ext")],
            compiler_directives={"language_level": 3},
            quiet=True,
        )
        dist = Distribution({"ext_modules": modules})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(out_dir)  # type: ignore[attr-defined]
        cmd.build_temp = str(Path(tmp) / "obj")  # type: ignore[attr-defined]
        cmd.ensure_finalized()
        cmd.run()


def build(force: bool = False) -> Path:
    """Compile the loops if needed; returns the path of the shared object.

    Raises:
        RuntimeError: the build failed (the message carries the compiler's output).
    """
    target = build_dir() / f"loadgen-{_digest()}"
    found = None if force else (_find(target) if target.is_dir() else None)
    if found is not None:
        return found
    build_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=build_dir()))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.peers.loadgen", "--compile", str(staging)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or _find(staging) is None:
            raise RuntimeError(
                "building benchmarks/peers/_loadgen.pyx failed "
                "(is mediaserver built? `python setup.py build_ext --inplace`):\n"
                + (proc.stdout + proc.stderr)[-4000:]
            )
        if force and target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)  # atomic; a concurrent build that won is kept
        except OSError:
            pass
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    found = _find(target)
    if found is None:
        raise RuntimeError(f"no {MODULE} module in {target} after the build")
    for old in build_dir().glob("loadgen-*"):
        if old != target:  # builds of earlier sources
            shutil.rmtree(old, ignore_errors=True)
    return found


def load() -> ModuleType:
    """The compiled module (built on first use)."""
    global _module
    if _module is None:
        import mediaserver._srtp  # noqa: F401  (its C API is imported by the module)

        path = build()
        spec = importlib.util.spec_from_file_location(MODULE, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _module = module
    return _module


# ---- results -----------------------------------------------------------------


def histogram(data: bytes) -> array:
    hist = array("I")
    hist.frombytes(data)
    return hist


def merge(histograms: list[bytes]) -> array:
    """Sum several runs' histograms (1 us buckets)."""
    total = array("Q", bytes(8 * (len(histograms[0]) // 4))) if histograms else array("Q")
    for data in histograms:
        for i, count in enumerate(histogram(data)):
            if count:
                total[i] += count
    return total


def percentiles(data: bytes | array, points: tuple[float, ...]) -> list[float | None]:
    """Percentiles (0-100) of a 1 us-bucket histogram, in microseconds (bucket
    upper edges); None when it is empty."""
    hist = histogram(data) if isinstance(data, bytes) else data
    total = sum(hist)
    if total == 0:
        return [None for _ in points]
    targets = sorted((max(1, -(-p * total // 100)), i) for i, p in enumerate(points))
    out: list[float | None] = [None] * len(points)
    seen = 0
    t = 0
    for bucket, count in enumerate(hist):
        if not count:
            continue
        seen += count
        while t < len(targets) and seen >= targets[t][0]:
            out[targets[t][1]] = float(bucket + 1)
            t += 1
        if t == len(targets):
            break
    return out


def check_with_libsrtp(
    samples: list[list[bytes]], profile: int, keys: list[tuple[bytes, bytes]]
) -> dict:
    """Unprotect the raw datagrams the receivers kept with libsrtp (pylibsrtp):
    an implementation independent of mediaserver._srtp, which protected them.

    Returns:
        {"checked": n, "ok": n, "available": bool}
    """
    try:
        import pylibsrtp
    except ImportError:
        return {"available": False, "checked": 0, "ok": 0}
    checked = ok = 0
    for packets, (key, salt) in zip(samples, keys):
        if not packets:
            continue
        policy = pylibsrtp.Policy(
            key=key + salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        session = pylibsrtp.Session(policy)
        for packet in packets:
            checked += 1
            try:
                session.unprotect(packet)
            except pylibsrtp.Error:
                continue
            ok += 1
    return {"available": True, "checked": checked, "ok": ok}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--compile":
        _compile(Path(sys.argv[2]))
    else:
        print(build(force="--force" in sys.argv))
