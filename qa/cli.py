"""The command line: ``qa index | verify | search | ask | eval | serve | feedback | settings``.

A thin door over ``QAService``. Owns argument parsing, terminal output, progress bars and the one
place where core errors become a message and an exit status.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from qa.config import BUNDLED_MODEL, DATA_ROOT, DATA_ROOT_KIND, Settings, describe_settings
from qa.errors import QAError

if TYPE_CHECKING:
    from qa.indexing import BuildResult

F = Callable[..., Any]


# Which settings each command takes as flags. A flag overrides its QA_* variable; secrets (the
# admin token, a Redis URI that may hold a password) stay in the environment, where they do not
# show in the process list.
RETRIEVAL_SETTINGS = ("index_dir", "model", "encoder", "top_k", "candidates", "dense_weight",
                      "sentence_weight", "lexical_weight", "rerank", "rrf_k")
ANSWER_SETTINGS = (*RETRIEVAL_SETTINGS, "abstain_threshold", "max_answer_sentences",
                   "max_question_chars")
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "index": ("corpus_dir", "index_dir", "model", "encoder", "chunk_tokens", "chunk_overlap",
              "late_interaction", "token_store", "ray_address"),
    "verify": ("index_dir",),
    "search": RETRIEVAL_SETTINGS,
    "ask": ANSWER_SETTINGS,
    "eval": ANSWER_SETTINGS,
    "serve": ("corpus_dir", *ANSWER_SETTINGS, "max_upload_bytes", "rate_limit",
              "trusted_proxies", "reload_interval", "cache_size", "log_format",
              "log_questions", "feedback_db", "query_threads", "query_precision"),
    "feedback export": ("index_dir", "feedback_db"),
}
SHORT_FLAGS = {"top_k": "-k", "ray_address": "--ray"}


def setting_flag(name: str) -> str:
    """The command-line flag of a setting: ``top_k`` -> ``--top-k``."""
    return "--" + name.replace("_", "-")


def _setting_option(name: str) -> Callable[[F], F]:
    """A click option built from the setting's own type, bounds, choices and help."""
    row = next(r for r in describe_settings() if r["name"] == name)
    meta = row["metadata"]
    lo, hi = meta.get("min"), meta.get("max")
    kind: Any
    if meta.get("choices"):
        kind = click.Choice(list(meta["choices"]))
    elif row["type"] == "Path":
        kind = click.Path(path_type=Path)
    else:
        # Numbers are parsed here and bounded by Settings, so an out-of-range flag gets the same
        # one-line message as an out-of-range variable.
        kind = {"int": int, "float": float}.get(row["type"], str)
    default = row["default"]
    shown = "bundled all-MiniLM-L6-v2" if default == BUNDLED_MODEL else default
    bounds = f"; {lo}-{hi}" if lo is not None and hi is not None else ""
    decls = [SHORT_FLAGS[name]] if name in SHORT_FLAGS else []
    return click.option(*decls, setting_flag(name), name, type=kind, default=None,
                        help=f"{row['help']} [env {row['env']}; default {shown}{bounds}]")


def _settings_options(command: str) -> Callable[[F], F]:
    """Add the flags of the settings that ``command`` uses."""

    def decorate(fn: F) -> F:
        for name in reversed(COMMAND_SETTINGS[command]):
            fn = _setting_option(name)(fn)
        return fn

    return decorate


def _settings(**overrides: Any) -> Settings:
    return Settings.load({k: v for k, v in overrides.items() if v is not None})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
def cli(verbose: bool) -> None:
    """Cited question answering over the documents in corpus/.

    \b
    Examples:
      qa index                      build or update the index
      qa ask "When was CICA proposed?"
      qa serve --port 8000          start the web app and JSON API
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@cli.command("index")
@click.option("--full", is_flag=True, help="Re-chunk and re-embed everything.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another running build instead of refusing.")
@_settings_options("index")
def index_cmd(full: bool, as_json: bool, wait: float, **overrides: Any) -> None:
    """Build or incrementally update the index from the corpus, then publish it atomically.

    Only new or changed documents are chunked and embedded; a run with nothing to do loads no
    model. Example: qa index --json
    """
    settings = _settings(**overrides)
    result = _build_with_progress(settings, full=full, lock_wait=wait)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        data = result.to_dict()
        click.echo(json.dumps({k: data[k] for k in
                               ("documents", "chunks", "embedded", "removed", "version",
                                "seconds")}))
    elif result.changed:
        click.echo(f"published {result.version}: {result.documents} documents, {result.chunks} "
                   f"chunks, {result.embedded} embedded, {result.removed} removed "
                   f"in {result.seconds:.1f}s")
    else:
        click.echo(f"index {result.version} is up to date ({result.documents} documents, "
                   f"{result.chunks} chunks)")


@cli.command("verify")
@_settings_options("verify")
def verify_cmd(**overrides: Any) -> None:
    """Hash every file of the published index whole and compare with its manifest.

    Loading checks small files whole and large ones by size and sampled blocks; this is the full
    check (seconds per GB). Exit status 0 when intact, 2 with the damaged file named otherwise.
    Example: qa verify --index-dir index/
    """
    from qa import store

    settings = _settings(**overrides)
    reader = store.open_current(settings.index_dir, verify="full")
    counts = reader.manifest.get("counts", {})
    reader.close()
    click.echo(f"index {reader.version} is intact ({counts.get('documents', '?')} documents, "
               f"{counts.get('chunks', '?')} chunks)")


@cli.command("search")
@click.argument("question")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), default="hybrid",
              show_default=True, help="Retriever to use.")
@click.option("--doc", "doc_ids", multiple=True, help="Only search this document id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON response.")
@_settings_options("search")
def search_cmd(question: str, mode: str, doc_ids: tuple[str, ...], as_json: bool,
               **overrides: Any) -> None:
    """Print the passages that best match QUESTION. Example: qa search "OSCA" -k 3"""
    from qa.service import QAService

    settings = _settings(**overrides)
    result = QAService(settings).search(question, settings.top_k, list(doc_ids) or None, mode)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for n, p in enumerate(result["passages"], 1):
        _echo_passage(n, p)


@cli.command("ask")
@click.argument("question")
@click.option("--doc", "doc_ids", multiple=True, help="Only use this document id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON response object.")
@_settings_options("ask")
def ask_cmd(question: str, doc_ids: tuple[str, ...], as_json: bool, **overrides: Any) -> None:
    """Answer QUESTION with cited sentences from the documents.

    Example: qa ask "What does OSCA stand for?"
    """
    from qa.service import QAService

    settings = _settings(**overrides)
    response = QAService(settings).ask(question, settings.top_k, list(doc_ids) or None)
    if as_json:
        click.echo(json.dumps(response, indent=2, ensure_ascii=False))
        return
    answer = response["answer"]
    if answer["abstained"]:
        click.echo(f"The documents do not answer this. ({answer['reason']})")
    else:
        click.echo(answer["text"])
        click.echo("")
        for c in response["citations"]:
            cited = [s for s in answer["sentences"] if s["citation"] == c["n"]]
            spans = ", ".join(f"{s['start']}-{s['end']}" for s in cited)
            click.echo(f"[{c['n']}] {c['title']} ({c['doc_id']}, chars {spans}; {c['passage_id']})")
    click.echo("\nPassages:")
    for n, p in enumerate(response["passages"], 1):
        _echo_passage(n, p)


@cli.command("eval")
@click.option("--gold", type=click.Path(path_type=Path, dir_okay=False),
              help="Gold questions (JSONL) [default: the bundled CICA gold set].")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), default="hybrid",
              show_default=True, help="Retriever whose ranks are measured (answers use hybrid).")
@click.option("--split", type=click.Choice(["all", "tuning", "held_out"]), default="all",
              show_default=True, help="Half of the gold set asked (quality is judged on held_out).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics and per-question rows.")
@_settings_options("eval")
def eval_cmd(gold: Path | None, mode: str, split: str, as_json: bool, **overrides: Any) -> None:
    """Measure retrieval, answers and abstention on a gold set. Example: qa eval --json"""
    from qa.evaluation import DEFAULT_GOLD, evaluate, load_gold
    from qa.service import QAService

    settings = _settings(**overrides)
    service = QAService(settings).load()
    questions = [q for q in load_gold(gold or DEFAULT_GOLD) if split in ("all", q.split)]
    report = evaluate(service, questions, mode=mode)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if key != "questions":
            click.echo(f"{key:>20}: {value}")
    misses = [r["id"] for r in report["questions"] if r["answerable"] and not r["rank"]]
    if misses:
        click.echo(f"{'not in top 10':>20}: {', '.join(misses)}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, type=int,
              help="Gunicorn worker processes (each loads the model once).")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader.")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the index first when none is published.")
@_settings_options("serve")
def serve_cmd(host: str, port: int, workers: int, dev: bool, build: bool,
              **overrides: Any) -> None:
    """Serve the web form and the JSON API. Example: qa serve --port 8000 --workers 2"""
    from qa import store
    from qa.service import QAService

    settings = _settings(**overrides)
    if build and store.Layout(settings.index_dir).current_version() is None:
        click.echo("no index yet: building it first", err=True)
        _build_in_child(settings)
    # Fail now, with a clear message, on a missing or damaged index or a model mismatch. The
    # reader is dropped at once: each worker loads its own (the vectors are memory-mapped).
    QAService(settings).reader().close()
    env = {f"QA_{k.upper()}": str(v) for k, v in overrides.items() if v is not None}
    os.environ.update(env)
    if dev:
        from qa.web import create_app

        create_app(settings).run(host=host, port=port, debug=True, use_reloader=True)
        return
    from qa.server import run_gunicorn

    run_gunicorn(settings, host=host, port=port, workers=workers)


def _build_with_progress(settings: Settings, full: bool = False,
                         lock_wait: float = 0.0) -> BuildResult:
    """build_index with a progress bar per stage on stderr (hidden when it is not a terminal)."""
    from tqdm import tqdm

    from qa.indexing import build_index

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="item", file=sys.stderr,
                                     leave=False, disable=None)
        bar.n = done
        bar.refresh()

    try:
        return build_index(settings, full=full, progress=progress, lock_wait=lock_wait)
    finally:
        for bar in bars.values():
            bar.close()


def _build_in_child(settings: Settings) -> None:
    """Build the index in a fresh interpreter. The serving master must not start the model's
    thread pools: gunicorn forks its workers from it, and a forked copy of a running pool aborts
    the worker at exit. The master then never imports torch at all."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_build_with_progress, settings).result()


@cli.group("feedback")
def feedback_group() -> None:
    """What users said of answers (the "Helpful / Not helpful" buttons and POST
    /api/v1/feedback). Example: qa feedback export --out candidates.jsonl
    """


@feedback_group.command("export")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the candidates to this JSONL file [default: standard output].")
@click.option("--gold", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Leave out questions this gold file already holds [default: the bundled "
                   "gold set].")
@_settings_options("feedback export")
def feedback_export_cmd(out: Path | None, gold: Path | None, **overrides: Any) -> None:
    """Write the "not helpful" questions as gold-set candidates (the gold file's JSON lines,
    without an answer, for a person to complete), one per distinct question.

    Example: qa feedback export --out candidates.jsonl
    """
    from qa.evaluation import DEFAULT_GOLD, load_gold
    from qa.feedback import FeedbackBook, write_candidates

    settings = _settings(**overrides)
    known = [q.question for q in load_gold(gold or DEFAULT_GOLD)]
    rows = FeedbackBook(settings).candidates(known)
    if out is None:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    write_candidates(rows, out)
    click.echo(f"wrote {len(rows)} candidate{'s' if len(rows) != 1 else ''} to {out}", err=True)


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def settings_cmd(as_json: bool) -> None:
    """Show every setting with its environment variable, flags and current value.

    The corpus and index directories default to those of the source checkout when qa runs from
    one, and otherwise to corpus/ and index/ under the current directory. Example: qa settings
    """
    current = Settings.load().public()
    rows = [{"name": row["name"], "env": row["env"], "value": current[row["name"]],
             "default": row["default"], "flag": setting_flag(row["name"]),
             "commands": [c for c, names in COMMAND_SETTINGS.items() if row["name"] in names],
             "help": row["help"]}
            for row in describe_settings()]
    for row in rows:
        if row["name"] in ("corpus_dir", "index_dir"):
            row["default_from"] = DATA_ROOT_KIND
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        click.echo(f"{row['env']:<24} {row['value']!s:<40} {row['help']}")
    click.echo(f"\ncorpus and index directories default to the {DATA_ROOT_KIND}'s: "
               f"{DATA_ROOT.absolute()}")


def _echo_passage(n: int, p: dict[str, Any]) -> None:
    where = ", ".join(x for x in (p.get("section") and f"§ {p['section']}",
                                  p.get("page") and f"p. {p['page']}") if x)
    click.echo(f"\n[{n}] {p['title']} — {p['doc_id']} chars {p['start']}-{p['end']}"
               f"{' (' + where + ')' if where else ''}  score {p['score']:.4f}")
    click.echo("    " + " ".join(p["text"].split()))


def main(argv: list[str] | None = None) -> None:
    """Entry point: core errors become one line on stderr and a non-zero exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        cli.main(args=argv, prog_name="qa", standalone_mode=False)
    except QAError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_status)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: the published index is unchanged", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
