"""A local model is identified by the content of its weights, not by its path: weights retrained
in place get new vectors. The ONNX export is verified before it is published, and a failed
export leaves no temp file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qa import embedding
from qa.config import Settings
from qa.embedding import Embedder, resolve_model
from qa.indexing import build_index

BUNDLED = Path(resolve_model("bundled:all-MiniLM-L6-v2")[0])


def _local_model(root: Path) -> Path:
    """A model directory (tokenizer and config of the bundled model, small stand-in weights)."""
    model = root / "my-model"
    model.mkdir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(BUNDLED / name, model / name)
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    return model


def _retrain_in_place(model: Path) -> None:
    weights = bytearray((model / "model.safetensors").read_bytes())
    weights[100] ^= 0x01  # same size, other weights
    (model / "model.safetensors").write_bytes(bytes(weights))


def test_a_local_model_key_follows_its_weights_not_its_path(tmp_path: Path) -> None:
    model = _local_model(tmp_path)
    _, before = resolve_model(str(model))
    assert resolve_model(str(model))[1] == before  # stable while the weights are
    _retrain_in_place(model)
    _, after = resolve_model(str(model))
    assert after != before
    assert str(tmp_path) not in after  # no path in manifests, statuses or pages
    moved = tmp_path / "moved"
    shutil.copytree(model, moved)
    assert resolve_model(str(moved))[1] == after  # same weights, same model


def test_the_onnx_cache_key_follows_the_weights(tmp_path: Path) -> None:
    model = _local_model(tmp_path)
    before = Embedder(str(model), onnx_dir=tmp_path / "onnx").onnx_path()
    _retrain_in_place(model)
    after = Embedder(str(model), onnx_dir=tmp_path / "onnx").onnx_path()
    assert before is not None and after is not None and before != after


def _auto_embedder(embedder: Embedder, onnx_dir: Path) -> Embedder:
    """An ONNX-capable embedder sharing the session's loaded torch model."""
    auto = Embedder(backend="auto", onnx_dir=onnx_dir)
    auto.__dict__["_st"] = embedder.sentence_transformer
    return auto


def test_an_onnx_export_is_verified_before_it_is_published(
        tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    auto = _auto_embedder(embedder, tmp_path / "onnx")
    final = auto.onnx_path()
    assert final is not None
    published_while_checked: list[bool] = []

    def fake_export(st_model: Any, path: Path) -> None:
        path.write_bytes(b"an export that disagrees with torch")

    def disagreeing(self: Embedder, path: Path, texts: Any) -> np.ndarray:
        published_while_checked.append(final.exists())
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors

    monkeypatch.setattr(embedding, "_export_onnx", fake_export)
    monkeypatch.setattr(Embedder, "_encode_onnx_session", disagreeing)
    assert auto.ensure_onnx() is False
    assert published_while_checked == [False]
    assert not final.exists()
    assert list((tmp_path / "onnx").iterdir()) == []


def test_a_failed_onnx_export_leaves_no_temp_file(tmp_path: Path, embedder: Embedder,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def half_written(*args: Any, **kwargs: Any) -> None:
        Path(args[2]).write_bytes(b"half an export")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    auto = _auto_embedder(embedder, tmp_path / "onnx")
    assert auto.ensure_onnx() is False
    assert list((tmp_path / "onnx").iterdir()) == []


def test_an_up_to_date_index_still_gets_its_missing_onnx_export(
        tiny_settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new model identity names a new ONNX file: the next `qa index` exports it even when no
    # document changed, else queries would stay on torch until some document does.
    calls: list[str] = []

    def recorded(self: Embedder) -> bool:
        calls.append(self.model_key)
        return False  # (the export itself is tested above)

    monkeypatch.setattr(Embedder, "ensure_onnx", recorded)
    settings = tiny_settings.replace(encoder="auto")
    auto = _auto_embedder(embedder, settings.index_dir / "cache" / "onnx")
    first = build_index(settings, embedder=auto)
    assert first.changed and calls == ["all-MiniLM-L6-v2"]
    again = build_index(settings, embedder=auto)
    assert not again.changed
    assert calls == ["all-MiniLM-L6-v2"] * 2
