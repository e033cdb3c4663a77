# The C interface of ext/_srtp.pyx, cimported by ext/_router.pyx
# (`from mediaserver._srtp cimport ...`). Every function here runs without the
# GIL and creates no Python object: they are the per-packet SRTP transforms.
#
# A context holds the session keys derived from ONE master key/salt (one
# direction of a DTLS-SRTP association) and the per-SSRC state (rollover counter,
# replay window) of the streams it has seen. Use one context to protect what we
# send, another to unprotect what a peer sends.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

# DTLS-SRTP protection profiles, by their IANA ids (RFC 5764 4.1.2, RFC 7714 14.2)
cdef enum:
    PROFILE_AES128_CM_SHA1_80 = 0x0001
    PROFILE_AES128_CM_SHA1_32 = 0x0002
    PROFILE_AEAD_AES_128_GCM = 0x0007
    PROFILE_AEAD_AES_256_GCM = 0x0008

# Status codes: >= 0 is a length, < 0 one of these
cdef enum:
    SRTP_ERR_MALFORMED = -1   # too short, wrong version, bad lengths
    SRTP_ERR_AUTH = -2        # authentication tag mismatch (forged, wrong key)
    SRTP_ERR_REPLAY = -3      # already seen, or older than the replay window
    SRTP_ERR_NO_SPACE = -4    # capacity too small for the trailer
    SRTP_ERR_CRYPTO = -5      # OpenSSL failed
    SRTP_ERR_STREAMS = -6     # too many SSRCs in one context

# Added with the implementation (the codes above are unchanged):
cdef enum:
    SRTP_ERR_KEY_LIMIT = -7   # the key's packet index space is used up: rekey (never in practice)
    SRTP_ERR_INDEX_USED = -8  # protect: this SSRC's index was used already, or is older
                              # than the window of the last 128 sent: refused, never reused

# Per-SSRC state slots in one context (linear search; a slot is taken only by a
# packet that authenticated, or by the first packet we protect for an SSRC).
cdef enum:
    SRTP_MAX_STREAMS = 16

cdef struct SrtpContext  # layout private to _srtp.pyx

# NULL when the profile is unknown, key/salt lengths do not fit it, or on OOM.
# key_len: 16 (AES-128 profiles) or 32 (AEAD_AES_256_GCM); salt_len: 14 (CM) or 12 (GCM)
cdef SrtpContext* srtp_context_new(int profile, const uint8_t* key, int key_len,
                                   const uint8_t* salt, int salt_len) noexcept nogil
cdef void srtp_context_free(SrtpContext* ctx) noexcept nogil

# In place. protect: buf holds a plaintext RTP (RTCP) packet of `length` bytes in
# a buffer of `capacity` bytes; returns the protected length (tag, and for SRTCP
# the E-flag+index, appended) or < 0. unprotect: returns the plaintext length or < 0;
# on error the buffer content is unspecified.
cdef int srtp_protect(SrtpContext* ctx, uint8_t* buf, int length, int capacity) noexcept nogil
cdef int srtp_unprotect(SrtpContext* ctx, uint8_t* buf, int length) noexcept nogil
cdef int srtcp_protect(SrtpContext* ctx, uint8_t* buf, int length, int capacity) noexcept nogil
cdef int srtcp_unprotect(SrtpContext* ctx, uint8_t* buf, int length) noexcept nogil

# Most bytes protect adds for the profile (SRTP and SRTCP), or -1 if unknown.
cdef int srtp_overhead(int profile) noexcept nogil

# Notes on the transforms (added with the implementation):
# - protect never uses one (SSRC, packet index) twice: with GCM a second packet
#   under the same nonce gives away the keystream and the GHASH key. It keeps the
#   highest index sent per SSRC (for the rollover counter) and a window of the
#   128 below it, and refuses (SRTP_ERR_INDEX_USED) an index it sent or one older
#   than the window. A NACK is answered by resending the bytes already protected
#   (the router's packet cache), not by protecting again.
# - SRTCP indexes come from one counter per context (never repeats; at 2^31 it is
#   SRTP_ERR_KEY_LIMIT).
# - unprotect accepts an SRTCP packet whose E flag is clear (authenticated, not
#   encrypted: RFC 3711 3.4, RFC 7714 9.2); srtcp_protect always encrypts.
# - Packets over 1 MiB are SRTP_ERR_MALFORMED (AES-CM's per-packet keystream limit).
# - A context is used from one thread at a time (no locking inside).
# - Importing mediaserver._srtp resolves OpenSSL's provider implementations of
#   AES-128-GCM, AES-256-GCM and AES-128-CTR (those EVP_CIPHER_fetch picks) and
#   raises ImportError if the OpenSSL configuration offers none; the per-packet
#   functions then call them without the EVP layer.
