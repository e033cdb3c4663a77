"""Run a command inside a private network namespace.

WebRTC peers (aiortc, Chromium) skip loopback and gather the machine's LAN
address, so tests and benchmarks with real peers run in a namespace of their own:
loopback up, plus one veth pair whose addresses exist nowhere else: 10.77.0.1 and
10.77.0.2, and fd77::1 and fd77::2 (`nodad`: usable at once, with no duplicate
address detection to wait for). Nothing
sent there can leave the machine. `unshare -rn` needs no root (it makes a user
namespace too).

    python -m mediaserver.netns -- pytest -x
"""

from __future__ import annotations

import os
import shutil
import sys

SERVER_IP = "10.77.0.1"  # ms0: the address the server announces in tests
CLIENT_IP = "10.77.0.2"  # ms1: the peers' side
SERVER_IP6 = "fd77::1"  # ms0 too: the same two ends over IPv6 (a ULA prefix)
CLIENT_IP6 = "fd77::2"
MARK = "MEDIASERVER_NETNS"

_SETUP = f"""set -e
ip link set lo up
ip link add ms0 type veth peer name ms1
ip addr add {SERVER_IP}/24 dev ms0
ip addr add {CLIENT_IP}/24 dev ms1
ip -6 addr add {SERVER_IP6}/64 dev ms0 nodad
ip -6 addr add {CLIENT_IP6}/64 dev ms1 nodad
ip link set ms0 up
ip link set ms1 up
exec "$@"
"""


def inside() -> bool:
    """True when this process runs in the namespace this module made."""
    return os.environ.get(MARK) == "1"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        sys.stderr.write("usage: python -m mediaserver.netns -- COMMAND [ARG...]\n")
        return 2
    if inside():
        os.execvp(args[0], args)
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            sys.stderr.write(
                f"error: '{tool}' not found (Debian: apt-get install util-linux iproute2)\n"
            )
            return 2
    os.environ[MARK] = "1"
    os.execvp("unshare", ["unshare", "-rn", "sh", "-c", _SETUP, "sh", *args])


if __name__ == "__main__":
    sys.exit(main())
