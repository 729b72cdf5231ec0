"""Sentence-aligned, token-budgeted chunking with exact offsets (real corpus and synthetic text)."""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from qa import textclean
from qa.chunking import Chunk, SentenceSpan, chunk_text, count_tokens, split_sentences
from qa.corpus import discover, load_document
from qa.embedding import Embedder

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
BUDGETS = [(200, 40), (64, 16), (512, 100)]  # 512 tiktoken tokens overflow the 256 model window
CORPUS_IDS = [s.doc_id for s in discover(CORPUS)[0]]

FILLER = [
    "The forum met in Almaty to discuss regional security.",
    "Delegates from twenty-seven member states attended the plenary session.",
    "A working group on economic cooperation presented its annual report, which covered "
    "trade facilitation, customs procedures and the development of transport corridors.",
    "Observers noted progress.",
    "The chair thanked the secretariat for its work over the previous year and invited "
    "the delegations to submit proposals before the next meeting of senior officials.",
    "Confidence building measures were reviewed in five dimensions: military-political, "
    "new challenges and threats, economic, environmental and human.",
]


def _synthetic_markdown() -> str:
    parts = ["# A Synthetic Report on Regional Cooperation", ""]
    n = 0
    for section in range(6):
        parts += [f"## Part {section + 1}: Topic number {section + 1}", ""]
        for _ in range(4):
            sentences = [FILLER[(n + k) % len(FILLER)] for k in range(2 + n % 4)]
            parts += [" ".join(sentences), ""]
            n += 1
    giant = " ".join(f"clause{i} of the endless enumeration" for i in range(500))
    parts += ["## Appendix", "", giant, "", "A closing sentence after the giant one.", ""]
    return "\n".join(parts)


@cache
def _normalized(doc_id: str) -> textclean.CleanText:
    source = next(s for s in discover(CORPUS)[0] if s.doc_id == doc_id)
    return textclean.normalize(load_document(source, CORPUS).raw)


def _check_chunks(chunks: list[Chunk], doc_id: str, text: str, budget: int, overlap: int,
                  sections: list[tuple[int, str]], embedder: Embedder) -> None:
    spans = split_sentences(text)
    sentence_starts = {s.start for s in spans}

    def sentence_at(offset: int) -> SentenceSpan:
        return next(s for s in spans if s.start <= offset < s.end)

    assert chunks
    covered = bytearray(len(text))
    for n, c in enumerate(chunks):
        assert c.chunk_id == f"{doc_id}-c{n:04d}"
        assert (c.doc_id, c.ordinal) == (doc_id, n)
        assert c.text == text[c.start:c.end]
        assert c.text == c.text.strip()
        assert c.n_tokens == count_tokens(c.text) <= budget
        assert embedder.fits(c.text), (c.chunk_id, embedder.count_word_pieces(c.text))
        assert embedder.count_word_pieces(c.text) <= 256
        if c.start not in sentence_starts:
            # only a sentence too long for one chunk may be entered mid-way, at a word start
            whole = text[sentence_at(c.start).start:sentence_at(c.start).end]
            assert count_tokens(whole) > budget or not embedder.fits(whole), c.chunk_id
            assert text[c.start - 1].isspace()
        expected_section = None
        for start, title in sorted(sections):
            if start <= c.start:
                expected_section = title
        assert c.section == expected_section
        covered[c.start:c.end] = b"\1" * (c.end - c.start)
    # nothing skipped: every non-space character lies in some chunk
    missed = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert missed == []
    for prev, nxt in pairwise(chunks):
        assert nxt.start > prev.start
        shared = [(max(s.start, nxt.start), min(s.end, prev.end)) for s in spans
                  if s.start < prev.end and s.end > nxt.start]
        carried = sum(count_tokens(text[a:b]) for a, b in shared) if nxt.start < prev.end else 0
        assert carried <= overlap, (prev.chunk_id, nxt.chunk_id)
    # every heading starts a chunk and no chunk runs across one
    chunk_starts = {c.start for c in chunks}
    for start, _title in sections:
        assert start in chunk_starts
        assert not any(c.start < start < c.end for c in chunks)


@pytest.mark.parametrize(("budget", "overlap"), BUDGETS)
@pytest.mark.parametrize("doc_id", CORPUS_IDS)
def test_corpus_chunks_hold_every_invariant(embedder: Embedder, doc_id: str, budget: int,
                                            overlap: int) -> None:
    clean = _normalized(doc_id)
    sections = [(s.start, s.title) for s in clean.sections]
    chunks = chunk_text(doc_id, clean.text, budget=budget, overlap=overlap, sections=sections,
                        fits=embedder.fits)
    _check_chunks(chunks, doc_id, clean.text, budget, overlap, sections, embedder)


def test_corpus_has_enough_material() -> None:
    assert len(CORPUS_IDS) == 5
    assert sum(len(_normalized(d).sections) for d in CORPUS_IDS) >= 10


@pytest.mark.parametrize(("budget", "overlap"), BUDGETS)
def test_synthetic_text_holds_every_invariant(embedder: Embedder, budget: int,
                                              overlap: int) -> None:
    clean = textclean.normalize(_synthetic_markdown())
    sections = [(s.start, s.title) for s in clean.sections]
    assert [t for _, t in sections][:2] == [
        "A Synthetic Report on Regional Cooperation", "Part 1: Topic number 1"]
    assert sections[-1][1] == "Appendix"
    chunks = chunk_text("synth", clean.text, budget=budget, overlap=overlap, sections=sections,
                        fits=embedder.fits)
    _check_chunks(chunks, "synth", clean.text, budget, overlap, sections, embedder)
    assert len(chunks) >= 10
    assert any(c.n_tokens > overlap for c in chunks)
    # overlap really happens between sentences of the same section
    assert any(b.start < a.end for a, b in pairwise(chunks))


def test_chunk_ids_are_stable(embedder: Embedder) -> None:
    clean = _normalized("cica-ttf-8th-roundtable-report-2020")
    sections = [(s.start, s.title) for s in clean.sections]
    first = chunk_text("doc", clean.text, sections=sections, fits=embedder.fits)
    second = chunk_text("doc", clean.text, sections=sections, fits=embedder.fits)
    assert first == second
    assert [c.chunk_id for c in first][:3] == ["doc-c0000", "doc-c0001", "doc-c0002"]


def test_giant_sentence_is_split_into_fitting_pieces(embedder: Embedder) -> None:
    words = [f"term{i}" for i in range(2000)]
    text = " ".join(words)
    chunks = chunk_text("giant", text, budget=200, overlap=40, fits=embedder.fits)
    assert len(chunks) > 10
    for c in chunks:
        assert c.text == text[c.start:c.end]
        assert c.n_tokens <= 200
        assert embedder.fits(c.text)
        assert c.start == 0 or text[c.start - 1] == " "
        assert c.end == len(text) or text[c.end] == " "
    # the pieces, in order, hold every word exactly once
    assert [w for c in chunks for w in c.text.split()] == words


def test_model_window_binds_before_the_token_budget(embedder: Embedder) -> None:
    # digits with separators cost more word pieces than tiktoken tokens
    text = " ".join(f"{i:,}.{i % 97:02d}-x{i}" for i in range(100_000, 100_600))
    assert count_tokens(text) > 512
    chunks = chunk_text("nums", text, budget=512, overlap=0, fits=embedder.fits)
    assert all(embedder.fits(c.text) for c in chunks)
    extended = [text[c.start:chunks[n + 1].end] for n, c in enumerate(chunks[:-1])]
    assert any(count_tokens(e) <= 512 and not embedder.fits(e) for e in extended)


def test_pages_are_looked_up_at_chunk_start() -> None:
    text = "One sentence here. Another one follows.\n\nA second paragraph starts."
    chunks = chunk_text("p", text, budget=32, overlap=0,
                        page_of=lambda offset: 1 if offset < 41 else 2)
    assert [(c.text, c.page) for c in chunks] == [
        ("One sentence here. Another one follows.\n\nA second paragraph starts.", 1)]
    small = chunk_text("p", text, budget=8, overlap=0,
                       page_of=lambda offset: 1 if offset < 41 else 2)
    assert [c.page for c in small] == [1, 1, 2]


def test_empty_text_has_no_chunks() -> None:
    assert chunk_text("e", "") == []
    assert chunk_text("e", "  \n\n  ") == []


def test_split_sentences_never_crosses_paragraphs() -> None:
    text = "  First sentence. Second one continues here.  \n\nNew paragraph without end\n\n\n"
    spans = split_sentences(text)
    assert [text[s.start:s.end] for s in spans] == [
        "First sentence.", "Second one continues here.", "New paragraph without end"]


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("<|endoftext|>") > 1  # special tokens are plain text here


def test_giant_word_is_split_into_fitting_pieces(embedder: Embedder) -> None:
    url = "https://example.org/" + "/".join(f"segment{i}" for i in range(300))
    text = f"See {url} for details."
    chunks = chunk_text("url", text, budget=200, overlap=40, fits=embedder.fits)
    assert all(c.text == text[c.start:c.end] for c in chunks)
    assert max(c.n_tokens for c in chunks) <= 200
    assert all(embedder.fits(c.text) for c in chunks)
