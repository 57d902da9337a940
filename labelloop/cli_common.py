"""What every CLI module shares: consoles, settings with a readable error, the label store."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperCommand

from labelloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from labelloop.store import LabelStore

console = Console()
err = Console(stderr=True)

# the sections of ``labelloop --help``
PANEL_LOOP = "Loop"
PANEL_REVIEW = "Review"
PANEL_MODEL = "Model"
PANEL_SERVING = "Serving"
PANEL_STACK = "Stack"


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


def deprecated(old: str, new: str) -> None:
    """One line on stderr: the spelling ``old`` still works but ``new`` is the one to use."""
    err.print(f"deprecated: {old}; use {new}", markup=False, highlight=False, soft_wrap=True)


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


def spread_option_values(args: Sequence[str], options: Collection[str]) -> list[str]:
    """``args`` with every extra value after one of ``options`` given its own flag:
    ``--from-records a b --json`` -> ``--from-records a --from-records b --json``.

    A token starting with ``-`` (another option) ends the run of values; ``--`` stops the rewrite.
    The repeated form (``--from-records a --from-records b``) passes unchanged.
    """
    out: list[str] = []
    current: str | None = None  # the multi-value option whose values are being read
    has_value = False  # whether ``current`` got its first value already
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, _ = arg.partition("=")
        if arg.startswith("-") and arg != "-":
            current = name if name in options else None
            has_value = bool(eq)
            out.append(arg)
        elif current is not None and has_value:
            out += [current, arg]
        else:
            has_value = True
            out.append(arg)
    return out


class MultiValueCommand(TyperCommand):
    """A command whose repeatable options (``list[...]`` options) also take several values after one
    flag: ``--from-records a.jsonl b.jsonl`` is ``--from-records a.jsonl --from-records b.jsonl``.

    Only for commands without visible positional arguments, where a bare value after such an
    option can mean nothing else (a hidden one, the deprecated positional form of the same values,
    may stay: ``sample a.jsonl`` and ``sample --input a.jsonl``).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # typer ships its own click: compare parameter kinds by name, not by class
        if any(
            p.param_type_name == "argument" and not getattr(p, "hidden", False) for p in self.params
        ):
            raise TypeError(f"{self.name}: MultiValueCommand takes no positional arguments")
        multi = {
            o for p in self.params if p.param_type_name == "option" and p.multiple for o in p.opts
        }
        return super().parse_args(ctx, spread_option_values(args, multi))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """The usage line without hidden (deprecated) positional arguments."""
        rv = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                rv.extend(param.get_usage_pieces(ctx))
        return rv


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
