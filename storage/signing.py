"""Signed, expiring download URLs (`GET /files/<token>/<filename>`).

The URL itself is the credential (it must work in `<img src>` without an Authorization
header), so it carries attachment id, viewer id and expiry under an HMAC-SHA256. It
only proves "the server handed this viewer this link"; the endpoint still asks the
database whether the viewer may see the attachment *now*.

Expiry is aligned to windows so the same viewer gets the same URL for a whole window
and browsers can cache the file under it. A URL minted at the very end of a window
must not die a second later, so the window boundaries used are shifted by half a
window: expiry is the end of the current window, or the end of the next one when less
than half a window remains. Hence a URL is identical for `window_seconds` in a row and
always has between `window_seconds / 2` and `1.5 * window_seconds` left to live when
it is handed out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from errors import Forbidden
from storage.filenames import sanitize_filename

__all__ = [
    "FileGrant",
    "Secret",
    "SignatureExpired",
    "SignatureInvalid",
    "expiry_for",
    "file_path",
    "make_token",
    "read_token",
    "sign",
    "verify",
]

Secret = bytes | str
MIN_SECRET_BYTES = 16
_TOKEN_VERSION = 1
_PAYLOAD = struct.Struct(">BQQQ")  # version, attachment id, viewer id, expires (unix s)
_MAX_ID = 2**63 - 1
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class SignatureInvalid(Forbidden):
    """Malformed, tampered with, or signed with another secret."""

    default_message = "Invalid file link"


class SignatureExpired(SignatureInvalid):
    default_message = "File link expired"


@dataclass(frozen=True, slots=True)
class FileGrant:
    attachment_id: int
    viewer_id: int
    expires_at: int


def expiry_for(now: datetime | float, window_seconds: int) -> int:
    """The expiry (unix seconds) a URL minted at `now` gets; see the module docstring."""
    if window_seconds < 2:
        raise ValueError("window_seconds must be at least 2")
    return (math.floor((_timestamp(now) + window_seconds / 2) / window_seconds) + 1) * window_seconds


def sign(
    attachment_id: int, viewer_id: int, now: datetime | float, window_seconds: int, secret: Secret
) -> tuple[int, str]:
    """Return `(expires_at, signature)` for this viewer and attachment."""
    expires_at = expiry_for(now, window_seconds)
    return expires_at, _b64encode(_mac(attachment_id, viewer_id, expires_at, _key(secret)))


def verify(
    attachment_id: int,
    viewer_id: int,
    expires_at: int,
    signature: str,
    now: datetime | float,
    secret: Secret | Sequence[Secret],
) -> int:
    """Return `viewer_id` if the signature is ours and unexpired, else raise.

    `secret` may be a sequence (newest first) so a secret can be rotated without
    breaking links minted just before. The signature is checked before the expiry so
    an expired-but-forged link says "invalid", not "expired".
    """
    given = _b64decode(signature)
    secrets = [secret] if isinstance(secret, (bytes, str)) else list(secret)
    matched = False
    for candidate in secrets:
        key = _key(candidate)
        try:
            expected = _mac(attachment_id, viewer_id, expires_at, key)
        except ValueError:
            raise SignatureInvalid() from None
        # Constant-time compare; every candidate is tried so timing says nothing either.
        matched |= given is not None and hmac.compare_digest(expected, given)
    if not matched:
        raise SignatureInvalid()
    if _timestamp(now) >= expires_at:
        raise SignatureExpired()
    return viewer_id


def make_token(attachment_id: int, viewer_id: int, now: datetime | float, window_seconds: int, secret: Secret) -> str:
    """One opaque path segment `<payload>.<signature>`, both URL-safe base64."""
    expires_at, signature = sign(attachment_id, viewer_id, now, window_seconds, secret)
    payload = _PAYLOAD.pack(_TOKEN_VERSION, attachment_id, viewer_id, expires_at)
    return f"{_b64encode(payload)}.{signature}"


def read_token(token: str, now: datetime | float, secret: Secret | Sequence[Secret]) -> FileGrant:
    """Decode and verify a token from `make_token`; SignatureInvalid/SignatureExpired."""
    payload_text, dot, signature = token.partition(".")
    payload = _b64decode(payload_text) if dot else None
    if payload is None or len(payload) != _PAYLOAD.size:
        raise SignatureInvalid()
    version, attachment_id, viewer_id, expires_at = _PAYLOAD.unpack(payload)
    if version != _TOKEN_VERSION:
        raise SignatureInvalid()
    verify(attachment_id, viewer_id, expires_at, signature, now, secret)
    return FileGrant(attachment_id, viewer_id, expires_at)


def file_path(
    attachment_id: int,
    viewer_id: int,
    filename: str,
    *,
    now: datetime | float,
    window_seconds: int,
    secret: Secret,
    prefix: str = "/files",
) -> str:
    """`/files/<token>/<filename>`: prefix it with the public base URL when known.

    The trailing name is only for the browser's sake (saved-as name, readable links);
    the endpoint ignores it and takes the name from the database.
    """
    token = make_token(attachment_id, viewer_id, now, window_seconds, secret)
    return f"{prefix.rstrip('/')}/{token}/{quote(sanitize_filename(filename), safe='')}"


def _mac(attachment_id: int, viewer_id: int, expires_at: int, key: bytes) -> bytes:
    for value in (attachment_id, viewer_id, expires_at):
        if not isinstance(value, int) or not 0 <= value <= _MAX_ID:
            raise ValueError("ids and expiry must be integers in 0..2**63-1")
    message = f"parley-file-v{_TOKEN_VERSION}:{attachment_id}:{viewer_id}:{expires_at}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def _key(secret: Secret) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"The file-signing secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def _timestamp(now: datetime | float) -> float:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.timestamp()
    return float(now)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    # The stdlib decoder silently skips characters outside the alphabet; links must
    # not have more than one spelling, so anything but the URL-safe alphabet is refused.
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None
    # Unused low bits of the last character could otherwise vary.
    return data if _b64encode(data) == text else None
