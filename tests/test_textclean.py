"""Tests for qa.textclean: repairs of PDF-extracted text, with exact raw offsets."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from qa.textclean import _LIST_ITEM, CleanText, normalize

CORPUS = Path("/work/shared/corpus")
CORPUS_NAMES = [
    "000_fd4d13a4756475ea.txt",
    "001_3648a55223182ca7.txt",
    "002_f5b6e8a9389a2704.txt",
    "003_75639365ed1c03cd.txt",
    "004_1fa90f58a6bf7379.txt",
]

# Short excerpts copied from the real corpus files (hard-wrapped 002/003, paragraph-per-line 004).
ABSTRACT = """ ABSTRACT

he article contains an overview of the
T activities of the Conference on Inte-

raction and Confidence-Building Mea-
sures in Asia (CICA), a structure aimed at
creating a comprehensive mechanism for
developing and reconciling the positions of
Asian countries on key security issues. Interaction matters.
The presence of both resource-pro-
ducing countries and large oil and gas im-
porters in the organization creates the pre-
 conditions for the formation of an energy
block within its framework, which will in-
crease the energy security of its member
states. Both resource-producing countries and the preconditions
of international and regional securi-
ty are discussed, and security again.

(1) adhere to the principle of trust and strive
for good neighborliness;

(2) adhere to the principle of cooperation
and mutual benefit;
"""

REAL_HYPHENS = """Introduction

Kazakhstan’s initiative to convene the Conference on Interaction and Confidence-Building
Measures in Asia (CICA, Conference) is almost thirty years old. It was first proposed at the 47th ses-
sion of the U.N. General Assembly on 5 October, 1992. Its renewed politi-
cal and economic core has emerged. However, only
time will reveal the capabilities of this core, provided the burden of unresolved problems in Sino-
Indian relations, and the Indo-Pakistani confrontation in the Kashmir (the Indo-
Pakistani conflict) and the Program for 2019-
2021 and the Anti-Drug Strategy for 2018-2023. Building trust is confidence-building work:
the CICA continuously improves its confidence-
building measures.
"""

FOOTNOTE_002 = """Notably, judging just by its official documents (SCO Charter, SCO Development Strategy until
2025, etc.), the SCO avoids being considered a military political organization. There is also resistance

2 [https://www.nur.kz/politics/universe/1799778-tokavev-prinal-ucastie-v-v-sammite-svmda/].
 (mainly from China) to the transformation of the SCO into an association with an integrative function
that creates supranational governing bodies.

CICA and SCO

The development and evolution of the Shanghai Cooperation Organization will be of great importance.
"""

FOOTNOTE_004 = """Necessity of CICA's Transformation

As of 2014, CICA had developed into a multilateral international platform boasting 26 member states and 11 observers, and established such mechanisms as a leaders' summit and the meeting of

¹For a more detailed depiction of CICA's function, see the *Declaration on the Principles Guiding Relations between the CICA Member States*, signed in Almaty on September 14, 1999.

ministers of foreign affairs as well as confidence building measures (CBMs) in multiple areas.²

However, CICA's international influence is still limited.³ Meanwhile, the region has risen.⁴

²For detailed information about CICA's evolution, see "Evolution of CICA Process" at http://www.s-cica.org/page.php?page_id=141&lang=1&parent_id=133.
"""  # noqa: E501

MARKERS_003 = """According to
incomplete statistics, in 2014 there was 2383
global terrorist attacks in total, while as high
as 1794 terrorist attacks in the Asian region,
accounting for 75.28% of the total global
terrorist attacks.1 In addition, "Jihad Salafists"
trend of thoughts expands to Afghanistan. Another 1.00
million Afghan refugees to be registered. 3 A
huge refugee problem, as in No. 3, 2019,
pp. 29-43. From the 47th Session on 5 October, 1992 onwards the
global system.!

It reached Asia and Europe.4However, piracy persists and so on.7
"""

BULLETS_002 = """Two new factors influence and dominate the global security
systems.

m  The first factor is the COVID-19 pandemic that broke out in 2020. The epidemiological
crisis is truly unprecedented.

m  The second factor is the sharp aggravation and confrontation in the cyber security sphere.
"""

HEADINGS_003 = """ Understanding of the Security Cooperation under the CICA
Framework from the Evolving Security Concept

By Qiang Xiaoyun, Shanghai Institutes for International Studies

Since the inception of the twenty-first
Century, the economic development of Asia
attracts attentions of the world.

I. Security Challenges: Dynamics For
the CICA Security Cooperation

The Asian region where the CICA member
states and observer states are located is
currently facing a series of complex and serious
security challenges, including traditional and
non-traditional security issues. The CICA declaration expresses resolve to oppose

March 2016 Serial No. 118



- 23 -

the challenges and threats to peace, security
and stability in Asia.

III. China’s Possible Contribution to CICA
In the course of CICA development, China has

been actively involved in various stages of the work.
"""

MARKDOWN_001 = """

## Report

### **“Asian Regional Security Cooperation in the context of the COVID-19 Pandemic”**

On December 21, 2020, the *8th international round table of the Asia-Pacific Think Tank Forum* held at the SIIS. Yang Jiemian provided a comprehensive and in-depth summary of

the meeting. The main points of views of the participants are summarized below for readers.
"""  # noqa: E501

SAMPLES = [ABSTRACT, REAL_HYPHENS, FOOTNOTE_002, FOOTNOTE_004, MARKERS_003, BULLETS_002,
           HEADINGS_003, MARKDOWN_001]


def paragraphs(clean: CleanText) -> list[str]:
    return clean.text.split("\n\n")


def assert_invariants(raw: str, clean: CleanText) -> None:
    assert len(clean.raw_offsets) == len(clean.text) + 1
    assert clean.raw_offsets[-1] == len(raw)
    for i, char in enumerate(clean.text):
        assert 0 <= clean.raw_offsets[i] < len(raw)
        if not char.isspace():
            assert raw[clean.raw_offsets[i]] == char, (i, char)
    assert clean.text == clean.text.strip()
    assert "\n\n\n" not in clean.text
    if clean.text:
        # One line per paragraph, but for a table (a row per line, cells split by tabs) and a
        # numbered or dashed list (an item per line).
        assert all(p and ("\n" not in p or all("\t" in row for row in p.split("\n"))
                          or all(_LIST_ITEM.match(item) for item in p.split("\n")))
                   for p in paragraphs(clean))
    starts = [s.start for s in clean.sections]
    assert starts == sorted(starts)
    for section in clean.sections:
        assert clean.text[section.start : section.start + len(section.title)] == section.title
        assert "\n" not in section.title and "*" not in section.title
        assert not section.title.startswith("#")


def test_line_break_hyphens_are_joined() -> None:
    text = normalize(ABSTRACT).text
    assert "Conference on Interaction and Confidence-Building Measures in Asia" in text
    assert "regional security are discussed" in text
    assert "resource-producing countries and large oil and gas importers" in text
    assert "creates the preconditions for the formation" in text
    assert "will increase the energy security" in text
    assert "-\n" not in text and "securi-" not in text


def test_real_hyphens_are_kept() -> None:
    text = normalize(REAL_HYPHENS).text
    assert "Confidence-Building Measures in Asia" in text
    assert "the 47th session of the U.N. General Assembly on 5 October, 1992." in text
    assert "political and economic core" in text
    assert "Sino-Indian relations" in text
    assert "in the Kashmir (the Indo-Pakistani conflict)" in text
    assert "the Program for 2019-2021 and" in text
    assert "improves its confidence-building measures." in text


def test_hard_wraps_are_unwrapped_and_paragraph_breaks_kept() -> None:
    paras = paragraphs(normalize(ABSTRACT))
    assert paras[0] == "ABSTRACT"
    assert paras[1].startswith("he article contains an overview of the T activities of the ")
    assert paras[1].endswith("and security again.")
    assert paras[2:] == [
        "(1) adhere to the principle of trust and strive for good neighborliness;",
        "(2) adhere to the principle of cooperation and mutual benefit;",
    ]


def test_crlf_form_feed_and_runs_of_spaces() -> None:
    raw = "First  line\r\nwraps\there.\r\n\r\nSecond\fThird   para.\r\n"
    clean = normalize(raw)
    assert paragraphs(clean) == ["First line wraps here.", "Second", "Third para."]
    assert_invariants(raw, clean)


def test_headings_are_detected_and_wrapped_headings_joined() -> None:
    clean = normalize(HEADINGS_003)
    titles = [s.title for s in clean.sections]
    assert titles == [
        "Understanding of the Security Cooperation under the CICA Framework from the Evolving "
        "Security Concept",
        "I. Security Challenges: Dynamics For the CICA Security Cooperation",
        "III. China’s Possible Contribution to CICA",
    ]
    body = clean.text.index("The Asian region where")
    assert clean.section_at(body) == titles[1]
    assert clean.section_at(0) == titles[0]
    assert "In the course of CICA development, China has been actively involved" in clean.text


def test_page_furniture_does_not_break_a_paragraph() -> None:
    paras = paragraphs(normalize(HEADINGS_003))
    joined = next(p for p in paras if p.startswith("The Asian region"))
    assert joined.endswith("expresses resolve to oppose the challenges and threats to peace, "
                           "security and stability in Asia.")
    after = paras.index(joined)
    assert paras[after + 1 : after + 3] == ["March 2016 Serial No. 118", "- 23 -"]


def test_markdown_headings_and_emphasis() -> None:
    clean = normalize(MARKDOWN_001)
    text = clean.text
    assert [s.title for s in clean.sections] == [
        "Report",
        "“Asian Regional Security Cooperation in the context of the COVID-19 Pandemic”",
    ]
    assert "the 8th international round table of the Asia-Pacific Think Tank Forum held" in text
    assert "comprehensive and in-depth summary of the meeting. The main points" in text
    assert "*" not in text and "#" not in text


def test_footnote_moved_out_and_paragraph_rejoined() -> None:
    clean = normalize(FOOTNOTE_002)
    assert clean.footnotes_start is not None
    body, notes = clean.text[: clean.footnotes_start], clean.text[clean.footnotes_start :]
    assert "There is also resistance (mainly from China) to the transformation of the SCO" in body
    assert "https://" not in body
    assert notes == "2 [https://www.nur.kz/politics/universe/1799778-tokavev-prinal-ucastie-v-v-" \
                    "sammite-svmda/]."
    assert [s.title for s in clean.sections] == ["CICA and SCO"]
    assert clean.section_at(clean.footnotes_start) is None


def test_superscript_footnotes_moved_out_in_order() -> None:
    clean = normalize(FOOTNOTE_004)
    assert clean.footnotes_start is not None
    body, notes = clean.text[: clean.footnotes_start], clean.text[clean.footnotes_start :]
    assert ("established such mechanisms as a leaders' summit and the meeting of ministers of "
            "foreign affairs as well as confidence building measures (CBMs) in multiple areas.\n\n"
            ) in body
    assert "limited. Meanwhile, the region has risen." in body
    assert not any(c in body for c in "¹²³⁴")
    assert notes.startswith("¹For a more detailed depiction of CICA's function, see the Decl")
    assert notes.index("¹For") < notes.index("²For")
    assert "\n\n²For detailed information" in notes


def test_inline_markers_removed_but_real_numbers_kept() -> None:
    text = normalize(MARKERS_003).text
    assert "accounting for 75.28% of the total global terrorist attacks. In addition, " in text
    assert "in 2014 there was 2383 global terrorist attacks" in text
    assert "Another 1.00 million Afghan refugees to be registered. A huge refugee problem" in text
    assert "as in No. 3, 2019, pp. 29-43. From the 47th Session on 5 October, 1992 onwards" in text
    assert text.endswith("the global system.\n\nIt reached Asia and Europe. However, piracy "
                         "persists and so on.")


def test_ocr_bullets_removed() -> None:
    paras = paragraphs(normalize(BULLETS_002))
    assert paras[1].startswith("The first factor is the COVID-19 pandemic")
    assert paras[2] == ("The second factor is the sharp aggravation and confrontation in the "
                        "cyber security sphere.")
    assert not any(p.startswith("m ") for p in paras)


def test_raw_span_and_section_at_edges() -> None:
    raw = "Intro-\nduction here.\n\nNext  part."
    clean = normalize(raw)
    assert clean.text == "Introduction here.\n\nNext part."
    start = clean.text.index("Introduction")
    assert clean.raw_span(start, start + len("Introduction")) == (0, len("Intro-\nduction"))
    assert clean.raw_span(0, len(clean.text)) == (0, len(raw))
    assert clean.raw_span(5, 5) == (clean.raw_offsets[5],) * 2
    assert clean.section_at(0) is None
    assert clean.footnotes_start is None


@pytest.mark.parametrize("raw", [*SAMPLES, "", "   \n\t\n", "\r\n\r\n\f", "\x00\x01\ufffd", "-",
                                 "a-\n", "²", "## ", "**", "m  ", "(", "1 See: x", "\ud800 x"])
def test_offsets_map_every_visible_char_to_the_same_raw_char(raw: str) -> None:
    assert_invariants(raw, normalize(raw))


def test_offsets_hold_on_seeded_noise() -> None:
    rng = random.Random(20240601)
    alphabet = ["a", "B", " ", "  ", "-\n", "\n\n", "\t", "\r\n", "\f", ".", "!", "1", "²", "*",
                "#", "(", "“", "m  ", "■", "\u00ad", "\u00a0", "\x00", "word", "Title", "-\n\n"]
    for _ in range(500):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert_invariants(raw, normalize(raw))


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            CORPUS / name,
            id=name[:3],
            marks=pytest.mark.skipif(not (CORPUS / name).exists(), reason="corpus file missing"),
        )
        for name in CORPUS_NAMES
    ],
)
def test_real_corpus_files(path: Path) -> None:
    raw = path.read_text(encoding="utf-8")
    clean = normalize(raw)
    assert_invariants(raw, clean)
    assert re.search(r"\w-\n", clean.text) is None  # 003 keeps its page number line "- 23 -"
    assert clean.sections
    assert len(clean.text) > 0.9 * len(raw.strip())
