"""Scoring models: JSON files read by name, scored with numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa import quantization, scoring
from qa.errors import ModelError

NAMES = ("a", "b", "c")


def _doc(**changes: object) -> dict[str, object]:
    return {"name": "m", "kind": "logistic", "features": ["c", "a"], "coef": [2.0, -1.0],
            "mean": [1.0, 0.5], "scale": [2.0, 0.5], "intercept": 0.25, "threshold": 0.6,
            "training": "a test", "seed": 0, "date": "2026-12-02", "metrics": {}} | changes


def test_a_model_reads_its_columns_by_name_and_folds_the_standardization_in() -> None:
    model = scoring.from_dict(_doc(), NAMES)
    x = np.array([[1.0, 7.0, 3.0], [0.0, 0.0, 0.0]])
    expected = [2.0 * (3.0 - 1.0) / 2.0 - 1.0 * (1.0 - 0.5) / 0.5 + 0.25,
                2.0 * (0.0 - 1.0) / 2.0 - 1.0 * (0.0 - 0.5) / 0.5 + 0.25]
    assert model.score(x).tolist() == pytest.approx(expected)
    assert model.probability(x).tolist() == pytest.approx(
        [1 / (1 + np.exp(-v)) for v in expected])
    assert model.threshold == 0.6 and model.meta["training"] == "a test"
    assert model.score(np.zeros((0, 3))).shape == (0,)


@pytest.mark.parametrize(("changes", "message"), [
    ({"features": ["a", "zz"]}, "does not compute"),
    ({"coef": [1.0]}, "do not match"),
    ({"scale": [1.0, 0.0]}, "do not match"),
    ({"kind": "forest"}, "unknown kind"),
    ({"intercept": "high"}, "not a scoring model"),
])
def test_malformed_models_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        scoring.from_dict(_doc(**changes), NAMES)


def test_an_unreadable_file_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        scoring.load_model(tmp_path / "m.json", NAMES)


@pytest.mark.parametrize("name", sorted(scoring.FEATURE_SETS))
def test_packaged_models_say_how_they_were_made(name: str) -> None:
    doc = json.loads((scoring.MODELS_DIR / f"{name}.json").read_text())
    assert doc["name"] == name
    for key in ("features", "training", "seed", "date", "metrics"):
        assert doc[key] not in (None, "", {}), key
    assert "SQuAD" in doc["training"] and "Normans" not in doc["training"]  # held out
    model = scoring.model(name)
    assert set(model.features) <= set(scoring.FEATURE_SETS[name])
    assert np.isfinite(model.weights).all()


@pytest.mark.parametrize("name", sorted(scoring.FEATURE_SETS))
def test_packaged_models_were_fitted_with_the_packaged_query_encoder(name: str) -> None:
    """Every feature of a question depends on the query encoder: models fitted before the
    int8 encoder shipped gave other coefficients than bench/train.py gives with it."""
    verdict = quantization.shipped_verdict()
    assert verdict is not None and verdict["passed"]
    doc = json.loads((scoring.MODELS_DIR / f"{name}.json").read_text())
    assert doc["query_encoder"] == verdict["model_file"]


def test_the_calibrator_has_an_operating_point() -> None:
    threshold = scoring.model("calibrator").threshold
    assert threshold is not None and 0 < threshold < 1


def test_an_installed_model_replaces_the_packaged_one_until_removed() -> None:
    packaged = scoring.model("calibrator")
    doc = {"name": "calibrator", "kind": "logistic", "features": ["best_similarity"],
           "coef": [3.0], "intercept": -1.0}
    scoring.install("calibrator", doc)
    try:
        assert scoring.model("calibrator").features == ("best_similarity",)
    finally:
        scoring.install("calibrator", None)
    assert scoring.model("calibrator") is packaged
    with pytest.raises(ModelError):
        scoring.install("nothing", doc)
