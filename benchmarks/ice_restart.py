"""Time from an ICE restart offer to media resumed, for a call whose peer moves to a
new network (README "Calls that survive a network change").

    python -m mediaserver.netns -- python -m benchmarks.ice_restart [--restarts 9] [--json]

Runs inside the private namespace (it refuses otherwise). One live call: the real
app in this process (/ws + SFU), two aiortc peers matched and decoding each other's
video (tests/support/ice_restart.py). Then, --restarts times, peer A loses its network
for --outage seconds (its ICE connection and sockets close; nothing flows either way)
and comes back on a new local address of the namespace (10.77.0.10, .11, ...) with an
ICE restart: a second `offer` on the same WebSocket, the server's `answer`, ICE from
the new address (the server's return-routability check included), and the same DTLS
and SRTP. The clock runs from sending the offer to the first newly decoded video frame
on both peers (polled every 5 ms). Reports the median and the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
from typing import Any

from mediaserver.netns import inside
from tests.support.ice_restart import extra_address, live_call, move_and_restart


async def run(restarts: int, outage: float) -> dict[str, Any]:
    answers, resumes = [], []
    with contextlib.ExitStack() as addresses:
        async with live_call() as (server, clients, peers):
            for i in range(restarts):
                ip = f"10.77.0.{10 + i}"
                addresses.enter_context(extra_address(ip))
                answered, resumed = await move_and_restart(clients, peers, ip, outage)
                answers.append(round(answered * 1000, 1))
                resumes.append(round(resumed * 1000, 1))
                await asyncio.sleep(1.0)  # media flowing again before the next move
            types = {m["type"] for client in clients.values() for m in client.messages}
            assert "partner_left" not in types and "error" not in types, types
            moved = server.sfu.counters()["ice_restarts_completed"]
    return {
        "restarts": restarts,
        "outage_s": outage,
        "moved": moved,
        "answer_ms": answers,
        "resumed_ms": resumes,
        "median_resumed_ms": statistics.median(resumes),
        "median_answer_ms": statistics.median(answers),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=9, help="moves of peer A (max 100)")
    parser.add_argument("--outage", type=float, default=1.0, help="seconds without network")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)
    if not inside():
        sys.stderr.write("run it inside the namespace: python -m mediaserver.netns -- "
                         "python -m benchmarks.ice_restart\n")  # fmt: skip
        return 2
    if not 1 <= args.restarts <= 100:
        parser.error("--restarts must be 1 to 100")
    result = asyncio.run(run(args.restarts, args.outage))
    print(f"ICE restart after a {args.outage:g} s outage, {args.restarts} moves: "
          f"offer -> media resumed both ways, median {result['median_resumed_ms']} ms "
          f"(min {min(result['resumed_ms'])}, max {max(result['resumed_ms'])}); "
          f"offer -> answer, median {result['median_answer_ms']} ms")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
