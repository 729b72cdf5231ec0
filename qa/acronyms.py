"""Acronym definitions found in text ("Organization for Security and Cooperation in Asia (OSCA)").

A simplified Schwartz–Hearst matcher: the letters of the short form must match, in order, the
initials of the words just before the parenthesis (minor words may be skipped). A short form may
be qualified by an acronym already in the long form: "CICA Think Tank Forum (CICA TTF)" defines
TTF as "Think Tank Forum". Pure functions.
"""

from __future__ import annotations

import re

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
            if not before or before[-1] != qualifier:
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


def aliases(question: str, table: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(form used in ``question``, its other form) for each acronym or long form it contains."""
    found: list[tuple[str, str]] = []
    lowered = " ".join(question.lower().replace("-", " ").split())
    for short, long_form in table:
        long_lower = " ".join(long_form.lower().replace("-", " ").split())
        if re.search(rf"\b{re.escape(short)}s?\b", question) and long_lower not in lowered:
            found.append((short, long_form))
        elif long_lower in lowered and not re.search(rf"\b{re.escape(short)}\b", question):
            found.append((long_form, short))
    unique: dict[tuple[str, str], None] = {}
    for present, other in found:
        unique[(present, other)] = None
    return list(unique)


def expansions(question: str, table: list[tuple[str, str]]) -> list[str]:
    """Alternative forms for acronyms or long forms that appear in ``question``."""
    return list(dict.fromkeys(other for _, other in aliases(question, table)))


def gloss(text: str, table: list[tuple[str, str]]) -> str:
    """``text`` with the long form of each acronym it uses appended in parentheses, for the
    encoder only: "The CICA TTF mechanism was established in March 2014. (TTF: Think Tank
    Forum)". An acronym whose long form the text already spells out is not glossed; the first
    definition of a short form wins."""
    lowered = " ".join(text.lower().replace("-", " ").split())
    longs: dict[str, str] = {}
    for short, long_form in table:
        longs.setdefault(short, long_form)
    extra = [f"{short}: {long_form}" for short, long_form in longs.items()
             if re.search(rf"\b{re.escape(short)}s?\b", text)
             and " ".join(long_form.lower().replace("-", " ").split()) not in lowered]
    return f"{text} ({'; '.join(extra)})" if extra else text
