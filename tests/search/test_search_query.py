"""The search grammar, its two translations and the snippet builder (no database)."""
from __future__ import annotations

import random
import re

import pytest

from resolvers.search_query import Term, parse, snippet, text_prefix, to_fts5, to_tsquery, tokenize


@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ("hello", [Term(("hello",))]),
        ("Hello WORLD", [Term(("hello",)), Term(("world",))]),
        ("wor*", [Term(("wor",), prefix=True)]),
        ('"quick brown" fox', [Term(("quick", "brown")), Term(("fox",))]),
        ('"unterminated phrase', [Term(("unterminated", "phrase"))]),
        ("foo-bar", [Term(("foo", "bar"))]),
        ("foo-ba*", [Term(("foo", "ba"), prefix=True)]),
        ("don't", [Term(("don", "t"))]),
        ("Café ÜBER", [Term(("café",)), Term(("über",))]),
        ("a\u0301b", [Term(("a\u0301b",))]),  # combining marks stay in the token
        ("fox fox FOX", [Term(("fox",))]),
        ("AND OR NOT", [Term(("and",)), Term(("or",)), Term(("not",))]),  # no operators: plain words
        ("NEAR(a b)", [Term(("near", "a")), Term(("b",))]),
        ("  ", []),
        ('*** !! "" " ( ) :* <->', []),
        ("😀 🎉", []),
    ],
)
def test_parse(query, terms):
    assert parse(query) == terms


def test_translations():
    terms = parse('"quick brown" fox* café')
    assert to_tsquery(terms) == "('quick' <-> 'brown') & 'fox':* & 'café'"
    assert to_fts5(terms) == '"quick" + "brown" AND "fox"* AND "café"'
    assert to_tsquery([]) == "" and to_fts5([]) == ""


def test_text_prefix():
    assert text_prefix('  "Rock   Climb*  ') == "rock climb"
    assert text_prefix('"*"') == ""


ALPHABET = [
    *"abcXYZ019 \t\"'*-+()[]{}:^!&|<>~\\/.,;%_@#$=?`", "AND", "OR", "NOT", "NEAR", "<->", ":*", "NEAR/2", "\u0301",
    "😀", "ß", "İ", "日本", "\u0000", "\ufffd", "\U000e0001", "\u200b", "ꟊ", "\U0001f3fb", "ǅ", "\u2028", "'';--",
]
# What may reach an engine: quoted operands made of token characters, and our own syntax.
SAFE_TSQUERY = re.compile(r"^(?:[ &()<\->]|:\*|'[^'\\\s\"*:&|!()<>]+')*$")
SAFE_FTS5 = re.compile(r'^(?:[ +*]|AND|"[^"\s*:()^+\-]+")*$')


def test_fuzzed_translations_only_ever_contain_quoted_tokens():
    rng = random.Random(20240601)
    for _ in range(5000):
        query = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24)))
        terms = parse(query)
        assert SAFE_TSQUERY.match(to_tsquery(terms)), (query, to_tsquery(terms))
        assert SAFE_FTS5.match(to_fts5(terms)), (query, to_fts5(terms))
        for term in terms:
            assert all(tokenize(token) == [token] for token in term.tokens)


def test_snippet_marks_words_prefixes_and_phrases():
    body = "The quick brown fox jumps over the lazy dog; quick-witted foxes too."
    assert snippet(body, parse("quick")) == (
        "The [[quick]] brown fox jumps over the lazy dog; [[quick]]-witted foxes too."
    )
    assert snippet(body, parse("fox*")) == (
        "The quick brown [[fox]] jumps over the lazy dog; quick-witted [[foxes]] too."
    )
    assert snippet(body, parse('"quick brown"')) == (
        "The [[quick]] [[brown]] fox jumps over the lazy dog; quick-witted foxes too."
    )
    assert snippet("Meet at the CAFÉ", parse("café")) == "Meet at the [[CAFÉ]]"
    assert snippet("don't stop", parse("don't")) == "[[don]]'[[t]] stop"


def test_snippet_windows_long_bodies_around_the_first_match():
    words = [f"w{i}" for i in range(100)]
    words[60] = "needle"
    text = snippet(" ".join(words), parse("needle"))
    assert text.startswith("…w52 ") and text.endswith(" w75…")
    assert "[[needle]]" in text
    assert len(text.split()) == 24  # a window of 24 tokens
    assert snippet("", parse("x")) == ""
    assert snippet("no match here", parse("zzz")) == "no match here"
