"""``labelloop review push|pull|status`` and ``labelloop annotate-sim`` (human review in Label Studio).

Mounted by ``labelloop/cli.py`` with ``register(app)`` (adds the ``review`` sub-app and the
top-level ``annotate-sim`` command).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from labelloop.cli_common import PANEL_REVIEW
from labelloop.cli_common import cli_progress as _progress
from labelloop.cli_common import cli_settings as _settings
from labelloop.cli_common import cli_store as _store
from labelloop.runtime import Runtime
from labelloop.safe_text import without_credentials
from labelloop.settings import Settings

if TYPE_CHECKING:
    from labeling.policy import Policy
    from labeling.studio import StudioClient
    from labeling.taxonomy import Taxonomy

review_app = typer.Typer(
    help="Human review in Label Studio: route + import (push), collect + resolve (pull), status.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Mount on the main app: ``labelloop review ...`` and ``labelloop annotate-sim``."""
    app.add_typer(review_app, name="review", rich_help_panel=PANEL_REVIEW)
    app.command("annotate-sim", rich_help_panel=PANEL_REVIEW)(annotate_sim)


# ---- plumbing ----------------------------------------------------------------------------------
def _domain(s: Settings) -> tuple[Taxonomy, Policy]:
    from labelloop.runtime import policy_and_taxonomy

    policy, taxonomy = policy_and_taxonomy(s)
    return taxonomy, policy


def _client(s: Settings) -> StudioClient:
    from labelloop.runtime import studio_client

    return studio_client(s)


def _fail(exc: Exception) -> typer.Exit:
    """One line for the error; a server that cannot be reached is named with how to start it."""
    from labelloop.unreachable import unreachable_service

    found = unreachable_service(exc, _settings())
    if found is not None:
        err.print(f"[red]{found.message}[/red]", highlight=False, soft_wrap=True)
        return typer.Exit(3)
    err.print(f"[red]error:[/red] {type(exc).__name__}: {without_credentials(str(exc))}")
    return typer.Exit(1)


# ---- commands ----------------------------------------------------------------------------------
@review_app.command("push")
def push_cmd(
    budget: Annotated[
        int | None, typer.Option(help="max items sent this run (default: settings)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="tasks per import request")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Route new proposals (auto-accept as silver, or review) and import review tasks with
    pre-annotations into Label Studio. Resumable: re-running never duplicates a task."""
    from labelloop.stages import push_reviews

    rt = Runtime(_settings())
    try:
        with _progress(not as_json) as progress:
            report = push_reviews(rt, budget=budget, batch_size=batch_size, progress=progress).push
    except Exception as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    r = report.routing
    console.print(
        f"run {report.run_id}: routed {r.get('total', 0)} proposals -> auto-accepted "
        f"{r.get('auto_accepted', 0)} (silver written {report.silver_written}), review "
        f"{r.get('needs_review', 0)} + QA sample {r.get('reason_qa_sample', 0)}; sent "
        f"{r.get('dispatch_send', 0)}, queued {r.get('dispatch_queued', 0)}; imported "
        f"{report.imported} task(s), reconciled {report.reconciled} in {report.seconds:.1f}s"
    )
    if report.invalid:
        err.print(
            f"[yellow]{len(report.invalid)} invalid item(s):[/yellow] "
            + "; ".join(report.invalid[:5])
        )


@review_app.command("pull")
def pull_cmd(
    reindex: Annotated[
        bool, typer.Option(help="re-upsert every human gold label into the vector store")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Collect new and edited annotations, resolve them to gold (overlap, adjudication), index gold
    in the vector store, record agreement and QA precision. Idempotent."""
    from labelloop.stages import pull_reviews

    rt = Runtime(_settings())
    try:
        with _progress(not as_json) as progress:
            report = pull_reviews(rt, reindex=reindex, progress=progress).pull
    except Exception as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps(report.as_dict(), default=str))
        return
    console.print(
        f"run {report.run_id}: {report.annotations_new} new / {report.annotations_updated} edited "
        f"annotation(s), {report.skipped} skipped, {report.cancelled} deleted; gold created "
        f"{report.gold_created}, updated {report.gold_updated}; to adjudication "
        f"{report.adjudication_sent}; waiting {report.waiting}; indexed {report.indexed}"
    )
    if report.index_error:
        err.print(
            f"[yellow]vector store upsert failed ({report.index_error}); run `review pull --reindex`[/yellow]"
        )
    _print_metrics(report.agreement, report.qa)


def _print_metrics(agreement: dict[str, Any], qa: dict[str, Any]) -> None:
    t = Table(title="agreement on overlapped tasks")
    for col in ("group", "items", "Krippendorff alpha", "Cohen kappa"):
        t.add_column(col)
    for g, a in agreement.items():
        t.add_row(g, str(a.get("n_items")), str(a.get("alpha")), str(a.get("kappa")))
    console.print(t)
    console.print(
        f"QA of auto-accepted labels: {qa.get('n_reviewed', 0)} reviewed, interest precision "
        f"{qa.get('interest_precision')}, exact match {qa.get('exact_match')}, sensitive missed "
        f"{qa.get('sensitive_missed', 0)}"
    )


@review_app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """Queue sizes (review, adjudication), gold by origin, last agreement and QA precision."""
    from labeling.collection import queue_counts
    from labeling.studio import label_config, project_title, remembered_projects, schema_version

    s = _settings()
    taxonomy, policy = _domain(s)
    store = _store(s)
    version = schema_version(label_config(taxonomy, policy))
    out: dict[str, Any] = {"project": project_title(version)}
    projects = remembered_projects(store, version)
    stats = store.last_run_stats("review_pull") or {}
    if projects is not None:
        out["queues"] = queue_counts(store, projects)
    out["last_pull"] = {
        "run_id": stats.get("run_id"),
        "agreement": stats.get("agreement", {}),
        "qa": stats.get("qa", {}),
    }
    if as_json:
        console.print_json(json.dumps(out, default=str))
        return
    console.print(f"project: {out['project']}")
    for name, counts in (out.get("queues") or {}).items():
        console.print(
            f"{name}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty")
        )
    _print_metrics(out["last_pull"]["agreement"], out["last_pull"]["qa"])


def annotate_sim(
    accuracy: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="chance an answer equals the record's gold")
    ] = 0.95,
    annotators: Annotated[int, typer.Option(min=1, help="number of simulated annotator users")] = 3,
    seed: Annotated[int, typer.Option(help="seed of the simulated noise")] = 0,
    adjudicate: Annotated[bool, typer.Option(help="also answer open adjudication tasks")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """SIMULATION for demos/benchmarks: answer open Label Studio tasks as fake annotator users
    from the input records' gold labels with noise. Never use it to produce real labels."""
    from labeling.annotator_sim import simulate
    from labeling.studio import bootstrap

    s = _settings()
    taxonomy, policy = _domain(s)
    store = _store(s)
    try:
        client = _client(s)
        projects = bootstrap(client, taxonomy, policy)
        with _progress(not as_json) as progress:
            report = simulate(
                store,
                client,
                projects,
                taxonomy,
                policy.categories,
                accuracy=accuracy,
                annotators=annotators,
                seed=seed,
                adjudicate=adjudicate,
                progress=progress,
            )
    except Exception as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    console.print(
        f"SIMULATION: {report.annotations} annotation(s) ({report.perturbed} perturbed, "
        f"{report.adjudications} adjudication(s)) on {report.tasks_seen} task(s)"
    )
