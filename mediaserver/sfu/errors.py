"""The SFU's errors: one class per kind, each with a code that tells it apart,
also when it crosses the bus from another node (mediaserver.node.media)."""

from __future__ import annotations


class SfuError(ValueError):
    """A request the SFU cannot carry out (unknown session, bad offer)."""

    code = "sfu_error"
    """Tells the kinds apart, also across nodes (mediaserver.node.media)."""


class ServerFull(SfuError):
    """No room for another media session."""

    code = "server_full"


class NoVideo(SfuError):
    """The session sends no video (so there is none to process)."""

    code = "no_video"


class EffectsBusy(SfuError):
    """As many effect streams (or face covers) run as the configuration allows."""

    code = "effects_busy"


class EffectUnavailable(SfuError):
    """The effect cannot run here: not installed, unknown, or its model cannot load."""

    code = "effect_unavailable"


class RestartRejected(SfuError):
    """A second offer on a session that is not a pure ICE restart: it keeps the old
    ICE credentials, or changes the DTLS fingerprint or the m-sections."""

    code = "restart_rejected"


class DtlsError(ValueError):
    """A DtlsEndpoint or DtlsCertificate was given an invalid argument or misused
    (internal to the SFU: create_session turns it into SfuError, so it has no code)."""


SFU_ERRORS: dict[str, type[SfuError]] = {
    cls.code: cls
    for cls in (SfuError, ServerFull, NoVideo, EffectsBusy, EffectUnavailable, RestartRejected)
}
