"""One Config for the whole server; command-line flags map onto it."""

from __future__ import annotations

from dataclasses import dataclass

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass
class Config:
    host: str = "0.0.0.0"
    """Address of the HTTP/WebSocket listener."""
    port: int = 8080
    """HTTP/WebSocket port."""
    udp_host: str = "0.0.0.0"
    """Address the media socket binds."""
    udp_port: int = 40000
    """The one UDP port every peer's media goes through."""
    announced_ip: str = "127.0.0.1"
    """Address put in SDP candidates: the one peers can reach the server at."""
    log_level: str = "info"

    def validate(self) -> None:
        """Raise ValueError with one clear line for a setting that cannot work."""
        for name in ("port", "udp_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"--{name.replace('_', '-')} must be 0..65535, not {value}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        import ipaddress

        try:
            ipaddress.IPv4Address(self.announced_ip)
        except ValueError:
            raise ValueError(
                f"--announced-ip must be an IPv4 address, not {self.announced_ip!r}"
            ) from None
