"""storage.filenames: client names made safe; Content-Disposition per RFC 6266/5987."""

from __future__ import annotations

import unicodedata

import pytest

from storage.filenames import content_disposition, sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.exe", "evil.exe"),
        ("C:\\Users\\me\\Desktop\\photo.jpg", "photo.jpg"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("in\r\nvoice\x00.pdf", "in voice.pdf"),
        ("\x1b[31mred\x7f.txt", "[31mred.txt"),
        ("pay\u202egpj.exe", "paygpj.exe"),  # right-to-left override dropped
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        (".bashrc", "bashrc"),
        ("...hidden.tar.gz", "hidden.tar.gz"),
        ("trailing dots. . .", "trailing dots"),
        ("  spaced\tout   name .md", "spaced out name .md"),
        ('what?<is>"this".txt', "what__is__this_.txt"),
        ("CON.txt", "_CON.txt"),
        ("..", "file"),
        ("", "file"),
        (None, "file"),
        ("\x00\x01\x02", "file"),
        ("../", "file"),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_names_are_nfc_normalised() -> None:
    decomposed = unicodedata.normalize("NFD", "café.txt")
    assert decomposed != "café.txt"
    assert sanitize_filename(decomposed) == "café.txt"


def test_long_names_are_bounded_keeping_the_extension() -> None:
    name = sanitize_filename("a" * 1000 + ".docx")
    assert len(name) == 255
    assert name == "a" * 250 + ".docx"

    assert sanitize_filename("b" * 300, max_len=20) == "b" * 20
    assert sanitize_filename("report.verylongextensionthatisnotone" + "x" * 300, max_len=30) == (
        "report.verylongextensionthatis"
    )
    assert sanitize_filename("日本語のファイル名" * 40 + ".pdf", max_len=100).endswith(".pdf")
    assert len(sanitize_filename("日本語のファイル名" * 40 + ".pdf", max_len=100)) == 100


def test_content_disposition_ascii_name() -> None:
    assert content_disposition("attachment", "report.pdf") == 'attachment; filename="report.pdf"'


def test_content_disposition_unicode_name_has_ascii_fallback_and_rfc5987_value() -> None:
    value = content_disposition("inline", "Résumé 2024 ☕.png")
    assert value == ("inline; filename=\"Resume 2024 .png\"; filename*=UTF-8''R%C3%A9sum%C3%A9%202024%20%E2%98%95.png")


def test_content_disposition_non_latin_name_falls_back_to_generic_ascii() -> None:
    value = content_disposition("attachment", "日本語.pdf")
    assert value.startswith("attachment; filename=\"file.pdf\"; filename*=UTF-8''%E6%97%A5")


def test_content_disposition_cannot_be_used_for_header_injection() -> None:
    value = content_disposition("attachment", 'a"; filename=evil.exe\r\nSet-Cookie: x=1')
    assert "\r" not in value and "\n" not in value
    assert value.count('"') == 2
    assert value.startswith('attachment; filename="a_; filename=evil.exe Set-Cookie_ x=1"')
