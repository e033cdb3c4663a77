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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be 0..86400 seconds, not {text}")
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
    parser.add_argument(
        "--redis-url",
        default=defaults.redis_url,
        help="keep the match queue in Redis, shared by several nodes (absent: in-process)",
    )
    parser.add_argument(
        "--match-interest-wait",
        type=_seconds,
        default=defaults.match_interest_wait,
        help="seconds a waiting visitor prefers a partner with a shared interest",
    )
    parser.add_argument(
        "--skip-cooldown",
        type=_seconds,
        default=defaults.skip_cooldown,
        help="seconds before two visitors who skipped each other can be matched again",
    )
    parser.add_argument(
        "--mutual-reveal",
        action="store_true",
        help="every match starts with both faces covered by the server until both press Reveal",
    )
    parser.add_argument(
        "--effects-workers",
        type=int,
        default=defaults.effects_workers,
        help="threads that decode, process and encode video for effects",
    )
    parser.add_argument(
        "--max-effect-streams",
        type=int,
        default=defaults.max_effect_streams,
        help="senders with an effect on at once; more get the error effects_busy",
    )
    parser.add_argument(
        "--db",
        default=defaults.db,
        help="SQLite file for profiles, privacy requests and opted-in chat history "
        "(created if absent)",
    )
    parser.add_argument(
        "--data-key-file",
        default=defaults.data_key_file,
        help="key that encrypts chat history at rest (generated with 0600 permissions "
        "on first run)",
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
        redis_url=args.redis_url,
        match_interest_wait=args.match_interest_wait,
        skip_cooldown=args.skip_cooldown,
        mutual_reveal=args.mutual_reveal,
        effects_workers=args.effects_workers,
        max_effect_streams=args.max_effect_streams,
        db=args.db,
        data_key_file=args.data_key_file,
    )
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))  # one line, exit code 2
    return config


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["retention"]:  # `mediaserver retention --run-once`, for cron
        from mediaserver.store.retention import main as retention_main

        return retention_main(args[1:])
    config = parse_config(argv)
    from mediaserver.app import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
