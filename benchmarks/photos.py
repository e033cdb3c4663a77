"""Memory of photo uploads: the growth of peak RSS (VmHWM) while N uploads of the
largest photo accepted (MAX_PIXELS, 40 MP) decode at once, through the real API.

Each image kind runs in a fresh process (VmHWM only grows): the API on uvicorn in a
thread on a loopback port, a real SQLite file, N clients PUTting the same photo at
once. The growth over a warmed-up baseline is what those decodes cost; the API lets
at most its heavy-pool size decode at a time.

    python -m benchmarks.photos [--n 8] [--kinds jpeg,png,png_rgba,webp] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

KINDS = ("jpeg", "png", "png_rgba", "webp")
SIZE = (8000, 5000)  # 40 MP: photos.MAX_PIXELS exactly
CTYPE = {"jpeg": "image/jpeg", "png": "image/png", "png_rgba": "image/png",
         "webp": "image/webp"}


def make_photo(kind: str) -> bytes:
    """A 40-megapixel image of `kind`, small on the wire (a smooth gradient)."""
    from PIL import Image

    w, h = SIZE
    mode = "RGBA" if kind == "png_rgba" else "RGB"
    small = Image.linear_gradient("L").resize((w // 16, h // 16)).convert(mode)
    image = small.resize(SIZE)
    out = io.BytesIO()
    if kind == "jpeg":
        image.save(out, "JPEG", quality=60)
    elif kind == "webp":
        image.save(out, "WEBP", quality=50, method=0)
    else:
        image.save(out, "PNG", compress_level=9)
    return out.getvalue()


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_one(kind: str, n: int, path: str) -> dict[str, Any]:
    """In this (fresh) process: the API, then n concurrent uploads of the photo in
    `path` (made by the parent: making it here would raise the peak beforehand)."""
    import httpx
    import uvicorn
    from starlette.applications import Starlette

    from mediaserver.api import create_api
    from mediaserver.api.limits import UNLIMITED
    from mediaserver.api.context import HEAVY_WORKERS, SHARED_WORKERS
    from mediaserver.store import Store

    with open(path, "rb") as f:
        photo = f.read()
    directory = tempfile.mkdtemp(prefix="bench-photos-")
    store = Store(os.path.join(directory, "photos.db"), os.urandom(32))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(
        Starlette(routes=[create_api(store, rates=UNLIMITED)]), host="127.0.0.1", port=port,
        log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}/api/v1"
    users = []
    with httpx.Client(base_url=base, timeout=300) as http:
        for i in range(n):
            r = http.post("/profiles", json={"username": f"photo{i}", "date_of_birth": "1990-01-01"})
            r.raise_for_status()
            users.append(r.json())
        # warm-up: a small photo through the same path (Pillow, libjpeg, the store)
        from PIL import Image

        small = io.BytesIO()
        Image.new("RGB", (640, 480)).save(small, "JPEG")
        h = {"Authorization": f"Bearer {users[0]['token']}", "Content-Type": "image/jpeg"}
        http.put(f"/profiles/{users[0]['id']}/photo", content=small.getvalue(),
                 headers=h).raise_for_status()
    baseline = vm_hwm_mib()
    codes: list[int] = []

    def upload(user: dict[str, Any]) -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            codes.append(c.put(f"/profiles/{user['id']}/photo", content=photo, headers={
                "Authorization": f"Bearer {user['token']}", "Content-Type": CTYPE[kind]}
            ).status_code)

    threads = [threading.Thread(target=upload, args=(u,)) for u in users]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    server.should_exit = True
    if codes != [201] * n:
        raise RuntimeError(f"uploads answered {codes}")
    growth = vm_hwm_mib() - baseline
    return {"kind": kind, "n": n, "heavy_workers": HEAVY_WORKERS,
            "decode_slots": SHARED_WORKERS, "bytes": len(photo),
            "peak_rss_growth_mib": round(growth, 1),
            "per_decode_slot_mib": round(growth / min(n, SHARED_WORKERS), 1),
            "seconds": round(elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="concurrent uploads (default 8)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # the child: kind, file
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one[0], args.n, args.one[1])))
        return 0
    results = []
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r}: {', '.join(KINDS)}")
        with tempfile.NamedTemporaryFile(suffix="." + kind) as f:
            f.write(make_photo(kind))
            f.flush()
            proc = subprocess.run([sys.executable, "-m", "benchmarks.photos", "--one", kind,
                                   f.name, "--n", str(args.n)],
                                  capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return 1
        results.append(json.loads(proc.stdout))
    if args.json:
        print(json.dumps({"results": results}))
    else:
        for r in results:
            print(f"{r['kind']:9} {r['bytes'] / 1e6:5.2f} MB on the wire, {r['n']} at once "
                  f"({r['decode_slots']} decode at a time): peak RSS +{r['peak_rss_growth_mib']}"
                  f" MiB ({r['per_decode_slot_mib']} MiB per decode slot), {r['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
