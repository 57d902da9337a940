"""CLI: train, evaluate (the gate), approve, rollback, models list.

Mount with ``from labelloop.cli_experiments import register; register(app)`` in ``labelloop/cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from labelloop.cli_common import PANEL_MODEL, MultiValueCommand, cli_progress, deprecated
from labelloop.cli_common import cli_settings as _settings

console = Console()
err = Console(stderr=True)


def train_cmd(
    from_records: Annotated[
        list[Path] | None,
        typer.Option(
            "--from-records",
            help="train on these record files (gold labels) instead of the label store; "
            "several paths after one flag or the flag repeated",
        ),
    ] = None,
    no_embeddings: Annotated[
        bool, typer.Option("--no-embeddings", help="TF-IDF features only (fast)")
    ] = False,
    evaluate_after: Annotated[
        bool, typer.Option("--evaluate", help="run the gate on the new version")
    ] = False,
) -> None:
    """Train the targeting filter, log an MLflow run, register a version; prints the run URL."""
    from labelloop import stages
    from labelloop.runtime import Runtime

    s = _settings()
    for p in from_records or []:
        if not p.exists():
            err.print(f"[red]input not found:[/red] {p}")
            raise typer.Exit(2)
    rt = Runtime(s)
    try:
        with cli_progress(True) as progress:
            out = stages.train(
                rt, from_records=from_records, use_embeddings=not no_embeddings, progress=progress
            )
    except ValueError as exc:
        err.print(f"[red]training failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    m = out.outcome.metrics
    typer.echo(f"run: {out.outcome.run_url}")
    typer.echo(
        f"model: {out.outcome.model_uri} (version {out.version}) "
        f"snapshot {out.outcome.snapshot_hash[:12]}"
    )
    typer.echo(
        f"eval: leak_rate={m.get('leak_rate', float('nan')):.4f} false_block_rate={m.get('false_block_rate', float('nan')):.4f} "
        f"interest_micro_f1={m.get('interest_micro_f1', float('nan')):.4f} (n={int(m.get('n_eval', 0))})"
    )
    if evaluate_after and out.version is not None:
        gated = stages.gate(rt, out.version)
        _print_plain(gated.result.table_markdown())
        for n in gated.result.notes:
            _print_plain(f"note: {n}")
        if gated.approved:
            console.print(f"auto-approved: version {out.version} is now @production")


def _print_plain(text: str) -> None:
    """``text`` as it is: ``recall[health]`` and ``[forced]`` are not rich markup."""
    console.print(text, markup=False)


def _version(command: str, positional: str | None, option: str | None) -> str:
    """The model version given as ``VERSION`` (or, deprecated, ``--version VERSION``; not two
    different ones)."""
    if option is not None:
        deprecated(f"labelloop {command} --version V", f"labelloop {command} V")
    if positional is not None and option is not None and positional != option:
        raise typer.BadParameter(
            f"two different versions given ({positional!r} and --version {option!r})",
            param_hint="VERSION",
        )
    version = positional if positional is not None else option
    if version is None:
        raise typer.BadParameter("missing: give the model version as VERSION", param_hint="VERSION")
    return version


def evaluate_cmd(
    version_arg: Annotated[
        str | None, typer.Argument(metavar="VERSION", help="model version to gate")
    ] = None,
    version_opt: Annotated[
        str | None,
        typer.Option("--version", "-v", hidden=True, help="deprecated: give VERSION instead"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the verdict as JSON")] = False,
) -> None:
    """Gate VERSION against the @production champion on the frozen eval split (exit 1 if it fails)."""
    from labelloop import stages
    from labelloop.runtime import Runtime

    version = _version("evaluate", version_arg, version_opt)
    gated = stages.gate(Runtime(_settings()), version)
    result, approved = gated.result, gated.approved
    if as_json:
        console.print_json(json.dumps({"version": result.version, "champion": result.champion_version,
                                       "passed": result.passed, "summary": result.summary(),
                                       "gate_run_id": result.gate_run_id, "approved": approved}))  # fmt: skip
    else:
        _print_plain(result.table_markdown())
        for n in result.notes:
            _print_plain(f"note: {n}")
        if result.passed:
            console.print(
                f"version {version} passed: alias @challenger"
                + (" and @production" if approved else "")
            )
    if not result.passed:
        raise typer.Exit(1)


def approve_cmd(
    version_arg: Annotated[
        str | None,
        typer.Argument(metavar="VERSION", help="model version to promote to @production"),
    ] = None,
    version_opt: Annotated[
        str | None,
        typer.Option("--version", "-v", hidden=True, help="deprecated: give VERSION instead"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="approve although the gate did not pass")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="why (required with --force; recorded)")
    ] = None,
) -> None:
    """Move @production to VERSION (the old production keeps @previous)."""
    from experiments.gate import GateError
    from labelloop import stages
    from labelloop.runtime import Runtime

    version = _version("approve", version_arg, version_opt)
    try:
        r = stages.promote(Runtime(_settings()), version, force=force, reason=reason)
    except GateError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    if r.changed:
        _print_plain(
            f"@production -> version {r.version} (previous: {r.previous})"
            + (" [forced]" if r.forced else "")
        )
    else:
        console.print(f"version {r.version} is already @production")


def rollback_cmd() -> None:
    """Point @production back at @previous."""
    from experiments.gate import GateError, rollback
    from labelloop.runtime import filter_model_ref

    s = _settings()
    try:
        r = rollback(tracking_uri=s.mlflow_uri, model=filter_model_ref(s))
    except GateError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"@production -> version {r['production']} (rolled back from {r['rolled_back']})")


def models_list() -> None:
    """Versions of the filter model (filter_model_name) with aliases and gate status."""
    from experiments.registry import list_versions
    from labelloop.runtime import filter_model_ref

    s = _settings()
    name = filter_model_ref(s).name
    t = Table(title=name)
    for col in ("version", "aliases", "gate", "forced", "run_id"):
        t.add_column(col)
    for r in list_versions(s.mlflow_uri, name):
        t.add_row(r["version"], ",".join(r["aliases"]), r["gate"], r["forced"], r["run_id"] or "")
    console.print(t)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add train/evaluate/approve/rollback, and `list` to the main CLI's `models` group."""
    app.command("train", cls=MultiValueCommand, rich_help_panel=PANEL_MODEL)(train_cmd)
    app.command("evaluate", rich_help_panel=PANEL_MODEL)(evaluate_cmd)
    app.command("approve", rich_help_panel=PANEL_MODEL)(approve_cmd)
    app.command("rollback", rich_help_panel=PANEL_MODEL)(rollback_cmd)
    models_app.command("list")(models_list)
