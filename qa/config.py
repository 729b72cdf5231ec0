"""Settings: the one place that reads configuration.

Precedence: built-in defaults < ``QA_*`` environment variables < explicit overrides (CLI flags or
``create_app(settings)``). Every value is validated when the object is built, so a bad value fails
early with the key, the expected type and the accepted range. No other module reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from qa.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def _checkout_root(package_dir: Path) -> Path | None:
    """The source checkout the package runs from (an editable install or a clone on the path),
    or None for an installed wheel, whose parent is site-packages."""
    root = package_dir.parent
    if (root / "pyproject.toml").is_file() and (root / "templates").is_dir():
        return root
    return None


CHECKOUT_ROOT = _checkout_root(PACKAGE_DIR)
# Where corpus/ and index/ are by default: the checkout's, or (installed from a wheel) the current
# directory's, resolved when used.
DATA_ROOT = CHECKOUT_ROOT if CHECKOUT_ROOT is not None else Path()
DATA_ROOT_KIND = "checkout" if CHECKOUT_ROOT is not None else "current directory"
# The wheel carries the top-level templates/ folder as qa/templates; a checkout keeps it on top.
TEMPLATES_DIR = (PACKAGE_DIR / "templates" if (PACKAGE_DIR / "templates").is_dir()
                 else PACKAGE_DIR.parent / "templates")
STATIC_DIR = PACKAGE_DIR / "static"
BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"
RAY_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")
RATE_LIMIT_SCHEMES = ("redis://", "rediss://", "unix://", "memory://")


@dataclass(frozen=True)
class Settings:
    """All tunable values of the service. Field metadata holds the help text and bounds."""

    corpus_dir: Path = field(
        default=DATA_ROOT / "corpus", metadata={"help": "Directory of source documents."}
    )
    index_dir: Path = field(
        default=DATA_ROOT / "index", metadata={"help": "Directory of built index versions."}
    )
    model: str = field(
        default=BUNDLED_MODEL,
        metadata={"help": "Sentence-transformers model name or path."},
    )
    encoder: str = field(
        default="auto",
        metadata={
            "help": "Query/passage encoder backend: auto (ONNX when exportable), torch or onnx.",
            "choices": ("auto", "torch", "onnx"),
        },
    )
    chunk_tokens: int = field(
        default=200, metadata={"help": "Chunk budget in tiktoken tokens.", "min": 32, "max": 512}
    )
    chunk_overlap: int = field(
        default=40, metadata={"help": "Tokens of overlap between chunks.", "min": 0, "max": 256}
    )
    top_k: int = field(
        default=5, metadata={"help": "Passages returned per question.", "min": 1, "max": 20}
    )
    candidates: int = field(
        default=50,
        metadata={"help": "Candidates taken from each retriever before fusion.", "min": 5,
                  "max": 1000},
    )
    dense_weight: float = field(
        default=1.0, metadata={"help": "RRF weight of dense retrieval.", "min": 0.0, "max": 10.0}
    )
    sentence_weight: float = field(
        default=1.0,
        metadata={"help": "RRF weight of sentence-level dense retrieval.", "min": 0.0,
                  "max": 10.0},
    )
    lexical_weight: float = field(
        default=1.0, metadata={"help": "RRF weight of BM25 retrieval.", "min": 0.0, "max": 10.0}
    )
    rerank: int = field(
        default=1,
        metadata={"help": "Rerank fused candidates on sentence evidence (1) or keep RRF order (0).",
                  "min": 0, "max": 1},
    )
    late_interaction: int = field(
        default=1,
        metadata={"help": "Store every chunk's word-piece vectors and rerank on late interaction "
                          "(1), or not (0: up to 100 KB less per chunk on disk).",
                  "min": 0, "max": 1},
    )
    rrf_k: int = field(
        default=60, metadata={"help": "Reciprocal rank fusion constant.", "min": 1, "max": 1000}
    )
    # The confidence is the calibrator's probability that the answer is right (qa/scoring.py);
    # its operating point was chosen on training data and is stored with the model.
    abstain_threshold: float = field(
        default=-1.0,
        metadata={"help": "Answer confidence (probability of being right) below which the service "
                          "abstains; -1: the operating point stored with the fitted calibrator.",
                  "min": -1.0, "max": 1.0},
    )
    max_answer_sentences: int = field(
        default=2, metadata={"help": "Sentences in an answer.", "min": 1, "max": 3}
    )
    max_question_chars: int = field(
        default=1000, metadata={"help": "Longest accepted question.", "min": 10, "max": 100000}
    )
    max_upload_bytes: int = field(
        default=20 * 1024 * 1024,
        metadata={"help": "Largest accepted document upload.", "min": 1024, "max": 1 << 30},
    )
    admin_token: str = field(
        default="",
        metadata={"help": "Bearer token enabling admin endpoints (empty: disabled).",
                  "secret": True},
    )
    rate_limit: int = field(
        default=0,
        metadata={"help": "API requests per minute per client (0: unlimited).", "min": 0,
                  "max": 1000000},
    )
    rate_limit_storage: str = field(
        default="",
        metadata={"help": "Where rate-limit counts live, shared by all workers: a redis:// URI, "
                          "or empty for a SQLite file in the index directory.",
                  "secret": True},  # a Redis URI may carry a password
    )
    trusted_proxies: str = field(
        default="",
        metadata={"help": "Comma-separated addresses or networks of reverse proxies whose "
                          "X-Forwarded-For names the client and whose X-Forwarded-Proto: https "
                          "makes the admin cookie Secure (empty: the connection's own)."},
    )
    reload_interval: float = field(
        default=1.0,
        metadata={"help": "Seconds between checks for a newly published index.", "min": 0.05,
                  "max": 3600.0},
    )
    cache_size: int = field(
        default=256, metadata={"help": "Answers kept in the per-process cache.", "min": 0,
                               "max": 100000}
    )
    # -- issue 18: running it as a service ---------------------------------------------------
    metrics_token: str = field(
        default="",
        metadata={"help": "Bearer token that GET /metrics requires (empty: open to all).",
                  "secret": True},
    )
    log_format: str = field(
        default="plain",
        metadata={"help": "Format of the one log line per request: plain text, or json (one "
                          "object per line).", "choices": ("plain", "json")},
    )
    log_questions: int = field(
        default=0,
        metadata={"help": "Write each question into its request log line (1) or not (0).",
                  "min": 0, "max": 1},
    )
    feedback_db: str = field(
        default="",
        metadata={"help": "SQLite file where answer feedback is kept across rebuilds (empty: "
                          "feedback.sqlite in the index directory, outside its builds)."},
    )
    # issue #19: the query encoder's threads and precision.
    query_threads: int = field(
        default=0,
        metadata={"help": "Threads of the query encoder for one question: 0 chooses by load "
                          "(every core for a lone request, one each once requests outnumber "
                          "the cores), N at most N.", "min": 0, "max": 64},
    )
    query_precision: str = field(
        default="auto",
        metadata={"help": "Query encoder precision: auto (the smoothed int8 model where a "
                          "gate verdict, shipped in qa/models or written by "
                          "bench/quant_gate.py, passed that very file; else float) or float.",
                  "choices": ("auto", "float")},
    )
    # -- issue #17: builds on a Ray cluster, a compressed token store --------------------------
    token_store: str = field(
        default="auto",
        metadata={"help": "Late-interaction token vectors: int8 (about 43 KB a chunk), pq "
                          "(product-quantized, about 7 KB a chunk), or auto (pq from 20,000 "
                          "chunks on).",
                  "choices": ("auto", "int8", "pq")},
    )
    ray_address: str = field(
        default="",
        metadata={"help": "Run the costly stages of `qa index` on a Ray cluster: host:port of "
                          "its head, auto (the running cluster), local (one started in this "
                          "process); empty: no Ray."},
    )

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from defaults, then ``QA_*`` variables, then non-None overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for f in fields(cls):
            raw = env.get(f"QA_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = raw
        for key, value in (overrides or {}).items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}; known settings: {sorted(known)}")
            if value is not None:
                values[key] = value
        settings = cls().replace(**values)
        # Relative directories (the wheel's defaults among them) mean the current directory's.
        return dataclasses.replace(settings, corpus_dir=settings.corpus_dir.absolute(),
                                   index_dir=settings.index_dir.absolute())

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        typed = {name: _coerce(self._field(name), value) for name, value in changes.items()}
        settings = dataclasses.replace(self, **typed)
        settings._check()
        return settings

    def _field(self, name: str) -> dataclasses.Field[Any]:
        for f in fields(self):
            if f.name == name:
                return f
        raise ConfigError(f"unknown setting {name!r}")

    def _check(self) -> None:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ConfigError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens "
                f"({self.chunk_tokens})"
            )
        for part in filter(None, (p.strip() for p in self.trusted_proxies.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as e:
                raise ConfigError(f"setting trusted_proxies (QA_TRUSTED_PROXIES) expects "
                                  f"addresses or networks like 10.0.0.0/8, got {part!r}") from e
        address = self.ray_address
        if address not in ("", "auto", "local") and not RAY_ADDRESS.fullmatch(address):
            raise ConfigError(f"setting ray_address (QA_RAY_ADDRESS) expects host:port, auto or "
                              f"local, got {address!r}")
        storage = self.rate_limit_storage
        if storage and not storage.startswith(RATE_LIMIT_SCHEMES):
            raise ConfigError(f"setting rate_limit_storage (QA_RATE_LIMIT_STORAGE) must start "
                              f"with one of {RATE_LIMIT_SCHEMES}")

    def public(self) -> dict[str, Any]:
        """Settings as plain JSON values, secrets masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "***" if value else ""
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def describe_settings() -> list[dict[str, Any]]:
    """Name, environment variable, default and help of every setting (for docs and tests)."""
    rows = []
    for f in fields(Settings):
        default = f.default
        rows.append({
            "name": f.name,
            "env": f"QA_{f.name.upper()}",
            "default": default,
            "help": f.metadata.get("help", ""),
            "type": f.type if isinstance(f.type, str) else f.type.__name__,
            "metadata": dict(f.metadata),
        })
    return rows


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    name = f.name
    try:
        if kind == "Path":
            result: Any = Path(value).expanduser()
        elif kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            result = int(value)
        elif kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            result = float(value)
        else:
            result = str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name} (QA_{name.upper()}) expects {kind}, got {value!r}") from e
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None and hi is not None and not lo <= result <= hi:
        raise ConfigError(f"setting {name} (QA_{name.upper()}) must be in [{lo}, {hi}], got {result}")
    choices = f.metadata.get("choices")
    if choices and result not in choices:
        raise ConfigError(f"setting {name} (QA_{name.upper()}) must be one of {choices}, got {result!r}")
    return result
