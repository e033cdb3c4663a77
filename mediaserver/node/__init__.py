"""The node layer: several SFU processes (workers of one machine, or machines)
serving one site. A pair's media always lives on one node; signalling between
nodes goes over a message bus (Redis pub/sub, or the coordinator of one
machine's workers). With one node everything stays in-process (LocalBus).

    messages.py      every message between nodes (frozen dataclasses, one codec)
    bus.py           Bus (send, request, receive) and LocalBus; peer ids
    redis_bus.py     the bus over Redis, sealed (auth.py)
    coordinator.py   one machine's workers: the coordinator and a worker's link
    framing.py       the coordinator socket's frames, sans-I/O
    media.py         media sessions on any node, for the hub
    supervisor.py    `--workers N`: starts and restarts the worker processes
    worker_spec.py   what a worker process is told; worker_process.py its main

Import from the modules (nothing is re-exported here, so importing one of them
does not import the others).
"""
