"""A `qa index` build on a two-node Ray cluster against a local build of the same corpus, in one
run.

The corpus is the first ``--paragraphs`` SQuAD 2.0 dev paragraphs (or the bundled corpus with
``--bundled``). Each round builds it from an empty index and embedding cache twice, one after the
other: locally (``qa index --encoder torch``, a process of its own) and with ``qa index --ray
127.0.0.1:PORT`` against two ``ray start`` nodes of one CPU each on this machine
(tests/ray_two_nodes.py, run as tests/test_distributed.py runs it: in a fresh network and PID
namespace, where Ray can bind loopback only and every process of the cluster ends with the run;
needs root). Both use the torch encoder, as that test does. The build times compared are those of
the ``qa index`` processes, start to end; the cluster's start (both ``ray start`` and the wait for
the second node) is shown apart.

    python bench/ray_nodes.py --squad ../shared/bench/squad-v2.0-dev.json --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from squad import SQUAD_DEV, load_squad, machine, write_corpus

PROJECT = Path(__file__).resolve().parent.parent
TWO_NODES = PROJECT / "tests" / "ray_two_nodes.py"
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
BUILD_TIMEOUT = 1800  # seconds for one build, cluster included


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QA_", "RAY_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    return env


def local_build(corpus: Path, index: Path) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "qa.cli", "index", "--json", "--encoder", "torch",
                           "--corpus-dir", str(corpus), "--index-dir", str(index)],
                          env=clean_env(), capture_output=True, text=True, cwd=PROJECT,
                          timeout=BUILD_TIMEOUT, check=True)
    return time.monotonic() - started, json.loads(done.stdout)


def two_node_build(corpus: Path, index: Path, temp: Path) -> dict[str, object]:
    done = subprocess.run([*NAMESPACE, sys.executable, str(TWO_NODES), str(corpus), str(index),
                           str(temp)], env=clean_env(), capture_output=True, text=True,
                          cwd=PROJECT, timeout=BUILD_TIMEOUT, check=False)
    if done.returncode:
        raise SystemExit(f"the two-node run exited {done.returncode}:\n{done.stderr[-3000:]}")
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=SQUAD_DEV)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--bundled", action="store_true", help="build the bundled corpus instead")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("needs root and unshare (util-linux) for the network namespace")
    print(f"{machine()}; {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="qa-ray-nodes-") as tmp:
        work = Path(tmp)
        if args.bundled:
            corpus, name = PROJECT / "corpus", "bundled corpus"
        else:
            docs, _ = load_squad(args.squad)
            chosen = dict(list(docs.items())[:args.paragraphs])  # the file here has 646
            corpus, name = work / "corpus", f"{len(chosen)} SQuAD dev paragraphs"
            write_corpus(chosen, corpus)
        print("| round | corpus | chunks | local s | two nodes: cluster start s | two nodes: "
              "build s | overhead |\n|---|---|---|---|---|---|---|")
        for round_ in range(1, args.rounds + 1):
            local_s, local = local_build(corpus, work / f"local-{round_}")
            # Socket paths must fit in 107 bytes: a short temp dir of its own.
            temp = Path(f"/tmp/qa-ray-{os.getpid()}-{round_}")
            try:
                report = two_node_build(corpus, work / f"nodes-{round_}", temp)
            finally:
                shutil.rmtree(temp, ignore_errors=True)
            build = report["build"]
            assert isinstance(build, dict) and build["chunks"] == local["chunks"]
            nodes_s = float(report["build_seconds"])  # type: ignore[arg-type]
            cluster_s = float(report["cluster_seconds"])  # type: ignore[arg-type]
            print(f"| {round_} | {name} | {local['chunks']} | {local_s:.1f} | {cluster_s:.1f} | "
                  f"{nodes_s:.1f} | {100 * (nodes_s / local_s - 1):+.0f}% |", flush=True)


if __name__ == "__main__":
    main()
