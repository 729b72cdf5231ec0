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

