"""Janus (Debian's janus package, 1.1) as a benchmarks/compare.py target.

Janus runs in a child process with the configs in benchmarks/peers/janus/
(copied to a temporary folder, with its path and a free HTTP port filled in):
loopback-only ICE (ice_enforce_list = "lo", no STUN server, half-trickle), the
VideoCall plugin and the HTTP transport on 127.0.0.1 only. Each call is two
plugin handles on one Janus session, driven over the HTTP API (POST requests,
long-poll GET for events):

    caller: register "cN" ; callee: register "eN"
    caller: {"request": "call", "username": "eN"} + our offer (sendonly, a=setup:active)
    callee: gets "incomingcall" with Janus's offer; answers {"request": "accept"}
            with a recvonly answer (a=setup:active)
    caller: gets "accepted" with Janus's answer

Janus is a full ICE agent: on the caller's leg we are controlling, on the
callee's leg Janus is (it offered), so the callee's checks carry ICE-CONTROLLED
and no USE-CANDIDATE; both answer Janus's checks (benchmarks/peers/fullice.py).
We are the DTLS client on both legs. Media then flows through the same C loops
as mediaserver's (benchmarks/forward.py run_once), with the send stamps intact
(VideoCall relays the payload unchanged), so loss and latency are comparable.
Janus has no packet counter we read: "forwarded" is what the callees received.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aioice import stun

from benchmarks.peers.fullice import FullIceHandshake, FullIcePeer
from benchmarks.peers.webrtc import CHECK_PRIORITY, SOCKET_BUFFER, VIDEO_PT, handshake
from mediaserver import netns

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIGS = Path(__file__).resolve().parent / "janus"
LOOPBACK = "127.0.0.1"
ICE_INTERFACE = "ms0"  # mediaserver.netns's veth, SERVER_IP (Janus skips loopback)


class JanusError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class JanusProcess:
    def __init__(self, workdir: str) -> None:
        exe = shutil.which("janus")
        if exe is None:
            raise JanusError(
                "janus is not installed (Debian: apt-get install janus; `make test` set-up does it)"
            )
        self.port = _free_port()
        for src in CONFIGS.glob("*.jcfg"):
            text = src.read_text().replace("@CONFIGS@", workdir)
            text = text.replace("@HTTP_PORT@", str(self.port))
            text = text.replace("@ICE_INTERFACE@", ICE_INTERFACE)
            if os.environ.get("MSBENCH_JANUS_DEBUG"):
                text = text.replace("nice_debug = false", "nice_debug = true")
            Path(workdir, src.name).write_text(text)
        self.log = open(os.path.join(workdir, "janus.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "-C", os.path.join(workdir, "janus.jcfg"), "-F", workdir, "-o"]
            + (
                ["-d", os.environ["MSBENCH_JANUS_DEBUG"]]
                if os.environ.get("MSBENCH_JANUS_DEBUG")
                else []
            ),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no other thread runs yet)
        )
        self.pid = self.proc.pid
        self.base = f"http://{LOOPBACK}:{self.port}/janus"
        deadline = time.monotonic() + 15
        while True:
            try:
                self.post("", {"janus": "info"})
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise JanusError(f"janus did not start:\n{self.errors()}") from None
                time.sleep(0.1)

    def errors(self) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"transaction": os.urandom(6).hex(), **body}
        request = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
        if reply.get("janus") == "error":
            raise JanusError(f"janus {body.get('janus')}: {reply.get('error')}")
        return reply

    def poll(self, session: int) -> list[dict[str, Any]]:
        url = f"{self.base}/{session}?maxev=20&rid={time.monotonic_ns()}"
        with urllib.request.urlopen(url, timeout=40) as response:
            data = json.loads(response.read())
        return data if isinstance(data, list) else [data]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _accept_local() -> None:
    """libnice binds its sockets to ms0 (SO_BINDTODEVICE), so its packets to the
    peers (10.77.0.2) cross the veth pair and arrive on ms1 from a local source
    address, which the kernel drops as martian unless accept_local is on (and
    reverse-path filtering off). Only in the private namespace."""
    if not netns.inside():
        return
    for conf in ("all", "default", "ms0", "ms1"):
        for name, value in (("accept_local", "1"), ("rp_filter", "0")):
            with (
                contextlib.suppress(OSError),
                open(f"/proc/sys/net/ipv4/conf/{conf}/{name}", "w") as f,
            ):
                f.write(value)


def _die_with_parent() -> None:
    from benchmarks.sfu_harness import die_with_parent

    die_with_parent()


class JanusPeer(FullIcePeer):
    """FullIcePeer that can be the controlled side, and answer Janus's offer."""

    controlling = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # rebind on the namespace's client address: Janus's candidate is on ms0
        self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        opt = socket.SO_SNDBUF if self.role == "send" else socket.SO_RCVBUF
        self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        self.sock.bind((netns.CLIENT_IP, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def offer(self) -> str:
        return (
            super()
            .offer()
            .replace(
                f" {LOOPBACK} {self.port} typ host", f" {netns.CLIENT_IP} {self.port} typ host"
            )
        )

    def binding_request(self, nominate: bool) -> tuple[bytes, bytes]:
        if self.controlling:
            return super().binding_request(nominate)
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.server_ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = CHECK_PRIORITY
        request.attributes["ICE-CONTROLLED"] = self.tie_breaker
        request.add_message_integrity(self.server_pwd.encode())
        return request.transaction_id, bytes(request)

    def answer_to(self, offer: str) -> str:
        """Our recvonly answer to Janus's offer (video m-line only)."""
        self.controlling = False
        self.accept("janus", offer)
        _, fingerprint = self.certificate.fingerprint("sha-256")
        pts: list[str] = []
        mid = "0"
        in_video = False
        for line in offer.splitlines():
            if line.startswith("m="):
                in_video = line.startswith("m=video")
                if in_video:
                    pts = line.split()[3:]
            elif in_video and line.startswith("a=mid:"):
                mid = line.split(":", 1)[1].strip()
        pt = str(VIDEO_PT) if str(VIDEO_PT) in pts else (pts[0] if pts else str(VIDEO_PT))
        lines = [
            "v=0",
            f"o=- {int.from_bytes(os.urandom(6), 'big')} 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            f"a=group:BUNDLE {mid}",
            f"m=video 9 UDP/TLS/RTP/SAVPF {pt}",
            "c=IN IP4 0.0.0.0",
            f"a=candidate:1 1 udp 2130706431 {netns.CLIENT_IP} {self.port} typ host",
            f"a=ice-ufrag:{self.ufrag}",
            f"a=ice-pwd:{self.pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:active",
            f"a=mid:{mid}",
            "a=recvonly",
            "a=rtcp-mux",
            f"a=rtpmap:{pt} VP8/90000",
        ]
        return "\r\n".join(lines) + "\r\n"


def _wait_event(
    janus: JanusProcess,
    session: int,
    backlog: list[dict],
    match: Callable[[dict], bool],
    timeout: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for i, event in enumerate(backlog):
            if match(event):
                return backlog.pop(i)
        if time.monotonic() > deadline:
            raise JanusError(f"janus: no expected event within {timeout} s; got {backlog[-5:]}")
        backlog.extend(e for e in janus.poll(session) if e.get("janus") != "keepalive")


def _event(handle: int, name: str, jsep: bool = False) -> Callable[[dict], bool]:
    """Matches the VideoCall event `name` on plugin handle `handle`."""

    def match(event: dict) -> bool:
        return (
            event.get("sender") == handle
            and _plugin_result(event).get("event") == name
            and (not jsep or "jsep" in event)
        )

    return match


def _plugin_result(event: dict) -> dict:
    return ((event.get("plugindata") or {}).get("data") or {}).get("result") or {}


def run(args: Any, call_pps: float, entry: Callable[..., dict]) -> dict[str, Any]:
    """The janus entry; outside the private namespace, runs itself in one."""
    if not netns.inside():
        return _run_in_namespace(args, call_pps)
    if shutil.which("janus") is None:
        raise JanusError("janus is not installed (Debian: apt-get install janus)")
    _accept_local()
    from benchmarks import forward
    from benchmarks.peers import loadgen
    from mediaserver.sfu.dtls import DtlsCertificate

    module = loadgen.load()
    profile = forward.PROFILES["aead-aes-128-gcm"]
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="msbench-janus-"))
        janus = JanusProcess(workdir)
        stack.callback(janus.close)
        session = janus.post("", {"janus": "create"})["data"]["id"]
        path = f"/{session}"
        backlog: list[dict] = []
        certificate = DtlsCertificate.generate()
        callers = [JanusPeer(i, "send", certificate, (profile,), False) for i in range(args.calls)]
        callees = [JanusPeer(i, "recv", certificate, (profile,), False) for i in range(args.calls)]
        for peer in callers + callees:
            stack.callback(peer.close)
        handles = {}
        for peer in callers + callees:
            handle = janus.post(path, {"janus": "attach", "plugin": "janus.plugin.videocall"})[
                "data"
            ]["id"]
            handles[id(peer)] = handle
            name = f"{'c' if peer.role == 'send' else 'e'}{peer.index}"
            janus.post(
                f"{path}/{handle}",
                {"janus": "message", "body": {"request": "register", "username": name}},
            )
            _wait_event(
                janus,
                session,
                backlog,
                _event(handle, "registered"),
                10,
            )
        for caller, callee in zip(callers, callees):
            ch, eh = handles[id(caller)], handles[id(callee)]
            janus.post(
                f"{path}/{ch}",
                {
                    "janus": "message",
                    "body": {"request": "call", "username": f"e{callee.index}"},
                    "jsep": {"type": "offer", "sdp": caller.offer()},
                },
            )
            incoming = _wait_event(
                janus,
                session,
                backlog,
                _event(eh, "incomingcall", jsep=True),
                10,
            )
            answer = callee.answer_to(incoming["jsep"]["sdp"])
            janus.post(
                f"{path}/{eh}",
                {
                    "janus": "message",
                    "body": {"request": "accept"},
                    "jsep": {"type": "answer", "sdp": answer},
                },
            )
            accepted = _wait_event(
                janus,
                session,
                backlog,
                _event(ch, "accepted", jsep=True),
                10,
            )
            caller.accept("janus", accepted["jsep"]["sdp"])
            for peer in (caller, callee):
                janus.post(
                    f"{path}/{handles[id(peer)]}",
                    {"janus": "trickle", "candidate": {"completed": True}},
                )
        handshake(callers + callees, timeout=30, state_class=FullIceHandshake)
        time.sleep(0.2)
        for peer in callers + callees:
            with contextlib.suppress(OSError):
                while peer.sock.recv(4096):
                    pass
        target = forward.Target(
            name="janus",
            pid=janus.pid,
            counters=lambda: {"forwarded": 0, "received": 0, "drops": {}},
            sender=module.Sender(
                [p.sock.fileno() for p in callers],
                [p.server_addr for p in callers],
                [p.video_ssrc for p in callers],
                VIDEO_PT,
                1100,
                profile,
                [(p.keys.tx_key, p.keys.tx_salt) for p in callers],  # type: ignore[union-attr]
            ),
            receiver=module.Receiver(
                [p.sock.fileno() for p in callees],
                profile,
                [(p.keys.rx_key, p.keys.rx_salt) for p in callees],  # type: ignore[union-attr]
                4,
            ),
            pairs=args.calls,
            port=janus.port,  # (its media ports differ; kernel drops there are not counted)
            receiver_ports={p.port for p in callees},
        )
        rate = args.calls * call_pps
        run_id = 1
        forward.run_once(target, run_id, rate, min(args.warmup, 1.0), 0.001, 0.5)
        runs = []
        for _ in range(args.repeats):
            run_id += 1
            cpu0 = forward.process_cpu(janus.pid)
            r = forward.run_once(target, run_id, rate, args.duration, 0.001, 0.5)
            cpu = forward.process_cpu(janus.pid) - cpu0
            r["forwarded"] = r["received"]
            received = r["received"]
            r["context_switches_per_packet"] = cpu.switches / received if received else None
            r["wakeups_per_packet"] = cpu.wakeups / received if received else None
            runs.append(r)
        if janus.proc.poll() is not None:
            raise JanusError(f"janus exited during the run:\n{janus.errors()}")

    ticks = min(r["cpu_s"] for r in runs) * forward.CLK_TCK
    source = "stat" if ticks >= forward.MIN_TICKS else "schedstat"

    def med(f: Callable[[dict], Any]) -> Any:
        vs = [v for v in (f(r) for r in runs) if v is not None]
        return statistics.median(vs) if vs else None

    per_run = [v for v in (forward.per_packet(r, source) for r in runs) if v is not None]

    if not any(r["received"] for r in runs):
        raise JanusError(f"janus forwarded nothing (sent {runs[0]['sent']})")
    cpu_us = med(lambda r: forward.per_packet(r, source))
    pps = med(lambda r: r["forwarded_pps"])
    return entry(
        args.calls,
        cpu_us,
        pps,
        med(lambda r: r["latency_p99_us"]),
        med(lambda r: r["loss"]),
        cpu_us * pps / 1e6 if cpu_us is not None and pps else None,
        offered_pps=med(lambda r: r["offered_pps"]),
        latency_p50_ms=None
        if med(lambda r: r["latency_p50_us"]) is None
        else med(lambda r: r["latency_p50_us"]) / 1e3,
        context_switches_per_packet=med(lambda r: r["context_switches_per_packet"]),
        wakeups_per_packet=med(lambda r: r["wakeups_per_packet"]),
        srtp_profile=forward.PROFILE_NAMES.get(callers[0].keys.profile),  # type: ignore[union-attr]
        cpu_source=source,
        cpu_us_per_packet_range=[min(per_run), max(per_run)] if per_run else None,
        srtp_auth_failures=sum(r["srtp_auth_failures"] for r in runs),
        misrouted=sum(r["misrouted"] for r in runs),
    )


def _run_in_namespace(args: Any, call_pps: float) -> dict[str, Any]:
    if shutil.which("janus") is None:
        raise JanusError("janus is not installed (Debian: apt-get install janus)")
    cmd = [
        sys.executable,
        "-m",
        "mediaserver.netns",
        "--",
        sys.executable,
        "-m",
        "benchmarks.peers.janus_client",
        "--calls",
        str(args.calls),
        "--call-pps",
        str(call_pps),
        "--duration",
        str(args.duration),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    timeout = 60 + args.repeats * (args.duration + 5) + args.calls * 0.5
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise JanusError(f"the Janus run did not finish within {timeout:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise JanusError(
            f"the Janus run failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        ) from None
    if "error" in result:
        raise JanusError(result["error"])
    return result


def main(argv: list[str] | None = None) -> int:
    """Inside the namespace: one Janus run; prints the entry (or an error) as JSON."""
    import argparse

    from benchmarks.compare import _entry

    parser = argparse.ArgumentParser(description="one Janus run (benchmarks.compare)")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--call-pps", type=float, default=126.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    _die_with_parent()
    try:
        out = run(args, args.call_pps, _entry)
    except Exception as exc:  # noqa: BLE001 (reported to the parent)
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
