"""Which documents a question attributes by naming their authors ("according to Qiang", "in
Chen's roadmap").

An analyst who names an author asks about that author's text. The names come from each
document's metadata, never from its body: an author quoted in somebody else's report does not
make that report theirs. A name part matches only as a whole, capitalized word, so "He" the
pronoun is not the surname He; parts that are stopwords or initials never match. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from qa import terms

AuthorTable = tuple[tuple[str, re.Pattern[str]], ...]  # (doc_id, pattern of its authors' names)

_NAME_PART = re.compile(r"[^\W\d_][\w'’\-]*")


def name_parts(author: str) -> list[str]:
    """The parts of ``author`` a question can name them by: capitalized words of two or more
    letters that are not stopwords ("Chen Dongxiao" -> Chen, Dongxiao; "J. R. Smith" -> Smith)."""
    parts = []
    for part in _NAME_PART.findall(author):
        if len(part) >= 2 and part[0].isupper() and part.lower() not in terms.STOPWORDS:
            parts.append(part)
    return parts


class AuthorMatcher(tuple[tuple[str, re.Pattern[str]], ...]):
    """An AuthorTable with every document's name parts also compiled into one pattern, so a
    question is searched once rather than once per document (built once per index snapshot)."""

    combined: re.Pattern[str] | None
    owners: dict[str, tuple[str, ...]]

    def __new__(cls, rows: Iterable[tuple[str, re.Pattern[str], Sequence[str]]]
                ) -> AuthorMatcher:
        rows = list(rows)
        table = super().__new__(cls, tuple((doc_id, pattern) for doc_id, pattern, _ in rows))
        owners: dict[str, list[str]] = {}
        for doc_id, _, parts in rows:
            for part in parts:
                owners.setdefault(part, []).append(doc_id)
        table.owners = {part: tuple(ids) for part, ids in owners.items()}
        table.combined = _pattern(owners) if owners else None
        return table


def _pattern(parts: Iterable[str]) -> re.Pattern[str]:
    """Any of ``parts`` as a whole, capitalized word (longest first), possessive included."""
    alternation = "|".join(re.escape(p) for p in sorted(parts, key=lambda p: (-len(p), p)))
    return re.compile(rf"(?<![\w'’\-])(?:{alternation})(?![\w\-]|['’](?!s\b))")


def author_table(documents: Iterable[Mapping[str, object]]) -> AuthorMatcher:
    """One compiled pattern per document with named authors (``documents`` as the index lists
    them: ``doc_id`` and ``authors``), and all of them in one."""
    rows = []
    for doc in documents:
        authors = doc.get("authors")
        names = [a for a in authors if isinstance(a, str)] if isinstance(authors, list) else []
        parts = sorted({p for a in names for p in name_parts(a)})
        if parts:
            rows.append((str(doc["doc_id"]), _pattern(parts), parts))
    return AuthorMatcher(rows)


def named_documents(question: str, table: Sequence[tuple[str, re.Pattern[str]]]) -> frozenset[str]:
    """Ids of the documents whose author ``question`` names (possessive forms included)."""
    if isinstance(table, AuthorMatcher):
        if table.combined is None:
            return frozenset()
        return frozenset(doc_id for m in table.combined.finditer(question)
                         for doc_id in table.owners[m.group(0)])
    return frozenset(doc_id for doc_id, pattern in table if pattern.search(question))


def name_spans(question: str,
               table: Sequence[tuple[str, re.Pattern[str]]]) -> tuple[tuple[int, int], ...]:
    """(start, end) of every author name ``question`` uses: the attribution, which is scored on
    the documents' metadata and is no content to look for in passages."""
    if isinstance(table, AuthorMatcher):
        if table.combined is None:
            return ()
        return tuple(sorted({m.span() for m in table.combined.finditer(question)}))
    return tuple(sorted({m.span() for _, pattern in table for m in pattern.finditer(question)}))
