"""The ``labelloop`` command line."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from flows.demo import DEMO_LLM_BUDGET, proposal_sources
from labelloop.cli_common import (
    PANEL_LOOP,
    PANEL_MODEL,
    PANEL_SERVING,
    PANEL_STACK,
    MultiValueCommand,
    deprecated,
)
from labelloop.cli_common import cli_settings as _settings
from labelloop.cli_common import cli_store as _store
from labelloop.safe_text import without_credentials
from labelloop.settings import Settings

UNREACHABLE_EXIT = 3


class _Commands(TyperGroup):
    """Every command: a server that cannot be reached (after the clients' own retries) is one
    clear line naming it and how to start it (exit 3), not a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if type(exc).__module__.startswith(("typer", "click")):  # Exit, Abort, usage errors
                raise
            from labelloop.settings import get_settings
            from labelloop.unreachable import unreachable_service

            try:
                found = unreachable_service(exc, get_settings())
            except Exception:  # no settings: the original error is the better message
                found = None
            if found is None:
                raise
            Console(stderr=True).print(
                f"[red]{found.message}[/red]", highlight=False, soft_wrap=True
            )
            raise typer.Exit(UNREACHABLE_EXIT) from exc


app = typer.Typer(
    name="labelloop",
    cls=_Commands,
    help=(
        "labelloop: LLM-assisted labeling loop that turns AI-interaction data into policy-safe "
        "ad-interest signals.\n\nSample & gate -> propose labels (LLM + vector store) -> human review "
        "in Label Studio -> retrain in MLflow -> gate -> production targeting filter."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="Demo/test data (synthetic conversations with gold labels).", no_args_is_help=True
)
store_app = typer.Typer(
    help="The label store (SQLAlchemy; SQLite by default).", no_args_is_help=True
)
audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)
models_app = typer.Typer(
    help="Models: local model files (install) and registered filter versions (list).",
    no_args_is_help=True,
)
config_app = typer.Typer(
    help="The configuration: effective values and their source, .env.example.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config", rich_help_panel=PANEL_STACK)
app.add_typer(data_app, name="data", rich_help_panel=PANEL_LOOP)
app.add_typer(store_app, name="store", rich_help_panel=PANEL_STACK)
app.add_typer(audit_app, name="audit", rich_help_panel=PANEL_SERVING)
app.add_typer(models_app, name="models", rich_help_panel=PANEL_MODEL)

console = Console(stderr=False)
err = Console(stderr=True)


@app.callback()
def _start() -> None:
    """Every command: no credentials in any log line (see labelloop.safe_text)."""
    from labelloop.safe_text import install_log_redaction

    install_log_redaction()


@data_app.command("synth")
def data_synth(
    n: Annotated[int, typer.Option("--n", min=1, help="number of conversations")] = 300,
    seed: Annotated[int, typer.Option(help="random seed (same seed -> same file)")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write")] = Path(
        "data/synth.jsonl"
    ),
) -> None:
    """Write N synthetic conversations (all surfaces, mixed countries, every sensitive category, gold labels)."""
    from labeling.synth import generate, write_jsonl

    records = generate(n, seed)
    write_jsonl(records, output)
    console.print(f"wrote {len(records)} synthetic conversations to {output}")


@store_app.command("init")
def store_init() -> None:
    """Create or migrate the label store schema (idempotent)."""
    s = _settings()
    _store(s)
    console.print(f"label store ready at {without_credentials(s.db_url)}")


@store_app.command("status")
def store_status() -> None:
    """Counts of conversations by surface and exclusion reason."""
    s = _settings()
    counts = _store(s).conversation_counts()
    _print_counts(counts["by_surface"], counts["by_reason"], title="label store")


def _print_counts(by_surface: dict[str, int], by_reason: dict[str, int], title: str) -> None:
    t = Table(title=f"{title}: by surface")
    t.add_column("surface")
    t.add_column("conversations", justify="right")
    for k, v in sorted(by_surface.items()):
        t.add_row(k, str(v))
    console.print(t)
    t = Table(title=f"{title}: eligibility")
    t.add_column("outcome")
    t.add_column("conversations", justify="right")
    for k, v in sorted(by_reason.items(), key=lambda kv: (kv[0] != "eligible", kv[0])):
        t.add_row(k, str(v))
    console.print(t)


@app.command("sample", cls=MultiValueCommand, rich_help_panel=PANEL_LOOP)
def sample(
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input",
            "-i",
            help="JSONL or Parquet files of conversation records; several paths after one flag "
            "or the flag repeated",
        ),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Argument(hidden=True, help="deprecated: the files given without --input"),
    ] = None,
    cap_per_surface: Annotated[
        int | None, typer.Option(help="max new conversations per surface")
    ] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Read conversations, quarantine bad records, apply the eligibility gate, redact, store."""
    from labelloop.runtime import Runtime
    from labelloop.stages import ingest

    if files:
        deprecated("labelloop sample FILES", "labelloop sample --input FILES")
    paths = [*(files or []), *(inputs or [])]
    if not paths:
        raise typer.BadParameter(
            "missing: give the record files with --input/-i", param_hint="--input"
        )
    s = _settings()
    for p in paths:
        if not p.exists():
            err.print(f"[red]input not found:[/red] {p}")
            raise typer.Exit(2)
    rt = Runtime(s)
    result = ingest(rt, paths, cap_per_surface=cap_per_surface, seed=seed)
    report, run_id = result.sample, result.run_id
    assert report is not None  # files were given
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    console.print(
        f"run {run_id}: read {report.read['read']}, quarantined {report.quarantined}, duplicates "
        f"{report.read['duplicates']}, already in store {report.already_known}, new {report.inserted} "
        f"(policy {rt.policy.short_version})"
    )
    if report.quarantined:
        console.print(f"quarantine: {report.quarantine_path}")
    if report.read.get("unknown_fields"):
        fields = ", ".join(f"{k} ({v})" for k, v in sorted(report.read["unknown_fields"].items()))
        console.print(f"unknown fields ignored (records): {fields}")
    _print_counts(dict(report.by_surface), dict(report.by_reason), title=f"run {run_id}")


@models_app.command("install")
def models_install(
    llm: Annotated[
        str | None,
        typer.Option(help="LLM spec (default: LABELLOOP_LLM); only llamacpp/hf specs need files"),
    ] = None,
    full_verify: Annotated[
        bool, typer.Option(help="re-hash the GGUF even if it was verified")
    ] = False,
) -> None:
    """Assemble/verify the embedded LLM and the embedding model in the state dir (idempotent)."""
    from labeling.assets import AssetError, ensure_embedding_model, ensure_llm_model

    s = _settings()
    s.ensure_dirs()
    spec = llm or s.llm
    try:
        t0 = time.perf_counter()
        onnx, _tok = ensure_embedding_model(s.models_dir)
        console.print(f"embedding model: {onnx.parent} (sha256 verified)")
        if spec.startswith(("llamacpp:", "hf:")):
            gguf = ensure_llm_model(s.models_dir, spec, full_verify=full_verify)
            console.print(f"LLM: {gguf} (sha256 verified)")
        else:
            console.print(f"LLM {spec!r} is served remotely; no local files needed")
        console.print(f"models ready in {time.perf_counter() - t0:.1f}s")
    except AssetError as exc:
        err.print(f"[red]model assets:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command("run", rich_help_panel=PANEL_LOOP)
def run_flow(
    name: Annotated[
        str,
        typer.Argument(
            help="sample_and_propose | collect_reviews | retrain | promote | score_batch"
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="flow parameter KEY=JSON_VALUE (repeatable)"),
    ] = None,
) -> None:
    """Run one flow now (reported to the Prefect server of the stack)."""
    from flows.demo import point_prefect_at

    s = _settings()
    point_prefect_at(s)
    from flows.loop import run_with_runner

    params: dict[str, object] = {}
    for item in param or []:
        key, _, raw = item.partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    try:
        result = run_with_runner(s, name, **params)
    except KeyError as exc:
        err.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from exc
    console.print_json(json.dumps(result, default=str))


@app.command("serve", rich_help_panel=PANEL_LOOP)
def serve() -> None:
    """Register every flow with its cron schedule on the Prefect server and run them (blocks)."""
    from flows.demo import point_prefect_at

    s = _settings()
    point_prefect_at(s)
    from flows.serve import serve_all

    serve_all(s)


@app.command("demo", rich_help_panel=PANEL_LOOP)
def demo(
    n: Annotated[int, typer.Option(help="synthetic conversations")] = 120,
    seed: Annotated[
        int, typer.Option(help="seed of the synthetic data and simulated annotators")
    ] = 7,
    human: Annotated[
        bool,
        typer.Option(
            "--human",
            help="pause after the review tasks are pushed so that you label some in Label Studio",
        ),
    ] = False,
    human_labels: Annotated[
        int, typer.Option(min=1, help="--human: go on after this many of your labels")
    ] = 10,
    human_timeout: Annotated[
        float, typer.Option(min=0, help="--human: go on after this many minutes anyway")
    ] = 30.0,
    llm_budget: Annotated[
        int,
        typer.Option(
            "--llm-budget",
            min=0,
            help="LLM answers in the demo's proposal run (each takes seconds on a CPU); the "
            "other conversations that need one get kNN-only proposals and go to review",
        ),
    ] = DEMO_LLM_BUDGET,
) -> None:
    """Bring the stack up and run one full cycle of the loop on synthetic data (SIMULATED
    annotators, or you with --human)."""
    from infra.stack import Stack, StackError, llm_service_enabled

    s = _settings()
    t0 = time.perf_counter()
    console.print(
        "[bold]labelloop demo[/bold]: starting the local stack (first start takes a few minutes)"
    )
    services = ["prefect", "mlflow", "label-studio", "filter"]
    if llm_service_enabled(s):
        services.append("llm")
    try:
        Stack(s).up(services=services)
    except StackError as exc:
        err.print(f"[red]stack:[/red] {exc}")
        raise typer.Exit(1) from exc
    from flows.demo import point_prefect_at

    point_prefect_at(s)
    from flows.demo import HumanReview, run_cycle
    from flows.progress import listen

    review = HumanReview(labels=human_labels, timeout_s=human_timeout * 60) if human else None
    with _progress_bars() as on_progress, listen(on_progress):
        out = run_cycle(
            s, n=n, seed=seed, say=lambda m: console.print(m), human=review, llm_budget=llm_budget
        )
    _demo_summary(s, out, time.perf_counter() - t0)


@contextlib.contextmanager
def _progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """(step, done, total) drawn as progress bars with the time remaining."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("   {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total or None)
            bar.update(tasks[step], completed=done, total=total or None)

        yield update


def _demo_summary(s: Settings, out: dict[str, Any], wall_s: float) -> None:
    from flows.demo import demo_password, review_url

    sp = out["sample_and_propose"]
    ingest, prop, push = sp["ingest"], sp["propose"], sp["push"]
    _print_counts(ingest.get("by_surface", {}), ingest.get("by_reason", {}), title="sampled")
    t = Table(title="one cycle of the loop")
    t.add_column("step")
    t.add_column("result")
    t.add_column("seconds", justify="right")
    timings = out["timings"]
    rt = out["retrain"]
    sb = out["score_batch"]
    promoted = out.get("promote") or {}
    rows = [
        ("synth", f"{out['synth']['records']} conversations"),
        (
            "sample_and_propose",
            f"{ingest.get('eligible')} eligible, {prop['n']} proposed: "
            f"{proposal_sources(prop)}; {prop.get('llm_s_per_call', 0):.1f} s per LLM answer, "
            f"{prop['input_tokens']}+{prop['output_tokens']} tokens; "
            f"{push.get('imported', 0)} review tasks imported",
        ),
    ]
    if "human_review" in out:
        hr = out["human_review"]
        rows.append(("human_review", f"{hr['labels']} labels from you"
                     + (" (timed out)" if hr["timed_out"] else "")))  # fmt: skip
    rows += [
        ("annotate_sim", f"{out['annotate_sim']['annotations']} SIMULATED annotations"),
        ("collect_reviews", f"gold created {out['collect_reviews']['gold_created']}"),
        (
            "annotate_sim_adjudication",
            f"{out['annotate_sim_adjudication']['annotations']} annotations",
        ),
        ("collect_reviews_2", f"gold created {out['collect_reviews_2']['gold_created']}"),
        (
            "retrain",
            f"version {rt['version']}, gate {rt['gate']['summary']}; {rt['train']['run_url']}",
        ),
        (
            "promote",
            f"production -> version {rt['version']}"
            if promoted.get("approved")
            else f"NOT promoted: {promoted.get('reason', 'gate failed')}",
        ),
        ("score_batch", ", ".join(f"{k} {v}" for k, v in sorted(sb["by_reason"].items()))),
    ]
    for name, result in rows:
        t.add_row(name, escape(result), str(timings.get(name, "")))
    console.print(t)
    if not promoted.get("approved"):
        _why_not_promoted(rt["gate"], promoted)
    console.print(f"demo wall time: {wall_s:.0f} s")
    review = push.get("review_project")
    ls_url = review_url(s, int(review)) if review else without_credentials(s.label_studio)
    lines = [
        "[bold]UIs[/bold] (the stack keeps running: `uv run labelloop stack down` stops it)",
        f"  Prefect UI       {without_credentials(s.prefect_api.removesuffix('/api'))}",
        f"  MLflow UI        {without_credentials(s.mlflow_uri)}",
        f"  Label Studio     {ls_url}",
        f"                   log in as {s.label_studio_username} / {escape(demo_password(s))}",
        f"  Filter API docs  {without_credentials(f'{s.filter_url}/docs')}",
    ]
    console.print("\n".join(lines), soft_wrap=True, highlight=False)
    console.print(_next_steps(s, rt, promoted), soft_wrap=True, highlight=False)


def _why_not_promoted(gate: dict[str, Any], promoted: dict[str, Any]) -> None:
    console.print(
        f"[bold yellow]The new model was not promoted[/bold yellow]: "
        f"{escape(str(promoted.get('reason')))}",
        soft_wrap=True,
    )
    for c in gate.get("failed_checks") or []:
        value = "-" if c.get("value") is None else f"{c['value']:.3f}"
        thr = "-" if c.get("threshold") is None else f"{c['threshold']:.3f}"
        console.print(
            f"  - {c['check']}: {value} (needs {thr}) {c.get('detail', '')}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    console.print(
        "  The filter keeps serving the production model it had (none on a first run: every "
        "decision is then `model_unavailable`, fail-closed)."
    )


def _next_steps(s: Settings, rt: dict[str, Any], promoted: dict[str, Any]) -> str:
    v = rt["version"]
    lines = [
        "[bold]Next steps[/bold]",
        "  uv run labelloop review status            # review tasks, agreement, gold",
        "  uv run labelloop demo --human             # label some tasks yourself, then retrain",
        "  uv run labelloop models list              # registered versions, gate verdicts",
        "  uv run labelloop config show              # the effective settings and where they come from",
    ]
    if not promoted.get("approved"):
        lines.append(
            f"  uv run labelloop approve {v} --force --reason '...'   # promote it anyway (recorded)"
        )
    lines += [
        f"  curl -s -H 'X-API-Key: ...' {without_credentials(s.filter_url)}/v1/decisions -d @records.json",
        "  uv run labelloop stack down               # stop the servers",
    ]
    return "\n".join(lines)


@config_app.command("show")
def config_show(
    changed: Annotated[
        bool, typer.Option("--changed", help="only settings that differ from their default")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every setting's effective value and where it comes from (environment, .env, default);
    secrets masked."""
    from labelloop.config_report import derived, effective_config

    s = _settings()
    rows = [r for r in effective_config(s) if not changed or r.source != "default"]
    if as_json:
        console.print_json(json.dumps({
            "settings": [r.__dict__ for r in rows], "derived": derived(s),
        }))  # fmt: skip
        return
    t = Table(title="labelloop settings (LABELLOOP_<NAME>, .env, default)")
    t.add_column("setting")
    t.add_column("value")
    t.add_column("source")
    for r in rows:
        style = "" if r.source == "default" else "bold"
        t.add_row(r.env_var, escape(r.value), r.source, style=style)
    console.print(t)
    d = Table(title="derived")
    d.add_column("what")
    d.add_column("value")
    for k, v in derived(s).items():
        d.add_row(k, escape(v))
    console.print(d)


@config_app.command("env-example")
def config_env_example() -> None:
    """Print .env.example, generated from the settings (`... > .env.example`)."""
    from labelloop.config_report import env_example

    sys.stdout.write(env_example())


@audit_app.command("verify")
def audit_verify() -> None:
    """Verify the audit log's hash chain; exits 1 if any entry was edited or removed."""
    from labelloop.store import AuditBrokenError

    s = _settings()
    try:
        n = _store(s).verify_audit()
    except AuditBrokenError as exc:
        err.print(f"[red]TAMPERED:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"audit log OK: {n} entries verified")


def _mount_subcommands() -> None:
    """Sub-apps that live in their own modules (imported here; they import heavy things lazily)."""
    from labelloop.cli_experiments import register as register_experiments
    from labelloop.cli_filter import register as register_filter
    from labelloop.cli_propose import register as register_propose
    from labelloop.cli_review import register as register_review
    from labelloop.cli_stack import stack_app

    app.add_typer(stack_app, name="stack", rich_help_panel=PANEL_STACK)
    register_propose(app)
    register_review(app)
    register_experiments(app, models_app)
    register_filter(app, audit_app)


_mount_subcommands()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
