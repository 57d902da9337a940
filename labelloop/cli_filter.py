"""``labelloop filter`` (batch targeting decisions) and ``labelloop audit verify-decisions``.

Mount from ``labelloop/cli.py``::

    from labelloop.cli_filter import register as register_filter
    register_filter(app, audit_app)

which adds the ``filter`` command to ``app`` and ``verify-decisions`` to the ``audit`` group.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from labelloop.cli_common import PANEL_SERVING
from labelloop.cli_common import cli_settings as _settings
from labelloop.safe_text import without_credentials
from targeting.audit import VerifyResult, verify

console = Console()
err = Console(stderr=True)


def verify_decisions_log(path: Path) -> VerifyResult:
    """Verify the decision audit log's hash chain (and its head file): (ok, n, first_bad_line)."""
    return verify(Path(path))


def filter_command(
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="JSONL file of conversation records",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="JSONL of decisions for the ad side (no categories)"),
    ],
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            help="model to use (models:/name@alias, models:/name/3, runs:/..., a local dir); "
            "default: LABELLOOP_FILTER_MODEL_URI or models:/<filter_model_name>@<filter_model_alias>",
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="records per scoring call")
    ] = 256,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            "--quarantine", help="bad lines go here (default <state>/quarantine/filter-<run>.jsonl)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Decide every record of a JSONL file with the production filter model (fail closed, audited)."""
    from labelloop.runtime import Runtime, engine_from_settings, served_model_uri
    from labelloop.stages import score_file
    from targeting.audit import AuditError
    from targeting.batch import OutputBusyError, resumable_run

    logging.getLogger("labelloop.targeting").setLevel(logging.WARNING)
    s = _settings()
    uri = model_uri or served_model_uri(s)
    with console.status(
        f"loading {without_credentials(uri)} from {without_credentials(s.mlflow_uri)} …"
    ):
        engine = engine_from_settings(s, model_uri=uri)
    if engine.holder.current is None:
        err.print(
            f"[red]cannot load the filter model[/red] {without_credentials(uri)}: "
            f"{without_credentials(engine.holder.last_error or '')}"
        )
        err.print("no decisions written (every record would fail closed as model_unavailable).")
        raise typer.Exit(2)
    prior = resumable_run(input_path, output)
    if prior is not None:
        err.print(
            f"resuming interrupted run {prior.run_id}: {prior.records} decisions already in {output}.partial"
        )
    size = input_path.stat().st_size
    columns = (
        TextColumn("[bold]filter[/bold]"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[records]} records, {task.fields[rate]}/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    t0 = time.perf_counter()
    with Progress(*columns, console=err, transient=as_json) as progress:
        task = progress.add_task("filter", total=size, records=0, rate="-")

        def on_progress(done_bytes: int, records: int) -> None:
            rate = records / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, completed=done_bytes, records=records, rate=f"{rate:,.0f}")

        try:
            scored = score_file(
                Runtime(s),
                input_path,
                output,
                engine=engine,
                chunk_size=chunk_size,
                quarantine=quarantine,
                on_progress=on_progress,
            )
        except OutputBusyError as exc:
            err.print(f"[red]{exc}[/red]; wait for it to finish")
            raise typer.Exit(2) from exc
        except AuditError as exc:
            err.print(f"[red]stopped: {exc}[/red]")
            err.print(
                "no decision is written without an audit entry; fix the audit log and run the "
                "same command again to resume"
            )
            raise typer.Exit(1) from exc
    report, qpath = scored.filter, scored.quarantine_path
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    if report.interrupted:
        i = report.interrupted
        err.print(
            f"[yellow]an earlier interrupted run[/yellow] ({i['run_id'] or 'unknown run'}, "
            f"{i['decisions']} decisions) could not be resumed ({i['why']}); its partial output "
            f"is kept at {i['kept_at']} and its decisions are in the audit log"
        )
    console.print(
        f"run {report.run_id}: {report.stats.records} decisions -> {output} "
        f"({report.per_second:,.0f} records/s, model {', '.join(sorted(report.model_versions)) or '-'})"
    )
    t = Table(title="decisions")
    t.add_column("outcome")
    t.add_column("records", justify="right")
    for k, v in sorted(report.stats.by_reason.items(), key=lambda kv: (kv[0] != "eligible", kv[0])):
        t.add_row(k, str(v))
    console.print(t)
    if report.stats.by_language:
        langs = ", ".join(
            f"{k} {v}" for k, v in sorted(report.stats.by_language.items(), key=lambda kv: -kv[1])
        )
        console.print(f"languages (main language of each record read): {langs}")
    if report.quarantined:
        console.print(f"quarantined {report.quarantined} bad lines: {qpath}")
    console.print(f"audit log: {s.decisions_audit_path}")


def verify_decisions_command(
    path: Annotated[
        Path | None,
        typer.Argument(help="decision audit log (default <state>/audit/decisions.jsonl)"),
    ] = None,
) -> None:
    """Verify the decision audit log's hash chain; exits 1 if a line was edited, removed or moved."""
    p = path or _settings().decisions_audit_path
    res = verify_decisions_log(p)
    if not res.ok:
        where = f"line {res.first_bad_line}: " if res.first_bad_line else ""
        err.print(
            f"[red]TAMPERED:[/red] {p}: {where}{res.reason} ({res.n} entries verified before it)"
        )
        raise typer.Exit(1)
    console.print(f"decision audit log OK: {res.n} entries verified ({p})")


def register(app: typer.Typer, audit_app: typer.Typer | None = None) -> None:
    """Add ``filter`` to ``app`` and ``verify-decisions`` to the ``audit`` group."""
    app.command("filter", rich_help_panel=PANEL_SERVING)(filter_command)
    if audit_app is not None:
        audit_app.command("verify-decisions")(verify_decisions_command)
