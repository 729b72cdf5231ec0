"""Quality floors on the bundled corpus and the held-out half of its gold set: a regression in
retrieval, answers or abstention fails CI. The floors sit a few points under the figures measured
in bench/RESULTS.md. The tuning half may be used to tune models; the floors never look at it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.evaluation import DEFAULT_GOLD, SPLITS, evaluate, load_gold, squash
from qa.service import QAService

PROJECT = Path(__file__).resolve().parent.parent
# On the held-out half (34 answerable, 37 unanswerable questions); measured 2026-12-02 with the
# models fitted on SQuAD and the tuning half (pipeline 9): hit@5 0.912, hit@1 0.794, MRR 0.821,
# accuracy 0.794, on-topic unanswerable abstained 0.182 (6 of 33), false abstention 0.059 (2 of
# 34: the issue's 0.05 is missed by one question, bench/RESULTS.md). Each floor sits about one
# question under the figure measured: a guard against regressions, not the issue's targets.
FLOORS = {"hit@5": 0.85, "hit@1": 0.73, "mrr@10": 0.77, "answer_accuracy": 0.76,
          "ontopic_abstention": 0.15}
MAX_FALSE_ABSTENTION = 0.09


def _gold_rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in DEFAULT_GOLD.read_text().splitlines() if line.strip()]


def test_gold_set_shape() -> None:
    rows = _gold_rows()
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    assert len(answerable) >= 40
    assert len(unanswerable) >= 10
    assert sum(r["kind"] == "unanswerable-offtopic" for r in unanswerable) >= 6
    corpus_docs = {p.stem for p in (PROJECT / "corpus").glob("*.txt")}
    assert {r["doc"] for r in answerable} == corpus_docs  # every document is asked about
    assert len({r["id"] for r in rows}) == len(rows)
    kinds = {r["kind"] for r in answerable}
    assert {"factoid", "descriptive", "paraphrased", "acronym"} <= kinds
    assert sum(r["kind"] == "unanswerable-ontopic" for r in unanswerable) >= 38


def test_gold_split_is_fixed_by_id_and_covers_every_kind() -> None:
    rows = _gold_rows()
    recorded = json.loads((DEFAULT_GOLD.parent / "gold_split.json").read_text())
    for split in SPLITS:
        ids = {r["id"] for r in rows if r["split"] == split}
        assert ids == set(recorded[split])
        assert {r["kind"] for r in rows if r["split"] == split} == {r["kind"] for r in rows}
    assert {r["split"] for r in rows} == set(SPLITS)


@pytest.mark.parametrize("row", [r for r in _gold_rows() if r["answerable"]],
                         ids=lambda r: str(r["id"]))
def test_gold_quote_is_verbatim_and_holds_the_answer(row: dict[str, str]) -> None:
    text = (PROJECT / "corpus" / f"{row['doc']}.txt").read_text(encoding="utf-8")
    assert squash(row["quote"]) in squash(text)
    answers = [row["answer"], *row.get("answer_aliases", [])]
    assert any(a.lower() in row["quote"].lower() for a in answers)


@pytest.mark.slow
def test_quality_floors_on_the_held_out_half(cica_service: QAService) -> None:
    report = evaluate(cica_service, [q for q in load_gold(DEFAULT_GOLD) if q.split == "held_out"])
    for metric, floor in FLOORS.items():
        assert report[metric] >= floor, (metric, report[metric])
    assert report["offtopic_abstained"] == report["offtopic"]
    assert report["false_abstention"] <= MAX_FALSE_ABSTENTION
    cited = [q for q in report["questions"] if q["answerable"] and not q["abstained"]]
    assert cited  # answers were given, and each was checked against the stored text by the core


@pytest.mark.slow
def test_acronyms_the_issue_names_are_found_in_the_bundled_corpus(
        cica_service: QAService) -> None:
    found = dict(cica_service.reader().acronyms())
    for short in ("CICA", "OSCA", "CBM", "SIIS", "TTF", "SCO"):
        assert short in found, short
    assert found["TTF"] == "Think Tank Forum"  # from "CICA Think Tank Forum (CICA TTF)"


@pytest.mark.slow
def test_every_citation_slices_the_stored_text(cica_service: QAService) -> None:
    reader = cica_service.reader()
    for row in _gold_rows()[:20]:
        response = cica_service.ask(str(row["question"]))
        for sentence in response["answer"]["sentences"]:
            text = reader.document_text(sentence["doc_id"])
            assert text is not None
            assert text[sentence["start"]:sentence["end"]] == sentence["text"]
            assert f"[{sentence['citation']}]" in response["answer"]["text"]
        numbers = {c["n"] for c in response["citations"]}
        assert numbers == {s["citation"] for s in response["answer"]["sentences"]}
        ids = {p["id"] for p in response["passages"]}
        assert {c["passage_id"] for c in response["citations"]} <= ids


@pytest.mark.slow
def test_an_on_topic_unanswerable_question_abstains_with_a_reason(cica_service: QAService) -> None:
    """The documents never say which languages CICA works in (a question from the issue)."""
    response = cica_service.ask("What are CICA's working languages?")
    answer = response["answer"]
    assert answer["abstained"] and not answer["sentences"] and not response["citations"]
    assert "languages" in answer["reason"]
    assert 0 <= answer["confidence"] < 0.5
    assert response["passages"]  # the nearest passages are still listed


@pytest.mark.slow
def test_a_table_row_is_quoted_as_the_answer(cica_service: QAService) -> None:
    """Chen's Table 1 lists the coordinators of each confidence-building measure: the row is
    the answer, quoted exactly, where its caption used to be quoted instead."""
    response = cica_service.ask("Which country coordinates the CICA confidence-building "
                                "measures on tourism?")
    answer = response["answer"]
    assert not answer["abstained"]
    first = answer["sentences"][0]
    assert first["text"] == "8\tTourism\tTajikistan"
    assert first["doc_id"] == "chen-dongxiao-cica-transformation-2015"
