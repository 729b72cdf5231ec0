"""Tables and lists in normalized text: which paragraphs are made of rows, and what a row says.

A table reaches the normalized text as a paragraph of lines whose cells are separated by tabs
(PDF and DOCX extraction write them so); a list as a paragraph of lines that open with a bullet or
a number. A sentence splitter reads either as run-on prose, or cuts a row into a "sentence" with
no terminal punctuation that is never quoted, so the table's caption gets quoted instead of the
row that answers. Here each line of such a paragraph is a span of its own, and a row is given
the words that make it readable alone: its table's caption and the column headers of its cells
("Table 1. ... : Specific CBMs: Tourism; Coordinator: Tajikistan"). That text is what the
encoder embeds and what term coverage counts for the row; the quoted text stays the row itself,
the exact slice of the document.

Pure functions of the text; no model, no index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_CELL_SEPARATOR = "\t"
_BULLET = re.compile(r"^\s*(?:[-•▪◦●*–]|\(?[0-9]{1,2}[.)]|\(?[a-z][.)])\s+\S")
_CAPTION = re.compile(r"^(?:table|tab\.)\s*[0-9ivx]+\b", re.IGNORECASE)
_PARAGRAPH = re.compile(r"[^\n]+(?:\n(?!\n)[^\n]*)*")
MAX_CAPTION_CHARS = 300  # a longer paragraph before a table is prose, not its caption


def cells(line: str) -> list[str]:
    """The non-empty cells of a tab-separated line."""
    return [c.strip() for c in line.split(_CELL_SEPARATOR) if c.strip()]


def is_row(line: str) -> bool:
    """A line of at least two tab-separated cells."""
    return len(cells(line)) >= 2


def is_list_item(line: str) -> bool:
    """A line that opens with a bullet or an item number ("- ", "• ", "3. ", "(b) ")."""
    return bool(_BULLET.match(line))


def is_line_block(lines: list[str]) -> bool:
    """Whether a paragraph's lines are rows or list items, each to be read on its own. In
    normalized text (``qa.textclean``) a paragraph is one line, except a table (a row per line)
    and a list (an item per line, bullets removed): any paragraph of two lines or more. In other
    text: at least two rows or items, and at least half of the non-blank lines."""
    filled = [line for line in lines if line.strip()]
    rows = sum(1 for line in filled if is_row(line) or is_list_item(line))
    return len(filled) >= 2 and (rows == 0 or (rows >= 2 and 2 * rows >= len(filled)))


def in_line_block(text: str, start: int) -> bool:
    """Whether offset ``start`` of ``text`` lies in a paragraph of rows or list items, and not
    in a table's header (its first row)."""
    first = text.rfind("\n\n", 0, start)
    first = first + 2 if first >= 0 else 0
    tail = text.find("\n\n", start)
    lines = text[first:tail if tail >= 0 else len(text)].split("\n")
    if not is_line_block(lines):
        return False
    header_end = first + len(lines[0].rstrip()) if lines[0].strip() else first
    return not (is_row(lines[0]) and start <= header_end)


def line_spans(body: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank line of ``body``, trimmed of surrounding whitespace."""
    spans = []
    for line in re.finditer(r"[^\n]+", body):
        text = line.group()
        stripped = text.strip()
        if stripped:
            start = line.start() + text.index(stripped)
            spans.append((start, start + len(stripped)))
    return spans


@dataclass(frozen=True)
class Table:
    """A table paragraph: where it is, its caption and its header cells."""

    start: int
    end: int
    caption: str
    header: tuple[str, ...]


@lru_cache(maxsize=8)  # a build asks once per sentence of the same document
def tables(text: str) -> tuple[Table, ...]:
    """The tables of ``text``: paragraphs mostly made of tab-separated rows, each with the
    paragraph before it as its caption when that is short and reads "Table N ...", and its first
    row as its header."""
    found: list[Table] = []
    previous = ""
    for para in _PARAGRAPH.finditer(text):
        body = para.group()
        if not body.strip():
            continue
        lines = [line for line in body.split("\n") if line.strip()]
        if sum(1 for line in lines if is_row(line)) >= 2 and is_line_block(lines):
            caption = previous if (len(previous) <= MAX_CAPTION_CHARS
                                   and _CAPTION.match(previous)) else ""
            found.append(Table(para.start(), para.end(), caption, tuple(cells(lines[0]))))
        previous = body.strip()
    return tuple(found)


def row_context(text: str, start: int, end: int) -> str | None:
    """The words that make the row ``text[start:end]`` readable alone: its table's caption, then
    each cell under its column's header. None when the span is not a row of a table of ``text``
    (or is the table's header row)."""
    line = text[start:end]
    if not is_row(line):
        return None
    table = next((t for t in tables(text) if t.start <= start < t.end), None)
    if table is None:
        return None
    values = cells(line)
    if tuple(values) == table.header:
        return None
    raw = text[text.rfind("\n", 0, start) + 1:start]
    if len(table.header) >= len(values):
        # A row whose first cells are empty (under a merged cell) is aligned on the right.
        headers = (table.header[len(table.header) - len(values):] if _CELL_SEPARATOR in raw
                   else table.header[:len(values)])
        body = "; ".join(f"{h}: {v}" for h, v in zip(headers, values, strict=True))
    else:
        body = "; ".join(values)
    return f"{table.caption} {body}".strip() if table.caption else body
