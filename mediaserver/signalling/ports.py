"""What the hub needs from the rest of the server, as protocols: the accounts
store and the media service. The real ones are `mediaserver.store.Store` and
`mediaserver.node.media.MediaService`; tests pass small fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mediaserver.node.bus import Message as BusMessage
from mediaserver.store import Profile


class StorePort(Protocol):
    """The store methods the hub calls (blocking: the hub runs them in a thread).

    Errors are `mediaserver.store.StoreError` and its subclasses.
    """

    def authenticate(self, token: str) -> Profile:
        """The profile a bearer token signs in (StoreError: unknown or expired)."""
        ...

    def age(self, profile: Profile) -> int:
        """The profile's age in whole years."""
        ...

    def store_chat_message(
        self, user_id: str, conversation_id: str, sender: str, text: str
    ) -> bool:
        """Keep a chat line for a user who opted in; False when it did not."""
        ...

    def record_report(self, reporter_user_id: str, reason: str) -> None:
        """The reporter's own record of a report it made."""
        ...

    def file_chat_report(
        self, reason: str, *, reported_address: str, reported_user_id: str | None,
        reporter_address: str, reporter_user_id: str | None,
        chat: list[dict[str, str]] | None = None,
        frame: bytes | None = None, frame_missing: str | None = None,
    ) -> str:
        """Keep a random-chat report for the moderators (with the reporter's chosen
        evidence: chat lines, a JPEG still or why it is missing); returns its id."""
        ...

    def reporter_dismissals(self, reporter_address: str) -> int:
        """How many reports from this keyed address hash moderators dismissed."""
        ...

    def ban_until(self, user_id: str | None, address: str) -> float | None:
        """When a moderator's ban on the account or keyed address hash ends
        (math.inf: for good); None when none holds."""
        ...

    def share_profile_card(self, user_id: str) -> dict[str, Any]:
        """Record the consent and return the user's public card (StoreError: gone)."""
        ...

    def send_direct(self, user_id: str, conversation_id: str, text: str) -> dict[str, Any]:
        """A message to a connection, kept where the sides keep history:
        {message_id, at, peer} (NotFound, NotConnected, Invalid)."""
        ...

    def call_peer(self, user_id: str, conversation_id: str) -> tuple[str, str]:
        """(the peer's id, the caller's handle) for a call (NotFound, NotConnected)."""
        ...

    def record_missed_call(self, callee_id: str, conversation_id: str, caller_handle: str) -> None:
        """A ring nobody answered: an entry in the callee's conversation."""
        ...


class MediaPort(Protocol):
    """Media sessions on any node (mediaserver.node.media.MediaService).

    Errors are `mediaserver.sfu.server.SfuError` and its subclasses.
    """

    on_closed: Callable[[str, str, str], Awaitable[None]] | None
    """Set by the hub: (owner, session, reason) when a local visitor's session closed."""
    on_cover_failed: Callable[[str, str], Awaitable[None]] | None
    """Set by the hub: (owner, session) when a local visitor's face cover broke."""

    async def create_session(self, node: str, sdp: str, owner: str) -> tuple[str, str]: ...

    async def restart_ice(self, node: str, session: str, sdp: str) -> str:
        """The answer to an ICE restart offer on a session (RestartRejected)."""
        ...

    async def connect(self, node: str, publisher: str, subscriber: str) -> None: ...

    async def disconnect(self, node: str, publisher: str, subscriber: str) -> None: ...

    async def close_session(self, node: str, session: str) -> None: ...

    async def set_effect(
        self, node: str, session: str, name: str | None, *, cover: bool = False
    ) -> None: ...

    async def capture_still(self, node: str, session: str) -> bytes:
        """A JPEG of the session's next keyframe (a report's evidence)."""
        ...

    async def handle_still(self, msg: BusMessage) -> BusMessage:
        """Serve a still request from the bus (it waits for a keyframe)."""
        ...

    def handle(self, msg: BusMessage) -> BusMessage:
        """Serve a media request from the bus (another node's, or this one's)."""
        ...

    def close_owned_by(self, node: str) -> int:
        """Close the sessions of visitors of a dead node; how many there were."""
        ...
