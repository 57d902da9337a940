"""``labelloop propose`` and ``labelloop plan``: label proposals from the command line.

Mount with ``register(app)`` (adds the two top-level commands to the main Typer app).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from labelloop.cli_common import PANEL_LOOP
from labelloop.cli_common import cli_settings as _settings
from labelloop.runtime import Runtime
from labelloop.settings import Settings

console = Console()
err = Console(stderr=True)

# Measured on the 2-core dev box (Qwen2.5-Coder-1.5B Q4_K_M, system prompt KV-cached): used by
# `plan` for the wall-time estimate when no run has been recorded yet.
DEFAULT_PROMPT_TOKENS_PER_S = 60.0
DEFAULT_OUTPUT_TOKENS_PER_S = 6.0


def propose(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="JSONL/Parquet conversation records")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="proposals JSONL to write")] = Path(
        "proposals.jsonl"
    ),
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="first N eligible only")
    ] = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="kNN (+ lexicon) only")] = False,
    llm_budget: Annotated[
        int | None,
        typer.Option(
            "--llm-budget",
            min=0,
            help="at most this many LLM answers; the rest get kNN-only proposals for review "
            "(default: LABELLOOP_LLM_BUDGET_PER_RUN)",
        ),
    ] = None,
) -> None:
    """Gate + redact records, propose labels (LLM + Chroma kNN), write JSONL and the label store."""
    from labeling.proposals import LLMBudget, ProposeStats, record_run
    from labelloop.runtime import build_proposer
    from labelloop.stages import ingest_records, new_run_id, propose_pending

    s = _settings()
    if not input.exists():
        err.print(f"[red]input not found:[/red] {input}")
        raise typer.Exit(2)
    rt = Runtime(s)
    store = rt.store
    run_id = new_run_id()
    gated = ingest_records(rt, [input], limit=limit, run_id=run_id)
    eligible = gated.eligible_rows
    excluded = {k: v for k, v in gated.by_reason.items() if k != "eligible"}
    console.print(
        f"read {gated.read}, quarantined {gated.quarantined}, eligible {len(eligible)}, "
        f"excluded {len(gated.rows) - len(eligible)} {excluded}"
    )
    try:
        proposer = build_proposer(s, store=store, with_llm=not no_llm)
    except Exception as exc:
        err.print(f"[red]cannot build the proposer:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from exc
    stats = ProposeStats()
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        output.open("w", encoding="utf-8") as fh,
        Progress(
            TextColumn("[bold]proposing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("llm {task.fields[llm]}"),
            TimeRemainingColumn(),
            console=console,
        ) as bar,
    ):
        task = bar.add_task("propose", total=len(eligible), llm=0)

        def written(p: Any) -> None:
            fh.write(p.model_dump_json() + "\n")
            bar.update(task, advance=1, llm=stats.llm_called)

        propose_pending(
            rt,
            proposer,
            [r["conversation_id"] for r in eligible],
            run_id=run_id,
            turns={r["conversation_id"]: r["redacted_turns"] or [] for r in eligible},
            stats=stats,
            on_item=written,
            write_each=True,
            budget=LLMBudget(llm_budget if llm_budget is not None else s.llm_budget_per_run),
        )
    record_run(store, run_id, stats, {"input": str(input), "model_id": proposer.model_id})
    d = stats.as_dict()
    t = Table(title=f"run {run_id}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in (
        "n",
        "llm_called",
        "llm_call_rate",
        "llm_calls",
        "cache_hits",
        "invalid",
        "input_tokens",
        "output_tokens",
        "llm_s_per_call",
        "wall_s",
        "conversations_per_s",
    ):
        t.add_row(k, str(d[k]))
    t.add_row("by_source", json.dumps(d["by_source"]))
    t.add_row("flags", json.dumps(d["flags"]))
    console.print(t)
    console.print(f"wrote {len(eligible)} proposals to {output} (model {proposer.model_id})")


def plan(
    input: Annotated[
        Path, typer.Option("--input", "-i", help="JSONL/Parquet conversation records")
    ],
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="first N eligible only")
    ] = None,
) -> None:
    """Dry run: eligibility counts, one rendered prompt, estimated LLM calls, tokens and time."""
    from labeling.prompts import label_prompt_variables, load_prompt
    from labeling.records import render_turns
    from labelloop.stages import read_gated

    s = _settings()
    if not input.exists():
        err.print(f"[red]input not found:[/red] {input}")
        raise typer.Exit(2)
    rt = Runtime(s)
    gated = read_gated(rt, [input], limit=limit)
    eligible = gated.eligible_rows
    policy, taxonomy = rt.policy, rt.taxonomy
    prompt = load_prompt()
    console.print(f"read {gated.read}, quarantined {gated.quarantined}")
    t = Table(title="eligibility")
    t.add_column("outcome")
    t.add_column("conversations", justify="right")
    for k, v in sorted(gated.by_reason.items(), key=lambda kv: (kv[0] != "eligible", kv[0])):
        t.add_row(k, str(v))
    console.print(t)
    if not eligible:
        console.print("nothing eligible: no LLM calls")
        return
    texts = [render_turns(r["redacted_turns"] or []) for r in eligible]
    sample = prompt.render(
        **label_prompt_variables(policy, taxonomy, examples=[], conversation=texts[0][:1280])
    )
    console.rule(
        f"prompt {prompt.name} v{prompt.version} sha256 {prompt.short_hash} (no few-shot shown)"
    )
    console.print(sample.system, markup=False, highlight=False)
    console.print(sample.user, markup=False, highlight=False)
    console.rule()
    sys_tokens = len(sample.system) / 4
    conv_tokens = sum(min(len(x), s.prompt_conversation_tokens * 4) / 4 for x in texts)
    per_call_new = conv_tokens / len(texts) + s.fewshot_token_budget + 30
    out_tokens = 40
    calls_hi = len(eligible)
    calls_cascade = round(len(eligible) * 0.4) if s.cascade_enabled else calls_hi
    measured = _measured_seconds_per_call(s)
    secs_per_call = (
        measured
        if measured is not None
        else per_call_new / DEFAULT_PROMPT_TOKENS_PER_S + out_tokens / DEFAULT_OUTPUT_TOKENS_PER_S
    )
    t = Table(title="estimate (no LLM was called)")
    t.add_column("")
    t.add_column("all via LLM", justify="right")
    t.add_column("with cascade (~40 %)", justify="right")
    t.add_row("LLM calls", str(calls_hi), str(calls_cascade))
    t.add_row(
        "input tokens",
        f"{calls_hi * (per_call_new + sys_tokens):,.0f}",
        f"{calls_cascade * (per_call_new + sys_tokens):,.0f}",
    )
    t.add_row("output tokens", f"{calls_hi * out_tokens:,}", f"{calls_cascade * out_tokens:,}")
    t.add_row("wall time", _hms(calls_hi * secs_per_call), _hms(calls_cascade * secs_per_call))
    console.print(t)
    how = (
        "measured from this store's LLM cache" if measured is not None else "default speed estimate"
    )
    console.print(f"model {s.llm}; {secs_per_call:.1f} s per LLM call ({how})")


def _measured_seconds_per_call(s: Settings) -> float | None:
    """Mean latency of past LLM calls recorded in the label store's cache (read only)."""
    from labelloop.store import LabelStore

    if s.db_url.startswith("sqlite:///") and not Path(s.db_url.removeprefix("sqlite:///")).exists():
        return None
    store = LabelStore(s.db_url)  # not migrated: nothing is written
    try:
        return store.llm_seconds_per_call()
    except Exception:
        return None
    finally:
        store.dispose()


def _hms(sec: float) -> str:
    sec = int(sec)
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m{sec % 60:02d}s"


def register(app: typer.Typer) -> None:
    """Mount ``propose`` and ``plan`` on the main app."""
    app.command("propose", rich_help_panel=PANEL_LOOP)(propose)
    app.command("plan", rich_help_panel=PANEL_LOOP)(plan)
