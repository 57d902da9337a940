"""What every CLI module shares: consoles, settings with a readable error, the label store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

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
