"""``labelloop stack up|down|status|logs``: the local stack of real servers (see infra/stack.py).

Mounted by ``labelloop/cli.py`` as ``app.add_typer(stack_app, name="stack")``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.stack import Stack, StackError
from labelloop.settings import Settings, get_settings

stack_app = typer.Typer(
    help="Run the local stack (Prefect, MLflow, Label Studio, filter) as local processes.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)


def _names(only: str | None) -> list[str] | None:
    if only is None:
        return None
    names = [n.strip() for n in only.split(",") if n.strip()]
    return names or None


def _fail(exc: StackError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(code=1)


@stack_app.command("up")
def up(
    only: Annotated[
        str | None,
        typer.Option("--only", help="comma-separated services (default: the enabled ones)"),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="seconds to wait for health (default: settings)"),
    ] = None,
) -> None:
    """Start the services that are not running yet and wait until they are healthy."""
    settings = get_settings()
    stack = Stack(settings)
    names = _names(only)
    pg_row = None
    if settings.local_postgres and (names is None or "postgres" in names):
        pg_row = _postgres_up(settings)
        names = [n for n in names if n != "postgres"] if names is not None else None
    try:
        with console.status("starting the stack…"):
            reports = stack.up(services=names, timeout_s=timeout) if names != [] else []
    except StackError as exc:
        raise _fail(exc) from None
    table = Table(title="labelloop stack up")
    for col in ("service", "URL", "pid", "result", "time"):
        table.add_column(col)
    if pg_row is not None:
        table.add_row(*pg_row)
    for r in reports:
        took = f"{r.start_s:.1f}s" + (f" (+{r.prepare_s:.0f}s setup)" if r.prepare_s >= 1 else "")
        table.add_row(r.name, r.url, str(r.pid), r.action, took)
    console.print(table)


def _postgres_up(settings: Settings) -> tuple[str, str, str, str, str]:
    """Start the label store's local PostgreSQL (LABELLOOP_DATABASE=postgres) if needed."""
    import time

    from infra.postgres import LocalPostgres, PostgresError
    from labelloop.safe_text import without_credentials

    pg = LocalPostgres(settings.postgres_dir)
    was_running = pg.running
    t0 = time.monotonic()
    try:
        with console.status("starting PostgreSQL…"):
            url = pg.start()
    except PostgresError as exc:
        err_console.print(f"[red]error:[/red] postgres: {escape(str(exc))}")
        raise typer.Exit(code=1) from None
    return ("postgres", without_credentials(url), "-",
            "already-running" if was_running else "started", f"{time.monotonic() - t0:.1f}s")  # fmt: skip


@stack_app.command("down")
def down(
    only: Annotated[
        str | None, typer.Option("--only", help="comma-separated services (default: all)")
    ] = None,
) -> None:
    """Stop the processes that `stack up` started (SIGTERM, then SIGKILL after a grace)."""
    settings = get_settings()
    stack = Stack(settings)
    names = _names(only)
    try:
        stopped = stack.down(services=[n for n in names if n != "postgres"] if names else None)
    except StackError as exc:
        raise _fail(exc) from None
    if settings.local_postgres and (names is None or "postgres" in names):
        from infra.postgres import LocalPostgres, PostgresError

        try:
            if LocalPostgres(settings.postgres_dir).stop():
                stopped.append("postgres")
        except PostgresError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(code=1) from None
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_app.command("status")
def status(
    only: Annotated[
        str | None, typer.Option("--only", help="comma-separated services (default: all)")
    ] = None,
) -> None:
    """Show each service: URL, pid and health."""
    stack = Stack(get_settings())
    try:
        rows = stack.status(services=_names(only))
    except StackError as exc:
        raise _fail(exc) from None
    table = Table(title="labelloop stack")
    for col in ("service", "URL", "pid", "health"):
        table.add_column(col)
    for st in rows:
        if st.healthy and st.running and st.ready is False:
            health = "[yellow]healthy, not ready[/yellow]"
        elif st.healthy and st.running:
            health = "[green]healthy[/green]"
        elif st.healthy:
            health = "[yellow]healthy (not started by labelloop)[/yellow]"
        elif st.running:
            health = "[yellow]running, not healthy[/yellow]"
        else:
            health = "stopped" if st.enabled else "[dim]disabled[/dim]"
        table.add_row(st.name, st.url, str(st.pid) if st.pid else "-", health)
    console.print(table)


@stack_app.command("logs")
def logs(
    name: Annotated[str, typer.Argument(help="service name")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines from the end")] = 50,
) -> None:
    """Print the end of a service's log (secrets redacted)."""
    stack = Stack(get_settings())
    try:
        text = stack.tail_log(name, lines)
    except StackError as exc:
        raise _fail(exc) from None
    if not text:
        err_console.print(f"no log yet at {stack.log_file(name)}")
        return
    typer.echo(text, nl=not text.endswith("\n"))
