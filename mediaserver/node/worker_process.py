"""The entry point of one worker process of `--workers N`
(`python -m mediaserver.node.worker_process`, started by mediaserver.node.supervisor)."""

from __future__ import annotations

import os
import sys

from mediaserver.app import run
from mediaserver.cli import load_config
from mediaserver.config import Config
from mediaserver.node.worker_spec import SPEC_ENV, decode_worker_env


def main() -> int:
    config, argv, worker = decode_worker_env(os.environ)
    os.environ.pop(SPEC_ENV)  # not inherited by whatever the worker starts

    def reload() -> Config:
        return load_config(argv)

    return run(config, reload=reload, worker=worker)


if __name__ == "__main__":
    sys.exit(main())
