"""The int8 query encoder: the ONNX export smoothed, then dynamically quantized, reproducibly.

Owns how the int8 model is made, not whether it is used: ``onnx_sessions`` serves it only behind a
passing gate (``bench/quant_gate.py``), and a gate verdict shipped with the package
(``SHIPPED_GATE``) holds only for the very file it names by sha256.

- **Smoothing** (SmoothQuant, Xiao et al. 2023). Dynamic quantization gives every activation
  tensor one int8 scale; a few hidden dimensions of a BERT-like model carry values far larger than
  the rest, so the others lose their precision. Before each weight MatMul, the input's dimension j
  is divided by ``s_j = amax_j**alpha / wmax_j**(1 - alpha)`` (a ``Mul`` node) and row j of the
  weight multiplied by it: the same function in float, with the outliers moved into the weights,
  which are quantized per channel. ``amax`` is each input's largest magnitude over calibration
  questions; ``wmax`` the weight row's.
- **Calibration** on the gold set's tuning half (shipped, never held out), so anybody with the
  package and the same export makes the same bytes, and a shipped verdict can name them.
- **Quantization**: onnxruntime's ``quantize_dynamic``, int8 weights per channel.

Measured (bench/RESULTS.md, issue #19): cosine to the float query vectors on 800 SQuAD
training-article questions, mean / min: plain dynamic int8 0.9940 / 0.9879; smoothed (alpha 0.75)
0.9980 / 0.9932; 3-4x faster than the float export on one thread.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

# Fitted on SQuAD training-article questions (cosine to the float vectors; alphas 0.0-1.0 tried:
# 0.5 -> 0.9893 mean, 0.75 -> 0.9980, 1.0 -> 0.9971), never on held-out questions.
SMOOTHING_ALPHA = 0.75
SCALE_RANGE = (1e-2, 1e2)  # a smoothing factor outside this is clipped (dead or huge channels)
SHIPPED_GATE = "query-int8.gate.json"  # in qa/models: the gate's verdict on the bundled model

Tokenize = Callable[[str], Sequence[int]]  # text -> word-piece ids, [CLS] and [SEP] included


def calibration_questions() -> list[str]:
    """The questions activation ranges are measured on: the gold set's tuning half."""
    from qa.evaluation import DEFAULT_GOLD, load_gold

    return [q.question for q in load_gold(DEFAULT_GOLD) if q.split == "tuning"]


def shipped_verdict() -> dict[str, Any] | None:
    """The gate record shipped in the package for the bundled model's int8 file, if any."""
    try:
        text = resources.files("qa").joinpath("models", SHIPPED_GATE).read_text()
    except (FileNotFoundError, OSError):
        return None
    data = json.loads(text)
    return data if isinstance(data, dict) else None


def _feeds(tokenize: Tokenize, questions: Sequence[str]) -> list[dict[str, np.ndarray]]:
    feeds = []
    for question in questions:
        ids = np.asarray([list(tokenize(question))], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                      "token_type_ids": np.zeros_like(ids)})
    return feeds


def _weight_matmuls(model: Any) -> list[Any]:
    """The MatMul nodes whose second input is a stored weight (not attention's own products)."""
    weights = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in weights]


def activation_maxima(export: Path, tokenize: Tokenize,
                      questions: Sequence[str]) -> dict[str, np.ndarray]:
    """Each weight MatMul input's largest magnitude per dimension, over ``questions``."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(export))
    inputs = sorted({n.input[0] for n in _weight_matmuls(model)})
    for name in inputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    maxima: dict[str, np.ndarray] = {}
    for feed in _feeds(tokenize, questions):
        for name, value in zip(names, session.run(None, feed), strict=True):
            if name in inputs:
                seen = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                maxima[name] = np.maximum(maxima[name], seen) if name in maxima else seen
    return maxima


def smooth(model: Any, maxima: dict[str, np.ndarray], alpha: float = SMOOTHING_ALPHA) -> Any:
    """``model`` with each weight MatMul's input scaled down per dimension and its weight rows
    scaled up to match (the same function in float); changed in place and returned."""
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    targets = {n.name for n in _weight_matmuls(model)}
    nodes = []
    for node in model.graph.node:
        if node.name in targets:
            weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
            amax = np.maximum(maxima[node.input[0]], 1e-5)
            wmax = np.maximum(np.abs(weight).max(axis=1), 1e-5)
            scale = np.clip(amax ** alpha / wmax ** (1 - alpha), *SCALE_RANGE).astype(np.float32)
            weights[node.input[1]].CopyFrom(
                numpy_helper.from_array(weight * scale[:, None], node.input[1]))
            inverse = f"{node.name}/smoothing"
            model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, inverse))
            smoothed = f"{node.name}/smoothed_input"
            nodes.append(helper.make_node("Mul", [node.input[0], inverse], [smoothed],
                                          name=f"{node.name}/smooth"))
            node.input[0] = smoothed
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def build_int8(export: Path, target: Path, tokenize: Tokenize,
               questions: Sequence[str] | None = None, alpha: float = SMOOTHING_ALPHA) -> Path:
    """Write the smoothed int8 model of ``export`` at ``target`` (temp file, then
    ``os.replace``): the same bytes for the same export and questions. Returns ``target``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    questions = calibration_questions() if questions is None else questions
    maxima = activation_maxima(export, tokenize, questions)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as work:
        smoothed = Path(work) / "smoothed.onnx"
        onnx.save(smooth(onnx.load(str(export)), maxima, alpha), str(smoothed))
        quantized = Path(work) / "int8.onnx"
        quantize_dynamic(str(smoothed), str(quantized), weight_type=QuantType.QInt8,
                         per_channel=True)
        with open(quantized, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(quantized, target)
    return target
