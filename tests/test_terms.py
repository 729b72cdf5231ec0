"""Query terms, and FTS5 expressions that no user input can break."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from qa.service import QAService
from qa.terms import BREAK, content_terms, fts_expression, stem, term_pairs, term_sequence, tokens

NASTY = [
    'say "hello',
    '"unbalanced quote',
    "it's 'single' quotes",
    "water AND fish OR NOT lake NEAR commission",
    "AND",
    "OR OR OR",
    "NEAR(water fish, 3)",
    "water*",
    "*",
    "text: commission",
    "chunks_fts: water",
    "(water OR (fish",
    "water)",
    "-fish",
    "^commission",
    "water + fish - lake",
    "'; DROP TABLE chunks; --",
    "Robert'); DROP TABLE documents;--",
    "1=1 OR 'a'='a'",
    "🌊 water 🐟 fish",
    "بحيرة بايكال المياه",  # Arabic (RTL)
    "\u202eevil\u202c override",
    "water\x00fish",
    "\x00",
    "{text}: lake",
    "col:water AND -fish*",
    "   ",
    "",
    "ŝtŕàńgé ďíàçŕíţíçš",
    "x" * 5000,
    " ".join(f"w{i}" for i in range(100)),
]


@pytest.fixture(scope="module")
def fts() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(text, "
               "tokenize='porter unicode61 remove_diacritics 2')")
    db.executemany("INSERT INTO t(text) VALUES (?)", [
        ("The Joint Water Commission has nine members.",),
        ("Fishing quotas for the omul are set twice a year.",),
        ("بحيرة بايكال",),
    ])
    yield db
    db.close()


def test_tokens_lowercase_any_script() -> None:
    assert tokens("The JWC's 9 members, Ulan-Ude; Байкал!") == [
        "the", "jwc's", "9", "members", "ulan", "ude", "байкал"]
    assert tokens("don’t") == ["don't"]


def test_content_terms_drop_stopwords_and_duplicates() -> None:
    assert content_terms("What is the Joint Water Commission? The commission, a water body.") == [
        "joint", "water", "commission", "body"]
    assert content_terms("a b 7 of") == ["7"]


def test_term_sequence_keeps_order_and_marks_long_gaps() -> None:
    assert term_sequence("The Organization for Security and Development of Asia") == \
        "organiz secur develop asia"
    # more than PAIR_GAP stopwords in a row break the sequence; punctuation does not
    assert term_sequence("Security, as it was and is, matters") == f"secur {BREAK} matter"
    assert term_sequence("of the and") == ""


def test_term_pairs_are_ordered_neighbours_within_the_gap() -> None:
    assert term_pairs("Organization for Security and Development") == {
        ("organiz", "secur"), ("secur", "develop")}
    assert term_pairs("Security, as it was and is, matters") == set()
    assert term_pairs("security, as it was and is, matters", gap=5) == {("secur", "matter")}
    assert term_pairs("security") == set()


@pytest.mark.parametrize(("word", "expected"), [
    ("organizations", "organiz"), ("security", "secur"), ("meetings", "meet"),
    ("measures", "measur"), ("sing", "sing"), ("bus", "bus"), ("agreed", "agre"),
])
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_fts_expression_shape() -> None:
    assert fts_expression("How many members does the Joint Water Commission have?") == (
        '"many" OR "members" OR "joint" OR "water" OR "commission"')
    assert fts_expression("JWC members", extra=["Joint Water Commission", "members"]) == (
        '"jwc" OR "members" OR "joint" OR "water" OR "commission"')
    assert fts_expression("the of and") == ""
    assert fts_expression(" ".join(f"w{i}" for i in range(50)), limit=3) == (
        '"w0" OR "w1" OR "w2"')


@pytest.mark.parametrize("text", NASTY)
def test_nasty_input_is_a_valid_fts5_expression(fts: sqlite3.Connection, text: str) -> None:
    expr = fts_expression(text, extra=[text])
    assert "\x00" not in expr
    if not expr:  # an empty expression is never sent to FTS5 (store.lexical_search returns [])
        assert content_terms(text) == []
        return
    rows = fts.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t)", (expr,)).fetchall()
    assert isinstance(rows, list)


def test_injection_attempt_finds_nothing_special(fts: sqlite3.Connection) -> None:
    expr = fts_expression("'; DROP TABLE t; --")
    assert expr == '"drop" OR "table"'
    assert fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (expr,)).fetchall() == []
    assert fts.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_operator_words_match_as_plain_words(fts: sqlite3.Connection) -> None:
    expr = fts_expression("water NEAR fish*")
    assert expr == '"water" OR "near" OR "fish"'
    hits = {r for (r,) in fts.execute("SELECT rowid FROM t WHERE t MATCH ?", (expr,))}
    assert hits == {1, 2}  # porter: fish ~ fishing


@pytest.mark.parametrize("text", [t for t in NASTY if t.strip("\x00 ")])
def test_nasty_input_through_the_service(tiny_service: QAService, text: str) -> None:
    result = tiny_service.search(text[:1000], mode="lexical")
    assert isinstance(result["passages"], list)
    assert result["index_version"] == tiny_service.reader().version


def test_nasty_inputs_through_hybrid_search(tiny_service: QAService) -> None:
    for text in ['"NEAR(water* fish:', "'; DROP TABLE chunks; --", "🌊 water\x00 بحيرة"]:
        result = tiny_service.search(text, mode="hybrid")
        assert result["passages"], text  # the dense side always returns passages
    assert tiny_service.reader().sql_one("SELECT count(*) FROM chunks")[0] > 0
