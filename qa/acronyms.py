"""Acronym definitions found in text ("Organization for Security and Cooperation in Asia (OSCA)").

A simplified Schwartz–Hearst matcher: the letters of the short form must match, in order, the
initials of the words just before the parenthesis (minor words may be skipped). A short form may
be qualified by an acronym already in the long form: "CICA Think Tank Forum (CICA TTF)" defines
TTF as "Think Tank Forum". Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

_DEFINITION = re.compile(
    r"\(\s*(?:the\s+)?(?:([A-Z]{2,10})\s+)?([A-Z][A-Za-z&]{1,11}?)s?\s*(?:[,;)])")
_MINOR = {"of", "and", "for", "in", "on", "the", "to", "a", "an", "&", "at", "by", "with"}
_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*")


def find_acronyms(text: str) -> list[tuple[str, str]]:
    """(short, long) pairs defined in ``text``, each pair once, in order of first definition."""
    found: dict[tuple[str, str], None] = {}
    for m in _DEFINITION.finditer(text):
        qualifier, short = m.group(1), m.group(2)
        if sum(c.isupper() for c in short) < 2:
            continue
        window = text[max(0, m.start() - 200):m.start()]
        words = _WORD.findall(window)[-(len(short) * 2 + 3):]
        long_form = _match(short, words)
        if long_form and qualifier:
            # "CICA Think Tank Forum (CICA TTF)": the qualifier must stand just before the long
            # form, else "(UN OCHA)"-like text is no definition of this kind.
            before = words[:len(words) - len(long_form.split())]
            if not before or re.sub(r"['’]s$", "", before[-1]) != qualifier:
                continue
        if long_form:
            found[(short, long_form)] = None
    return list(found)


def _match(short: str, words: list[str]) -> str | None:
    """Shortest run of trailing ``words`` whose initials spell ``short``."""
    letters = [c.lower() for c in short if c.isalpha()]
    for size in range(1, len(words) + 1):
        run = words[-size:]
        if run[0].lower() in _MINOR:
            continue
        if _spells(letters, run):
            return " ".join(run)
    return None


def _spells(letters: list[str], run: list[str]) -> bool:
    """True when the initials of ``run`` contain ``letters`` in order, the first and last words
    supplying the first and last letters, and at most two significant words supplying none."""
    initials: list[tuple[str, bool]] = []  # (initial, significant)
    for word in run:
        parts = [p for p in re.split(r"[-’']", word) if p]
        for n, part in enumerate(parts):
            initials.append((part[0].lower(), n == 0 and word.lower() not in _MINOR))
    if not initials or initials[0][0] != letters[0] or run[-1][0].lower() != letters[-1]:
        return False
    pos, skipped = 0, 0
    for initial, significant in initials:
        if pos < len(letters) and initial == letters[pos]:
            pos += 1
        elif significant:
            skipped += 1
    return pos == len(letters) and skipped <= 2


class AcronymTable(tuple[tuple[str, str], ...]):
    """The (short, long) pairs of one index version, with each long form flattened once: built
    once per index snapshot, so matching a question costs two substring tests per pair and a
    regular expression only for the pairs the question can use."""

    flat_longs: tuple[str, ...]

    def __new__(cls, pairs: Iterable[tuple[str, str]]) -> AcronymTable:
        table = super().__new__(cls, tuple((str(s), str(lf)) for s, lf in pairs))
        table.flat_longs = tuple(_flat(lf) for _, lf in table)
        return table


def aliases(question: str, table: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(form used in ``question``, its other form) for each acronym or long form it contains."""
    found: list[tuple[str, str]] = []
    lowered = _flat(question)
    flat_longs = (table.flat_longs if isinstance(table, AcronymTable)
                  else tuple(_flat(lf) for _, lf in table))
    for (short, long_form), long_lower in zip(table, flat_longs, strict=True):
        # Substring tests first: a pair whose short form is not in the question and whose long
        # form is not either cannot match, and most pairs are such.
        has_short = short in question
        has_long = long_lower in lowered
        if not has_short and not has_long:
            continue
        if (has_short and not has_long
                and re.search(rf"\b{re.escape(short)}s?\b", question)):
            found.append((short, long_form))
        elif has_long and not (has_short and re.search(rf"\b{re.escape(short)}\b", question)):
            found.append((long_form, short))
    unique: dict[tuple[str, str], None] = {}
    for present, other in found:
        unique[(present, other)] = None
    return list(unique)


def alias_spans(question: str, pairs: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
    """(start, end, other form) of every place ``question`` uses one of the ``pairs`` (form in
    the question, other form) that ``aliases`` found in it."""
    return [(m.start(), m.end(), other) for present, other in pairs
            for m in _form_pattern(present).finditer(question)]


def uses_form(text: str, form: str) -> bool:
    """Whether ``text`` uses ``form``: an acronym as a whole word (plural too, case kept), a long
    form in any case, hyphens or line breaks between its words."""
    pattern, needle, lowered = _form_probe(form)
    if needle not in (text.lower() if lowered else text):  # a cheap test first
        return False
    return pattern.search(text) is not None


@lru_cache(maxsize=256)
def _form_probe(form: str) -> tuple[re.Pattern[str], str, bool]:
    """The form's pattern, its first word (which any match contains) and whether the match
    ignores case (and the word is lower-cased)."""
    pattern = _form_pattern(form)
    first = re.split(r"[\s\-]+", form.strip())[0]
    ignore_case = bool(pattern.flags & re.IGNORECASE)
    return pattern, first.lower() if ignore_case else first, ignore_case


@lru_cache(maxsize=256)
def _form_pattern(form: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s\-]+", form.strip()) if w]
    body = r"[\s\-]+".join(words)
    flags = 0 if len(words) == 1 else re.IGNORECASE
    return re.compile(rf"(?<![\w\-]){body}s?(?![\w\-])", flags)


def expansions(question: str, table: Sequence[tuple[str, str]]) -> list[str]:
    """Alternative forms for acronyms or long forms that appear in ``question``."""
    return list(dict.fromkeys(other for _, other in aliases(question, table)))


def gloss(text: str, table: Sequence[tuple[str, str]]) -> str:
    """``text`` with the long form of each acronym it uses appended in parentheses, for the
    encoder only: "The CICA TTF mechanism was established in March 2014. (TTF: Think Tank
    Forum)". An acronym whose long form the text already spells out is not glossed; the first
    definition of a short form wins."""
    pattern, longs = _glossary(tuple(table))
    if pattern is None:
        return text
    used = dict.fromkeys(m.group(1) for m in pattern.finditer(text))
    if not used:
        return text
    lowered = _flat(text)
    extra = [f"{short}: {longs[short][0]}" for short in used
             if not any(form in lowered for form in longs[short][1])]
    return f"{text} ({'; '.join(extra)})" if extra else text


@lru_cache(maxsize=64)
def _glossary(table: tuple[tuple[str, str], ...]
              ) -> tuple[re.Pattern[str] | None, dict[str, tuple[str, list[str]]]]:
    """One pattern matching every short form of ``table``, and for each short form its first
    long form (the gloss) and all its long forms flattened (any of them spelled out in a text
    makes the gloss redundant). A document's table is compiled once."""
    longs: dict[str, tuple[str, list[str]]] = {}
    for short, long_form in table:
        longs.setdefault(short, (long_form, []))[1].append(_flat(long_form))
    if not longs:
        return None, longs
    names = "|".join(re.escape(s) for s in sorted(longs, key=len, reverse=True))
    return re.compile(rf"\b({names})s?\b"), longs


def _flat(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())
