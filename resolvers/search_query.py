"""Our one search grammar, its translation for each full-text engine, and the snippet.

Grammar (all terms must match; there are no operators):
    query  := term*
    term   := word | word* | "quoted phrase"
    word   := a run of characters other than whitespace and `"`

Each term is cut into tokens the way both engines cut text: a token is a run of
letters, digits or private-use characters (Unicode L*, N*, Co: what SQLite's unicode61
tokenizer keeps) and the combining marks that follow them, lower-cased; everything
else separates. A word that splits into
several tokens (`foo-bar`, `don't`) is a phrase, as both engines treat it in documents.
A trailing `*` makes the term's last token a prefix. A term with no token is dropped;
a query with no term at all matches nothing.

Translations never pass user text to an engine's parser: every token is made only of
letters and digits and is quoted, so `AND`, `NEAR`, `:*`, `!`, `(` and friends in the
input are inert, and no input can raise an engine syntax error:
- PostgreSQL `to_tsquery('simple', ...)`: `'tok'`, `'tok':*`, phrases joined with `<->`;
- SQLite FTS5 MATCH: `"tok"`, `"tok"*`, phrases joined with `+`.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PHRASE_OR_WORD = re.compile(r'"([^"]*)"?|([^\s"]+)')


@dataclass(frozen=True)
class Term:
    tokens: tuple[str, ...]
    prefix: bool = False  # the last token is a prefix


def _is_token_char(char: str, in_token: bool) -> bool:
    category = unicodedata.category(char)
    # Combining marks (Mn) continue a token in both engines (remove_diacritics 0).
    return category[0] in "LN" or category == "Co" or (in_token and category == "Mn")


def tokens_with_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, lower-cased token) for each token of `text`."""
    found: list[tuple[int, int, str]] = []
    start = None
    for i, char in enumerate(text):
        if _is_token_char(char, start is not None):
            if start is None:
                start = i
        elif start is not None:
            found.append((start, i, text[start:i].lower()))
            start = None
    if start is not None:
        found.append((start, len(text), text[start:].lower()))
    return found


def tokenize(text: str) -> list[str]:
    return [token for _, _, token in tokens_with_spans(text)]


def parse(query: str) -> list[Term]:
    terms: list[Term] = []
    for match in PHRASE_OR_WORD.finditer(query):
        phrase, word = match.group(1), match.group(2)
        if phrase is not None:
            tokens = tokenize(phrase)
            prefix = False
        else:
            tokens = tokenize(word)
            prefix = word.endswith("*")
        if tokens:
            term = Term(tuple(tokens), prefix)
            if term not in terms:
                terms.append(term)
    return terms


def to_tsquery(terms: list[Term]) -> str:
    """Text for `to_tsquery('simple', :q)`; empty when there is nothing to match."""
    parts = []
    for term in terms:
        lexemes = [f"'{token}'" for token in term.tokens]
        if term.prefix:
            lexemes[-1] += ":*"
        parts.append(lexemes[0] if len(lexemes) == 1 else "(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)


def to_fts5(terms: list[Term]) -> str:
    """Text for `messages_fts MATCH :q`; empty when there is nothing to match."""
    parts = []
    for term in terms:
        phrase = " + ".join(f'"{token}"' for token in term.tokens)
        if term.prefix:
            phrase += "*"
        parts.append(phrase)
    return " AND ".join(parts)


def text_prefix(query: str) -> str:
    """The query as a plain name prefix (users, groups, conversation titles): the grammar's
    quotes and stars removed, whitespace collapsed, case-folded. Empty (match no name)
    when control characters remain: no name holds one, and PostgreSQL text cannot
    even carry NUL."""
    prefix = " ".join(query.replace('"', " ").replace("*", " ").split()).casefold()
    return "" if has_control(prefix) else prefix


def has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


# ---- snippets -------------------------------------------------------------------------------
def _matches(term: Term, words: list[str], i: int) -> bool:
    n = len(term.tokens)
    if i + n > len(words):
        return False
    for k, token in enumerate(term.tokens):
        last = k == n - 1
        if not (words[i + k].startswith(token) if last and term.prefix else words[i + k] == token):
            return False
    return True


def snippet(body: str, terms: list[Term], *, max_tokens: int = 24, ellipsis: str = "…") -> str:
    """The part of `body` around the first match, matched tokens wrapped in [[ and ]].

    Built here from our own tokens, so it is the same on every database.
    """
    spans = tokens_with_spans(body)
    words = [token for _, _, token in spans]
    marked = [False] * len(spans)
    for i in range(len(spans)):
        for term in terms:
            if _matches(term, words, i):
                for k in range(len(term.tokens)):
                    marked[i + k] = True
    if not spans:
        return body[:200]
    first = next((i for i, m in enumerate(marked) if m), 0)
    start = max(0, first - max_tokens // 3)
    end = min(len(spans), start + max_tokens)
    start = max(0, min(start, end - max_tokens))
    text_start = 0 if start == 0 else spans[start][0]
    text_end = len(body) if end == len(spans) else spans[end - 1][1]
    out: list[str] = [ellipsis] if start > 0 else []
    cursor = text_start
    for i in range(start, end):
        s, e, _ = spans[i]
        out.append(body[cursor:s])
        out.append(f"[[{body[s:e]}]]" if marked[i] else body[s:e])
        cursor = e
    out.append(body[cursor:text_end])
    if end < len(spans):
        out.append(ellipsis)
    return "".join(out).strip()
