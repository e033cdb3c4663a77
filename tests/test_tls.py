"""Built-in HTTPS and WSS (--tls-cert / --tls-key): the page, REST and signalling over
TLS with a test CA, HSTS only with TLS, renewal on SIGHUP (through the supervisor of
--workers 2), and the flag errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect

from mediaserver.cli import load_config
from tests.support import ROOT
from tests.support.certs import CertFiles, make_cert, serial_of
from tests.support.http_client import http_request
from tests.support.signalling_client import Client, free_port, running_server


def peer_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new TLS connection to the port is shown."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return serial_of(der)


# ---- in-process: the real app over TLS --------------------------------------------------


async def test_https_serves_page_rest_and_health_with_hsts(tmp_path: Path) -> None:
    cert = make_cert(tmp_path)
    trust = cert.client_context()
    async with running_server(tls_cert=str(cert.cert), tls_key=str(cert.key)) as server:
        assert server.http_url.startswith("https://")
        for path, marker in (
            ("/", "<!doctype html"),
            ("/healthz", '"status"'),
            ("/api/v1/openapi.json", '"openapi"'),
            ("/no/such", ""),
        ):
            status, headers, body = await asyncio.to_thread(
                http_request, server.http_url + path, None, 2, trust
            )
            assert status == (404 if path == "/no/such" else 200), path
            assert marker.lower() in body.lower(), path
            assert headers["strict-transport-security"] == "max-age=31536000", path
        # a client that does not trust the certificate gets no answer at all
        status, _, _ = await asyncio.to_thread(
            http_request, server.http_url + "/healthz", None, 2, ssl.create_default_context()
        )
        assert status == 0
        # plain HTTP to the TLS port: no page, no header leaks
        assert (
            await asyncio.to_thread(
                http_request, server.http_url.replace("https:", "http:") + "/healthz"
            )
        )[0] in (0, 400)


async def test_no_hsts_without_tls() -> None:
    async with running_server() as server:
        for path in ("/", "/healthz", "/api/v1/openapi.json", "/no/such"):
            status, headers, _ = await asyncio.to_thread(http_request, server.http_url + path)
            assert status in (200, 404), path
            assert "strict-transport-security" not in headers, path


async def test_wss_signalling_hello_and_match(tmp_path: Path) -> None:
    cert = make_cert(tmp_path)
    async with running_server(tls_cert=str(cert.cert), tls_key=str(cert.key)) as server:
        assert server.url.startswith("wss://")
        port = server.url.split(":")[2].split("/")[0]
        # a browser's page on https://127.0.0.1:PORT passes the Origin check
        origin = {"Origin": f"https://127.0.0.1:{port}"}
        a = await Client.open(server.url, ssl=cert.client_context(), headers=origin)
        b = await Client.open(
            server.url, binary=True, ssl=cert.client_context(), source="127.0.0.2"
        )
        welcome = await a.hello()
        assert welcome["type"] == "welcome"
        await b.hello()
        for c in (a, b):
            await c.send("start")
            await c.expect("queued")
        await a.expect("matched")
        await b.expect("matched")
        tls = a.ws.transport.get_extra_info("ssl_object")
        assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
        await a.close()
        await b.close()


async def test_tls_below_1_2_is_refused(tmp_path: Path) -> None:
    cert = make_cert(tmp_path)
    async with running_server(tls_cert=str(cert.cert), tls_key=str(cert.key)) as server:
        # set on the context itself (this OpenSSL's default security level refuses
        # TLS 1.0/1.1 anyway; another build might not)
        context = server.tls.context
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for
        port = int(server.http_url.rsplit(":", 1)[1])
        old = cert.client_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, on purpose
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(peer_serial, port, old)
        assert await asyncio.to_thread(peer_serial, port, cert.client_context()) == cert.serial


# ---- the command: SIGHUP renews the certificate in every worker ----------------------------


def install(source: CertFiles, cert: Path, key: Path) -> None:
    """Put a new certificate and key where the server reads them (as certbot does)."""
    cert.write_bytes(source.cert.read_bytes())
    key.write_bytes(source.key.read_bytes())


def wait_for_serial(port: int, trust: ssl.SSLContext, serial: int, tries: int = 12) -> None:
    """New connections (several: --workers 2 shares the port) all see `serial`."""
    deadline = time.monotonic() + 10
    while True:
        seen = {peer_serial(port, trust) for _ in range(tries)}
        if seen == {serial}:
            return
        assert time.monotonic() < deadline, f"still seeing {seen}, want {serial}"
        time.sleep(0.1)


async def test_sighup_renews_certificate_and_keeps_connections(tmp_path: Path) -> None:
    first, second, third = (make_cert(tmp_path, n) for n in ("first", "second", "third"))
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    install(first, cert, key)
    # the clients trust all three (one CA file with the three self-signed certificates)
    bundle = tmp_path / "trust.pem"
    bundle.write_bytes(b"".join(c.cert.read_bytes() for c in (first, second, third)))
    trust = ssl.create_default_context(cafile=str(bundle))
    port = free_port()
    log = tmp_path / "server.log"
    with server_process(tmp_path, port, cert, key, log) as proc:
        deadline = time.monotonic() + 30
        while (
            await asyncio.to_thread(
                http_request, f"https://127.0.0.1:{port}/healthz", None, 1, trust
            )
        )[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log_text(log)
            await asyncio.sleep(0.1)
        await asyncio.to_thread(wait_for_serial, port, trust, first.serial)

        # one established WebSocket before the renewal
        old = await connect(f"wss://127.0.0.1:{port}/ws", ssl=trust)
        await old.send(json.dumps({"v": 1, "type": "hello", "age_confirmed": True}))
        assert json.loads(await old.recv())["type"] == "welcome"

        install(second, cert, key)
        proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_for_serial, port, trust, second.serial)
        # the old connection goes on, still on the first certificate
        assert serial_of(ssl_object(old).getpeercert(binary_form=True)) == first.serial
        await old.send(json.dumps({"v": 1, "type": "start"}))
        assert json.loads(await asyncio.wait_for(old.recv(), 5))["type"] == "queued"

        # a broken replacement, then a key that is not the certificate's: both logged,
        # the second certificate stays in use
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        proc.send_signal(signal.SIGHUP)
        await wait_for_log(log, "tls_reload_failed", 2)  # one line per worker
        cert.write_bytes(third.cert.read_bytes())  # with the second's key still in place
        proc.send_signal(signal.SIGHUP)
        await wait_for_log(log, "tls_reload_failed", 4)
        assert "does not match" in log_text(log)
        await asyncio.to_thread(wait_for_serial, port, trust, second.serial)
        status, headers, _ = await asyncio.to_thread(
            http_request, f"https://127.0.0.1:{port}/", None, 2, trust
        )
        assert status == 200 and headers["strict-transport-security"] == "max-age=31536000"
        assert old.close_code is None
        await old.close()

        install(third, cert, key)  # fixed: the next SIGHUP takes it
        proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_for_serial, port, trust, third.serial)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0


@contextlib.contextmanager
def server_process(
    tmp_path: Path, port: int, cert: Path, key: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`mediaserver --workers 2` over TLS on 127.0.0.1:port, its output in `log`."""
    args = ["--host", "127.0.0.1", "--port", str(port), "--udp-port", "0"]
    args += ["--workers", "2", "--log-level", "info"]
    args += ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mediaserver.cli", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ssl_object(ws: Any) -> ssl.SSLObject:
    obj = ws.transport.get_extra_info("ssl_object")
    assert obj is not None
    return obj  # type: ignore[no-any-return]


def log_text(log: Path) -> str:
    return log.read_text()


async def wait_for_log(log: Path, text: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while log_text(log).count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} x{count} not logged:\n{log_text(log)}"
        await asyncio.sleep(0.1)


# ---- the flags ------------------------------------------------------------------------------


def test_tls_flags_load_and_refuse_bad_files(tmp_path: Path) -> None:
    base = ["--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key")]
    good, other = make_cert(tmp_path, "good"), make_cert(tmp_path, "other")
    config = load_config([*base, "--tls-cert", str(good.cert), "--tls-key", str(good.key)], {})
    assert (config.tls_cert, config.tls_key) == (str(good.cert), str(good.key))
    # the environment, like every flag
    config = load_config(
        base, {"MEDIASERVER_TLS_CERT": str(good.cert), "MEDIASERVER_TLS_KEY": str(good.key)}
    )
    assert config.tls_cert == str(good.cert)
    assert load_config(base, {}).tls_cert == ""  # off by default
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    missing = str(tmp_path / "missing.pem")
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(good.key.read_bytes(), None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    for args, message in [
        (["--tls-cert", str(good.cert)], "--tls-cert needs --tls-key too"),
        (["--tls-key", str(good.key)], "--tls-key needs --tls-cert too"),
        (["--tls-cert", missing, "--tls-key", str(good.key)], "--tls-cert .*cannot read"),
        (["--tls-cert", str(good.cert), "--tls-key", missing], "--tls-key .*cannot read"),
        (["--tls-cert", str(garbage), "--tls-key", str(good.key)], "not a PEM file"),
        (["--tls-cert", str(bad_pem), "--tls-key", str(good.key)], "not a usable PEM"),
        (["--tls-cert", str(good.cert), "--tls-key", str(other.key)], "does not match"),
        (["--tls-cert", str(good.key), "--tls-key", str(good.cert)], "not a usable PEM"),
        (["--tls-cert", str(good.cert), "--tls-key", str(encrypted)], "is encrypted"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config([*base, *args], {})


def test_tls_flag_error_is_one_line_exit_2(tmp_path: Path) -> None:
    good, other = make_cert(tmp_path, "good"), make_cert(tmp_path, "other")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mediaserver.cli",
            "--db",
            str(tmp_path / "db"),
            "--data-key-file",
            str(tmp_path / "key"),
            "--tls-cert",
            str(good.cert),
            "--tls-key",
            str(other.key),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"mediaserver: error: --tls-key {str(other.key)!r} does not match "
        f"--tls-cert {str(good.cert)!r}"
    )
