"""Questions that name a document's author: the name matching, and the ranking it changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_settings

from qa import scoring
from qa.attribution import author_table, name_parts, name_spans, named_documents
from qa.embedding import Embedder
from qa.evidence import SentenceEvidence
from qa.features import PASSAGE_FEATURES, passage_matrix
from qa.indexing import build_index
from qa.service import QAService

DOCS = [
    {"doc_id": "chen-2015", "authors": ["Chen Dongxiao"]},
    {"doc_id": "qiang-2016", "authors": ["Qiang Xiaoyun"]},
    {"doc_id": "smith-2020", "authors": ["J. R. Smith", "He Yafei"]},
    {"doc_id": "summary-2021", "authors": []},
]


@pytest.mark.parametrize(("author", "parts"), [
    ("Chen Dongxiao", ["Chen", "Dongxiao"]),
    ("J. R. Smith", ["Smith"]),  # initials are no name a question uses alone
    ("He Yafei", ["Yafei"]),  # "He" would match the pronoun
    ("O'Brien-Kelly", ["O'Brien-Kelly"]),
    ("", []),
])
def test_name_parts(author: str, parts: list[str]) -> None:
    assert name_parts(author) == parts


@pytest.mark.parametrize(("question", "named"), [
    ("According to Qiang, which document serves as the CICA's charter?", {"qiang-2016"}),
    ("In Chen's three-step plan, what is the phase covering the 2020s called?", {"chen-2015"}),
    ("What does Chen Dongxiao say about the Secretariat?", {"chen-2015"}),
    ("Do Chen and Smith agree on the budget?", {"chen-2015", "smith-2020"}),
    ("What does Yafei propose?", {"smith-2020"}),
    ("He said what about the Secretariat?", set()),  # the pronoun, not the surname He
    ("according to chen, what is OSCA?", set()),  # names are matched as written
    ("What did Chenxi propose?", set()),  # part of a longer word
    ("What is the Chen-style roadmap?", set()),  # part of a hyphenated word
    ("Who chairs the CICA in 2021?", set()),
])
def test_named_documents(question: str, named: set[str]) -> None:
    assert named_documents(question, author_table(DOCS)) == named


def test_documents_without_authors_are_left_out_of_the_table() -> None:
    assert [doc_id for doc_id, _ in author_table(DOCS)] == ["chen-2015", "qiang-2016",
                                                            "smith-2020"]
    assert named_documents("According to anyone?", ()) == frozenset()


def test_the_reranker_lifts_the_named_authors_passages() -> None:
    text = "The Secretariat needs stable budgets."
    found = {r: [SentenceEvidence(r, r, 0, len(text), text, 0.6, 0.5)] for r in (1, 2)}
    dense, lexical, fused = {1: 0.5, 2: 0.5}, {1: 3.0, 2: 3.0}, {1: 0.03, 2: 0.03}
    matrix = passage_matrix([1, 2], dense=dense, lexical=lexical, fused=fused, found=found,
                            named={2})
    assert matrix[:, PASSAGE_FEATURES.index("named_author")].tolist() == [0.0, 1.0]
    scores = scoring.model("reranker").score(matrix)
    assert scores[1] > scores[0]


def _write(corpus: Path, name: str, text: str, authors: list[str]) -> None:
    (corpus / f"{name}.txt").write_text(text, encoding="utf-8")
    (corpus / f"{name}.meta.json").write_text(
        json.dumps({"title": name.replace("-", " ").title(), "authors": authors}),
        encoding="utf-8")


def test_naming_the_author_ranks_their_document_first(tmp_path: Path,
                                                      embedder: Embedder) -> None:
    """The unnamed document matches the question's wording better and wins without the name;
    naming the other document's author puts that document first."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _write(corpus, "ivanova-water-report", (
        "Regional water security rests on shared monitoring of the lake basin. "
        "The basin commission ought to meet twice a year to examine the monitoring data."),
        ["Elena Ivanova"])
    _write(corpus, "basin-commission-summary", (
        "Water security in the region depends on joint monitoring of the lake basin. "
        "The basin commission should meet every year to review the monitoring data."),
        [])
    settings = make_settings(corpus, tmp_path / "index", encoder="torch")
    build_index(settings, embedder=embedder)
    service = QAService(settings, embedder=embedder)

    def ranking(question: str) -> list[str]:
        return [p["doc_id"] for p in service.search(question, k=2)["passages"]]

    question = "how often should the basin commission meet to review monitoring data?"
    assert ranking(f"So {question}") == ["basin-commission-summary", "ivanova-water-report"]
    assert ranking(f"According to Ivanova, {question}") == ["ivanova-water-report",
                                                           "basin-commission-summary"]


def test_name_spans_mark_where_the_question_names_an_author() -> None:
    table = author_table(DOCS)
    question = "In Chen's three-step plan, what does Chen Dongxiao call the 2020s?"
    assert [question[a:b] for a, b in name_spans(question, table)] == [
        "Chen", "Chen", "Dongxiao"]
    assert name_spans("What did He say about water?", table) == ()
