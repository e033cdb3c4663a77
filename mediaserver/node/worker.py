"""A worker process of `--workers N` (started by mediaserver.node.workers)."""

from __future__ import annotations

import json
import os
import sys

from mediaserver.app import WorkerSpec, run
from mediaserver.config import Config


def main() -> int:
    spec = json.loads(os.environ.pop("MEDIASERVER_WORKER_SPEC"))
    config = Config(**spec["config"])
    argv: list[str] = spec["argv"]

    def reload() -> Config:
        from mediaserver.cli import load_config

        return load_config(argv)

    return run(config, reload=reload, worker=WorkerSpec(**spec["worker"]))


if __name__ == "__main__":
    sys.exit(main())
