"""Helpers shared by the tests: real peers (aiortc, Chromium), a real redis-server,
WebSocket and HTTP clients, and where the repository's files are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's top folder."""
DATA = ROOT / "tests" / "data"
"""Captured packets, offers and other test vectors."""
