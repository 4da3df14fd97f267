"""storage.sniff: real files of each allowed type pass, look-alikes and the rest do not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from errors import ErrorCode, UnsupportedMediaType
from storage.sniff import DEFAULT_ALLOWED_TYPES, DOCX, PPTX, XLSX, DetectedType, Kind, sniff, sniff_file
from tests.storage import storage_samples as samples

ALLOWED: list[tuple[str, Callable[[], bytes], str, Kind]] = [
    ("jpeg", samples.jpeg, "image/jpeg", Kind.IMAGE),
    ("png", samples.png, "image/png", Kind.IMAGE),
    ("gif", samples.gif, "image/gif", Kind.IMAGE),
    ("webp", samples.webp, "image/webp", Kind.IMAGE),
    ("mp3 with ID3", samples.mp3, "audio/mpeg", Kind.AUDIO),
    ("mp3 frames only", lambda: samples.mp3(with_id3=False), "audio/mpeg", Kind.AUDIO),
    ("mp3 MPEG-2 frames", samples.mp3_mpeg2, "audio/mpeg", Kind.AUDIO),
    ("wav", samples.wav, "audio/wav", Kind.AUDIO),
    ("ogg opus", samples.ogg, "audio/ogg", Kind.AUDIO),
    ("ogg vorbis", lambda: samples.ogg(b"\x01vorbis" + b"\x00" * 22), "audio/ogg", Kind.AUDIO),
    ("m4a", lambda: samples.mp4(b"M4A ", (b"M4A ", b"isom")), "audio/mp4", Kind.AUDIO),
    ("mp4", samples.mp4, "video/mp4", Kind.VIDEO),
    ("mp4 avc1 brand", lambda: samples.mp4(b"avc1", (b"avc1",)), "video/mp4", Kind.VIDEO),
    ("webm", samples.webm, "video/webm", Kind.VIDEO),
    ("pdf", samples.pdf, "application/pdf", Kind.DOCUMENT),
    ("text", lambda: samples.TEXT, "text/plain", Kind.DOCUMENT),
    ("text with BOM", lambda: "\ufeffcsv,file\n1,2\n".encode(), "text/plain", Kind.DOCUMENT),
    ("doc", lambda: samples.ole2("WordDocument", "\x01CompObj"), "application/msword", Kind.DOCUMENT),
    ("xls", lambda: samples.ole2("Workbook"), "application/vnd.ms-excel", Kind.DOCUMENT),
    (
        "ppt",
        lambda: samples.ole2("PowerPoint Document", "Current User"),
        "application/vnd.ms-powerpoint",
        Kind.DOCUMENT,
    ),
    ("docx", lambda: samples.ooxml("word"), DOCX, Kind.DOCUMENT),
    ("xlsx", lambda: samples.ooxml("xl"), XLSX, Kind.DOCUMENT),
    ("pptx", lambda: samples.ooxml("ppt"), PPTX, Kind.DOCUMENT),
]


@pytest.mark.parametrize(("name", "make", "mime", "kind"), ALLOWED, ids=[case[0] for case in ALLOWED])
def test_allowed_types_are_detected_from_bytes_and_from_files(
    tmp_path: Path, name: str, make: Callable[[], bytes], mime: str, kind: Kind
) -> None:
    # Given a real file of an allowed type, saved under a misleading name
    data = make()
    path = tmp_path / "upload.bin"
    path.write_bytes(data)

    # Then its type comes from its content, whether passed as bytes or as a path
    assert sniff(data) == DetectedType(mime, kind)
    assert sniff(path) == DetectedType(mime, kind)
    assert mime in DEFAULT_ALLOWED_TYPES
    assert str(kind) == kind.value  # the contract's AttachmentKind spelling


REFUSED: list[tuple[str, Callable[[], bytes]]] = [
    ("html named .png", lambda: samples.HTML),
    ("html after blank lines", lambda: b"\n\n   <html><body>hi</body></html>"),
    ("html tag later in the first KiB", lambda: b"Hello!\n<script>alert(1)</script>\n"),
    ("svg", lambda: samples.SVG),
    ("svg without xml declaration", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
    ("xml", lambda: b"<?xml version='1.0'?><note>hi</note>"),
    ("elf executable", samples.elf),
    ("windows executable", lambda: b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 120),
    ("plain zip", samples.plain_zip),
    ("macro-enabled docm", lambda: samples.ooxml("word", macros=True)),
    ("ole2 that is no office file", lambda: samples.ole2("SomethingElse")),
    ("truncated ole2 header", lambda: samples.ole2("WordDocument")[:600]),
    ("quicktime", lambda: samples.mp4(b"qt  ", (b"qt  ",))),
    ("heic", lambda: samples.mp4(b"heic", (b"mif1", b"heic"))),
    ("matroska", lambda: samples.webm(b"matroska")),
    ("ogg theora video", lambda: samples.ogg(b"\x80theora" + b"\x00" * 30)),
    ("avi (riff)", lambda: b"RIFF\x24\x00\x00\x00AVI LIST" + b"\x00" * 40),
    ("lone 0xff bytes", lambda: b"\xff\xfb\x90\x64" + b"\x00" * 20),
    ("invalid utf-8", lambda: b"caf\xe9 au lait\n"),
    ("text with NUL", lambda: b"hello\x00world\n"),
    ("empty", lambda: b""),
    ("random binary", lambda: bytes(range(256)) * 4),
]


@pytest.mark.parametrize(("name", "make"), REFUSED, ids=[case[0] for case in REFUSED])
def test_refused_types_raise_unsupported_media_type(name: str, make: Callable[[], bytes]) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        sniff(make())
    assert caught.value.extensions["code"] == ErrorCode.UNSUPPORTED_MEDIA_TYPE


def test_the_allow_list_is_an_argument() -> None:
    # Given a deployment that only accepts images
    images_only = {"image/png", "image/jpeg"}

    # Then a PDF is refused, a PNG accepted, and QuickTime can be opted into
    with pytest.raises(UnsupportedMediaType, match="application/pdf"):
        sniff(samples.pdf(), images_only)
    assert sniff(samples.png(), images_only).mime == "image/png"
    movie = samples.mp4(b"qt  ", (b"qt  ",))
    assert sniff(movie, DEFAULT_ALLOWED_TYPES | {"video/quicktime"}) == DetectedType("video/quicktime", Kind.VIDEO)


def test_text_is_validated_past_the_first_chunk() -> None:
    # Given UTF-8 text whose only bad byte sits far beyond the sniffing head
    valid = b"line of text\n" * 20_000
    assert sniff(valid).mime == "text/plain"
    with pytest.raises(UnsupportedMediaType):
        sniff(valid + b"\x00")


@pytest.mark.asyncio
async def test_sniff_file_runs_off_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "report"
    path.write_bytes(samples.ooxml("xl"))
    assert await sniff_file(path) == DetectedType(XLSX, Kind.DOCUMENT)
