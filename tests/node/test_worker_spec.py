"""What the supervisor hands a worker process survives the environment."""

from __future__ import annotations

import pytest

from mediaserver.config import Config
from mediaserver.node.worker_spec import SPEC_ENV, WorkerSpec, decode_worker_env, encode_worker_env


def test_config_argv_and_spec_round_trip_through_the_environment():
    config = Config(workers=2, port=8443, node_id="edge-1")
    worker = WorkerSpec(1, "edge-1.w1", 7, "/run/m/coordinator.sock")
    env = {SPEC_ENV: encode_worker_env(config, ["--workers", "2"], worker)}
    assert decode_worker_env(env) == (config, ["--workers", "2"], worker)


def test_without_the_variable_it_was_not_started_by_the_supervisor():
    with pytest.raises(KeyError):
        decode_worker_env({})
