#!/usr/bin/env python3
"""Smoke test of a newcomer's first minutes, in throwaway venvs with runtime dependencies only.

1. checkout: the README's first command, ``make serve`` (into a fresh venv, building the bundled
   index), then the pages and the API are checked over HTTP.
2. wheel: ``pip install`` of a copy of the repository (a real wheel, not editable) into another
   fresh venv; from an unrelated directory holding the corpus and a copy of the index built in
   step 1, ``qa index`` (nothing to do) and ``qa serve --workers 2``, checked the same way, static
   files included.

Standard library only: it runs before anything is installed. On a failure it prints the server's
log and exits 1. Each server listens on a free loopback port and every wait is bounded.

    python3 tests/smoke.py [--keep] [--only checkout|wheel]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What does OSCA stand for?"
READY_TIMEOUT = 900.0  # seconds: install, index build and worker start together
SHUTDOWN_TIMEOUT = 30.0
LOG_TAIL_LINES = 150
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk; see the Makefile


class SmokeFailure(Exception):
    """A check of the newcomer's path failed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """The caller's environment without QA_* settings, offline for the model hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def run(cmd: list[str], log: Path, **kwargs: object) -> None:
    """Run a setup command, appending its output to ``log``; raise with the log on failure."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SmokeFailure(f"`{' '.join(cmd)}` exited {proc.returncode} (log: {log})")


class Server:
    """A server process started in its own session, stopped with its whole process group."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.out = log.open("a")
        self.out.write(f"$ {' '.join(cmd)}  (in {cwd})\n")
        self.out.flush()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def wait_ready(self, base: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SmokeFailure(f"the server exited with status {self.proc.returncode} "
                                   "before it was ready")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        raise SmokeFailure(f"/readyz did not answer 200 within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(SHUTDOWN_TIMEOUT)
        self.out.close()


def fetch(url: str, body: dict[str, object] | None = None) -> tuple[int, str, str]:
    """(status, content type, text) of a GET, or of a JSON POST when ``body`` is given."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}
                                     if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (response.status, response.headers.get("Content-Type", ""),
                    response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)


def check_service(base: str, say: Callable[[str], None]) -> None:
    """The pages, static files and API a newcomer touches first."""
    status, kind, page = fetch(base + "/")
    expect(status == 200 and "text/html" in kind and "<form" in page,
           f"GET / answered {status} {kind} without the question form")
    say("GET / serves the question form")

    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)
    expect(stylesheet is not None, "GET / links no stylesheet")
    assert stylesheet is not None
    status, kind, css = fetch(urllib.parse.urljoin(base + "/", stylesheet.group(1)))
    expect(status == 200 and "css" in kind and len(css) > 100,
           f"the stylesheet {stylesheet.group(1)} answered {status} {kind}")
    say(f"GET {stylesheet.group(1)} serves the stylesheet")

    status, _, page = fetch(base + "/?" + urllib.parse.urlencode({"q": QUESTION}))
    expect(status == 200 and 'class="cite"' in page and "/documents/" in page,
           f"GET /?q=... answered {status} without a cited answer")
    say("GET /?q=... answers with a citation")

    status, _, text = fetch(base + "/api/v1/documents")
    expect(status == 200, f"GET /api/v1/documents answered {status}")
    documents = json.loads(text)["documents"]
    expect(len(documents) >= 1, "the index holds no documents")
    doc_id = documents[0]["doc_id"]

    status, _, page = fetch(base + "/documents")
    expect(status == 200 and f"/documents/{doc_id}" in page,
           f"GET /documents answered {status} without a link to {doc_id}")
    say(f"GET /documents lists {len(documents)} documents")

    status, _, page = fetch(base + f"/documents/{urllib.parse.quote(doc_id)}")
    expect(status == 200 and len(page) > 1000, f"GET /documents/{doc_id} answered {status}")
    say(f"GET /documents/{doc_id} shows the document")

    status, _, text = fetch(base + "/api/v1/openapi.json")
    expect(status == 200 and json.loads(text).get("openapi", "").startswith("3"),
           f"GET /api/v1/openapi.json answered {status} without an OpenAPI document")
    say("GET /api/v1/openapi.json describes the API")

    status, _, text = fetch(base + "/api/v1/answer", {"question": QUESTION})
    expect(status == 200, f"POST /api/v1/answer answered {status}: {text[:300]}")
    response = json.loads(text)
    answer = response["answer"]
    expect(not answer["abstained"] and answer["sentences"] and response["citations"],
           f"POST /api/v1/answer gave no cited answer: {text[:300]}")
    cited = {c["doc_id"] for c in response["citations"]}
    expect(all(s["doc_id"] in cited for s in answer["sentences"]),
           "an answer sentence cites a document that is not in the citations")
    say(f"POST /api/v1/answer cites {sorted(cited)}")

    status, _, page = fetch(base + "/api/docs")
    scripts = re.findall(r'<script src="([^"]+)"', page)
    expect(status == 200 and len(scripts) == 3, f"GET /api/docs answered {status} with "
           f"{len(scripts)} scripts")
    for src in scripts:
        status, kind, body = fetch(urllib.parse.urljoin(base + "/", src))
        expect(status == 200 and "javascript" in kind and len(body) > 100,
               f"the script {src} of /api/docs answered {status} {kind}")
    say("GET /api/docs serves Swagger UI from the installed package's files")

    # Two answers so far (the page and the API), whichever workers gave them.
    status, _, text = fetch(base + "/metrics")
    expect(status == 200 and re.search(r"^qa_answers_total 2\.0$", text, re.MULTILINE)
           is not None, f"GET /metrics answered {status} without the two answers counted")
    say("GET /metrics counts the answers of every worker")


def serve_and_check(name: str, cmd: list[str], cwd: Path, env: dict[str, str], port: int,
                    log: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    server = Server(cmd, cwd, env, log)
    try:
        server.wait_ready(base)
        print(f"[{name}] ready on {base} after {time.monotonic() - started:.0f} s", flush=True)
        check_service(base, lambda line: print(f"[{name}] ok: {line}", flush=True))
    finally:
        server.stop()


def copy_sources(target: Path) -> None:
    """The repository as a new user has it: no venv, no built index, no build leftovers."""
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", ".venv", "index", "build", "*.egg-info", "__pycache__", ".*_cache"))
    (target / "index").mkdir(exist_ok=True)


def prepare_wheel_venv(work: Path, env: dict[str, str], log: Path) -> Path:
    """A fresh venv with the package installed from a wheel of a copy of the sources."""
    source = work / "source"
    copy_sources(source)
    venv = work / "wheel-venv"
    run([sys.executable, "-m", "venv", str(venv)], log)
    # --no-compile: byte-compiling torch's thousands of files is most of an install's time.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    run([*pip, TORCH], log, env=env)
    run([*pip, str(source)], log, env=env)
    return venv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder for a look")
    parser.add_argument("--only", choices=("checkout", "wheel"), help="run one stage only")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qa-smoke-"))
    env = clean_environment()
    logs = {"checkout": work / "checkout.log", "wheel": work / "wheel.log"}
    index_dir = work / "index"
    started = time.monotonic()
    wheel_venv: dict[str, Path | BaseException] = {}

    def build_wheel_venv() -> None:
        try:
            wheel_venv["venv"] = prepare_wheel_venv(work, env, logs["wheel"])
        except BaseException as e:  # handed to the main thread, which reports it
            wheel_venv["error"] = e

    stage = "setup"
    try:
        # The wheel's venv installs while the checkout's server builds the index.
        installer = threading.Thread(target=build_wheel_venv, daemon=True)
        if args.only != "checkout":
            installer.start()

        if args.only != "wheel":
            stage = "checkout"
            port = free_port()
            print(f"[checkout] make serve (fresh venv, index in {index_dir})", flush=True)
            serve_and_check(
                "checkout",
                ["make", "--no-print-directory", "serve", f"VENV={work / 'venv'}",
                 f"PORT={port}"],
                ROOT, {**env, "QA_INDEX_DIR": str(index_dir)}, port, logs["checkout"])

        if args.only != "checkout":
            stage = "wheel"
            print("[wheel] pip install of a copy of the repository (not editable)", flush=True)
            installer.join(READY_TIMEOUT)
            if "error" in wheel_venv:
                raise SmokeFailure(f"installing the wheel failed: {wheel_venv['error']}")
            venv = wheel_venv.get("venv")
            if not isinstance(venv, Path):
                raise SmokeFailure("installing the wheel did not finish in time")
            elsewhere = work / "elsewhere"
            elsewhere.mkdir()
            shutil.copytree(ROOT / "corpus", elsewhere / "corpus")
            if index_dir.is_dir():  # built by the checkout stage: copied, not built twice
                shutil.copytree(index_dir, elsewhere / "index", symlinks=True)
            qa = str(venv / "bin" / "qa")
            run([qa, "settings"], logs["wheel"], cwd=elsewhere, env=env)
            settings = logs["wheel"].read_text()
            expect(f"default to the current directory's: {elsewhere}" in settings,
                   "qa settings does not say that corpus/ and index/ are the current directory's")
            run([qa, "index"], logs["wheel"], cwd=elsewhere, env=env)
            print(f"[wheel] {logs['wheel'].read_text().splitlines()[-1]}", flush=True)
            port = free_port()
            serve_and_check("wheel", [qa, "serve", "--workers", "2", "--port", str(port)],
                            elsewhere, env, port, logs["wheel"])
    except (SmokeFailure, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        print(f"\nSMOKE FAILED in the {stage} stage: {e}", file=sys.stderr)
        for name, log in logs.items():
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()
                print(f"\n----- {name} log, last {LOG_TAIL_LINES} of {len(lines)} lines -----",
                      file=sys.stderr)
                print("\n".join(lines[-LOG_TAIL_LINES:]), file=sys.stderr)
        print(f"\nwork folder: {work}", file=sys.stderr)
        return 1
    print(f"smoke passed in {time.monotonic() - started:.0f} s", flush=True)
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
