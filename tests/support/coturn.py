"""A real coturn and a UDP wall, inside the private namespace, for the TURN tests and
the benchmark (tests/e2e/test_turn.py, benchmarks/turn_latency.py), with the server
and the browser they drive.

coturn (Debian's `turnserver`) runs as an ordinary process with a temporary config:
it listens on CLIENT_IP (plain TCP, and TLS with a self-signed certificate made with
`cryptography`) and relays from RELAY_IP:RELAY_PORTS to the server's media port. `udp_wall` then lets no UDP through but that relay's
(nftables, in the namespace's own netfilter), so a browser can reach the server's
media only through coturn over TCP or TLS.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.async_api import Browser

from mediaserver.netns import CLIENT_IP, SERVER_IP, inside
from tests.support import ROOT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

RELAY_IP = SERVER_IP
"""coturn's relay address. The server's own: for a destination that is one of its own
addresses, the kernel answers from that same address, so a separate relay address
(10.77.0.3) would see the server's replies come from 10.77.0.3, not from the peer
coturn gave a permission to; on two machines the two are apart."""
RELAY_PORTS = (49400, 49499)
"""coturn's relay port range (min-port, max-port): narrow, so the wall names it."""
REALM = "mediaserver.test"
TABLE = "mediaserver_turn_test"

# Chromium under the relay policy, whatever the page asks for; what the page passed
# is kept, so a test can see the page handed its RTCPeerConnection the welcome's servers
FORCE_RELAY_JS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.rtcConfigs = [];
  function Relayed(config) {
    window.rtcConfigs.push(JSON.parse(JSON.stringify(config || {})));
    return new Native({...(config || {}), iceTransportPolicy: "relay"});
  }
  Relayed.prototype = Native.prototype;
  Object.setPrototypeOf(Relayed, Native);
  window.RTCPeerConnection = Relayed;
})();
"""

# the selected candidate pair of the page's connection: local type and relay protocol
SELECTED_PAIR_JS = """
async () => {
  const pc = window.mediaserverClient.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  let pairId = null;
  for (const s of stats.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  }
  if (!pairId) return null;
  const pair = stats.get(pairId);
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {state: pair.state, localType: local.candidateType,
          relayProtocol: local.relayProtocol || null, localAddress: local.address,
          remoteAddress: remote.address, remotePort: remote.port};
}
"""


def start_server(
    tmp_path: Path, media_port: int, *flags: str
) -> tuple[subprocess.Popen[bytes], list[str]]:
    """`python -m mediaserver.cli` with `flags`; its two visitors' base URLs."""
    port = free_port("127.0.0.1")
    args = ["--host", "0.0.0.0", "--port", str(port), "--udp-port", str(media_port)]
    args += ["--announced-ip", SERVER_IP, "--log-level", "warning", "--workers", "1"]
    args += ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    args += ["--drain-seconds", "0", *flags]
    proc = subprocess.Popen([sys.executable, "-m", "mediaserver.cli", *args], cwd=ROOT)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the server did not answer /healthz within 20 s")
        time.sleep(0.1)
    # one address per visitor: the server never pairs an address with itself
    return proc, [f"http://{host}:{port}/" for host in (SERVER_IP, CLIENT_IP)]


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def launch_relay_browser(p: Any, urls: list[str]) -> Browser:
    """Headless Chromium for the visitors' pages at `urls` (declared secure origins,
    so the fake camera works), trusting coturn's self-signed TLS certificate."""
    return await p.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            *CHROMIUM_ARGS,
            "--unsafely-treat-insecure-origin-as-secure=" + ",".join(u.rstrip("/") for u in urls),
            "--ignore-certificate-errors",
        ],
    )


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise AssertionError(
            f"'{tool}' is not installed: apt-get install -y coturn nftables (make test does)"
        )
    return path


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path, ip: str) -> tuple[Path, Path]:
    """A certificate for `ip` (and its key), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Coturn:
    proc: subprocess.Popen[bytes]
    secret: str
    tcp_url: str
    """turn:CLIENT_IP:PORT?transport=tcp"""
    tls_url: str
    """turns:CLIENT_IP:PORT?transport=tcp"""
    log: Path


@contextlib.contextmanager
def coturn(directory: Path, media_port: int) -> Iterator[Coturn]:
    """Debian's turnserver, foreground, on free ports; relays only to the server's
    media address (SERVER_IP:media_port). Stopped (SIGTERM) on exit."""
    assert inside(), "coturn runs only inside the private namespace (mediaserver.netns)"
    turnserver = need("turnserver")
    tcp_port, tls_port = free_port(CLIENT_IP), free_port(CLIENT_IP)
    cert, key = self_signed(directory, CLIENT_IP)
    secret = os.urandom(16).hex()
    log = directory / "turnserver.log"
    conf = directory / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                f"listening-ip={CLIENT_IP}",
                f"listening-port={tcp_port}",
                f"tls-listening-port={tls_port}",
                f"relay-ip={RELAY_IP}",
                f"min-port={RELAY_PORTS[0]}",
                f"max-port={RELAY_PORTS[1]}",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                f"realm={REALM}",
                f"cert={cert}",
                f"pkey={key}",
                # the only peer a relay may reach: the media server's port (coturn
                # takes private peers by default; say so, and nothing more)
                "denied-peer-ip=0.0.0.0-255.255.255.255",
                f"allowed-peer-ip={SERVER_IP}",
                "no-multicast-peers",
                "no-cli",
                "no-dtls",
                "no-tcp-relay",  # RFC 6062 TCP allocations: not what a browser asks
                "fingerprint",
                f"userdb={directory / 'turndb'}",
                f"pidfile={directory / 'turnserver.pid'}",
                f"log-file={log}",
                "simple-log",
                "verbose",
                "",
            ]
        )
    )
    proc = subprocess.Popen([turnserver, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        for port in (tcp_port, tls_port):
            while True:
                if proc.poll() is not None:
                    text = log.read_text() if log.exists() else ""
                    raise AssertionError(
                        f"turnserver exited with {proc.returncode}: {text[-2000:]}"
                    )
                try:
                    socket.create_connection((CLIENT_IP, port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"turnserver did not listen on {port} in 15 s")
                    time.sleep(0.1)
        yield Coturn(
            proc,
            secret,
            f"turn:{CLIENT_IP}:{tcp_port}?transport=tcp",
            f"turns:{CLIENT_IP}:{tls_port}?transport=tcp",
            log,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def udp_wall(media_port: int, *, relay: bool = True) -> Iterator[None]:
    """Drop every UDP datagram in the namespace but, with `relay`, coturn's relay <->
    the server's media port (and DNS, which nothing here uses). The output hook covers
    loopback and the veth pair alike, so no browser reaches the media port directly.
    Without a coturn, pass relay=False: a browser on the relay's address whose UDP
    socket happens to get a port in the relay range would otherwise pass the wall."""
    assert inside(), "nftables rules only inside the private namespace (mediaserver.netns)"
    nft = need("nft")
    lo, hi = RELAY_PORTS
    holes = (
        f"""ip saddr {RELAY_IP} udp sport {lo}-{hi} ip daddr {SERVER_IP} udp dport {media_port} accept
    ip saddr {SERVER_IP} udp sport {media_port} ip daddr {RELAY_IP} udp dport {lo}-{hi} accept"""
        if relay
        else ""
    )
    rules = f"""
table inet {TABLE} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    {holes}
    udp dport 53 accept
    meta l4proto udp counter drop
  }}
}}
"""
    subprocess.run([nft, "-f", "-"], input=rules.encode(), check=True)
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "inet", TABLE], check=False)


def wall_drops() -> int:
    """Datagrams the wall dropped so far."""
    out = subprocess.run([need("nft"), "list", "table", "inet", TABLE], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        if "drop" in line and "counter packets" in line:
            return int(line.split("counter packets", 1)[1].split()[0])
    return 0
