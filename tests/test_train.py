"""bench/train.py on a tiny SQuAD-shaped data set: three model files that the service loads,
each saying what it was fitted on, reproduced exactly by a second run; held-out articles refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from qa import scoring

BENCH = Path(__file__).resolve().parent.parent / "bench"

ARTICLES = {
    "Glaciers": [
        ("The Pamir glaciers lost a fifth of their ice between 1980 and 2010. Surveys were "
         "made by Tajik and German teams. The largest glacier is the Fedchenko Glacier, 77 "
         "kilometres long.",
         [("How much ice did the Pamir glaciers lose?", ["a fifth"]),
          ("Which glacier is the largest in the Pamir?", ["Fedchenko"]),
          ("Who flew the first survey of the Pamir glaciers?", [])]),
        ("Glacier melt feeds the Amu Darya river. In summer the river carries three times its "
         "winter flow. Farmers in Uzbekistan depend on it for cotton.",
         [("What does glacier melt feed?", ["Amu Darya"]),
          ("How much more does the river carry in summer?", ["three times"]),
          ("What do farmers in Kazakhstan grow with the river water?", [])]),
    ],
    "Railways": [
        ("The Lanzhou to Urumqi line opened in 1962. It crosses the Gansu corridor and was "
         "electrified in 2012. Trains take eleven hours on it today.",
         [("When did the Lanzhou to Urumqi line open?", ["1962"]),
          ("Which corridor does the line cross?", ["Gansu"]),
          ("When was the line's second track finished?", [])]),
        ("Container trains from Chongqing reach Duisburg in sixteen days. The route passes "
         "through Kazakhstan, Russia, Belarus and Poland. Gauge changes happen twice.",
         [("How long do container trains from Chongqing take to Duisburg?", ["sixteen days"]),
          ("How often does the gauge change on the route?", ["twice"]),
          ("What do the trains carry back from Duisburg?", [])]),
    ],
    "Lakes": [
        ("Lake Balkhash is half fresh and half salt water. A narrow strait separates its two "
         "parts. The Ili river brings most of its water.",
         [("Which river brings most of Lake Balkhash's water?", ["Ili"]),
          ("What separates the two parts of Lake Balkhash?", ["narrow strait"]),
          ("How deep is Lake Balkhash?", [])]),
        ("Issyk-Kul never freezes although it lies high in the mountains. Its water is "
         "slightly salty. Soviet navy torpedoes were tested in the lake.",
         [("What was tested in Issyk-Kul?", ["torpedoes"]),
          ("Does Issyk-Kul freeze in winter?", ["never freezes"]),
          ("Who discovered Issyk-Kul?", [])]),
    ],
}


def _squad(path: Path) -> None:
    data = []
    for title, paragraphs in ARTICLES.items():
        paras = []
        for p, (context, questions) in enumerate(paragraphs):
            qas = [{"id": f"{title}-{p}-{n}", "question": q, "is_impossible": not answers,
                    "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}
                   for n, (q, answers) in enumerate(questions)]
            paras.append({"context": context, "qas": qas})
        data.append({"title": title, "paragraphs": paras})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))


@pytest.fixture
def train_main() -> object:
    pytest.importorskip("sklearn")  # the `train` extra, part of the test extra too
    sys.path.insert(0, str(BENCH))
    try:
        import train

        yield train.main
    finally:
        sys.path.remove(str(BENCH))
        for name in scoring.FEATURE_SETS:
            scoring.install(name, None)


@pytest.mark.slow
def test_train_writes_three_reproducible_models(tmp_path: Path, train_main: object) -> None:
    data = tmp_path / "squad.json"
    _squad(data)
    runs = []
    for run in ("one", "two"):
        out = tmp_path / run
        train_main(["--data", str(data), "--articles", *ARTICLES, "--workdir",  # type: ignore[operator]
                    str(tmp_path / "work"), "--out", str(out), "--encoder", "torch",
                    "--no-gold"])
        runs.append({n: json.loads((out / f"{n}.json").read_text()) for n in scoring.FEATURE_SETS})
    first, second = runs
    for name, doc in first.items():
        assert doc["name"] == name and doc["seed"] == 0 and doc["date"]
        assert "3 articles" in doc["training"] and "cross-validated by article" in doc["training"]
        assert doc["metrics"]
        model = scoring.from_dict(doc, scoring.FEATURE_SETS[name])
        assert np.isfinite(model.weights).all()
        assert {k: v for k, v in doc.items() if k != "date"} == \
            {k: v for k, v in second[name].items() if k != "date"}  # reproduced exactly
    assert "cv_top1" in first["reranker"]["metrics"]
    assert 0 < first["calibrator"]["threshold"] < 1
    assert "cv_ece" in first["calibrator"]["metrics"]


def test_train_refuses_held_out_articles(tmp_path: Path, train_main: object) -> None:
    with pytest.raises(SystemExit, match="held-out"):
        train_main(["--data", str(tmp_path / "none.json"), "--articles", "Normans"])  # type: ignore[operator]



@pytest.fixture
def train_module() -> object:
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(BENCH))
    try:
        import train

        yield train
    finally:
        sys.path.remove(str(BENCH))


def test_removed_source_questions_ask_answerable_ones_without_their_source(
        train_module: object) -> None:
    questions = [
        {"id": "b", "question": "Q b?", "doc": "p1", "answers": ["x"], "impossible": False},
        {"id": "a", "question": "Q a?", "doc": "p1", "answers": ["y"], "impossible": False},
        {"id": "c", "question": "Q c?", "doc": "p1", "answers": [], "impossible": True},
        {"id": "d", "question": "Q d?", "doc": "p2", "answers": ["z"], "impossible": False},
        {"id": "e", "question": "Q e?", "doc": None, "answers": [], "impossible": True},
    ]
    made = train_module.removed_source_questions(questions, 1)  # type: ignore[attr-defined]
    assert [(q["id"], q["removed"]) for q in made] == [("a-removed", "p1"), ("d-removed", "p2")]
    assert all(q["impossible"] and q["synthetic"] and q["answers"] == [] for q in made)
    assert made[0]["question"] == "Q a?" and not questions[1].get("synthetic")
    two = train_module.removed_source_questions(questions, 2)  # type: ignore[attr-defined]
    assert [q["id"] for q in two] == ["a-removed", "b-removed", "d-removed"]
    assert train_module.removed_source_questions(questions, 0) == []  # type: ignore[attr-defined]


def test_synthetic_rows_keep_the_folds_and_the_gold_weight(train_module: object) -> None:
    t = train_module
    real_articles = [a for a in ("A", "B", "C", "D", "E", "F") for _ in range(4 + ord(a) % 3)]
    real_articles += ["gold-a"] * 3 + ["gold-b"] * 3
    articles = real_articles + ["A"] * 9 + ["F"] * 2 + ["gold-a"] * 2
    real = np.array([True] * len(real_articles) + [False] * 13)
    folds = t.folds_of(articles, real)  # type: ignore[attr-defined]
    plain = t.grouped_folds(real_articles)  # type: ignore[attr-defined]
    assert len(folds) == len(plain)
    for (train, test), (_, real_test) in zip(folds, plain, strict=True):
        assert sorted(set(test.tolist()) & set(range(len(real_articles)))) == \
            sorted(real_test.tolist())  # the real rows' folds are unchanged
        held = {articles[i] for i in test}
        assert not held & {articles[i] for i in train}  # whole articles, synthetic rows too
    weights = t.group_weights(articles, real)  # type: ignore[attr-defined]
    assert np.allclose(weights[:len(real_articles)], t.group_weights(real_articles))  # type: ignore[attr-defined]
    assert np.allclose(weights[-2:], weights[len(real_articles) - 1])  # gold weight per row


def test_abstention_figures_count_each_kind_apart(train_module: object) -> None:
    p = np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.1, 0.6, 0.05])
    right = np.array([True, False, False, False, True, False, False, False])
    answerable = np.array([True, True, False, False, True, True, False, False])
    articles = ["A", "A", "A", "A", "gold-a", "gold-b", "gold-a", "gold-b"]
    kinds = [None] * 4 + [None, None, "unanswerable-ontopic", "unanswerable-offtopic"]
    out = train_module.abstention_figures(p, right, answerable, articles, kinds, 0.5)  # type: ignore[attr-defined]
    assert out["squad_unanswerable_abstained"] == 0.5 and out["squad_false_abstention"] == 0.5
    assert out["gold_ontopic_abstained"] == 0.0 and out["gold_offtopic_abstained"] == 1.0
    assert out["gold_false_abstention"] == 0.5 and out["gold_ontopic_abstained_n"] == 1
    assert 0 < out["squad_aurc"] < 1 and 0 < out["gold_aurc"] < 1


@pytest.mark.slow
def test_removed_paragraph_rows_train_the_calibrator_and_are_not_counted(
        tmp_path: Path, train_main: object, train_module: object) -> None:
    from qa.config import Settings
    from qa.service import QAService

    data = tmp_path / "squad.json"
    _squad(data)
    out = tmp_path / "out"
    train_main(["--data", str(data), "--articles", *ARTICLES, "--workdir",  # type: ignore[operator]
                str(tmp_path / "work"), "--out", str(out), "--encoder", "torch", "--no-gold",
                "--calibrator-only", "--removed-paragraph", "1"])
    assert sorted(p.name for p in out.iterdir()) == ["calibrator.json"]
    doc = json.loads((out / "calibrator.json").read_text())
    assert doc["metrics"]["synthetic_questions"] == 6  # one a paragraph
    assert doc["metrics"]["questions"] == 18  # the real ones only
    assert "6 answerable training questions (up to 1 a paragraph)" in doc["training"]
    settings = Settings.load({"corpus_dir": tmp_path / "work" / "corpus",
                              "index_dir": tmp_path / "work" / "index",
                              "abstain_threshold": 0.0, "encoder": "torch"}, environ={})
    asked = [{"question": "Which glacier is the largest in the Pamir?", "removed": "00-000"},
             {"question": "Which glacier is the largest in the Pamir?"}]
    traced = train_module.trace_questions(QAService(settings).load(), asked, "t")  # type: ignore[attr-defined]
    without, with_it = ([p["doc_id"] for p in r["passages"]] for _, _, r in traced)
    assert "00-000" in with_it and "00-000" not in without and without
