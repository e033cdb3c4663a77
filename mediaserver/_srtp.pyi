"""Type stub for mediaserver._srtp (ext/_srtp.pyx)."""

from typing import Final

# DTLS-SRTP protection profiles (RFC 5764 4.1.2, RFC 7714 14.2)
PROFILE_AES128_CM_SHA1_80: Final[int]
PROFILE_AES128_CM_SHA1_32: Final[int]
PROFILE_AEAD_AES_128_GCM: Final[int]
PROFILE_AEAD_AES_256_GCM: Final[int]

# status codes of the C functions (SrtpError.status)
SRTP_ERR_MALFORMED: Final[int]
SRTP_ERR_AUTH: Final[int]
SRTP_ERR_REPLAY: Final[int]
SRTP_ERR_NO_SPACE: Final[int]
SRTP_ERR_CRYPTO: Final[int]
SRTP_ERR_STREAMS: Final[int]
SRTP_ERR_KEY_LIMIT: Final[int]
SRTP_ERR_INDEX_USED: Final[int]  # protect: that index was used already (nonce never reused)
SRTP_MAX_STREAMS: Final[int]

class SrtpError(ValueError):
    status: int
    def __init__(self, message: str, status: int) -> None: ...

def status_message(status: int) -> str: ...
def profile_key_salt_lengths(profile: int) -> tuple[int, int]: ...

class Srtp:
    @property
    def profile(self) -> int: ...
    def __init__(self, profile: int, key: bytes, salt: bytes) -> None: ...
    def protect(self, packet: bytes) -> bytes: ...
    def unprotect(self, packet: bytes) -> bytes: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...
    def unprotect_rtcp(self, packet: bytes) -> bytes: ...
    # test hooks
    @staticmethod
    def _from_session_keys(
        profile: int,
        rtp_key: bytes,
        rtp_salt: bytes,
        rtcp_key: bytes | None = None,
        rtcp_salt: bytes | None = None,
        rtp_auth: bytes = b"",
        rtcp_auth: bytes | None = None,
    ) -> Srtp: ...
    def _set_rtcp_index(self, index: int) -> None: ...

# test and benchmark hooks
def _kdf(key: bytes, salt: bytes, label: int, length: int) -> bytes: ...
def _bench_protect_loop(profile: int, n: int, payload_len: int = 1100) -> float: ...
def _bench_unprotect_loop(profile: int, n: int, payload_len: int = 1100) -> float: ...
