"""The `mediaserver` command: flags -> Config -> run."""

from __future__ import annotations

import argparse
import sys

from mediaserver.config import LOG_LEVELS, Config


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="mediaserver",
        description="Realtime media server (SFU) for anonymous random video chat.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=defaults.host, help="address for HTTP and WebSocket")
    parser.add_argument("--port", type=_port, default=defaults.port, help="HTTP/WebSocket port")
    parser.add_argument(
        "--udp-port",
        type=_port,
        default=defaults.udp_port,
        help="the one UDP port all WebRTC media goes through (0: any free port)",
    )
    parser.add_argument(
        "--announced-ip",
        default=defaults.announced_ip,
        help="IPv4 address put in SDP candidates: where browsers send media",
    )
    parser.add_argument(
        "--log-level", default=defaults.log_level, choices=LOG_LEVELS, help="logging threshold"
    )
    return parser


def parse_config(argv: list[str] | None = None) -> Config:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = Config(
        host=args.host,
        port=args.port,
        udp_port=args.udp_port,
        announced_ip=args.announced_ip,
        log_level=args.log_level,
    )
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))  # one line, exit code 2
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    from mediaserver.app import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
