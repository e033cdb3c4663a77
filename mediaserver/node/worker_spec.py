"""What the supervisor tells a worker process it starts: its place among the
workers and the config, handed over in one environment variable."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

from mediaserver.config import Config

SPEC_ENV = "MEDIASERVER_WORKER_SPEC"
"""The environment variable that carries a worker's spec (JSON)."""


@dataclass
class WorkerSpec:
    """One worker of `--workers N` (mediaserver.node.supervisor starts it)."""

    index: int
    node_id: str
    """This worker's node id: "<node>.w<index>"."""
    fd: int
    """Its HTTP listening socket (the supervisor binds one per worker, SO_REUSEPORT)."""
    coordinator: str | None
    """Unix socket of the supervisor's coordinator; None: Redis (--redis-url)."""


def encode_worker_env(config: Config, argv: list[str], worker: WorkerSpec) -> str:
    """The value of SPEC_ENV for a worker: its config, the command line it reloads
    from on SIGHUP, and its WorkerSpec."""
    return json.dumps(
        {"config": dataclasses.asdict(config), "argv": argv, "worker": dataclasses.asdict(worker)}
    )


def decode_worker_env(environ: Mapping[str, str]) -> tuple[Config, list[str], WorkerSpec]:
    """What `encode_worker_env` put in SPEC_ENV.

    Raises:
        KeyError: SPEC_ENV is not set (not started by the supervisor).
    """
    spec = json.loads(environ[SPEC_ENV])
    return Config(**spec["config"]), list(spec["argv"]), WorkerSpec(**spec["worker"])
