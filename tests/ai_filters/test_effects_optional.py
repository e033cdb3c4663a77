"""The effects are an optional extra: the server runs without OpenCV and LiteRT.

The server runs in a subprocess whose imports of cv2 and ai_edge_litert fail, as
when the 'effects' extra is not installed.
"""

import signal
import subprocess
import sys
import time

from tests.support.http_client import http_get
from tests.support.signalling_client import Client, free_port

WITHOUT_EFFECTS = (
    "import sys\n"
    "sys.modules['cv2'] = None  # import cv2 raises ImportError, as when not installed\n"
    "sys.modules['ai_edge_litert'] = None\n"
    "from mediaserver.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def server_without_effects(tmp_path, *flags: str) -> list[str]:
    return [
        sys.executable, "-c", WITHOUT_EFFECTS, "--host", "127.0.0.1",
        "--udp-port", "0", "--workers", "1", "--log-level", "warning",
        "--db", str(tmp_path / "db"), "--data-key-file", str(tmp_path / "key"), *flags,
    ]


async def test_starts_without_the_effects_extra_and_refuses_effects(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        server_without_effects(tmp_path, "--port", str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    client = None
    try:
        status = 0
        for _ in range(150):
            status, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if status or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert status == 200, proc.stderr.read() if proc.poll() is not None else status
        client = await Client.open(f"ws://127.0.0.1:{port}/ws")
        await client.hello()
        await client.send("effect", name="pixelate_face", on=True)
        msg = await client.error("effect_unavailable")
        assert msg["ref"] == "effect"
        await client.send("start")  # the rest of the visit goes on
        await client.expect("queued")
    finally:
        if client is not None:
            await client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # it ran without the effects because they were missing, and said so
    assert "effects_unavailable" in proc.stderr.read()


def test_mutual_reveal_without_the_effects_refuses_to_start(tmp_path):
    proc = subprocess.run(
        server_without_effects(tmp_path, "--port", str(free_port()), "--mutual-reveal"),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--mutual-reveal cannot cover faces here" in lines[0]
    assert "cv2" in lines[0] and "mediaserver[effects]" in lines[0]
