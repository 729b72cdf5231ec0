"""Fitted scoring models: loaded from small JSON files in ``qa/models/``, evaluated with numpy.

Each file records the model's kind (a linear model: logistic regression, or a listwise
ranker), the names of the features it reads (from ``qa.features``), its coefficients, and how
it was made: the training data, the seed, the date and its cross-validated metrics. ``bench/
train.py`` writes them; nothing here fits anything. A model reads its columns by name, so a
feature matrix with more columns, or columns in another order, is scored correctly, and a model
naming a feature the code no longer computes fails when it is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from qa import features
from qa.errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# "logistic": the score is a log-odds (a probability through the sigmoid); "listwise": a ranker
# whose scores compare candidates of one question (a softmax over them), not across questions.
KINDS = ("logistic", "listwise")
FEATURE_SETS = {
    "reranker": features.PASSAGE_FEATURES,
    "selector": features.SENTENCE_FEATURES,
    "calibrator": features.QUESTION_FEATURES,
}


@dataclass(frozen=True)
class LinearModel:
    """score(X) = X[:, columns] @ weights + bias, the standardization folded in at load."""

    name: str
    features: tuple[str, ...]
    columns: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float | None  # operating point on the probability, where one was chosen
    meta: dict[str, Any]

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """The linear score (log-odds) of each row."""
        if matrix.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        return matrix[:, self.columns] @ self.weights + self.bias

    def probability(self, matrix: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.score(matrix)))


def from_dict(doc: dict[str, Any], known: tuple[str, ...]) -> LinearModel:
    """A model from its JSON document; ``known``: the feature names the code computes, in
    matrix-column order."""
    try:
        name = str(doc["name"])
        if doc["kind"] not in KINDS:
            raise ModelError(f"model {name}: unknown kind {doc['kind']!r}")
        names = tuple(str(f) for f in doc["features"])
        coef = np.asarray(doc["coef"], dtype=np.float64)
        mean = np.asarray(doc.get("mean", [0.0] * len(names)), dtype=np.float64)
        scale = np.asarray(doc.get("scale", [1.0] * len(names)), dtype=np.float64)
        intercept = float(doc["intercept"])
        threshold = doc.get("threshold")
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"not a scoring model ({e})") from e
    if not (len(names) == coef.size == mean.size == scale.size) or np.any(scale <= 0):
        raise ModelError(f"model {name}: features, coefficients and scales do not match")
    unknown = [f for f in names if f not in known]
    if unknown:
        raise ModelError(f"model {name} reads features the code does not compute: {unknown}")
    weights = coef / scale
    return LinearModel(name, names, np.array([known.index(f) for f in names], dtype=np.intp),
                       weights, intercept - float(mean @ weights),
                       None if threshold is None else float(threshold),
                       {k: v for k, v in doc.items() if k not in ("coef", "mean", "scale")})


def load_model(path: Path, known: tuple[str, ...]) -> LinearModel:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read scoring model {path}: {e}") from e
    return from_dict(doc, known)


_installed: dict[str, LinearModel] = {}


def model(name: str) -> LinearModel:
    """The model ``name`` (reranker, selector or calibrator): the one ``install``ed, else the
    packaged one (loaded once)."""
    return _installed.get(name) or _packaged(name)


@cache
def _packaged(name: str) -> LinearModel:
    if name not in FEATURE_SETS:
        raise ModelError(f"no scoring model named {name!r}")
    return load_model(MODELS_DIR / f"{name}.json", FEATURE_SETS[name])


def install(name: str, doc: dict[str, Any] | None) -> None:
    """Score with the model of JSON document ``doc`` in this process instead of the packaged
    one (None: back to the packaged one). Training uses it to fit one model on the output of
    the models fitted before it."""
    if doc is None:
        _installed.pop(name, None)
        return
    if name not in FEATURE_SETS:
        raise ModelError(f"no scoring model named {name!r}")
    _installed[name] = from_dict(doc, FEATURE_SETS[name])
