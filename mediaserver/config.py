"""One Config for the whole server; command-line flags map onto it."""

from __future__ import annotations

import os
import re
import secrets
import socket
import tomllib
from dataclasses import dataclass, fields
from typing import Any

from mediaserver.client_address import parse_trusted_proxies
from mediaserver.edges import parse_listen, parse_origins
from mediaserver.mail.transport import check_mail_from, parse_smtp_url
from mediaserver.node.auth import MIN_SECRET_BYTES, load_secret
from mediaserver.node.bus import NODE_ID
from mediaserver.sfu.address import parse_announced_ips
from mediaserver.signalling.turn_credentials import (
    MAX_TTL,
    MIN_TTL,
    TurnCredentials,
    check_turn_url,
)
from mediaserver.store import StoreError, load_data_key
from mediaserver.tls import check_files as check_tls_files

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
LIVE_SETTINGS = (
    "log_level",
    "log_format",
    "match_interest_wait",
    "skip_cooldown",
    "max_effect_streams",
)
"""Settings a SIGHUP applies to the running server (re-read from --config)."""


@dataclass
class Config:
    host: str = "0.0.0.0"
    """Address of the HTTP/WebSocket listener."""
    port: int = 8080
    """HTTP/WebSocket port."""
    udp_host: str = ""
    """Address the media socket binds; "": every address of both families (`::` with
    IPV6_V6ONLY off; 0.0.0.0 on a host without IPv6)."""
    udp_port: int = 40000
    """The one UDP port every peer's media goes through."""
    tcp_port: int = 0
    """The ICE-TCP port (RFC 6544), for networks that block UDP: a passive TCP
    candidate in every answer, one port per worker (tcp_port + i); 0: off."""
    read_hold_us: int = 0
    """Coalescing of media reads (SfuConfig.read_hold_us): up to this many microseconds
    of added latency for fewer wake-ups per packet; 0: off (see README Performance)."""
    socket_thread: bool = True
    """Read the media socket from a C thread of the router's (SfuConfig.socket_thread)
    rather than the event loop: measured cheaper at every rate (README Performance)."""
    announced_ip: str = "127.0.0.1"
    """Addresses put in SDP candidates, the ones peers reach the media port at: one
    IPv4 and/or one IPv6, comma-separated (the flag is repeatable)."""
    log_level: str = "info"
    log_format: str = "text"
    """text: human-readable lines; json: one JSON object per line."""
    log_ips: bool = False
    count_timers: bool = False
    """Count the event loop's timer callbacks by source, in /metrics
    (mediaserver_timer_callbacks_total): for benchmarks/periodic.py; costs a wrapper
    per timer."""
    """Let IP addresses into the logs (off: they are masked, access log off)."""
    drain_seconds: float = 30.0
    """On SIGTERM: seconds current pairs may go on before the process exits."""
    config_file: str | None = None
    """TOML file with the same settings (re-read on SIGHUP)."""
    redis_url: str | None = None
    """Match queue in Redis (several nodes share it); None: in-process."""
    match_interest_wait: float = 3.0
    """Seconds a waiting visitor prefers a partner with a shared interest."""
    skip_cooldown: float = 30.0
    """Seconds before two visitors who skipped each other can meet again."""
    mutual_reveal: bool = False
    """Every match starts with both faces covered until both press Reveal."""
    effects_workers: int = 2
    """Threads that decode, process and encode video for effects."""
    max_effect_streams: int = 8
    """Senders with an effect on at once; more are refused with effects_busy."""
    workers: int = 0
    """Processes, each with its own event loop, SFU and UDP port (udp_port + i);
    0: one per core."""
    node_id: str | None = None
    """This node's name among several sharing --redis-url; None: host name + random."""
    max_sessions: int = 4096
    """Media sessions one worker holds at most; pairs go to workers with room."""
    db: str = "mediaserver.db"
    """SQLite file for profiles, privacy requests and opted-in chat history."""
    data_key_file: str = "mediaserver.key"
    """32-byte key encrypting chat history at rest; created (0600) on first run."""
    min_age: int = 18
    """Youngest age accepted for a profile's date of birth (13 at the least)."""
    session_ttl: float = 30 * 86400.0
    """Seconds a sign-in session token lasts."""
    trusted_proxy: str = ""
    """Comma-separated networks (CIDR) of reverse proxies whose X-Forwarded-For is
    believed; every per-address limit and the reputation key use that address."""
    max_connections_per_address: int = 20
    """Open /ws connections one address (IPv6: its /64) may hold per worker; more
    are closed with 1008. A household or office behind one NAT stays far below."""
    max_sessions_per_address: int = 8
    """Media sessions one address (IPv6: its /64) may hold per worker; more offers
    get too_many_sessions (four pairs' worth of people behind one NAT)."""
    max_media_memory: int = 0
    """MiB of NACK packet caches (about 1.5 MiB per session) one worker may commit;
    new sessions past it get server_full. 0: half the machine's memory over the workers."""
    allowed_origin: str = ""
    """Comma-separated origins (scheme://host[:port]) whose pages may open /ws,
    besides the server's own (the Host header); requests without Origin pass."""
    metrics_listen: str = ""
    """HOST:PORT of a separate listener for /metrics (then 404 on the main port);
    empty: /metrics on the main port, to loopback peers (or --metrics-token)."""
    metrics_token: str = ""
    """Bearer token /metrics asks for; empty: no token (loopback peers only on the
    main port)."""
    max_cover_streams: int = 64
    """Senders whose face the server covers (--mutual-reveal) at once, reserved apart
    from the opt-in effects; a match beyond it gets no video from that sender."""
    cluster_secret: str | None = None
    """Secret every node sharing --redis-url knows (16+ bytes): it signs node messages
    and registry entries. Required with --redis-url (else the server refuses to
    start). As a flag it shows in the process list: prefer the file or
    MEDIASERVER_CLUSTER_SECRET."""
    cluster_secret_file: str | None = None
    """File holding the cluster secret (surrounding whitespace ignored); it must not
    be readable by group or others."""
    smtp_url: str = ""
    """smtp://[user:pass@]host:port (STARTTLS when offered) or smtps://... (implicit
    TLS) for outgoing mail; empty: mail goes to --maildir."""
    mail_from: str = "mediaserver@localhost"
    """The From address of outgoing mail."""
    maildir: str = ""
    """Maildir outgoing mail is written to without --smtp-url; empty: `maildir` next
    to --db."""
    tls_cert: str = ""
    """PEM certificate (with its chain) for HTTPS and WSS on --port; re-read on SIGHUP.
    Empty: plain HTTP (a reverse proxy may terminate TLS in front)."""
    tls_key: str = ""
    """PEM private key of --tls-cert (unencrypted); re-read on SIGHUP."""
    turn_url: str = ""
    """Comma-separated turn:/turns: URLs of coturn servers (use-auth-secret) handed to
    every visitor in `welcome.ice_servers`; empty: no TURN."""
    turn_secret: str | None = None
    """coturn's static-auth-secret; required with --turn-url. As a flag it shows in the
    process list: prefer the file or MEDIASERVER_TURN_SECRET."""
    turn_secret_file: str | None = None
    """File holding the TURN secret (surrounding whitespace ignored); it must not be
    readable by group or others."""
    turn_ttl: int = 3600
    """Seconds the TURN credentials in a welcome stay valid."""

    def validate(self) -> None:
        """Raise ValueError with one clear line for a setting that cannot work."""
        for name in ("port", "udp_port", "tcp_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"--{name.replace('_', '-')} must be 0..65535, not {value}")
        if not 0 <= self.read_hold_us <= 100_000:
            raise ValueError(f"--read-hold-us must be 0..100000, not {self.read_hold_us}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        if not 0 <= self.drain_seconds <= 86400:
            raise ValueError(f"--drain-seconds must be 0..86400 seconds, not {self.drain_seconds}")
        for name in ("match_interest_wait", "skip_cooldown"):
            value = getattr(self, name)
            if not 0 <= value <= 86400:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be 0..86400 seconds, not {value}"
                )
        if not 1 <= self.effects_workers <= 64:
            raise ValueError("--effects-workers must be 1..64")
        if not 0 <= self.max_effect_streams <= 10000:
            raise ValueError("--max-effect-streams must be 0..10000")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("--redis-url must start with redis://, rediss:// or unix://")
        if not 0 <= self.workers <= 256:
            raise ValueError(f"--workers must be 0..256 (0: one per core), not {self.workers}")
        if self.udp_port and self.udp_port + self.worker_count() - 1 > 65535:
            raise ValueError("--udp-port + --workers - 1 must be at most 65535")
        if self.tcp_port and self.tcp_port + self.worker_count() - 1 > 65535:
            raise ValueError("--tcp-port + --workers - 1 must be at most 65535")
        if not 2 <= self.max_sessions <= 1_000_000:
            raise ValueError(f"--max-sessions must be 2..1000000, not {self.max_sessions}")
        if self.node_id is not None:
            if not NODE_ID.match(self.node_id):
                raise ValueError(
                    f"--node-id must be 1-64 of letters, digits, '_', '.', '-', not {self.node_id!r}"
                )
        for name in ("db", "data_key_file"):
            _check_file(f"--{name.replace('_', '-')}", getattr(self, name))
        _check_data_key(self.data_key_file)
        if not 13 <= self.min_age <= 130:
            raise ValueError(f"--min-age must be 13..130 years, not {self.min_age}")
        if not 60 <= self.session_ttl <= 366 * 86400:
            raise ValueError(
                f"--session-ttl must be 60..31622400 seconds (a year), not {self.session_ttl}"
            )

        parse_trusted_proxies(self.trusted_proxy)
        self._validate_edges()

        parse_announced_ips(self.announced_ip)
        self._validate_cluster_secret()
        self._validate_mail()
        check_tls_files(self.tls_cert, self.tls_key)
        self._validate_turn()
        if not 0 <= self.max_cover_streams <= 10000:
            raise ValueError("--max-cover-streams must be 0..10000")
        if self.mutual_reveal:
            from mediaserver import ai_filters

            try:
                ai_filters.check_face_cover()
            except ai_filters.EffectsUnavailable as exc:
                # it promises covered faces: without the effects it cannot keep that
                raise ValueError(f"--mutual-reveal cannot cover faces here: {exc}") from None

    def _validate_edges(self) -> None:
        if not 1 <= self.max_connections_per_address <= 100_000:
            raise ValueError("--max-connections-per-address must be 1..100000")
        if not 1 <= self.max_sessions_per_address <= 100_000:
            raise ValueError("--max-sessions-per-address must be 1..100000")
        if not 0 <= self.max_media_memory <= 16 * 1024 * 1024:
            raise ValueError("--max-media-memory must be 0..16777216 MiB (0: automatic)")

        parse_origins(self.allowed_origin)
        if self.metrics_listen:
            parse_listen(self.metrics_listen)

    def _validate_mail(self) -> None:
        if self.smtp_url:
            parse_smtp_url(self.smtp_url)
        check_mail_from(self.mail_from)

    def _validate_turn(self) -> None:
        urls = self.turn_urls()
        for url in urls:
            check_turn_url(url)
        if not MIN_TTL <= self.turn_ttl <= MAX_TTL:
            raise ValueError(
                f"--turn-ttl must be {MIN_TTL}..{MAX_TTL} seconds, not {self.turn_ttl}"
            )
        if self.turn_secret is not None and self.turn_secret_file is not None:
            raise ValueError("give --turn-secret or --turn-secret-file, not both")
        key = self.turn_key()
        if urls and key is None:
            raise ValueError(
                "--turn-url needs --turn-secret-file (or MEDIASERVER_TURN_SECRET): "
                "coturn's static-auth-secret, which signs the visitors' TURN credentials"
            )
        if key is not None and not key:
            raise ValueError("the TURN secret must not be empty")

    def turn_urls(self) -> tuple[str, ...]:
        """--turn-url as a tuple (given several times, or comma-separated)."""
        return tuple(u.strip() for u in self.turn_url.split(",") if u.strip())

    def turn_key(self) -> bytes | None:
        """The TURN secret's bytes (from --turn-secret or its file); None: not set.

        Raises:
            ValueError: the file is unreadable, not a regular file, or open to
                group or others.
        """
        if self.turn_secret is not None:
            return self.turn_secret.encode()
        if self.turn_secret_file is None:
            return None

        return load_secret(self.turn_secret_file, flag="--turn-secret-file")

    def turn_credentials(self) -> TurnCredentials | None:
        """What issues each welcome's ice_servers; None: no --turn-url."""
        urls = self.turn_urls()
        key = self.turn_key()
        if not urls or key is None:
            return None
        return TurnCredentials(urls, key, self.turn_ttl)

    def mail_dir(self) -> str:
        """--maildir, or `maildir` in the directory of --db."""
        return self.maildir or os.path.join(os.path.dirname(os.path.abspath(self.db)), "maildir")

    def media_memory_bytes(self) -> int:
        """--max-media-memory in bytes; automatic: half the machine's memory shared
        by the workers (the caches are what grows with sessions; the rest is small)."""
        if self.max_media_memory:
            return self.max_media_memory * 1024 * 1024

        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return total // 2 // self.worker_count()

    def _validate_cluster_secret(self) -> None:
        if self.cluster_secret is not None and self.cluster_secret_file is not None:
            raise ValueError("give --cluster-secret or --cluster-secret-file, not both")
        key = self.cluster_key()
        if self.redis_url and key is None:
            raise ValueError(
                "--redis-url needs --cluster-secret-file (or MEDIASERVER_CLUSTER_SECRET): "
                "the secret all nodes share to sign what they put in Redis"
            )

        if key is not None and len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"the cluster secret must be at least {MIN_SECRET_BYTES} bytes")

    def cluster_key(self) -> bytes | None:
        """The cluster secret's bytes (from --cluster-secret or its file); None: not set.

        Raises:
            ValueError: the file is unreadable, not a regular file, or open to
                group or others.
        """
        if self.cluster_secret is not None:
            return self.cluster_secret.encode()
        if self.cluster_secret_file is None:
            return None

        return load_secret(self.cluster_secret_file)

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    def node_name(self) -> str:
        """--node-id, or the host name with a random suffix (unique per start)."""
        if self.node_id:
            return self.node_id

        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "node"
        return f"{host}-{secrets.token_hex(3)}"


OPTIONAL_TEXT = (
    "redis_url",
    "node_id",
    "cluster_secret",
    "cluster_secret_file",
    "turn_secret",
    "turn_secret_file",
)
"""Settings whose default is None: an empty value (flag, environment) means unset."""

FILE_KEYS = frozenset(f.name for f in fields(Config)) - {"udp_host", "config_file"}
"""Keys a --config TOML file may set: the flag names with underscores."""


def _field_type(name: str) -> type:
    default = getattr(Config(), name)
    if name in OPTIONAL_TEXT:
        return str
    return type(default)


def load_toml(path: str) -> dict[str, Any]:
    """The settings in a TOML file, checked for unknown keys and wrong types.

    Raises:
        ValueError: one clear line (unreadable file, bad TOML, unknown key, wrong type).
    """

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"--config {path!r}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--config {path!r}: not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FILE_KEYS:
            raise ValueError(f"--config {path!r}: unknown key {key!r}")
        want = _field_type(key)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is int and isinstance(value, bool) or not isinstance(value, want):
            raise ValueError(
                f"--config {path!r}: {key} must be {want.__name__}, not {type(value).__name__}"
            )
        out[key] = value
    return out


def _check_file(flag: str, path: str) -> None:
    """A file the server reads and writes: it exists and is a readable, writable
    regular file, or it can be created in an existing, writable directory."""

    if not path or "\x00" in path:
        raise ValueError(f"{flag} must be a file path")
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {path!r} is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"{flag} {path!r} is not readable and writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"{flag} {path!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: directory {parent!r} is not writable")


def _check_data_key(path: str) -> None:
    """An existing key file must be one the store accepts (32 bytes, mode 0600)."""

    if not os.path.exists(path):
        return  # created on first run

    try:
        load_data_key(path)
    except StoreError as exc:
        raise ValueError(f"--data-key-file: {exc}") from None
