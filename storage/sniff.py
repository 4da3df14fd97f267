"""What an uploaded file really is, decided from its bytes against an allow-list.

The client's file name and declared type are never trusted: the type served later
(with `nosniff`) is the one found here. puremagic (pure Python, actively maintained,
no libmagic to install or to expose to hostile input) names the candidates; each
candidate is then confirmed by a small structural check, because a magic number alone
cannot tell a .docx from any zip, a Word file from an MSI installer (both OLE2), WebP
from AVI (both RIFF), or MP4 from QuickTime/HEIC (all ISO-BMFF). A few signatures
puremagic lacks (MP4 brands such as `avc1`/`iso5`, MPEG-2 audio frames) are added.

Office 97-2003 (OLE2) files are told apart by their streams (olefile):
`WordDocument` -> Word, `Workbook`/`Book` -> Excel, `PowerPoint Document` ->
PowerPoint. Any other OLE2 file (MSI installers, Outlook .msg, password-protected
OOXML, Visio...) is refused rather than passed off as `application/msword`.
OOXML files containing VBA macros are refused too.

Plain text is accepted only if it is valid UTF-8 throughout with no NULs or other
control characters (tab, newlines, form feed and ESC excepted) and does not look like
markup: HTML and SVG/XML must never be relabelled text/plain.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import re
import struct
import zipfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import olefile
import puremagic

from errors import UnsupportedMediaType

__all__ = ["DEFAULT_ALLOWED_TYPES", "DetectedType", "Kind", "kind_for", "sniff", "sniff_file"]


class Kind(StrEnum):
    """The contract's AttachmentKind."""

    IMAGE = "IMAGE"
    DOCUMENT = "DOCUMENT"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    OTHER = "OTHER"


@dataclass(frozen=True, slots=True)
class DetectedType:
    mime: str
    kind: Kind


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

DEFAULT_ALLOWED_TYPES: frozenset[str] = frozenset(
    {
        "image/jpeg", "image/png", "image/gif", "image/webp",
        "audio/mpeg", "audio/wav", "audio/ogg", "audio/mp4",
        "video/mp4", "video/webm",
        "application/pdf", "text/plain",
        "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
        DOCX, XLSX, PPTX,
    }
)  # fmt: skip

_DOCUMENT_TYPES = frozenset(
    {"application/pdf", "text/plain", "application/msword", "application/vnd.ms-excel",
     "application/vnd.ms-powerpoint", DOCX, XLSX, PPTX}
)  # fmt: skip


def kind_for(mime: str) -> Kind:
    major = mime.partition("/")[0]
    if major in ("image", "audio", "video"):
        return Kind(major.upper())
    return Kind.DOCUMENT if mime in _DOCUMENT_TYPES else Kind.OTHER


def sniff(source: Path | str | bytes, allowed: Collection[str] = DEFAULT_ALLOWED_TYPES) -> DetectedType:
    """Detect the type of a file (path) or of bytes; UnsupportedMediaType unless it is
    one we can confirm and `allowed` lists.

    Blocking (reads the file; a text check reads all of it): from async code use
    `sniff_file`.
    """
    with _open(source) as src:
        if src.size == 0:
            raise UnsupportedMediaType("The file is empty")
        mime = _detect(src)
    if mime is None:
        raise UnsupportedMediaType("This type of file is not supported")
    if mime not in allowed:
        raise UnsupportedMediaType(f"Files of type {mime} are not allowed")
    return DetectedType(mime, kind_for(mime))


async def sniff_file(path: Path, allowed: Collection[str] = DEFAULT_ALLOWED_TYPES) -> DetectedType:
    return await asyncio.to_thread(sniff, path, allowed)


# ---------------------------------------------------------------- reading

HEAD_BYTES = 64 * 1024


class _Source:
    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size
        self.head = self.read_at(0, HEAD_BYTES)

    def read_at(self, offset: int, length: int) -> bytes:
        self.handle.seek(offset)
        return self.handle.read(length)

    def rewound(self) -> BinaryIO:
        self.handle.seek(0)
        return self.handle


@contextmanager
def _open(source: Path | str | bytes) -> Iterator[_Source]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        yield _Source(io.BytesIO(data), len(data))
        return
    with open(source, "rb") as handle:
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        yield _Source(handle, size)


# ---------------------------------------------------------------- detection

Verifier = Callable[[_Source], str | None]


def _detect(src: _Source) -> str | None:
    for verifier in _candidates(src.head):
        try:
            mime = verifier(src)
        except Exception:  # hostile input: a container that fails to parse is not that type
            mime = None
        if mime is not None:
            return mime
    return _text(src)


def _candidates(head: bytes) -> list[Verifier]:
    """Verifiers to try, puremagic's guesses first, then our extra signatures."""
    found: list[Verifier] = []
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        matches = []
    for match in matches:
        verifier = _BY_EXTENSION.get(match.extension.lower())
        if verifier is not None and verifier not in found:
            found.append(verifier)
    for offset, magic, verifier in _EXTRA_SIGNATURES:
        if head[offset : offset + len(magic)] == magic and verifier not in found:
            found.append(verifier)
    return found


def _jpeg(src: _Source) -> str | None:
    return "image/jpeg" if src.head[:3] == b"\xff\xd8\xff" else None


def _png(src: _Source) -> str | None:
    return "image/png" if src.head[:8] == b"\x89PNG\r\n\x1a\n" and src.head[12:16] == b"IHDR" else None


def _gif(src: _Source) -> str | None:
    return "image/gif" if src.head[:6] in (b"GIF87a", b"GIF89a") else None


def _pdf(src: _Source) -> str | None:
    # At offset 0 only: readers tolerate leading junk, which is how HTML/PDF polyglots work.
    return "application/pdf" if re.match(rb"%PDF-\d\.\d", src.head) else None


def _riff(src: _Source) -> str | None:
    head = src.head
    if head[:4] != b"RIFF":
        return None
    if head[8:12] == b"WEBP" and head[12:16] in (b"VP8 ", b"VP8L", b"VP8X"):
        return "image/webp"
    if head[8:12] == b"WAVE" and b"fmt " in head[12:4096]:
        return "audio/wav"
    return None


# Bitrates (kbit/s) of MPEG audio Layer III by bitrate index; 0 (free) and 15 are invalid.
_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int | None:
    """Length of the MPEG audio Layer III frame starting with `header`, or None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer != 1 or not 0 < bitrate_index < 15 or rate_index == 3:
        return None
    rate = _SAMPLE_RATES[version][rate_index]
    if version == 3:
        return 144 * _MPEG1_L3_KBPS[bitrate_index] * 1000 // rate + padding
    return 72 * _MPEG2_L3_KBPS[bitrate_index] * 1000 // rate + padding


def _mpeg_audio(src: _Source) -> str | None:
    head = src.head
    if head[:3] == b"ID3":
        if len(head) < 10 or any(b & 0x80 for b in head[6:10]):
            return None
        tag_size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        audio_start = 10 + tag_size + (10 if head[5] & 0x10 else 0)
        return "audio/mpeg" if _mp3_frame_length(src.read_at(audio_start, 4)) else None
    # No tag: demand two consecutive frame headers, a lone 0xFFEx is too common by chance.
    length = _mp3_frame_length(head[:4])
    if length is None:
        return None
    return "audio/mpeg" if _mp3_frame_length(src.read_at(length, 4)) else None


def _ogg(src: _Source) -> str | None:
    head = src.head
    if head[:5] != b"OggS\x00" or not head[5] & 0x02:  # version 0, beginning of stream
        return None
    packet = head[27 + head[26] :][:8]
    if packet.startswith((b"OpusHead", b"\x01vorbis", b"\x7fFLAC", b"Speex   ")):
        return "audio/ogg"
    if packet.startswith(b"\x80theora"):
        return "video/ogg"
    return None


_MP4_BRANDS = frozenset({b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso8", b"iso9",
                         b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"MSNV",
                         b"mmp4", b"NDAS", b"XAVC"})  # fmt: skip
_ISOBMFF_MAJOR_TYPES = {
    b"M4A ": "audio/mp4", b"M4B ": "audio/mp4", b"qt  ": "video/quicktime",
    b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif",
    b"avif": "image/avif", b"avis": "image/avif", b"3gp4": "video/3gpp", b"3gp5": "video/3gpp",
    b"3gp6": "video/3gpp", b"3g2a": "video/3gpp2",
}  # fmt: skip


def _isobmff(src: _Source) -> str | None:
    head = src.head
    box_size = struct.unpack(">I", head[:4])[0]
    if head[4:8] != b"ftyp" or not 16 <= box_size <= 4096:
        return None
    major = head[8:12]
    if major in _ISOBMFF_MAJOR_TYPES:
        return _ISOBMFF_MAJOR_TYPES[major]
    compatible = {head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
    return "video/mp4" if major in _MP4_BRANDS or compatible & _MP4_BRANDS else None


def _ebml_vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """Decode an EBML variable-length integer at `pos`: (value, next position)."""
    first = data[pos]
    length = 9 - first.bit_length() if first else 0
    if not 1 <= length <= 8 or pos + length > len(data):
        raise ValueError("bad EBML integer")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _ebml(src: _Source) -> str | None:
    """WebM vs other Matroska, from the DocType element of the EBML header."""
    head = src.head
    if head[:4] != b"\x1a\x45\xdf\xa3":
        return None
    size, pos = _ebml_vint(head, 4, keep_marker=False)
    end = min(pos + size, len(head))
    while pos < end:
        element, pos = _ebml_vint(head, pos, keep_marker=True)
        length, pos = _ebml_vint(head, pos, keep_marker=False)
        if element == 0x4282:  # DocType
            doc_type = head[pos : pos + length].rstrip(b"\x00")
            return {b"webm": "video/webm", b"matroska": "video/x-matroska"}.get(doc_type)
        pos += length
    return None


_OOXML_PARTS = {"word/": DOCX, "xl/": XLSX, "ppt/": PPTX}
MAX_CONTENT_TYPES_BYTES = 256 * 1024


def _zip(src: _Source) -> str | None:
    """OOXML is a zip with `[Content_Types].xml` and exactly one of word/ xl/ ppt/."""
    if src.head[:4] != b"PK\x03\x04":
        return None
    with zipfile.ZipFile(src.rewound()) as archive:
        names = archive.namelist()
        if "[Content_Types].xml" not in names:
            return None
        families = {mime for prefix, mime in _OOXML_PARTS.items() if any(n.startswith(prefix) for n in names)}
        if len(families) != 1:
            return None
        with archive.open("[Content_Types].xml") as part:
            # Bounded read: a zip bomb inflates only as far as we ask.
            content_types = part.read(MAX_CONTENT_TYPES_BYTES).lower()
    if b"macroenabled" in content_types or any(n.lower().endswith("vbaproject.bin") for n in names):
        return "application/vnd.ms-office.macroenabled"  # never in an allow-list we ship
    return families.pop()


_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE2_STREAMS = (
    ("worddocument", "application/msword"),
    ("workbook", "application/vnd.ms-excel"),
    ("book", "application/vnd.ms-excel"),
    ("powerpoint document", "application/vnd.ms-powerpoint"),
)


def _ole2(src: _Source) -> str | None:
    if src.head[:8] != _OLE2_MAGIC:
        return None
    ole = olefile.OleFileIO(src.rewound())
    try:
        top_level = {entry[0].lower() for entry in ole.listdir(streams=True, storages=False) if len(entry) == 1}
    finally:
        ole.close()
    return next((mime for stream, mime in _OLE2_STREAMS if stream in top_level), None)


_BY_EXTENSION: dict[str, Verifier] = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), _jpeg),
    ".png": _png,
    ".gif": _gif,
    ".pdf": _pdf,
    **dict.fromkeys((".webp", ".wav"), _riff),
    **dict.fromkeys((".mp3", ".mpga"), _mpeg_audio),
    **dict.fromkeys((".ogg", ".oga", ".ogv", ".opus"), _ogg),
    **dict.fromkeys((".mp4", ".m4a", ".m4v", ".mov", ".heif", ".heic", ".avif", ".3gp"), _isobmff),
    **dict.fromkeys((".webm", ".mkv"), _ebml),
    **dict.fromkeys((".zip", ".docx", ".xlsx", ".pptx"), _zip),
    **dict.fromkeys((".doc", ".xls", ".ppt"), _ole2),
}
# Containers we parse anyway, so a signature puremagic lacks or ranks low cannot make
# us refuse a legitimate file.
_EXTRA_SIGNATURES: tuple[tuple[int, bytes, Verifier], ...] = (
    (4, b"ftyp", _isobmff),
    (0, b"ID3", _mpeg_audio),
    (0, b"\xff", _mpeg_audio),
    (0, b"PK\x03\x04", _zip),
    (0, _OLE2_MAGIC, _ole2),
    (0, b"RIFF", _riff),
    (0, b"OggS", _ogg),
    (0, b"\x1a\x45\xdf\xa3", _ebml),
)

# ---------------------------------------------------------------- plain text

_FORBIDDEN_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")  # keeps \t \n \v \f \r ESC
# What browsers (and old sniffers scanning the first bytes) treat as markup.
_MARKUP_START = re.compile(r"<[A-Za-z!?/]")
_MARKUP_TAGS = re.compile(
    r"<\s*(?:!doctype|\?xml|html|head|body|script|iframe|svg|object|embed|meta|frameset)\b", re.IGNORECASE
)
MARKUP_SCAN_CHARS = 1024
TEXT_CHUNK_BYTES = 64 * 1024


def _text(src: _Source) -> str | None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    prefix = ""
    handle = src.rewound()
    try:
        while chunk := handle.read(TEXT_CHUNK_BYTES):
            text = decoder.decode(chunk)
            if _FORBIDDEN_CONTROLS.search(text):
                return None
            if len(prefix) < MARKUP_SCAN_CHARS:
                prefix += text[: MARKUP_SCAN_CHARS - len(prefix)]
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    start = prefix.lstrip("\ufeff \t\r\n\f\v")
    if _MARKUP_START.match(start) or _MARKUP_TAGS.search(prefix):
        return None
    return "text/plain"
