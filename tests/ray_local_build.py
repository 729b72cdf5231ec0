"""`qa index --ray local` (a cluster started in this process, this machine's CPUs), run inside a
fresh network namespace like tests/ray_two_nodes.py: only ``lo`` exists there, so Ray's servers,
which bind every interface, can be reached on loopback only.

    python tests/ray_local_build.py CORPUS_DIR INDEX_DIR

Builds the corpus on the local cluster with progress recorded, then rebuilds it in full (the
embedding cache must leave nothing to embed). Prints one JSON object last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    corpus, index = (Path(a) for a in sys.argv[1:3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    for name in [n for n in os.environ if n.startswith(("QA_", "RAY_"))]:
        del os.environ[name]
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    import ray

    from qa.config import Settings
    from qa.indexing import build_index

    settings = Settings.load({"corpus_dir": corpus, "index_dir": index, "encoder": "torch",
                              "ray_address": "local"}, environ={})
    seen: list[tuple[str, int, int]] = []
    first = build_index(settings, progress=lambda *step: seen.append(step))
    stopped = not ray.is_initialized()  # the build stopped the cluster it started
    again = build_index(settings, full=True)
    print(json.dumps({
        "progress": seen, "stopped": stopped,
        "first": {"changed": first.changed, "embedded": first.embedded, "chunks": first.chunks},
        "again": {"changed": again.changed, "embedded": again.embedded}}))


if __name__ == "__main__":
    main()
