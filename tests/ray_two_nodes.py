"""Two Ray nodes and a `qa index --ray` build against them, run inside a fresh network namespace.

tests/test_distributed.py runs this under ``unshare --net --pid --fork --kill-child --mount-proc``:
the namespace has only ``lo``, so Ray (which would otherwise turn 127.0.0.1 into the host's address
and bind every interface) can see and bind loopback only; and every process started here is in a
fresh PID namespace, which the kernel empties when this script (its PID 1) exits, whatever happens.

    python tests/ray_two_nodes.py CORPUS_DIR INDEX_DIR TEMP_DIR

Prints one JSON object last: the build's ``qa index --json`` result, the nodes seen, and the
seconds the cluster took to start (both ``ray start`` and the wait for the second node) and the
build took (the ``qa index`` process, start to end; bench/ray_nodes.py compares it with a local
build). Every step is bounded in time; ``ray stop`` runs whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

PORT = 6380  # a fresh namespace has nothing listening: no port to pick
ADDRESS = f"127.0.0.1:{PORT}"
START_TIMEOUT = 180  # seconds for each `ray start`
JOIN_TIMEOUT = 120  # seconds for both nodes to be seen alive
BUILD_TIMEOUT = 900  # seconds for `qa index`
STOP_TIMEOUT = 60


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:3])} exited {done.returncode}:\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def alive_nodes(env: dict[str, str]) -> list[str]:
    """The addresses of the alive nodes, asked from a short-lived driver."""
    probe = ("import json, ray\n"
             f"ray.init(address={ADDRESS!r}, include_dashboard=False, log_to_driver=False)\n"
             "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))\n"
             "ray.shutdown()\n")
    done = run([sys.executable, "-c", probe], env, timeout=JOIN_TIMEOUT)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    corpus, index, temp = (Path(a) for a in sys.argv[1:4])
    # Only `lo` exists in the new namespace, and it starts down.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QA_", "RAY_"))}
    # Ray 2.60 turns token authentication on for `ray start --head`: every process of this
    # cluster gets this one token (never the user's ~/.ray/auth_token).
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    ray = str(Path(sys.executable).parent / "ray")
    node = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        started = time.monotonic()
        run([ray, "start", "--head", "--port", str(PORT), "--include-dashboard", "false",
             "--temp-dir", str(temp), *node], env, START_TIMEOUT)
        run([ray, "start", "--address", ADDRESS, *node], env, START_TIMEOUT)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while len(nodes := alive_nodes(env)) < 2:
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker node did not join: alive {nodes}")
            time.sleep(1)
        cluster_s = time.monotonic() - started
        started = time.monotonic()
        build = run([sys.executable, "-m", "qa.cli", "index", "--json", "--encoder", "torch",
                     "--corpus-dir", str(corpus), "--index-dir", str(index), "--ray", ADDRESS],
                    env, BUILD_TIMEOUT)
        build_s = time.monotonic() - started
        print(json.dumps({"nodes": nodes, "build": json.loads(build.stdout),
                          "cluster_seconds": cluster_s, "build_seconds": build_s}))
    finally:
        subprocess.run([ray, "stop"], env=env, capture_output=True,
                       timeout=STOP_TIMEOUT, check=False)


if __name__ == "__main__":
    main()
