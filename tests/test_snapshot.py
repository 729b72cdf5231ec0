"""One index snapshot per published version: a request never mixes two versions, and the acronym
and author matching is compiled once per snapshot."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from qa import acronyms, attribution, retrieval, store
from qa.config import Settings
from qa.embedding import Embedder
from qa.service import QAService

NEW_DOC = ("The Zonal Trade Agreement\n\nThe Zonal Trade Agreement (ZTA) was signed in Tashkent "
           "in 2034. It lowers tariffs on cotton and grain between the five signatories.\n")


def test_a_request_never_mixes_two_index_versions(tiny_settings: Settings, embedder: Embedder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The request that arrives during the switch must come within one reload interval of it
    # (else it waits for the switch): a generous interval keeps that true on a loaded machine.
    service = QAService(tiny_settings.replace(reload_interval=3.0), embedder=embedder)
    service.index()
    first = service.reader().version
    (tiny_settings.corpus_dir / "zonal-trade.txt").write_text(NEW_DOC)
    (tiny_settings.corpus_dir / "zonal-trade.meta.json").write_text(
        json.dumps({"title": "The Zonal Trade Agreement", "authors": ["Farida Karimova"]}))
    second = service.index().version
    assert second != first

    # Every question records the version it answered from and the acronyms and authors it
    # was matched against.
    seen: list[tuple[set[str], set[str]]] = []
    real_prepare = retrieval.prepare_query

    def recording_prepare(question: str, acronym_table: Any, author_table: Any = (),
                          **kwargs: Any) -> retrieval.Query:
        shorts = {short for short, _ in acronym_table}
        authors = {doc_id for doc_id, _ in author_table}
        seen.append((shorts, authors))
        return real_prepare(question, acronym_table, author_table, **kwargs)

    monkeypatch.setattr(retrieval, "prepare_query", recording_prepare)

    # While the service is switching to the second version (reading its documents to build the
    # author table), another request arrives.
    answers: list[dict[str, Any]] = []
    real_documents = store.IndexReader.documents
    fired = threading.Event()

    def documents_during_switch(reader: store.IndexReader) -> list[dict[str, Any]]:
        if reader.version == second and not fired.is_set():
            fired.set()
            other = threading.Thread(
                target=lambda: answers.append(service.ask("What does ZTA stand for?",
                                                          use_cache=False)))
            other.start()
            other.join(timeout=60)
        return real_documents(reader)

    monkeypatch.setattr(store.IndexReader, "documents", documents_during_switch)
    time.sleep(3.1)  # let the reload interval pass: the next call switches
    after = service.ask("What does ZTA stand for?", use_cache=False)
    assert fired.is_set() and len(answers) == 1
    assert after["index_version"] == second

    versions = [answers[0]["index_version"], after["index_version"]]
    assert len(seen) == 2
    for version, (shorts, authors) in zip(versions, seen, strict=True):
        reader = store.IndexReader(store.Layout(tiny_settings.index_dir).build_dir(version))
        try:
            expected_shorts = {short for short, _ in reader.acronyms()}
            expected_authors = {d["doc_id"] for d in real_documents(reader) if d["authors"]}
        finally:
            reader.close()
        assert shorts == expected_shorts, version
        assert authors == expected_authors, version
    assert "ZTA" in seen[1][0] and "ZTA" not in seen[0][0]


def test_acronym_table_matches_like_the_pair_list() -> None:
    pairs = [("JWC", "Joint Water Commission"), ("OSCA", "Organization for Security and "
             "Cooperation in Asia"), ("TTF", "Think Tank Forum"), ("A&B", "Alpha and Beta")]
    table = acronyms.AcronymTable(pairs)
    assert list(table) == pairs
    for question in ("What does the JWC do?", "Who chairs the Joint Water Commission?",
                     "Did the joint water commission (JWC) meet?", "How many TTFs met?",
                     "What is OSCA's role in the think-tank forum?", "Was A&B founded?",
                     "Nothing here", "JWCs and OSCA"):
        assert acronyms.aliases(question, table) == acronyms.aliases(question, pairs), question


def test_author_table_matches_in_one_pass_like_per_document_patterns() -> None:
    documents = [{"doc_id": "chen", "authors": ["Chen Dongxiao"]},
                 {"doc_id": "qiang", "authors": ["Qiang Xin", "J. R. Smith"]},
                 {"doc_id": "smith", "authors": ["Smith"]},
                 {"doc_id": "nobody", "authors": []}]
    table = attribution.author_table(documents)
    per_document = tuple(table)  # plain (doc_id, pattern) pairs: one search per document
    assert [doc_id for doc_id, _ in per_document] == ["chen", "qiang", "smith"]
    for question in ("According to Chen, what happened?", "In Smith's view?",
                     "What did Dongxiao and Qiang write?", "He said so", "chen wrote"):
        assert attribution.named_documents(question, table) == attribution.named_documents(
            question, per_document), question
        assert attribution.name_spans(question, table) == attribution.name_spans(
            question, per_document), question
