"""Small real files of every type the sniffer knows, built byte by byte.

Each is a valid container/header for its format (checksums included where the format
has them), small enough to keep in memory, and made here so no binary fixture has to
be trusted or shipped.
"""

from __future__ import annotations

import io
import struct
import wave
import zipfile
import zlib


def png() -> bytes:
    """A 1x1 red RGB PNG (CRCs and zlib stream real: any decoder opens it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def jpeg() -> bytes:
    """An 8x8 mid-grey baseline JPEG: one block whose DC and AC are both coded with
    one-symbol Huffman tables, so the entropy-coded data is a single byte."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + b"\x01" * 64
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 8, 8, 1) + b"\x01\x11\x00"
    one_symbol = bytes([1] + [0] * 15) + b"\x00"
    dht_dc = b"\xff\xc4" + struct.pack(">H", 20) + b"\x00" + one_symbol
    dht_ac = b"\xff\xc4" + struct.pack(">H", 20) + b"\x10" + one_symbol
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00\x00\x3f\x00"
    scan = b"\x3f"  # DC diff 0 ('0'), end-of-block ('0'), padded with ones
    return b"\xff\xd8" + app0 + dqt + sof0 + dht_dc + dht_ac + sos + scan + b"\xff\xd9"


def gif() -> bytes:
    """The classic 1x1 transparent GIF89a."""
    return (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
        b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


def webp() -> bytes:
    """RIFF/WEBP with a VP8L (lossless) chunk header for a 1x1 image."""
    bits = 0 | (0 << 14) | (1 << 28)  # width-1, height-1, alpha used
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\x00\x00\x00"
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def wav() -> bytes:
    """10 ms of 8 kHz mono silence, written by the stdlib wave module."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 80)
    return buffer.getvalue()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def ogg(first_packet: bytes | None = None) -> bytes:
    """One Ogg page (beginning of stream) carrying an Opus identification header."""
    packet = first_packet or b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    page = bytearray(b"OggS\x00\x02" + struct.pack("<qII", 0, 0x50524C59, 0) + b"\x00\x00\x00\x00")
    page += bytes([1, len(packet)]) + packet
    struct.pack_into("<I", page, 22, _ogg_crc(bytes(page)))
    return bytes(page)


def mp3(with_id3: bool = True) -> bytes:
    """Three MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz), optionally ID3v2-tagged."""
    frame = b"\xff\xfb\x90\x64" + b"\x00" * (417 - 4)
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x00" if with_id3 else b""
    return tag + frame * 3


def mp3_mpeg2() -> bytes:
    """Two MPEG-2 Layer III frames (64 kbit/s, 22.05 kHz): a signature puremagic lacks."""
    frame_length = 72 * 64000 // 22050
    return (b"\xff\xf3\x80\x64" + b"\x00" * (frame_length - 4)) * 2


def mp4(major: bytes = b"isom", compatible: tuple[bytes, ...] = (b"isom", b"mp41")) -> bytes:
    """An ISO-BMFF `ftyp` box followed by an empty `mdat`."""
    ftyp_body = major + struct.pack(">I", 0x200) + b"".join(compatible)
    ftyp = struct.pack(">I", 8 + len(ftyp_body)) + b"ftyp" + ftyp_body
    return ftyp + struct.pack(">I", 8) + b"mdat"


def webm(doc_type: bytes = b"webm") -> bytes:
    """An EBML header (DocType webm) and the start of a Segment."""

    def element(element_id: bytes, data: bytes) -> bytes:
        return element_id + bytes([0x80 | len(data)]) + data

    header = b"".join(
        [
            element(b"\x42\x86", b"\x01"),  # EBMLVersion
            element(b"\x42\xf7", b"\x01"),  # EBMLReadVersion
            element(b"\x42\xf2", b"\x04"),  # EBMLMaxIDLength
            element(b"\x42\xf3", b"\x08"),  # EBMLMaxSizeLength
            element(b"\x42\x82", doc_type),  # DocType
            element(b"\x42\x87", b"\x04"),  # DocTypeVersion
            element(b"\x42\x85", b"\x02"),  # DocTypeReadVersion
        ]
    )
    return element(b"\x1a\x45\xdf\xa3", header) + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"


def pdf() -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/{part}" ContentType="{content_type}"/></Types>'
)
_OOXML_MAIN = {
    "word": ("word/document.xml", "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"),
    "xl": ("xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"),
    "ppt": (
        "ppt/presentation.xml",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    ),
}


def ooxml(family: str, *, macros: bool = False) -> bytes:
    """A minimal .docx / .xlsx / .pptx package (family: word, xl or ppt)."""
    part, content_type = _OOXML_MAIN[family]
    if macros:
        content_type = content_type.replace(".main+xml", ".macroEnabled.main+xml")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES.format(part=part, content_type=content_type))
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr(part, "<root/>")
        if macros:
            archive.writestr(f"{family}/vbaProject.bin", b"\x00" * 16)
    return buffer.getvalue()


def plain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return buffer.getvalue()


def ole2(*stream_names: str) -> bytes:
    """A compound file (CFB v3, 512-byte sectors) whose root holds the given streams,
    each 4096 bytes (so in regular sectors, no mini stream needed).

    Sector 0 is the FAT, sector 1 the directory, then each stream's 8 sectors.
    """
    end, free, fat_sect, nostream = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    assert len(stream_names) <= 3  # one directory sector: root + 3 entries
    header = bytearray(512)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 24, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 40, 0, 1, 1, 0, 4096, end, 0, end, 0)
    struct.pack_into("<109I", header, 76, 0, *([free] * 108))

    fat = [fat_sect, end]
    starts = []
    for _ in stream_names:
        first = len(fat)
        starts.append(first)
        fat += [first + i + 1 for i in range(7)] + [end]
    fat_sector = struct.pack(f"<{len(fat)}I", *fat) + struct.pack("<I", free) * (128 - len(fat))

    def entry(name: str, kind: int, child: int, right: int, start: int, size: int) -> bytes:
        encoded = (name + "\x00").encode("utf-16-le")
        record = bytearray(128)
        record[0 : len(encoded)] = encoded
        struct.pack_into("<HBBIII", record, 64, len(encoded), kind, 1, nostream, right, child)
        struct.pack_into("<IQ", record, 116, start, size)
        return bytes(record)

    directory = entry("Root Entry", 5, 1 if stream_names else nostream, nostream, end, 0)
    for index, (name, start) in enumerate(zip(stream_names, starts, strict=True)):
        right = index + 2 if index + 1 < len(stream_names) else nostream
        directory += entry(name, 2, nostream, right, start, 4096)
    empty = bytearray(128)
    struct.pack_into("<III", empty, 68, nostream, nostream, nostream)
    directory += bytes(empty) * (4 - 1 - len(stream_names))
    data = b"".join(bytes([i + 1]) * 4096 for i in range(len(stream_names)))
    return bytes(header) + fat_sector + directory + data


def elf() -> bytes:
    """The 64-byte header of an x86-64 Linux executable."""
    ident = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 0, 64, 0, 0)


HTML = b"<!DOCTYPE html>\n<html><body><script>alert(document.cookie)</script></body></html>\n"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n'
TEXT = "Meeting notes — naïve café ☕\n\tline two\r\n".encode()
