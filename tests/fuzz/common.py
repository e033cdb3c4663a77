"""What every target shares: loading the sanitized extensions, atheris set-up, framing.

A target module defines ``load()`` (imports the code under test into module
globals) and ``test_one_input(data: bytes) -> None`` (raises on a bug, returns on
anything the code under test may refuse), and ends with::

    if __name__ == "__main__":
        main(test_one_input, load, instrument=["mediaserver", "aioice"])

The regression tests call ``load()`` then ``test_one_input(data)`` directly.

``MEDIASERVER_FUZZ_EXT_DIR``: a directory holding ``mediaserver/_*.so`` built with
``MEDIASERVER_SANITIZE=address,fuzzer-no-link`` (``make fuzz`` builds it in
``build/fuzz-asan``). When set, ``mediaserver``'s Cython modules are imported from
there instead of the tree, so the tree's normal build is never replaced; run such a
process with ``LD_PRELOAD=<atheris.path()>/asan_with_fuzzer.so``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

EXT_DIR_ENV = "MEDIASERVER_FUZZ_EXT_DIR"
NATIVE_MODULES = ("mediaserver._srtp", "mediaserver._rtp", "mediaserver._router")


def use_sanitized_extensions() -> str | None:
    """Put the sanitized build's mediaserver/ first on the package path, if asked.

    Must run before any ``mediaserver._*`` extension is imported. Returns the
    directory used, or None for the normal build.
    """
    ext_dir = os.environ.get(EXT_DIR_ENV)
    if not ext_dir:
        return None
    package_dir = os.path.join(os.path.abspath(ext_dir), "mediaserver")
    if not os.path.isdir(package_dir):
        raise SystemExit(f"{EXT_DIR_ENV}={ext_dir}: no mediaserver/ there (run make fuzz)")
    import mediaserver

    loaded = [name for name in NATIVE_MODULES if name in sys.modules]
    if loaded:
        raise SystemExit(f"{EXT_DIR_ENV} must be applied before importing {loaded}")
    mediaserver.__path__.insert(0, package_dir)
    for name in NATIVE_MODULES:
        module = importlib.import_module(name)
        origin = getattr(module, "__file__", "") or ""
        if not origin.startswith(package_dir):
            raise SystemExit(f"{name} came from {origin}, not {package_dir}")
    return package_dir


def records(data: bytes, limit: int = 32) -> Iterator[tuple[int, bytes]]:
    """Split a fuzz input into (tag, payload) records: tag (1 byte), length (2 bytes
    big-endian), payload. A short tail becomes the last record's payload. At most
    ``limit`` records, so one input cannot run for long."""
    pos = 0
    count = 0
    size = len(data)
    while pos < size and count < limit:
        tag = data[pos]
        if pos + 3 > size:
            yield tag, data[pos + 1 :]
            return
        length = (data[pos + 1] << 8) | data[pos + 2]
        payload = data[pos + 3 : pos + 3 + length]
        pos += 3 + length
        count += 1
        yield tag, payload


def pack_records(items: Sequence[tuple[int, bytes]]) -> bytes:
    """The inverse of :func:`records`, for writing seeds."""
    out = bytearray()
    for tag, payload in items:
        if len(payload) > 0xFFFF:
            raise ValueError("record payload over 65535 bytes")
        out += bytes([tag & 0xFF]) + len(payload).to_bytes(2, "big") + payload
    return bytes(out)


def main(
    test_one_input: Callable[[bytes], None],
    load: Callable[[], None],
    instrument: Sequence[str] = (),
) -> None:
    """Run ``test_one_input`` under atheris with libFuzzer's command line (sys.argv).

    ``load`` imports what the target exercises; it runs inside
    ``atheris.instrument_imports`` for the top-level packages in ``instrument``,
    so their Python bytecode reports coverage (modules imported before are not
    instrumented: a target imports the code under test in ``load`` only).
    """
    # untyped (no stubs in the venv): used through Any
    atheris: Any = importlib.import_module("atheris")

    use_sanitized_extensions()
    with atheris.instrument_imports(include=list(instrument)):
        load()
    # the target's own functions too: with the plain build they are the only
    # coverage a native target has
    module = sys.modules[test_one_input.__module__]
    for name, value in list(vars(module).items()):
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            setattr(module, name, atheris.instrument_func(value))
    # libFuzzer re-runs argv[0] through the shell for -merge=1 and -fork: make it the
    # command that started us ("python -m tests.fuzz.fuzz_x"), not the module's file
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    argv = list(sys.argv)
    if spec is not None:
        argv[0] = f"{sys.executable} -m {spec.name}"
    atheris.Setup(argv, getattr(module, test_one_input.__name__))
    atheris.Fuzz()
