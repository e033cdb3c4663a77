"""IPv6 in the `mediaserver` command: --announced-ip once per family, and `--host ::`
and the media port taking both families."""

import asyncio
import json
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from mediaserver.cli import load_config
from mediaserver.sfu.address import parse_announced_ips
from mediaserver.sfu.server import Sfu, SfuConfig
from tests.test_cli import MEDIASERVER, free_port


def config(tmp_path, *args, environ=None):
    files = ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    return load_config([*files, *args], environ=environ or {})


def test_announced_ip_once_per_family_repeated_or_comma_separated(tmp_path):
    assert config(tmp_path).announced_ip == "127.0.0.1"
    repeated = config(tmp_path, "--announced-ip", "2001:db8::7", "--announced-ip", "203.0.113.7")
    assert parse_announced_ips(repeated.announced_ip) == ("203.0.113.7", "2001:db8::7")
    both = config(tmp_path, environ={"MEDIASERVER_ANNOUNCED_IP": "203.0.113.7, 2001:DB8::7"})
    assert parse_announced_ips(both.announced_ip) == ("203.0.113.7", "2001:db8::7")
    only_v6 = config(tmp_path, "--announced-ip", "fd77::1")
    assert parse_announced_ips(only_v6.announced_ip) == ("fd77::1",)
    # a mapped address is the IPv4 address it maps
    assert parse_announced_ips("::ffff:203.0.113.7") == ("203.0.113.7",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("example.com", "--announced-ip must be an IPv4 or IPv6 address, not 'example.com'"),
        (
            "203.0.113.7,198.51.100.1",
            "--announced-ip takes one IPv4 address, not '203.0.113.7' and '198.51.100.1'",
        ),
        ("2001:db8::1,2001:db8::2", "--announced-ip takes one IPv6 address, not"),
        ("::", "--announced-ip '::' is not an address peers can send to"),
        ("0.0.0.0", "--announced-ip '0.0.0.0' is not an address peers can send to"),
        ("fe80::1", "--announced-ip 'fe80::1' is not an address peers can send to"),
        ("ff02::1", "is not an address peers can send to"),
        (",", "--announced-ip must give an IPv4 or IPv6 address"),
    ],
)
def test_bad_announced_ip_is_one_clear_line(value, message):
    proc = subprocess.run(
        MEDIASERVER + ["--announced-ip", value], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert message in line


def test_the_sfu_refuses_an_ipv6_candidate_its_ipv4_socket_cannot_take():
    async def start() -> None:
        sfu = Sfu(SfuConfig(host="127.0.0.1", announced_ip="127.0.0.1,::1"))
        try:
            await sfu.start()
        finally:
            await sfu.close()
        assert sfu.udp is None

    with pytest.raises(OSError, match=r"announced address ::1 cannot reach the media socket"):
        asyncio.run(start())


def test_an_ipv6_announced_address_on_the_dual_stack_default():
    async def start() -> tuple[set[int], str]:
        sfu = Sfu(SfuConfig(announced_ip="::1, 127.0.0.1"))
        await sfu.start()
        try:
            assert sfu.udp is not None
            return set(sfu.udp.families), sfu.udp.sock.getsockname()[0]
        finally:
            await sfu.close()

    families, host = asyncio.run(start())
    assert families == {socket.AF_INET, socket.AF_INET6} and host == "::"


def get_health(url: str) -> dict | None:
    for _ in range(150):
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.load(r)
        except OSError:
            time.sleep(0.1)
    return None


def held(family: int, host: str, port: int) -> bool:
    """True when (host, port) of this family cannot be bound: someone holds it."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def wait_held(port: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if held(socket.AF_INET, "0.0.0.0", port) and held(socket.AF_INET6, "::", port):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_host_ipv6_any_serves_both_families_on_the_web_and_media_ports(tmp_path, workers):
    # one worker: uvicorn's own bind would be IPv6-only; two: the supervisor's sockets
    port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        MEDIASERVER
        + [
            "--host",
            "::",
            "--port",
            str(port),
            "--udp-port",
            str(udp_port),
            "--announced-ip",
            "127.0.0.1",
            "--announced-ip",
            "::1",
            "--workers",
            workers,
            "--log-level",
            "warning",
            "--db",
            str(tmp_path / "db"),
            "--data-key-file",
            str(tmp_path / "key"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for url in (f"http://127.0.0.1:{port}/healthz", f"http://[::1]:{port}/healthz"):
            body = get_health(url)
            assert body is not None and body["status"] == "ok", url
        # the media port (worker 0's) is held for both families (with two workers, the
        # other worker may answer /healthz before worker 0 has bound it: a moment)
        assert wait_held(udp_port), "the media port is not held for both families"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_listener_on_ipv6_any_takes_both_families_and_one_address_only_its_own():
    from mediaserver.listeners import tcp_listener

    with tcp_listener("::", 0) as any6:
        port = any6.getsockname()[1]
        assert not any6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.connect((host, port))
                conn, peer = any6.accept()
                conn.close()
                # an IPv4 client arrives mapped; client_address makes it plain IPv4 again
                assert peer[0] == ("::ffff:127.0.0.1" if family == socket.AF_INET else "::1")
    with tcp_listener("::1", 0) as one:
        assert one.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    with tcp_listener("127.0.0.1", 0, reuse_port=True) as four:
        assert four.family == socket.AF_INET
