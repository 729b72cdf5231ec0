"""The quantization gate: ship the int8 query encoder only if it answers as well as the float one.

Builds the int8 model of the configured model's ONNX export (``qa.quantization``: smoothed, then
dynamic int8 with weights per channel), then asks
the same questions of the same indexes with the float query encoder and with the int8 one:
- the gold set's held-out half (`qa eval --split held_out`): hit@5, answer accuracy, abstention
  on unanswerable questions, false abstention;
- SQuAD 2.0 dev, the five held-out articles (bench/squad.py): hybrid hit@1, answer accuracy,
  abstention on unanswerable and on answerable questions.
Quality figures must be within half a point of the float model's, abstention figures within half
a point either way (the calibrated abstention unchanged). On a pass, a gate record keyed by the
int8 file's sha256 is written next to it and the service uses it (QA_QUERY_PRECISION=auto); on a
failure the int8 file is deleted and the record says why, so a failing model is never served.
With ``--ship`` the record is also written to ``qa/models/query-int8.gate.json``, the verdict that
ships with the package: a fresh install's ``qa index`` rebuilds the same file from the same export
(the build is reproducible; the record names the export's and the int8 file's sha256) and uses it.

    python bench/quant_gate.py --squad ../shared/bench/squad-v2.0-dev.json [--ship]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOLERANCE = 0.005  # half a point
# (figure, rule): "quality" may not drop by more than TOLERANCE, "unchanged" may not move by more.
RULES = {
    "gold_hit@5": "quality",
    "gold_answer_accuracy": "quality",
    "gold_abstention": "unchanged",
    "gold_false_abstention": "unchanged",
    "squad_hit@1": "quality",
    "squad_answer_accuracy": "quality",
    "squad_unanswerable_abstained": "unchanged",
    "squad_abstained": "unchanged",
}


def decide(float_figures: Mapping[str, float], int8_figures: Mapping[str, float],
           tolerance: float = TOLERANCE) -> tuple[bool, list[str]]:
    """(passed, the figures that failed and why). A figure missing on either side fails."""
    failures = []
    for name, rule in RULES.items():
        if name not in float_figures or name not in int8_figures:
            failures.append(f"{name}: not measured")
            continue
        base, new = float(float_figures[name]), float(int8_figures[name])
        moved = new - base
        if (rule == "quality" and moved < -tolerance - 1e-12) or (
                rule == "unchanged" and abs(moved) > tolerance + 1e-12):
            failures.append(f"{name}: {base:.4f} -> {new:.4f} ({rule}, tolerance {tolerance})")
    return not failures, failures


def gold_figures(service: Any) -> dict[str, float]:
    from qa.evaluation import DEFAULT_GOLD, evaluate, load_gold

    questions = [q for q in load_gold(DEFAULT_GOLD) if q.split == "held_out"]
    report = evaluate(service, questions)
    return {"gold_hit@5": report["hit@5"], "gold_answer_accuracy": report["answer_accuracy"],
            "gold_abstention": report["abstention"],
            "gold_false_abstention": report["false_abstention"]}


def squad_figures(service: Any, answerable: list[dict[str, Any]],
                  unanswerable: list[dict[str, Any]]) -> dict[str, float]:
    from squad import answer_metrics, retrieval_metrics

    hybrid = retrieval_metrics(service, answerable, "hybrid")
    answers = answer_metrics(service, answerable + unanswerable)
    return {"squad_hit@1": hybrid["hit@1"], "squad_answer_accuracy": answers["answer_accuracy"],
            "squad_unanswerable_abstained": answers["unanswerable_abstained"],
            "squad_abstained": answers["abstained"]}


def main() -> None:
    from common import PROJECT
    from squad import HELD_OUT, SQUAD_DEV, load_squad, sample, write_corpus

    from qa import onnx_sessions, quantization, store
    from qa.config import Settings
    from qa.embedding import Embedder
    from qa.indexing import build_index
    from qa.service import QAService

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=PROJECT / "index",
                        help="the index whose encoder cache gets the int8 model")
    parser.add_argument("--squad", type=Path, default=SQUAD_DEV,
                        help="SQuAD 2.0 dev JSON (read, never copied)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/qa-quant-gate"),
                        help="corpus and index of the SQuAD paragraphs (reused between runs)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--ship", action="store_true",
                        help="also write the verdict to qa/models (shipped with the package)")
    args = parser.parse_args()
    if not args.squad.is_file():
        sys.exit(f"SQuAD 2.0 dev split not found at {args.squad}: the gate needs it")

    gold_settings = Settings.load({"index_dir": args.index_dir, "corpus_dir": PROJECT / "corpus",
                                   "encoder": "auto"}, environ={})
    build_index(gold_settings)
    docs, questions = load_squad(args.squad)
    write_corpus(docs, args.workdir / "corpus")
    squad_settings = Settings.load({"corpus_dir": args.workdir / "corpus",
                                    "index_dir": args.workdir / "index", "encoder": "auto"},
                                   environ={})
    build_index(squad_settings)
    held = [q for q in questions if q["article"] in HELD_OUT]
    answerable = sample(held, len(held), 0, impossible=False)
    unanswerable = sample(held, len(held), 0, impossible=True)

    onnx_dir = args.index_dir / "cache" / "onnx"
    export = Embedder(onnx_dir=onnx_dir).onnx_path()
    if export is None or not export.is_file():
        sys.exit("no ONNX export of the model: run `qa index` first")
    int8 = onnx_sessions.int8_path(export)
    onnx_sessions.gate_path(int8).unlink(missing_ok=True)  # a new file needs a new verdict
    embedder = Embedder(onnx_dir=onnx_dir)
    quantization.build_int8(export, int8, embedder.word_piece_ids)
    figures: dict[str, dict[str, float]] = {}
    for name, query_onnx in (("float", None), ("int8", int8)):
        started = time.perf_counter()
        figures[name] = {}
        for settings, measure in ((gold_settings, "gold"), (squad_settings, "squad")):
            embedder = Embedder(settings.model, backend="onnx",
                                onnx_dir=settings.index_dir / "cache" / "onnx",
                                query_precision="float",
                                query_onnx=query_onnx)
            service = QAService(settings, embedder=embedder).load()
            figures[name] |= (gold_figures(service) if measure == "gold"
                              else squad_figures(service, answerable, unanswerable))
        print(f"{name}: {json.dumps(figures[name])} ({time.perf_counter() - started:.0f} s)")
    passed, failures = decide(figures["float"], figures["int8"])
    record = {"passed": passed, "failures": failures, "tolerance": TOLERANCE, "rules": RULES,
              "float": figures["float"], "int8": figures["int8"],
              "squad_questions": {"answerable": len(answerable),
                                  "unanswerable": len(unanswerable)},
              "method": f"smoothed (alpha {quantization.SMOOTHING_ALPHA}), dynamic int8 per channel",
              "export_sha256": store.verification.file_sha256(export),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    written = onnx_sessions.write_gate(int8, record)
    if args.ship:
        shipped = PROJECT / "qa" / "models" / quantization.SHIPPED_GATE
        shipped.write_text(written.read_text())
        print(f"verdict shipped: {shipped.relative_to(PROJECT)}")
    if not passed:
        int8.unlink()  # never served: the record stays to say why
    print("\n| figure | float | int8 | rule |\n|---|---|---|---|")
    for key, rule in RULES.items():
        print(f"| {key} | {figures['float'].get(key, float('nan')):.4f} | "
              f"{figures['int8'].get(key, float('nan')):.4f} | {rule} |")
    print(f"\ngate: {'PASSED: the int8 query encoder is used' if passed else 'FAILED: not shipped'}"
          + "".join(f"\n  {f}" for f in failures))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
