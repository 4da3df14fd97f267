"""storage.signing: stable within a window, useful lifetime, tamper and expiry refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from errors import ErrorCode
from storage.signing import (
    FileGrant,
    SignatureExpired,
    SignatureInvalid,
    expiry_for,
    file_path,
    make_token,
    read_token,
    sign,
    verify,
)

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"
WINDOW = 600
T0 = 1_700_000_100  # an arbitrary moment; window_start() finds its window


def window_start(t: float) -> int:
    return int(t // WINDOW * WINDOW)


def test_same_url_throughout_a_window() -> None:
    # Given several requests for the same file by the same viewer within one window
    start = window_start(T0) + WINDOW // 2  # the stable span starts half way in
    tokens = {make_token(7, 42, start + offset, WINDOW, SECRET) for offset in (0, 1, 120, 299, 599)}

    # Then they all get the same URL (browsers can cache it)
    assert len(tokens) == 1
    # And the next span gets a new one
    assert make_token(7, 42, start + WINDOW, WINDOW, SECRET) not in tokens


def test_expiry_leaves_at_least_half_a_window() -> None:
    base = window_start(T0)
    # Early in a window: the end of this window
    assert expiry_for(base + 10, WINDOW) == base + WINDOW
    # Just before the end: the end of the next window, not a link that dies in a second
    assert expiry_for(base + WINDOW - 1, WINDOW) == base + 2 * WINDOW
    for offset in range(0, WINDOW, 7):
        remaining = expiry_for(base + offset, WINDOW) - (base + offset)
        assert WINDOW / 2 <= remaining <= 1.5 * WINDOW


def test_datetime_now_is_accepted() -> None:
    now = datetime.fromtimestamp(T0, UTC)
    assert sign(1, 2, now, WINDOW, SECRET) == sign(1, 2, T0, WINDOW, SECRET)
    with pytest.raises(ValueError):
        sign(1, 2, now.replace(tzinfo=None), WINDOW, SECRET)


def test_verify_returns_the_viewer() -> None:
    expires, signature = sign(7, 42, T0, WINDOW, SECRET)
    assert verify(7, 42, expires, signature, T0, SECRET) == 42
    assert read_token(make_token(7, 42, T0, WINDOW, SECRET), T0, SECRET) == FileGrant(7, 42, expires)


@pytest.mark.parametrize(
    "change",
    [
        {"attachment_id": 8},
        {"viewer_id": 43},
        {"expires_at": +WINDOW},
        {"signature": "flip"},
        {"signature": ""},
        {"signature": "not base64!"},
        {"secret": OTHER_SECRET},
    ],
)
def test_tampering_is_refused(change: dict[str, object]) -> None:
    expires, signature = sign(7, 42, T0, WINDOW, SECRET)
    args: dict[str, object] = {
        "attachment_id": 7,
        "viewer_id": 42,
        "expires_at": expires,
        "signature": signature,
        "now": T0,
        "secret": SECRET,
    }
    for name, value in change.items():
        if name == "expires_at":
            args[name] = expires + WINDOW
        elif value == "flip":
            args[name] = ("A" if signature[0] != "A" else "B") + signature[1:]
        else:
            args[name] = value
    with pytest.raises(SignatureInvalid) as caught:
        verify(**args)  # type: ignore[arg-type]
    assert not isinstance(caught.value, SignatureExpired)
    assert caught.value.extensions["code"] == ErrorCode.FORBIDDEN


def test_expired_links_are_refused() -> None:
    expires, signature = sign(7, 42, T0, WINDOW, SECRET)
    assert verify(7, 42, expires, signature, expires - 1, SECRET) == 42
    with pytest.raises(SignatureExpired):
        verify(7, 42, expires, signature, expires, SECRET)
    with pytest.raises(SignatureExpired):
        read_token(make_token(7, 42, T0, WINDOW, SECRET), T0 + timedelta(hours=1).total_seconds(), SECRET)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(".", ""),
        lambda t: t[:-1],
        lambda t: "A" + t,
        lambda t: t.split(".")[0][:-2] + "." + t.split(".")[1],
        lambda t: t + "=",
        lambda t: "",
        lambda t: "..",
    ],
)
def test_malformed_tokens_are_refused(mangle: object) -> None:
    token = make_token(7, 42, T0, WINDOW, SECRET)
    with pytest.raises(SignatureInvalid):
        read_token(mangle(token), T0, SECRET)  # type: ignore[operator]


def test_secrets_can_be_rotated() -> None:
    token = make_token(7, 42, T0, WINDOW, OTHER_SECRET)
    assert read_token(token, T0, [SECRET, OTHER_SECRET]).viewer_id == 42
    with pytest.raises(SignatureInvalid):
        read_token(token, T0, [SECRET])


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        sign(1, 2, T0, WINDOW, b"short")


def test_file_path_is_opaque_and_ends_with_the_sanitised_name() -> None:
    path = file_path(7, 42, "../my report.pdf", now=T0, window_seconds=WINDOW, secret=SECRET)
    prefix, token, name = path.rsplit("/", 2)
    assert prefix == "/files"
    assert name == "my%20report.pdf"
    assert read_token(token, T0, SECRET) == FileGrant(7, 42, expiry_for(T0, WINDOW))
