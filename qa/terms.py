"""Query terms: tokenization, stopwords, light stemming and safe FTS5 expressions (pure)."""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise
from typing import Any

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?", re.UNICODE)

STOPWORDS = frozenset(
    """
a about above after again against all also am an and any are aren't as at be because been before
being below between both but by can could did do does doing done down during each either else
few for from further had has have having he her here hers herself him himself his how i if in
into is it its itself just let me more most my myself no nor not now of off on once only or
other our ours ourselves out over own per same shall she should so some such than that the their
theirs them themselves then there these they this those through to too under until up upon us
very was we were what when where which while who whom whose why will with within would you your
yours yourself yourselves tell describe explain according say said says give list name named
mention mentioned mentions document documents text article report paper author authors
""".split()  # noqa: SIM905 - a word list reads best as text
)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits of any script)."""
    return [t.lower().replace("’", "'") for t in _TOKEN.findall(text)]


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The Snowball (Porter2) English stem, as FTS5's porter tokenizer sees words alike."""
    return str(_stemmer().stemWord(word))


PAIR_GAP = 2  # stopwords allowed between the two words of a pair ("security and development")
BREAK = "|"  # in a term sequence: more than PAIR_GAP stopwords stood here


def term_sequence(text: str, gap: int = PAIR_GAP) -> str:
    """The stemmed content words of ``text`` in order, space-separated, with ``BREAK`` wherever
    more than ``gap`` stopwords stood between two of them. Stored for every sentence at index
    time, so that scoring a question against it never re-tokenizes: coverage looks for " t ",
    proximity for the pairs " a b " (``term_pairs``)."""
    out: list[str] = []
    skipped = 0
    for token in tokens(text):
        if token in STOPWORDS:
            skipped += 1
            continue
        if out and skipped > gap:
            out.append(BREAK)
        out.append(stem(token))
        skipped = 0
    return " ".join(out)


def term_pairs(text: str, gap: int = PAIR_GAP) -> set[tuple[str, str]]:
    """Ordered pairs of consecutive stemmed content words at most ``gap`` stopwords apart: the
    phrases of ``text``, loosely ("Organization for Security" gives ("organiz", "secur"))."""
    words = term_sequence(text, gap).split()
    return {(a, b) for a, b in pairwise(words) if BREAK not in (a, b)}


def content_terms(text: str) -> list[str]:
    """Distinct non-stopword tokens in order of appearance."""
    seen: dict[str, None] = {}
    for t in tokens(text):
        if t not in STOPWORDS and (len(t) > 1 or t.isdigit()):
            seen[t] = None
    return list(seen)


def fts_expression(text: str, extra: list[str] | None = None, limit: int = 32) -> str:
    """An FTS5 MATCH expression that ORs the quoted content terms of ``text`` (and ``extra``).

    Every term is a double-quoted string of letters/digits only, so user input can never inject
    FTS5 syntax (quotes, AND/OR/NEAR, ``*``, ``:``, parentheses, column filters).
    """
    terms = content_terms(text)
    for phrase in extra or []:
        terms.extend(t for t in content_terms(phrase) if t not in terms)
    safe = [t.replace('"', "") for t in terms[:limit]]
    return " OR ".join(f'"{t}"' for t in safe if t)
