"""Client-supplied file names made safe to store, display and send back.

A name from a multipart header is attacker-controlled: it may carry a path
(`../../etc/passwd`, `C:\\x\\evil.exe`), control characters (a CR/LF would split a
response header), bidi overrides that make `exe.txt` read as `txt.exe`, or be
megabytes long. Nothing here touches the filesystem: names are for display and
Content-Disposition only, storage keys are generated.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import quote

__all__ = ["DEFAULT_FILENAME", "content_disposition", "sanitize_filename"]

DEFAULT_FILENAME = "file"
MAX_EXTENSION_LENGTH = 16

# Cc: C0/C1 controls (NUL, CR, LF, ESC...); Cf: format characters (bidi overrides such
# as U+202E, zero-width joiners); Zl/Zp: line/paragraph separators; Cs/Co/Cn:
# surrogates, private-use and unassigned code points, which render unpredictably.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# Reserved on Windows; replaced so a download saves under the name shown.
_WINDOWS_RESERVED_CHARS = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICE_NAMES = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")
# RFC 5987 attr-char, minus nothing: what may stay unescaped in filename*.
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"


def sanitize_filename(name: str | None, max_len: int = 255, *, fallback: str = DEFAULT_FILENAME) -> str:
    """A display-safe file name of at most `max_len` characters, never empty.

    Keeps only the last path component (either separator), drops control and format
    characters, leading dots and spaces (no hidden or relative names), trailing dots
    and spaces (Windows strips them), NFC-normalises (so visually equal names compare
    equal), and shortens the stem rather than the extension so the type stays visible.
    """
    if max_len < 1:
        raise ValueError("max_len must be positive")
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(" " if ch.isspace() else ch for ch in text)  # tabs, CR/LF, NBSP...
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = _WINDOWS_RESERVED_CHARS.sub("_", text)
    text = " ".join(text.split())
    text = text.lstrip(". ").rstrip(". ")
    if _WINDOWS_DEVICE_NAMES.fullmatch(text):
        text = f"_{text}"
    if not text:
        text = fallback
    return _shorten(text, max_len)


def _shorten(name: str, max_len: int) -> str:
    if len(name) <= max_len:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and 0 < len(extension) <= MAX_EXTENSION_LENGTH and len(extension) + 2 <= max_len:
        return stem[: max_len - len(extension) - 1].rstrip(". ") + "." + extension
    return name[:max_len].rstrip(". ") or DEFAULT_FILENAME[:max_len]


def content_disposition(disposition: Literal["inline", "attachment"], filename: str) -> str:
    """A Content-Disposition value per RFC 6266: an ASCII `filename` for old clients
    and, when the name is not plain ASCII, `filename*=UTF-8''...` (RFC 5987) that
    current browsers prefer.

    The name is sanitised again here so no caller can smuggle a CR/LF or quote into
    the header.
    """
    name = sanitize_filename(filename)
    fallback = _ascii_fallback(name)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe=_ATTR_CHAR_SAFE)}"
    return value


def _ascii_fallback(name: str) -> str:
    # NFKD splits accents off letters (é -> e + combining mark), which then drop out.
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r'[^\x20-\x7e]|["\\%]', "_", ascii_name).strip()
    stem = ascii_name.rpartition(".")[0] if "." in ascii_name else ascii_name
    if not stem.strip("_. "):
        extension = ascii_name.rpartition(".")[2] if "." in ascii_name else ""
        return f"{DEFAULT_FILENAME}.{extension}" if extension.strip("_") else DEFAULT_FILENAME
    return ascii_name
