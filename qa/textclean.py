"""Repair of text extracted from PDFs: dehyphenation, unwrapping, footnotes, markers, headings.

Owns the pure ``str -> CleanText`` step between ``corpus.py`` and ``chunking.py``. Every edit only
deletes characters or turns whitespace into other whitespace, so each non-space character of the
normalized text is the identical character of the raw text at ``raw_offsets[i]``. Footnote
paragraphs move after the body. Standard library only; never touches files, models or indexes.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain, groupby
from typing import NamedTuple

__all__ = ["CleanText", "Section", "normalize"]


@dataclass(frozen=True)
class Section:
    start: int  # offset in the normalized text where the heading starts
    title: str  # heading text, cleaned (no markdown # or *), single line


@dataclass(frozen=True)
class CleanText:
    text: str
    raw_offsets: tuple[int, ...]  # len(text) + 1 entries; the last is len(raw)
    sections: tuple[Section, ...]
    footnotes_start: int | None

    def raw_span(self, start: int, end: int) -> tuple[int, int]:
        """Raw [start, end) covering normalized [start, end)."""
        size = len(self.text)
        start, end = max(0, min(start, size)), max(0, min(end, size))
        if end <= start:
            return self.raw_offsets[start], self.raw_offsets[start]
        window = self.raw_offsets[start:end]
        return min(window), max(window) + 1

    def section_at(self, offset: int) -> str | None:
        """Title of the heading governing ``offset``; None before the first one and in footnotes."""
        if self.footnotes_start is not None and offset >= self.footnotes_start:
            return None
        index = bisect_right([s.start for s in self.sections], offset)
        return self.sections[index - 1].title if index else None


class _Seg(NamedTuple):
    text: str
    offs: tuple[int, ...]  # raw index of every character of text


class _Line(NamedTuple):
    seg: _Seg  # stripped
    lead: bool  # the raw line began with whitespace: a PDF page or column start
    tab: bool  # a table row: cells separated by tabs


@dataclass
class _Para:
    kind: str  # "body", "foot" or "table"
    lines: list[_Seg]
    first: bool = False  # opens a block or follows a footnote: may continue a broken paragraph
    cont: bool = False  # footnote text carried over from the previous page, without a marker
    heading: bool = False
    floating: bool = False  # table, caption or page furniture that may sit inside a paragraph
    item: bool = False  # a list item (after a bullet, or numbered like the line before it)
    seg: _Seg = field(default_factory=lambda: _Seg("", ()))


# The document as its own dictionary: its lower-cased words (compounds split at their hyphens),
# and the "left-right" pairs seen unbroken inside its hyphenated compounds.
_Lexicon = tuple[frozenset[str], frozenset[str]]
_Accept = Callable[[re.Match[str]], bool]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SUP = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_CLOSE = "\"”’)\\]"
_CR = re.compile(r"\r(?=\n)")
_NEWLINE = re.compile(r"[\r\v\x85\u2028\u2029]")
_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_JUNK = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b-\u200d\u2060\ufeff\ufffd]")
_WS = re.compile(r"\s{2,}|[^\S ]")
_CELL_GAP = re.compile(r"\s*\t\s*")  # between two cells of a table row
_WS_IN_CELL = re.compile(r"[^\S\t]{2,}|[^\S \t]")
_PAIR = re.compile(r"\b([^\W\d_]+)-(?=([^\W\d_]+))")
_NON_LETTERS = re.compile(r"[\W\d_]+")
_HYPHEN_END = re.compile(r"(?<![-\u00ad])([^\W\d_]+)([-\u00ad])$")
_LETTERS = re.compile(r"[^\W\d_]+")
_FOOT_SUP = re.compile(rf"^[{_SUP}]+\s*\S")
_FOOT_MARK = re.compile(r"^(?:\d{1,3}|[!¢®*†‡§])\s+[\[(“\"‘'<A-Z]")
_CITE = re.compile(r"https?://|www\.|\bpp?\.\s?\d|\bVol\.\s?\d|\bNo\.\s?\d|\b[Ss]ee\b|\bIbid\b")
_CITE_STRONG = re.compile(r"https?://|www\.|\bpp?\.\s?\d|\bVol\.\s?\d|\bNo\.\s?\d")
_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")
_BULLET = re.compile(r"^(?:[■□▪▫●○◦•‣⁃∙◆◇►▶➢➤✓✔❖®]|[mn](?=\s{2}|\s[A-Z][a-z]))\s*")
_LIST_ITEM = re.compile(r"^(?:\(\d{1,2}\)|\d{1,2}[.)]\s|[—–]|[-•]\s)")
_MD_HEADING = re.compile(r"^#{1,6}\s+\S")
_MD_MARKUP = re.compile(r"^[#\s]+|\s+#+\s*$|\*+")
_NUMBERED = re.compile(r"^(?:[IVXL]{1,5}\.|\d{1,2}(?:\.\d{1,2})*\.)\s+[A-Z]")
_BYLINE = re.compile(r"^(?:By|Authors?)\b")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_CLOSED = re.compile(rf"[.;:!?](?:[\s{_CLOSE}*®¢!\d]|[{_SUP}])*$")
_PAGE_NO = re.compile(r"^[-–—\s]*(?:page\s*)?\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?[-–—\s]*$", re.I)
_IMPRINT = re.compile(r"©|\bDOI\b|\bISSN\b|\bISBN\b|Copyright")
_RUNNING = re.compile(r"(?=.*\b(?:19|20)\d\d\b)(?=.*\b(?:No|Vol|Issue)\b)")  # "March 2016 No. 118"
_CAPTION = re.compile(r"^(?:Table|Fig\.?|Figure|Chart|Source|Note)s?\b")
_STARTS_LOWER = re.compile(r"^[(\[“\"‘']*([^\W\d_])")
_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,2})(?=[^\s*])(.*?[^\s*])(\1)(?![\w*])")
# Inline footnote markers: (marker, what must precede it, replacement, whether the word before
# the punctuation must be no abbreviation such as "No." or "pp.").
_GLUED = r"([A-Za-z]{2,})\s?[CL]?[.!?,;][CL]?$"  # "attacks.1 In", "Europe.4However"
_MARKERS = (
    (r"[SUP]+", r"(?:[^\W\d_]{3}|[.,;:!?CL])$", "", False),  # "platforms.²", "Russia²⁴"
    (r"(?<=[.!?,;CL])\d{1,3}(?=[A-Z])", _GLUED, " ", True),
    (r"(?<=[.!?,;CL])\d{1,3}(?=\s|[CL]|$)", _GLUED, "", True),
    (r"(?<=[.!?CL]) \d{1,2}(?=\s+[A-Z“\"]|\s*$)", r"([A-Za-z]{2,})[.!?][CL]?$", "", True),
    (r"(?<=[.,;:CL])[!®¢*†‡§]+(?=\s|$)", r"([A-Za-z]{2,})[CL]?[.,;:]?[CL]?$", "", True),
)
_MARKER_RULES = tuple(
    (re.compile(mark.replace("SUP", _SUP).replace("CL", _CLOSE)),
     re.compile(before.replace("CL", _CLOSE)), fill, check)
    for mark, before, fill, check in _MARKERS
)
_ABBREV = _words(
    "no nos vol vols pp fig figs art arts ch chap sec para ed eds op cit ibid vs cf ca approx tab"
    " eq ref refs rev ser suppl pt pg nr jan feb mar apr jun jul aug sep sept oct nov dec"
)
_SMALL = _words(
    "from with into onto under over upon than that this these those their about after among amid"
    " between within without through toward towards across against during since before"
)
_OPEN_WORDS = _words(
    "a an the of and or nor but to in on for with by from at as that between into its their"
    " is are was were be than whose which this these such our his her both"
)
_PREFIXES = _words("self non well ill half cross quasi anti all")


def normalize(raw: str) -> CleanText:
    """Normalize PDF-extracted ``raw`` text (see the module docstring); never raises on a str."""
    seg = _Seg(raw, tuple(range(len(raw))))
    seg = _drop(_drop(_drop(seg, _CR), _NEWLINE, fill="\n"), re.compile("\f"), fill="\n\n")
    seg = _drop(seg, _SPACE, fill=" ")
    lowered = seg.text.lower()
    pairs = frozenset(f"{a}-{b}" for a, b in _PAIR.findall(lowered))
    lex = (frozenset(_NON_LETTERS.split(lowered)), pairs)
    body: list[_Para] = []
    notes: list[_Para] = []
    for is_text, block in groupby(_lines(seg), key=lambda line: line is not None):
        for para in _with_headings(_split_block([b for b in block if b])) if is_text else ():
            _finish(para, lex)
            (notes if para.kind == "foot" else body).append(para)
    body = _rejoin(_rejoin(body, lex, lower=True), lex, lower=False)
    return _assemble(body, notes, lex, len(raw))


def _apply(seg: _Seg, spans: Sequence[tuple[int, int]], fill: str = "") -> _Seg:
    """Replace each span by ``fill`` (whitespace or empty), mapped to the span's first raw index."""
    texts: list[str] = []
    offs: list[int] = []
    pos = 0
    for start, end in sorted(spans):
        if start < pos or not seg.offs:
            continue
        texts.append(seg.text[pos:start])
        offs.extend(seg.offs[pos:start])
        texts.append(fill)
        offs.extend([seg.offs[min(start, len(seg.offs) - 1)]] * len(fill))
        pos = end
    texts.append(seg.text[pos:])
    offs.extend(seg.offs[pos:])
    return _Seg("".join(texts), tuple(offs))


def _drop(
    seg: _Seg, pattern: re.Pattern[str], fill: str = "", accept: _Accept | None = None
) -> _Seg:
    spans = [m.span() for m in pattern.finditer(seg.text) if accept is None or accept(m)]
    return _apply(seg, spans, fill) if spans else seg


def _strip(seg: _Seg) -> _Seg:
    start, end = len(seg.text) - len(seg.text.lstrip()), len(seg.text.rstrip())
    return _Seg(seg.text[start:end], seg.offs[start:end]) if end > start else _Seg("", ())


def _lines(seg: _Seg) -> list[_Line | None]:
    """Stripped lines (None for blank ones), each remembering whether it was indented."""
    out: list[_Line | None] = []
    pos = 0
    for part in seg.text.split("\n"):
        line = _strip(_Seg(part, seg.offs[pos : pos + len(part)]))
        pos += len(part) + 1
        tab = line.text.count("\t") >= 2
        out.append(_Line(line, part[:1] in " \t", tab) if line.text else None)
    return out


def _is_foot_start(text: str) -> bool:
    return bool(_FOOT_SUP.match(text) or (_FOOT_MARK.match(text) and _CITE.search(text)))


def _is_carried_note(block: list[_Line]) -> bool:
    """Footnote text continued from the previous page: citations, then the page text resumes."""
    resume = next((i for i, line in enumerate(block) if i and line.lead), 0)
    text = " ".join(line.seg.text for line in block[:resume])
    kinds = {m.group(0)[:2].lower() for m in _CITE_STRONG.finditer(text)}
    return 0 < resume <= 12 and len(kinds) >= 2 and bool(_YEAR.search(text))


def _split_block(block: list[_Line]) -> list[_Para]:
    """Cut a block of consecutive lines into footnotes, table rows, list items and body text."""
    carried = not _is_foot_start(block[0].seg.text) and _is_carried_note(block)
    foot = carried or _is_foot_start(block[0].seg.text)
    paras: list[_Para] = []
    for i, line in enumerate(block):
        text, prev = line.seg.text, block[i - 1].seg.text if i else ""
        if foot and i and line.lead:  # the page text resumes after the footnotes
            foot = False
            paras.append(_Para("body", [line.seg], first=True))
        elif foot and (i == 0 or _is_foot_start(text)):
            paras.append(_Para("foot", [line.seg], cont=carried and i == 0))
        elif foot:
            paras[-1].lines.append(line.seg)
        elif line.tab:
            paras.append(_Para("table", [line.seg]))
        else:
            bullet = _BULLET.match(text)
            cut = bullet.end() if bullet else 0
            seg = _Seg(text[cut:], line.seg.offs[cut:])
            item = line.lead or _LIST_ITEM.match(text)
            after = block[i + 1].seg.text if i + 1 < len(block) else ""
            listed = not bullet and bool(_LIST_ITEM.match(text) and (
                _LIST_ITEM.match(prev) or _LIST_ITEM.match(after)))
            if not paras or bullet or listed or paras[-1].kind != "body" or _MD_HEADING.match(text) \
                    or _MD_HEADING.match(prev) or (item and _closed(prev)):
                paras.append(_Para("body", [], first=i == 0, item=listed))
            paras[-1].lines.append(seg)
    return [p for p in paras if any(s.text for s in p.lines)]


def _heading_line(text: str, cont: bool = False) -> bool:
    """Short, unpunctuated and title-cased (most words of four letters or more capitalized)."""
    upper = text[:1].isupper() or bool(_NUMBERED.match(text))
    starts = cont or (upper and not _BYLINE.match(text))
    if not starts or len(text) > 100 or _closed(text) or text[-1:] == "," or _is_furniture(text):
        return False
    words = _WORD.findall(text)
    content = [w for w in words if len(w) >= 4 and w.lower() not in _SMALL] or words[:1]
    return bool(content) and sum(w[0].isupper() for w in content) >= 0.75 * len(content)


def _heading_lines(lines: list[str]) -> int:
    """How many leading lines form a heading: all of them, or a numbered heading's first few."""
    if _MD_HEADING.match(lines[0]):
        return 1
    if not _heading_line(lines[0]):
        return 0
    count, size = 1, len(lines[0])
    while count < min(len(lines), 3) and size + len(lines[count]) < 120:
        if not _heading_line(lines[count], cont=True):
            break
        size += len(lines[count]) + 1
        count += 1
    return count if count == len(lines) or _NUMBERED.match(lines[0]) else 0


def _with_headings(paras: list[_Para]) -> list[_Para]:
    out: list[_Para] = []
    for para in paras:
        count = _heading_lines([s.text for s in para.lines]) if para.kind == "body" else 0
        if count:
            out.append(_Para("body", para.lines[:count], first=para.first, heading=True))
        if count < len(para.lines):
            out.append(_Para(para.kind, para.lines[count:], para.first and not count, para.cont,
                             item=para.item and not count))
    return out


def _keeps_hyphen(left: str, right: str, lex: _Lexicon) -> bool:
    """The document is the dictionary: keep ``left-right`` if seen whole, join if ``leftright``."""
    if not right[:1].islower():
        return True
    left, right = left.lower(), right.lower()
    if f"{left}-{right}" in lex[1]:
        return True
    return left + right not in lex[0] and left in _PREFIXES


def _joint(left: str, right: str, lex: _Lexicon) -> tuple[int, str]:
    """How to join two pieces of a paragraph: characters to cut off ``left``, then separator."""
    left = left[-64:]
    if left[-1:] not in "-/\u00ad" and right[:1] != "-":
        return 0, " "
    hyphen = _HYPHEN_END.search(left)
    word = _LETTERS.match(right)
    if hyphen and word:
        keep = hyphen.group(2) == "-" and _keeps_hyphen(hyphen.group(1), word.group(0), lex)
        return (0, "") if keep else (1, "")
    if re.search(r"(?<!-)\d-$", left) and right[:1].isdigit():
        return 0, ""
    if right[:1] == "-" and right[1:2].islower() and left[-1:].isalpha():
        return 0, ""
    if left.endswith("/") and "://" in left.rsplit(None, 1)[-1]:
        return 0, ""  # a URL wrapped at a slash
    return 0, " "


def _join_all(segs: Sequence[_Seg], lex: _Lexicon) -> _Seg:
    parts = [segs[0]]
    for seg in segs[1:]:
        prev = parts[-1]
        if prev.text and seg.text:
            cut, sep = _joint(prev.text, seg.text, lex)
            parts[-1] = _Seg(prev.text[: len(prev.text) - cut], prev.offs[: len(prev.offs) - cut])
            parts.append(_Seg(sep, (max(seg.offs[0] - 1, 0),) * len(sep)))
        parts.append(seg)
    return _Seg("".join(s.text for s in parts), tuple(chain.from_iterable(s.offs for s in parts)))


def _marker_filter(before: re.Pattern[str], check: bool) -> _Accept:
    def accept(match: re.Match[str]) -> bool:
        found = before.search(match.string, max(0, match.start() - 40), match.start())
        if found is None:
            return False
        return not (check and found.group(1).lower() in _ABBREV)

    return accept


def _unemphasize(seg: _Seg) -> _Seg:
    if "*" not in seg.text:
        return seg
    return _apply(seg, [m.span(g) for m in _EMPHASIS.finditer(seg.text) for g in (1, 3)])


def _finish(para: _Para, lex: _Lexicon) -> None:
    """Unwrap a paragraph's lines, drop inline markers from body text, tidy whitespace."""
    seg = _unemphasize(_join_all(para.lines, lex))
    if para.kind == "body":
        for pattern, before, fill, check in _MARKER_RULES:
            seg = _drop(seg, pattern, fill, _marker_filter(before, check))
    if para.heading:
        seg = _drop(seg, _MD_MARKUP)
    seg = _drop(seg, _JUNK)
    if para.kind == "table":  # a row keeps one tab between its cells (``qa.tables`` reads them)
        seg = _drop(_drop(seg, _CELL_GAP, fill="\t"), _WS_IN_CELL, fill=" ")
    else:
        seg = _drop(seg, _WS, fill=" ")
    seg = _strip(seg)
    para.seg = seg
    floating = _is_furniture(seg.text) or bool(_CAPTION.match(seg.text))
    para.floating = para.kind == "table" or floating


def _closed(text: str) -> bool:
    """Ends with sentence or clause punctuation (possibly followed by closers and markers)."""
    return bool(_CLOSED.search(text[-40:]))


def _is_furniture(text: str) -> bool:
    return bool(_PAGE_NO.match(text) or (len(text) <= 300 and _IMPRINT.search(text))
                or (len(text) <= 60 and _RUNNING.match(text)))


def _join_target(out: list[_Para], para: _Para, lower: bool) -> int | None:
    """Index of the earlier paragraph that ``para`` continues (cut by a page break), if any."""
    start = _STARTS_LOWER.match(para.seg.text)
    if bool(start and start.group(1).islower()) != lower:
        return None
    inserts = 0
    for index in range(len(out) - 1, max(len(out) - 40, 0) - 1, -1):
        prev, text = out[index], out[index].seg.text
        if prev.floating or not text:
            continue
        if prev.heading:
            return None
        if not _closed(text):
            last = text.rsplit(None, 1)[-1].lower()
            return index if lower or (len(text) >= 80 and last in _OPEN_WORDS) else None
        if not lower or inserts == 2 or len(text) > 300:
            return None
        inserts += 1  # a pull quote or caption set inside the broken paragraph
    return None


def _rejoin(paras: list[_Para], lex: _Lexicon, lower: bool) -> list[_Para]:
    """Re-join paragraphs cut by page breaks: continuations in lower case (``lower``), or else in
    upper case after a word no sentence ends with ("of", "the")."""
    out: list[_Para] = []
    for para in paras:
        can_join = para.first and not para.heading and not para.floating and para.seg.text
        index = _join_target(out, para, lower) if can_join else None
        if index is None:
            out.append(para)
            continue
        out[index].seg = _join_all([out[index].seg, para.seg], lex)  # what sat between stays after
    return out


def _assemble(body: list[_Para], foot: list[_Para], lex: _Lexicon, raw_len: int) -> CleanText:
    notes: list[_Seg] = []
    for note in foot:  # footnote text carried over to the next page joins its note again
        if note.cont and notes:
            notes[-1] = _join_all([notes[-1], note.seg], lex)
        else:
            notes.append(note.seg)
    items = [(p.seg, p.heading, "row" if p.kind == "table" else "item" if p.item else "")
             for p in body if p.seg.text]
    first_note = len(items)
    items += [(seg, False, "") for seg in notes if seg.text]
    texts: list[str] = []
    offs: list[int] = []
    sections: list[Section] = []
    footnotes_start: int | None = None
    for index, (seg, heading, row) in enumerate(items):
        if texts:  # the rows of a table, the items of a list: the lines of one paragraph
            gap = "\n" if row and items[index - 1][2] == row else "\n\n"
            texts.append(gap)
            offs.extend([max(seg.offs[0] - 1, 0)] * len(gap))
        if index == first_note:
            footnotes_start = len(offs)
        if heading:
            sections.append(Section(len(offs), seg.text))
        texts.append(seg.text)
        offs.extend(seg.offs)
    return CleanText("".join(texts), (*offs, raw_len), tuple(sections), footnotes_start)
