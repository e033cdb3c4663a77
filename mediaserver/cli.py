"""The `mediaserver` command: flags, environment and a TOML file -> Config -> run.

Precedence for every setting: command-line flag > MEDIASERVER_<FLAG> environment
variable > --config file > built-in default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from mediaserver.app import run
from mediaserver.config import (
    LIVE_SETTINGS,
    LOG_FORMATS,
    LOG_LEVELS,
    OPTIONAL_TEXT,
    Config,
    load_toml,
)
from mediaserver.mail.commands import policy_main
from mediaserver.node.supervisor import run_workers
from mediaserver.store.moderation_cli import main as moderation_main
from mediaserver.store.operator_cli import main as accounts_main
from mediaserver.store.retention import main as retention_main

ENV_PREFIX = "MEDIASERVER_"


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


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {text!r} (choose from {', '.join(options)})"
            )
        return text

    return check


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean (1/0, true/false): {text!r}")


def _str(text: str) -> str:
    return text


# name -> (type for flag/env text, help); a type of None: a switch (store_true)
_FLAGS: dict[str, tuple[Callable[[str], Any] | None, str]] = {
    "host": (_str, "address for HTTP and WebSocket"),
    "port": (_port, "HTTP/WebSocket port"),
    "udp_port": (_port, "the one UDP port all WebRTC media goes through (0: any free port)"),
    "tcp_port": (
        _port,
        (
            "ICE over TCP for networks that block UDP: a passive TCP candidate on this "
            "port (--tcp-port + i per worker); 0: off"
        ),
    ),
    "read_hold_us": (
        _int,
        (
            "coalesce media reads: after a wake-up that found few packets, wait up to "
            "this many microseconds (0..100000, adapted to the packet rate) and read "
            "again; adds up to that much latency. 0: off"
        ),
    ),
    "socket_thread": (
        None,
        (
            "read the media socket from a C thread without the GIL, not the event loop: "
            "a media packet wakes no Python (only STUN, DTLS and RTCP do); --no-socket-thread "
            "reads it on the event loop"
        ),
    ),
    "announced_ip": (
        _str,
        (
            "address put in SDP candidates, where browsers send media: one IPv4 and/or "
            "one IPv6; repeatable or comma-separated"
        ),
    ),
    "log_level": (_choice(LOG_LEVELS), f"logging threshold ({', '.join(LOG_LEVELS)}); live"),
    "log_format": (_choice(LOG_FORMATS), "text, or json: one JSON object per line; live"),
    "log_ips": (None, "let IP addresses into the logs (off: masked, and no access log)"),
    "count_timers": (
        None,
        (
            "count the event loop's timer callbacks by source in /metrics "
            "(mediaserver_timer_callbacks_total; benchmarks.periodic); a little overhead"
        ),
    ),
    "drain_seconds": (
        _seconds,
        "on SIGTERM, seconds current pairs may go on (no new peers) before exiting",
    ),
    "redis_url": (
        _str,
        "keep the match queue in Redis, shared by several nodes (absent: in-process)",
    ),
    "node_id": (
        _str,
        "this node's name among the nodes sharing --redis-url (default: host name + random)",
    ),
    "workers": (
        _int,
        "processes, each with its own event loop, SFU and UDP port (--udp-port + i); "
        "0: one per core",
    ),
    "max_sessions": (_int, "media sessions one worker holds at most (placement needs room)"),
    "match_interest_wait": (
        _seconds,
        "seconds a waiting visitor prefers a partner with a shared interest; live",
    ),
    "skip_cooldown": (
        _seconds,
        "seconds before two visitors who skipped each other can be matched again; live",
    ),
    "mutual_reveal": (
        None,
        "every match starts with both faces covered by the server until both press Reveal",
    ),
    "effects_workers": (_int, "threads that decode, process and encode video for effects"),
    "max_effect_streams": (
        _int,
        "senders with an effect on at once; more get the error effects_busy; live",
    ),
    "db": (
        _str,
        (
            "SQLite file for profiles, privacy requests and opted-in chat history "
            "(created if absent)"
        ),
    ),
    "data_key_file": (
        _str,
        ("key that encrypts chat history at rest (generated with 0600 permissions on first run)"),
    ),
    "min_age": (
        _int,
        "youngest age (years) a profile's date of birth may give; younger is refused (>= 13)",
    ),
    "session_ttl": (_number, "seconds a sign-in session token lasts (60 .. a year)"),
    "trusted_proxy": (
        _str,
        "comma-separated networks (CIDR) of reverse proxies whose X-Forwarded-For names "
        "the client; per-address limits and reputation use it (default: trust none)",
    ),
    "max_connections_per_address": (
        _int,
        "open /ws connections one address (IPv6: its /64) may hold per worker",
    ),
    "max_sessions_per_address": (
        _int,
        "media sessions one address (IPv6: its /64) may hold per worker",
    ),
    "max_media_memory": (
        _int,
        "MiB of NACK packet caches (~1.5 per session) one worker may commit; "
        "0: half the memory over the workers",
    ),
    "allowed_origin": (
        _str,
        "origin (scheme://host[:port]) whose pages may open /ws besides this server's "
        "own; repeatable or comma-separated",
    ),
    "metrics_listen": (
        _str,
        "HOST:PORT of a separate /metrics listener (then 404 on the main port)",
    ),
    "metrics_token": (
        _str,
        "Bearer token /metrics requires (default: none; loopback peers only)",
    ),
    "max_cover_streams": (
        _int,
        "senders whose face is covered (--mutual-reveal) at once, apart from "
        "--max-effect-streams; beyond it a sender's video is withheld",
    ),
    "cluster_secret": (
        _str,
        "secret shared by the nodes on --redis-url, signing their messages (required with "
        "it); prefer the file or the environment: a flag shows in the process list",
    ),
    "cluster_secret_file": (_str, "file holding --cluster-secret (mode 0600)"),
    "smtp_url": (
        _str,
        "outgoing mail server: smtp://[user:pass@]host:port (STARTTLS when offered) or "
        "smtps://... (implicit TLS); absent: mail is written to --maildir",
    ),
    "mail_from": (_str, "From address of outgoing mail (codes, notices)"),
    "maildir": (
        _str,
        "Maildir for outgoing mail without --smtp-url (default: maildir next to --db)",
    ),
    "tls_cert": (
        _str,
        "PEM certificate (and chain): serve HTTPS and WSS on --port; re-read on SIGHUP",
    ),
    "tls_key": (_str, "PEM private key of --tls-cert (unencrypted); re-read on SIGHUP"),
    "turn_url": (
        _str,
        (
            "coturn URL handed to visitors (turn:HOST[:PORT] or turns:HOST[:PORT], optional "
            "?transport=udp|tcp); repeatable or comma-separated; needs --turn-secret(-file)"
        ),
    ),
    "turn_secret": (
        _str,
        (
            "coturn's static-auth-secret (use-auth-secret), signing short-lived TURN "
            "credentials; prefer the file or the environment: a flag shows in the process list"
        ),
    ),
    "turn_secret_file": (_str, "file holding --turn-secret (mode 0600)"),
    "turn_ttl": (_int, "seconds the TURN credentials in a welcome stay valid (60 .. 7 days)"),
}
_REPEATABLE = frozenset({"allowed_origin", "turn_url", "announced_ip"})
"""Flags that may be given several times: their values are joined with commas."""


class _JoinAction(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        earlier = getattr(namespace, self.dest, "")
        setattr(namespace, self.dest, f"{earlier},{values}" if earlier else values)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr, exit code 2 (no usage block)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    live = ", ".join("--" + n.replace("_", "-") for n in LIVE_SETTINGS)
    parser = _Parser(
        prog="mediaserver",
        description="Realtime media server (SFU) for anonymous random video chat. "
        "Every setting comes from its flag, else its environment variable, else the "
        "--config file (TOML, keys = flag names with underscores), else its default.",
        epilog=f"Signals: SIGTERM drains (readyz 503, no new peers; current pairs go on "
        f"up to --drain-seconds) then exits 0. SIGHUP re-reads --config and applies the "
        f"live settings: {live}; with --tls-cert it also re-reads the certificate and key "
        f"(new connections get the new one; a bad file is logged and the old one kept).",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"TOML file with any of the settings below [env {env_name('config')}]",
    )
    for name, (kind, text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        env = env_name(name)
        if kind is None and getattr(defaults, name):
            # a switch that is on by default: --no-NAME turns it off
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{text} (default: on) [env {env}=0 turns it off]",
            )
        elif kind is None:
            parser.add_argument(
                flag,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f"{text} [env {env}=1]",
            )
        else:
            default = getattr(defaults, name)
            parser.add_argument(
                flag,
                type=kind,
                action=_JoinAction if name in _REPEATABLE else "store",
                default=argparse.SUPPRESS,
                help=f"{text}{'' if default is None else f' (default: {default})'} [env {env}]",
            )
    return parser


def load_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Flags > environment > --config file > defaults, validated.

    Raises:
        ValueError: one clear line for a bad value from any source.
        SystemExit: bad flags (argparse, code 2).
    """
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    config_file: str | None = args.pop("config", None) or environ.get(env_name("config")) or None
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_toml(config_file))
    for name, (kind, _) in _FLAGS.items():
        env = env_name(name)
        if env in environ:
            try:
                values[name] = (kind or _bool)(environ[env])
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"{env}: {exc}") from None
    values.update(args)
    for name in OPTIONAL_TEXT:
        if values.get(name) == "":
            values[name] = None
    config = Config(**values, config_file=config_file)
    config.validate()
    return config


def parse_config(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    try:
        return load_config(argv, environ)
    except ValueError as exc:
        build_parser().error(str(exc))  # one line, exit code 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["retention"]:  # `mediaserver retention --run-once`, for cron
        return retention_main(args[1:])
    if args[:1] == ["accounts"]:  # `mediaserver accounts confirm-underage ID`, operators
        return accounts_main(args[1:])
    if args[:1] == ["moderation"]:  # `mediaserver moderation grant USERNAME`, operators
        return moderation_main(args[1:])
    if args[:1] == ["policy"]:  # `mediaserver policy publish FILE`, operators
        return policy_main(args[1:])
    config = parse_config(args)
    if config.worker_count() > 1:
        return run_workers(config, args, reload=lambda: load_config(args))
    return run(config, reload=lambda: load_config(args))


if __name__ == "__main__":
    sys.exit(main())
