"""Tables and lists: a row or an item is a span of its own, read with its caption and headers,
and quoted as the answer when it is one."""

from __future__ import annotations

import pytest

from qa import tables, textclean
from qa.answering import is_answer_candidate
from qa.chunking import split_sentences
from qa.indexing import sentence_read_text

RAW = ("Coordinators are listed below.\n\n"
       "Table 1. Coordinating countries of the CBMs.\n\n"
       "No.\tSpecific CBMs\tCoordinator\tCo-coordinator\n"
       "1\tCombating illicit drugs\tIran\tAfghanistan\n"
       "2\tDisaster management\tIran\t\n"
       "3\tTourism\tTajikistan\t\n\n"
       "Source: Evolution of CICA Process.\n\n"
       "The members agreed on three points:\n"
       "- to meet every two years in Astana\n"
       "- to keep a secretariat in Almaty\n")


@pytest.fixture(scope="module")
def text() -> str:
    return textclean.normalize(RAW).text


def spans(text: str) -> list[str]:
    return [text[s.start:s.end] for s in split_sentences(text)]


def test_normalization_keeps_a_table_as_rows_of_tab_separated_cells(text: str) -> None:
    assert "No.\tSpecific CBMs\tCoordinator\tCo-coordinator\n1\tCombating illicit drugs" in text
    assert "3\tTourism\tTajikistan\n\nSource" in text  # the empty last cell is gone


def test_each_row_and_each_item_is_a_span_of_its_own(text: str) -> None:
    found = spans(text)
    assert "2\tDisaster management\tIran" in found
    assert "3\tTourism\tTajikistan" in found
    assert "No.\tSpecific CBMs\tCoordinator\tCo-coordinator" in found  # not cut after "No."
    assert "- to meet every two years in Astana" in found
    assert "- to keep a secretariat in Almaty" in found


def test_a_row_is_read_under_its_caption_and_headers(text: str) -> None:
    start = text.index("3\tTourism")
    read = sentence_read_text(text, start, start + len("3\tTourism\tTajikistan"))
    assert read == ("Table 1. Coordinating countries of the CBMs. No.: 3; Specific CBMs: Tourism; "
                    "Coordinator: Tajikistan")
    header = text.index("No.\t")
    assert tables.row_context(text, header, text.index("\n", header)) is None
    prose = text.index("Coordinators")
    assert sentence_read_text(text, prose, prose + 12) == "Coordinators"


def test_rows_and_items_are_answer_candidates_only_inside_their_block(text: str) -> None:
    row = "3\tTourism\tTajikistan"
    assert tables.in_line_block(text, text.index(row))
    assert is_answer_candidate(row, listed=True)
    assert not is_answer_candidate(row)  # the same words outside a table: no stop, no answer
    header = text.index("No.\t")
    assert not tables.in_line_block(text, header)  # a table's header row is no answer
    item = "- to meet every two years in Astana"
    assert tables.in_line_block(text, text.index(item))
    assert is_answer_candidate(item, listed=True)
    assert not is_answer_candidate("2. Regional Security Architecture", listed=False)
    assert not tables.in_line_block(text, text.index("Source"))


def test_a_lone_numbered_line_is_no_block() -> None:
    assert not tables.is_line_block(["2. Regional Security Architecture"])
    assert tables.is_line_block(["a\tb", "c\td", "some prose line"])
    assert not tables.is_line_block(["a\tb", "prose", "more prose", "and more"])
