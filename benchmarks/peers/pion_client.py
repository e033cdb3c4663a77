"""Pion WebRTC (Go) as a benchmarks/compare.py target.

benchmarks/peers/pion/main.go is a minimal 1:1 SFU on Pion v3 (one PeerConnection
per peer, the publisher's video forwarded to its subscriber through a
TrackLocalStaticRTP, default codecs and interceptors), built on first use, offline,
from Debian's golang-go and golang-github-pion-webrtc.v3-dev (GOPATH mode against
/usr/share/gocode) into build/benchmarks/pion-<hash>/ (reused while the source and
the toolchain stay the same).

It runs in a child process; signalling is its HTTP endpoint on 127.0.0.1 (POST
/publish and /subscribe?pub=ID with our offer, non-trickle answers). Pion gathers
a host candidate on 127.0.0.1 only (SetIncludeLoopbackCandidate, SetIPFilter), so
unlike Janus this target needs no network namespace. Pion is a full ICE agent and
the answerer: our peers (benchmarks/peers/fullice.py) are the controlling side,
answer its checks, and stay the DTLS client (a=setup:active). Media then goes
through the same C loops as mediaserver's (benchmarks/forward.py run_once), with
the same keep-alive a browser sends (an SRTCP receiver report each second, a
consent check every 5 s); Pion relays the payload unchanged (new SSRC and payload
type per subscriber), so loss and latency are comparable. "Forwarded" is Pion's
own count of packets written to the subscribers' tracks (GET /stats).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.peers.fullice import FullIceHandshake, FullIcePeer
from benchmarks.peers.loadgen import build_dir

SOURCE = Path(__file__).resolve().parent / "pion"
GOCODE = Path("/usr/share/gocode/src")
PION = GOCODE / "github.com" / "pion" / "webrtc"
LOOPBACK = "127.0.0.1"
INSTALL = "apt-get install golang-go golang-github-pion-webrtc.v3-dev (make test's set-up does it)"


class PionError(RuntimeError):
    pass


def _digest(go: str) -> str:
    h = hashlib.sha256()
    for name in ("main.go", "go.mod"):
        h.update((SOURCE / name).read_bytes())
    h.update((PION / "go.mod").read_bytes())  # the packaged Pion's version
    h.update(subprocess.run([go, "version"], capture_output=True, check=False).stdout)
    return h.hexdigest()[:16]


def build() -> Path:
    """The SFU's binary, built if needed (about 10 s the first time)."""
    go = shutil.which("go")
    if go is None:
        raise PionError(f"go is not installed: {INSTALL}")
    if not (PION / "go.mod").is_file():
        raise PionError(f"Pion's sources are not in {PION}: {INSTALL}")
    target = build_dir() / f"pion-{_digest(go)}"
    exe = target / "pion-sfu"
    if exe.is_file():
        return exe
    build_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-pion-", dir=build_dir()))
    try:
        # GOPATH mode: the package sits in its own GOPATH (its go.mod lets the
        # "/v3" import paths resolve to Debian's unversioned directories)
        package = staging / "gopath" / "src" / "pionsfu"
        package.mkdir(parents=True)
        for name in ("main.go", "go.mod"):
            shutil.copyfile(SOURCE / name, package / name)
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": f"{staging / 'gopath'}:{GOCODE.parent}",
            "GOCACHE": str(build_dir() / "go-cache"),
            "GOFLAGS": "",
            "GOPROXY": "off",
            "CGO_ENABLED": "0",
        }
        proc = subprocess.run(
            [go, "build", "-o", str(staging / "pion-sfu"), "pionsfu"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise PionError(
                f"building benchmarks/peers/pion/main.go failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
            )
        shutil.rmtree(staging / "gopath")
        with contextlib.suppress(OSError):
            os.replace(staging, target)  # atomic; a concurrent build that won is kept
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if not exe.is_file():
        raise PionError(f"no pion-sfu in {target} after the build")
    for old in build_dir().glob("pion-*"):
        if old != target:  # builds of earlier sources
            shutil.rmtree(old, ignore_errors=True)
    return exe


def _die_with_parent() -> None:
    from benchmarks.sfu_harness import die_with_parent

    die_with_parent()


class PionProcess:
    """The SFU in a child process; it exits when its stdin closes (or we die)."""

    def __init__(self, exe: Path, workdir: str) -> None:
        self.log = open(os.path.join(workdir, "pion.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(exe), "-addr", f"{LOOPBACK}:0", "-ip", LOOPBACK],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no other thread runs yet)
        )
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening "):
            self.close()
            raise PionError(f"the Pion SFU did not start: {line!r}\n{self.errors()}")
        self.base = f"http://{LOOPBACK}:{int(line.split()[1])}"

    def errors(self) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def request(self, path: str, body: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else body.encode(),
            method="GET" if body is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            raise PionError(f"pion {path}: {exc.read().decode(errors='replace')}") from None

    def counters(self) -> dict[str, Any]:
        stats = self.request("/stats")
        return {"forwarded": stats["forwarded"], "received": stats["received"], "drops": {}}

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def run(args: Any, call_pps: float, entry: Callable[..., dict]) -> dict[str, Any]:
    """The pion entry of benchmarks.compare: args.calls calls, args.repeats runs."""
    from benchmarks import forward
    from benchmarks.peers import loadgen
    from benchmarks.peers.webrtc import VIDEO_PT, KeepAlive, drain, handshake
    from mediaserver.sfu.dtls import DtlsCertificate

    exe = build()
    module = loadgen.load()
    profile = forward.PROFILES["aead-aes-128-gcm"]
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="msbench-pion-"))
        pion = PionProcess(exe, workdir)
        stack.callback(pion.close)
        certificate = DtlsCertificate.generate()
        senders = [
            FullIcePeer(i, "send", certificate, (profile,), False) for i in range(args.calls)
        ]
        receivers = [
            FullIcePeer(i, "recv", certificate, (profile,), False) for i in range(args.calls)
        ]
        for peer in senders + receivers:
            stack.callback(peer.close)
        for s, r in zip(senders, receivers):
            reply = pion.request("/publish", s.offer())
            s.accept(reply["id"], reply["answer"])
            query = urllib.parse.urlencode({"pub": reply["id"]})
            reply = pion.request(f"/subscribe?{query}", r.offer())
            r.accept(reply["id"], reply["answer"])
        handshake(senders + receivers, timeout=30, state_class=FullIceHandshake)
        keepalive = KeepAlive(senders + receivers)
        keepalive.start()
        stack.callback(keepalive.stop)
        time.sleep(0.2)
        drain(senders + receivers)
        target = forward.Target(
            name="pion",
            pid=pion.pid,
            counters=pion.counters,
            sender=module.Sender(
                [p.sock.fileno() for p in senders],
                [p.server_addr for p in senders],
                [p.video_ssrc for p in senders],
                VIDEO_PT,
                1100,
                profile,
                [(p.keys.tx_key, p.keys.tx_salt) for p in senders],  # type: ignore[union-attr]
            ),
            receiver=module.Receiver(
                [p.sock.fileno() for p in receivers],
                profile,
                [(p.keys.rx_key, p.keys.rx_salt) for p in receivers],  # type: ignore[union-attr]
                4,
            ),
            pairs=args.calls,
            port=senders[0].server_addr[1],  # type: ignore[index]
            receiver_ports={p.port for p in receivers},
        )
        rate = args.calls * call_pps
        run_id = 1
        forward.run_once(target, run_id, rate, min(args.warmup, 1.0), 0.001, 0.5)
        runs = []
        for _ in range(args.repeats):
            run_id += 1
            runs.append(forward.run_once(target, run_id, rate, args.duration, 0.001, 0.5))
        if pion.proc.poll() is not None:
            raise PionError(f"the Pion SFU exited during the run:\n{pion.errors()}")
        srtp_profile = forward.PROFILE_NAMES.get(senders[0].keys.profile)  # type: ignore[union-attr]

    if not any(r["forwarded"] for r in runs):
        raise PionError(f"pion forwarded nothing (sent {runs[0]['sent']})")
    ticks = min(r["cpu_s"] for r in runs) * forward.CLK_TCK
    source = "stat" if ticks >= forward.MIN_TICKS else "schedstat"

    def med(f: Callable[[dict], Any]) -> Any:
        vs = [v for v in (f(r) for r in runs) if v is not None]
        return statistics.median(vs) if vs else None

    per_run = [v for v in (forward.per_packet(r, source) for r in runs) if v is not None]
    cpu_us = med(lambda r: forward.per_packet(r, source))
    pps = med(lambda r: r["forwarded_pps"])
    p50 = med(lambda r: r["latency_p50_us"])
    return entry(
        args.calls,
        cpu_us,
        pps,
        med(lambda r: r["latency_p99_us"]),
        med(lambda r: r["loss"]),
        cpu_us * pps / 1e6 if cpu_us is not None and pps else None,
        offered_pps=med(lambda r: r["offered_pps"]),
        latency_p50_ms=None if p50 is None else p50 / 1e3,
        context_switches_per_packet=med(lambda r: r["context_switches_per_packet"]),
        wakeups_per_packet=med(lambda r: r["wakeups_per_packet"]),
        srtp_profile=srtp_profile,
        cpu_source=source,
        cpu_us_per_packet_range=[min(per_run), max(per_run)] if per_run else None,
        srtp_auth_failures=sum(r["srtp_auth_failures"] for r in runs),
        misrouted=sum(r["misrouted"] for r in runs),
        pion_forwarded=sum(r["forwarded"] for r in runs),
    )
