"""What every CLI module shares: consoles, settings with a readable error, the label store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labelloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from labelloop.store import LabelStore

console = Console()
err = Console(stderr=True)


def cli_settings() -> Settings:
    """Settings from env/.env; a configuration error exits 2 with the message (no traceback)."""
    try:
        return get_settings()
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def cli_store(settings: Settings) -> LabelStore:
    """The label store, migrated to the latest schema."""
    from labelloop.runtime import Runtime

    return Runtime(settings).store


@contextmanager
def cli_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback (phase, done, total) drawn as rich progress bars; when stderr is not
    a terminal (a log file, CI), one plain line per phase at most every ``PLAIN_EVERY_S`` seconds
    and when a phase completes."""
    if not enabled:
        yield lambda _phase, _done, _total: None
        return
    if not err.is_terminal:
        yield _plain_progress()
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)

        yield update


PLAIN_EVERY_S = 10.0


def _plain_progress() -> Callable[[str, int, int], None]:
    import sys
    import time

    start = time.monotonic()
    last: dict[str, float] = {}

    def update(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = bool(total) and done >= total
        if not finished and now - last.get(phase, -PLAIN_EVERY_S) < PLAIN_EVERY_S:
            return
        last[phase] = now
        of = f"/{total}" if total else ""
        print(f"[{now - start:7.1f}s] {phase}: {done}{of}", file=sys.stderr, flush=True)

    return update
