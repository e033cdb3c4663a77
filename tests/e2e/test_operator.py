"""The operator surface: flags/env/TOML, /metrics, /healthz and /readyz, JSON logs,
SIGTERM drain and SIGHUP reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mediaserver.cli import _FLAGS, env_name, load_config
from mediaserver.config import Config
from tests.support.http_client import http_get
from tests.support.signalling_client import Client, start_and_match

MEDIASERVER = [sys.executable, "-m", "mediaserver.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- flags, environment, config file -------------------------------------------------


def test_help_names_the_environment_variable_of_every_flag():
    out = subprocess.run(MEDIASERVER + ["--help"], capture_output=True, text=True, check=True)
    text = " ".join(out.stdout.split())
    for name in list(_FLAGS) + ["config"]:
        assert f"--{name.replace('_', '-')}" in text
        assert env_name(name) in text
    assert "SIGHUP" in text and "--log-level" in text


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    toml = tmp_path / "ms.toml"
    toml.write_text(
        'port = 1111\nudp_port = 2222\nlog_level = "debug"\nmutual_reveal = true\n'
        "skip_cooldown = 5\n"
        f'db = "{tmp_path / "db"}"\ndata_key_file = "{tmp_path / "key"}"\n'
    )
    env = {"MEDIASERVER_CONFIG": str(toml), "MEDIASERVER_PORT": "3333",
           "MEDIASERVER_UDP_PORT": "4444"}
    config = load_config(["--port", "5555"], env)
    assert config.port == 5555  # flag
    assert config.udp_port == 4444  # env over file
    assert config.log_level == "debug"  # file over default
    assert config.mutual_reveal is True and config.skip_cooldown == 5.0
    assert config.match_interest_wait == Config().match_interest_wait  # default
    assert config.config_file == str(toml)
    # --config flag beats MEDIASERVER_CONFIG; env booleans
    other = tmp_path / "other.toml"
    other.write_text(f'port = 7777\ndb = "{tmp_path / "db"}"\ndata_key_file = "{tmp_path / "k"}"\n')
    config = load_config(
        ["--config", str(other)],
        {"MEDIASERVER_CONFIG": str(toml), "MEDIASERVER_MUTUAL_REVEAL": "1",
         "MEDIASERVER_REDIS_URL": "redis://x", "MEDIASERVER_CLUSTER_SECRET": "s" * 16},
    )
    assert config.port == 7777 and config.mutual_reveal is True
    assert config.redis_url == "redis://x"


@pytest.mark.parametrize("args, env, toml, message", [
    (["--port", "70000"], {}, None, "port must be 0..65535"),
    ([], {"MEDIASERVER_PORT": "70000"}, None, "MEDIASERVER_PORT: port must be 0..65535"),
    ([], {"MEDIASERVER_UDP_PORT": "x"}, None, "MEDIASERVER_UDP_PORT: not a port number"),
    ([], {}, "port = 70000", "--port must be 0..65535"),
    (["--log-level", "loud"], {}, None, "invalid choice"),
    ([], {"MEDIASERVER_LOG_LEVEL": "loud"}, None, "MEDIASERVER_LOG_LEVEL: invalid choice"),
    ([], {}, 'log_level = "loud"', "--log-level must be one of"),
    ([], {"MEDIASERVER_LOG_FORMAT": "xml"}, None, "invalid choice"),
    ([], {"MEDIASERVER_MUTUAL_REVEAL": "maybe"}, None, "not a boolean"),
    ([], {}, "no_such_setting = 1", "unknown key 'no_such_setting'"),
    ([], {}, 'port = "8080"', "port must be int, not str"),
    ([], {}, "mutual_reveal = 1", "mutual_reveal must be bool"),
    ([], {}, "port = [", "not valid TOML"),
    (["--config", "/nonexistent/ms.toml"], {}, None, "cannot read"),
    ([], {"MEDIASERVER_CONFIG": "/nonexistent/ms.toml"}, None, "cannot read"),
    ([], {"MEDIASERVER_DB": "/nonexistent/dir/db"}, None, "does not exist"),
    ([], {"MEDIASERVER_DRAIN_SECONDS": "-1"}, None, "MEDIASERVER_DRAIN_SECONDS: must be 0..86400"),
])
def test_a_bad_value_from_any_source_is_one_line_and_exit_2(tmp_path, args, env, toml, message):
    if toml is not None:
        (tmp_path / "ms.toml").write_text(toml)
        args = args + ["--config", str(tmp_path / "ms.toml")]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    proc = subprocess.run(MEDIASERVER + args, capture_output=True, text=True, cwd=tmp_path,
                          env={**clean, **env}, timeout=30, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]


# ---- a real server in a subprocess ---------------------------------------------------


class Server:
    def __init__(self, tmp_path: Path, *args: str, config: str | None = None) -> None:
        self.port = free_port()
        self.log = tmp_path / "server.log"
        argv = ["--host", "127.0.0.1", "--port", str(self.port), "--udp-port", "0",
                "--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key"), *args]
        if config is not None:
            self.config = tmp_path / "ms.toml"
            self.config.write_text(config)
            argv += ["--config", str(self.config)]
        self._log = open(self.log, "w")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(MEDIASERVER + argv, stdout=self._log, stderr=self._log)
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws"
        for _ in range(200):
            if self.get("/healthz")[0] == 200:
                break
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.http + path)

    async def aget(self, path: str) -> tuple[int, str]:
        return await asyncio.to_thread(self.get, path)

    def lines(self) -> list[str]:
        self._log.flush()
        return [line for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(*args, **kw) -> Server:
        server = Server(*args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def pair(server: Server) -> tuple[Client, Client]:
    a = await Client.open(server.ws, source="127.0.0.2")
    b = await Client.open(server.ws, source="127.0.0.3")
    for c in (a, b):
        await c.hello(interests=["music"])
    await start_and_match(a, b)
    return a, b


async def wait_exit(server: Server, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while server.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.proc.poll() is not None, "still running"
    return server.proc.returncode


FAMILIES = {
    "mediaserver_peers", "mediaserver_pairs", "mediaserver_queue_length",
    "mediaserver_queue_wait_seconds", "mediaserver_forwarded_packets",
    "mediaserver_forwarded_bytes", "mediaserver_received_bytes", "mediaserver_dropped_packets",
    "mediaserver_srtp_failures",
    "mediaserver_nack_received", "mediaserver_pli_received", "mediaserver_pli_sent",
    "mediaserver_effect_streams", "mediaserver_effect_frames_dropped",
    "mediaserver_event_loop_lag_seconds", "mediaserver_websocket_connections",
    "mediaserver_media_sessions",
}


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_metrics_listen_has_every_workers_series_and_the_main_port_none(
    servers, tmp_path, workers
):
    port = free_port()
    server = servers(tmp_path, "--workers", workers, "--metrics-listen", f"127.0.0.1:{port}")
    assert (await server.aget("/metrics"))[0] == 404
    want = {str(i) for i in range(int(workers))}
    seen: set[str] = set()
    deadline = time.monotonic() + 15
    while seen != want and time.monotonic() < deadline:  # workers find each other first
        status, text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        if status == 200:
            families = {f.name: f for f in text_string_to_metric_families(text)}
            seen = {s.labels["worker"] for s in families["mediaserver_peers"].samples}
        await asyncio.sleep(0.1)
    assert seen == want, server.log.read_text()[-2000:]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_metrics_drain_and_json_logs(servers, tmp_path, workers):
    server = servers(tmp_path, "--log-format", "json", "--drain-seconds", "20", "--workers", workers)
    assert await server.aget("/readyz") == (200, '{"status":"ready"}')
    a, b = await pair(server)
    await a.send("chat", text="hi")
    await b.expect("chat")
    idle = await Client.open(server.ws, source="127.0.0.4")
    await idle.hello()
    await asyncio.sleep(0.6)  # one event loop lag sample

    status, text = await server.aget("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert FAMILIES <= set(families), FAMILIES - set(families)
    for family in families.values():
        for sample in family.samples:
            assert sample.labels.get("worker") in {str(i) for i in range(int(workers))}, sample
    # a scrape reaching either worker shows every worker's series
    assert {s.labels["worker"] for s in families["mediaserver_peers"].samples} == {
        str(i) for i in range(int(workers))
    }

    def value(name: str, **labels: str) -> float:  # summed over the workers
        return sum(s.value for f in families.values() for s in f.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("mediaserver_pairs") == 1
    assert value("mediaserver_peers", state="matched") == 2
    assert value("mediaserver_peers", state="idle") == 1
    assert value("mediaserver_websocket_connections") == 3
    assert value("mediaserver_queue_wait_seconds_count") == 2
    assert value("mediaserver_queue_length") == 0
    assert value("mediaserver_dropped_packets_total", reason="srtp_auth") == 0
    assert value("mediaserver_srtp_failures_total", reason="srtp_replay") == 0

    # SIGTERM: not ready, still alive, no new peers, current pair goes on
    server.proc.send_signal(signal.SIGTERM)
    for _ in range(50):
        if (await server.aget("/readyz"))[0] == 503:
            break
        await asyncio.sleep(0.05)
    assert await server.aget("/readyz") == (503, '{"status":"draining"}')
    assert (await server.aget("/healthz"))[0] == 200
    async with connect(server.ws) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    await idle.send("start")
    await idle.error("draining")
    await a.send("chat", text="still here")
    assert (await b.expect("chat"))["text"] == "still here"
    await asyncio.sleep(0.3)
    assert server.proc.poll() is None and (await server.aget("/healthz"))[0] == 200

    # the pair ends: the partner is not re-queued, the process exits 0
    await a.send("stop")
    await a.expect("stopped")
    await b.expect("partner_left")
    await b.error("draining")
    assert await wait_exit(server, 10) == 0

    records = [json.loads(line) for line in server.lines()]
    for record in records:
        assert {"ts", "level", "logger", "event"} <= set(record), record
    events = [r["event"] for r in records]
    for event in ("visitor_connected", "match_made", "drain_start", "pair_ended", "drain_end"):
        assert event in events, events
    assert any(r["event"] == "pair_ended" and r.get("reason") == "left" for r in records)
    raw = server.log.read_text()
    assert "127.0.0." not in raw
    assert "hi" not in [r.get("text") for r in records]


async def test_drain_ends_after_drain_seconds(servers, tmp_path):
    server = servers(tmp_path, "--drain-seconds", "1", "--log-level", "warning")
    _a, _b = await pair(server)  # a pair that does not end
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(server, 10) == 0
    assert 0.9 <= time.monotonic() - start < 8


async def test_log_ips_lets_addresses_in(servers, tmp_path):
    server = servers(tmp_path, "--log-ips", "--log-format", "json")
    a = await Client.open(server.ws)
    await a.hello()
    await a.close()
    await asyncio.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(server, 10) == 0
    assert "127.0.0." in server.log.read_text()
    for line in server.lines():
        json.loads(line)


async def test_sighup_changes_the_log_level_live(servers, tmp_path):
    server = servers(tmp_path, "--log-format", "json", config='log_level = "warning"\n')
    a = await Client.open(server.ws)
    await a.hello()
    await asyncio.sleep(0.2)
    assert not any("visitor_connected" in line for line in server.lines())
    server.config.write_text('log_level = "info"\nskip_cooldown = 1\n')
    server.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    b = await Client.open(server.ws)
    await b.hello()
    await asyncio.sleep(0.2)
    records = [json.loads(line) for line in server.lines()]
    reloaded = [r for r in records if r["event"] == "config_reloaded"]
    assert reloaded and "log_level" in reloaded[0]["changed"]
    assert "skip_cooldown" in reloaded[0]["changed"]
    assert any(r["event"] == "visitor_connected" for r in records)
    # a bad file on SIGHUP: logged, the server goes on with what it has
    server.config.write_text("port = [\n")
    server.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert server.proc.poll() is None
    assert any(json.loads(line)["event"] == "config_reload_failed" for line in server.lines())
    for c in (a, b):
        await c.close()
