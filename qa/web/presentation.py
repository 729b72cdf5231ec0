"""Pure helpers that shape what the templates show: marked text runs, document pieces cut at
chunk starts, highlight ranges, ages, and the answer page's view of an ``ask`` response.

No Flask request state apart from ``url_for`` in ``answer_view``; never touches the service.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flask import url_for


class Segment(NamedTuple):
    text: str
    marked: bool = False
    mark_id: str | None = None


class Piece(NamedTuple):
    anchors: list[str]
    segments: list[Segment]


def split_marked(text: str, offset: int, spans: Iterable[tuple[int, int]]) -> list[Segment]:
    """Split ``text`` (starting at document offset ``offset``) into runs, marking the ``spans``
    (document offsets; clipped to the text, overlaps merged)."""
    n = len(text)
    ranges = sorted((max(0, a - offset), min(n, b - offset)) for a, b in spans)
    merged: list[list[int]] = []
    for a, b in ranges:
        if a >= b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, pos = [], 0
    for a, b in merged:
        if a > pos:
            out.append(Segment(text[pos:a]))
        out.append(Segment(text[a:b], marked=True))
        pos = b
    if pos < n:
        out.append(Segment(text[pos:]))
    return out


def document_pieces(text: str, chunk_spans: Iterable[dict[str, Any]],
                    highlight: tuple[int, int] | None) -> list[Piece]:
    """Cut the document text at chunk starts (chunks overlap, so each is anchored where it
    begins) and mark the highlight range; the first marked run gets ``id="highlight"``."""
    starts: dict[int, list[str]] = {}
    for span in chunk_spans:
        if 0 <= span["start"] < len(text):
            starts.setdefault(span["start"], []).append(span["id"])
    cuts = sorted({0, *starts, len(text)})
    pieces, first_mark = [], True
    for a, b in itertools.pairwise(cuts):
        segments = []
        for seg in split_marked(text[a:b], a, [highlight] if highlight else []):
            if seg.marked and first_mark:
                seg, first_mark = seg._replace(mark_id="highlight"), False
            segments.append(seg)
        pieces.append(Piece(starts.get(a, []), segments))
    return pieces


def parse_highlight(value: str | None, length: int) -> tuple[int, int] | None:
    """``"start-end"`` as a valid range of a text of ``length`` characters, else None."""
    match = re.fullmatch(r"(\d{1,9})-(\d{1,9})", value or "", flags=re.ASCII)
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    return (start, end) if 0 <= start < end <= length else None


def describe_age(created: str | None, now: datetime | None = None) -> str:
    """``"2031-05-01T10:00:00Z"`` -> ``"3 hours ago"`` (empty when unknown)."""
    if not created:
        return ""
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def answer_view(response: dict[str, Any], documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the answer page shows, built from the ``ask`` response: answer sentences with the
    number of the card they cite, and one card per passage with its cited sentences marked."""
    passages = response["passages"]
    card_of = {p["id"]: n for n, p in enumerate(passages, 1)}
    citations = {c["n"]: c for c in response["citations"]}
    sentences = response["answer"]["sentences"]
    cards = []
    for n, p in enumerate(passages, 1):
        cited_as = sorted(c["n"] for c in citations.values() if c["passage_id"] == p["id"])
        spans = [(s["start"], s["end"]) for s in sentences
                 if s["citation"] in cited_as and s["doc_id"] == p["doc_id"]]
        start, end = spans[0] if spans else (p["start"], p["end"])
        cards.append({
            **p, "n": n, "cited_as": cited_as,
            "segments": split_marked(p["text"], p["start"], spans),
            "document": documents.get(p["doc_id"], {}),
            "source_url": url_for("pages.document", doc_id=p["doc_id"],
                                  highlight=f"{start}-{end}", _anchor=f"chunk-{p['id']}"),
        })
    parts = [{**s, "card": card_of.get(citations[s["citation"]]["passage_id"])
              if s["citation"] in citations else None} for s in sentences]
    return {"sentences": parts, "cards": cards}



def feedback_fields(response: dict[str, Any]) -> dict[str, str]:
    """The hidden fields of the answer page's feedback form: what the answer was, so that the
    stored feedback names the question, the citations and the index version it judged."""
    return {
        "question": response["question"],
        "answer": response["answer"]["text"],
        "index_version": response["index_version"],
        "citations": json.dumps(response["citations"], ensure_ascii=False,
                                separators=(",", ":")),
    }
