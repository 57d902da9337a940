"""The loop as Prefect flows. Thin wiring only: every task calls pure functions of the stages.

Tasks are coarse (a batch of conversations, never one record). Side-effecting tasks use
``NO_CACHE`` (their inputs are settings and ids; re-running them is idempotent by design of the
label store, so caching would only hide new data).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import (
    SERVICE_RETRIES,
    drift,
    ensure_llm_limit,
    llm_slot,
    md_table,
    publish,
    task_runner,
)
from flows.progress import StepProgress, step_progress
from labelloop import stages
from labelloop.runtime import Runtime
from labelloop.settings import Settings, get_settings


def _flow_settings() -> Settings:
    """What every flow does first: settings, and no credentials in any log line of the run."""
    from labelloop.safe_text import install_log_redaction

    install_log_redaction()
    return get_settings()


def _run_id(kind: str) -> str:
    return stages.new_run_id(kind)


# ----------------------------------------------------------------------------- tasks
@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(settings: Settings, files: list[str] | None, run_id: str) -> dict[str, Any]:
    """Read new files from the source, quarantine bad records, gate, redact, store."""
    report = stages.ingest(
        Runtime(settings),
        [Path(f) for f in files] if files else None,
        run_id=run_id,
        cap_per_surface=settings.sample_cap_per_surface,
        seed=settings.review_seed,
    )
    return report.as_dict()


_PROPOSERS: dict[str, Any] = {}


def _proposer(settings: Settings, rt: Runtime) -> Any:
    """One proposer per process (loading the LLM and the index is the expensive part)."""
    from labelloop.runtime import build_proposer

    key = settings.model_dump_json()
    if key not in _PROPOSERS:
        _PROPOSERS[key] = build_proposer(settings, store=rt.store)
    return _PROPOSERS[key]


@task(name="pending-proposals", cache_policy=NO_CACHE)
def pending_task(settings: Settings, limit: int | None) -> dict[str, Any]:
    rt = Runtime(settings)
    return stages.pending_proposals(rt, _proposer(settings, rt), limit).as_dict()


@task(name="propose-batch", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def propose_batch_task(
    settings: Settings, ids: list[str], run_id: str, limited: bool, llm_budget: int | None = None
) -> dict[str, Any]:
    """LLM + kNN proposals for one batch, written to the label store (idempotent upsert);
    ``llm_budget``: the batch's share of the run's LLM budget (None: no limit)."""
    from labeling.proposals import LLMBudget

    rt = Runtime(settings)
    proposer = _proposer(settings, rt)
    progress = step_progress(run_id)
    with llm_slot(limited):
        report = stages.propose_pending(
            rt,
            proposer,
            ids,
            run_id=run_id,
            on_item=(lambda _p: progress.advance()) if progress else None,
            budget=LLMBudget(llm_budget),
        )
    return report.as_dict()


@task(name="route-and-push", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def push_task(settings: Settings, run_id: str) -> dict[str, Any]:
    """Route proposals (silver vs review) and import review tasks into Label Studio."""
    return stages.push_reviews(Runtime(settings), run_id=run_id).as_dict()


@task(name="pull-reviews", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def pull_task(settings: Settings, run_id: str) -> dict[str, Any]:
    """Collect annotations, resolve gold (overlap/adjudication), index gold in Chroma."""
    return stages.pull_reviews(Runtime(settings), run_id=run_id).as_dict()


@task(name="train-register", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def train_task(settings: Settings) -> dict[str, Any]:
    """Snapshot -> train -> register; gold labels the new model contradicts go to adjudication."""
    from flows.progress import stages_progress

    progress = stages_progress(_run_id("train"), "training")
    return stages.train(Runtime(settings), progress=progress, label_errors=True).as_dict()


@task(name="gate", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def gate_task(settings: Settings, version: str) -> dict[str, Any]:
    """The champion/challenger gate (promotion follows on ``labelloop.gate.passed``)."""
    return stages.gate(Runtime(settings), version, auto_approve=False).as_dict()


@task(name="approve", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def approve_task(settings: Settings, version: str) -> dict[str, Any]:
    """Move @production to the version (the old one keeps @previous)."""
    return stages.promote(Runtime(settings), version).as_dict()


@task(name="reload-filter", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def reload_filter_task(settings: Settings) -> dict[str, Any]:
    import httpx

    r = httpx.post(
        f"{settings.filter_url}/admin/reload",
        headers={"X-API-Key": settings.filter_admin_key.get_secret_value()},
        timeout=120,
    )
    r.raise_for_status()
    return dict(r.json())


# ----------------------------------------------------------------------------- flows
@flow(name="sample_and_propose", log_prints=True, persist_result=True)
def sample_and_propose(
    files: list[str] | None = None,
    limit: int | None = None,
    push: bool = True,
    llm_budget: int | None = None,
) -> dict[str, Any]:
    """Sample new conversations -> gate -> redact -> propose (LLM + kNN) -> route -> Label Studio.

    ``push=False`` stops after the proposals (no routing / Label Studio), e.g. for dry runs.
    ``llm_budget``: at most this many conversations get an LLM answer in this run (default: the
    ``llm_budget_per_run`` setting); the others that need one get kNN-only proposals and go to
    review.
    """
    from flows.links import link_review_project
    from labeling.proposals import split_budget
    from labelloop.runtime import studio_config

    settings = _flow_settings()
    run_id = _run_id("sample")
    logger = get_run_logger()
    limited = ensure_llm_limit(settings)
    ingest = ingest_task(settings, files, run_id)
    pending = pending_task(settings, limit)
    ids: list[str] = pending["ids"]
    size = settings.flow_batch_size
    budget = llm_budget if llm_budget is not None else settings.llm_budget_per_run
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    shares = split_budget(budget, [len(c) for c in chunks])
    progress = StepProgress(
        run_id, "label proposals (LLM + kNN)", len(ids), artifact_key="proposal-progress"
    ).start()
    futures = [
        propose_batch_task.submit(settings, chunk, run_id, limited, share)
        for chunk, share in zip(chunks, shares, strict=True)
    ]
    batches = []
    for f in futures:
        batches.append(f.result())
        progress.at_least(sum(int(b.get("n", 0)) for b in batches))
    progress.finish()
    propose = {**_sum_stats(batches), "llm_budget": budget}
    confidence = _mean_confidence(batches, propose["n"])
    previous = _previous_confidence(settings)
    _record_confidence(settings, run_id, confidence)
    pushed: dict[str, Any] = (
        push_task(settings, run_id) if ids and push else {"routing": {}, "imported": 0}
    )
    link_review_project(studio_config(settings), pushed.get("review_project"))
    logger.info(
        "ingested %s, proposed %s, imported %s",
        ingest.get("inserted"),
        propose["n"],
        pushed.get("imported"),
    )
    publish(
        "sample-and-propose",
        f"sample_and_propose {run_id}",
        {
            "Counts by surface": md_table(ingest.get("by_surface", {}), ("surface", "new")),
            "Eligibility": md_table(ingest.get("by_reason", {}), ("outcome", "conversations")),
            "Proposals (LLM calls, tokens)": md_table(
                {k: v for k, v in propose.items() if k != "confidence_sum"}, ("metric", "value")
            ),
            "Review routing": md_table(pushed.get("routing", {}), ("route", "items")),
            "Mean confidence per label vs the previous run (drift)": md_table(
                drift(confidence, previous), ("label", "mean confidence (change)")
            ),
        },
    )
    return {"run_id": run_id, "ingest": ingest, "propose": propose, "push": pushed,
            "prompt_hash": pending["prompt_hash"], "model_id": pending["model_id"]}  # fmt: skip


def _mean_confidence(batches: list[dict[str, Any]], n: int) -> dict[str, float]:
    total: Counter[str] = Counter()
    for b in batches:
        total.update(b.get("confidence_sum", {}))
    return {k: round(v / n, 4) for k, v in sorted(total.items())} if n else {}


def _previous_confidence(settings: Settings) -> dict[str, float] | None:
    stats = Runtime(settings).store.last_run_stats("sample_and_propose")
    return dict(stats.get("confidence", {})) if stats is not None else None


def _record_confidence(settings: Settings, run_id: str, confidence: dict[str, float]) -> None:
    if not confidence:
        return
    Runtime(settings).store.record_run(run_id, "sample_and_propose", {"confidence": confidence})


def _sum_stats(batches: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"n": 0, "llm_called": 0, "llm_calls": 0, "cache_hits": 0, "invalid": 0,
                             "input_tokens": 0, "output_tokens": 0, "llm_latency_s": 0.0,
                             "inserted": 0, "updated": 0}  # fmt: skip
    flags: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    cascade: Counter[str] = Counter()
    for b in batches:
        for k in total:
            total[k] += b.get(k, 0)
        flags.update(b.get("flags", {}))
        by_source.update(b.get("by_source", {}))
        cascade.update(b.get("cascade", {}))
    total["llm_call_rate"] = round(total["llm_called"] / total["n"], 4) if total["n"] else 0.0
    answered = total["llm_calls"] - total["cache_hits"]
    total["llm_s_per_call"] = round(total["llm_latency_s"] / answered, 3) if answered > 0 else 0.0
    total["flags"] = dict(flags)
    total["by_source"] = dict(by_source)
    total["cascade"] = dict(cascade)
    return total


@flow(name="collect_reviews", log_prints=True, persist_result=True)
def collect_reviews() -> dict[str, Any]:
    """Pull annotations, resolve to gold, index gold, record agreement and QA precision; announce
    enough new gold for a retrain (flows.events)."""
    from flows.events import announce_gold, label_store_resource

    settings = _flow_settings()
    run_id = _run_id("collect")
    pulled = pull_task(settings, run_id)
    gold = announce_gold(
        Runtime(settings).store,
        new=int(pulled.get("gold_created", 0)),
        threshold=settings.retrain_min_new_gold,
        resource=label_store_resource(settings.db_url),
        run_id=run_id,
    )
    publish(
        "collect-reviews",
        f"collect_reviews {run_id}",
        {
            "Annotations": md_table(
                {k: v for k, v in pulled.items() if isinstance(v, int | float)}, ("metric", "value")
            ),
            "Agreement": md_table(
                [{"group": g, **a} for g, a in pulled.get("agreement", {}).items()]
            ),
            "QA precision of auto-accepted labels": md_table(
                pulled.get("qa", {}), ("metric", "value")
            ),
            "Human gold since the last retrain (retrain runs on labelloop.gold.ready)": md_table(
                gold, ("", "")
            ),
        },
    )
    return {"run_id": run_id, **pulled, "gold_events": gold}


@flow(name="retrain", log_prints=True, persist_result=True)
def retrain(force: bool = False) -> dict[str, Any]:
    """Snapshot -> train -> register -> gate (runs when enough new gold arrived, or forced); a
    passing version is announced for promotion (flows.events)."""
    from flows.events import announce_gate_passed
    from flows.links import link_training
    from labeling.gold import human_gold_count
    from labelloop.runtime import filter_model_ref

    settings = _flow_settings()
    rt = Runtime(settings)
    n_gold = human_gold_count(rt.store)
    last = _last_retrain_gold(rt)
    if not force and n_gold - last < settings.retrain_min_new_gold:
        msg = f"{n_gold - last} new gold labels (< {settings.retrain_min_new_gold}); nothing to do"
        publish("retrain", "retrain skipped", {"Why": msg})
        return {"skipped": True, "reason": msg}
    trained = train_task(settings)
    version = str(trained["version"])
    verdict = gate_task(settings, version)
    _record_retrain(rt, n_gold, version)
    announce_gate_passed(
        verdict, tracking_uri=settings.mlflow_uri, model=filter_model_ref(settings)
    )
    link_training(trained, tracking_uri=settings.mlflow_uri, model=filter_model_ref(settings))
    publish(
        "retrain",
        f"retrain -> version {version}",
        {
            "Model metrics": md_table(trained.get("metrics", {}), ("metric", "value")),
            "Label errors (gold contradicted by the new model, sent to adjudication)": md_table(
                trained.get("label_errors", {}), ("count", "value")
            ),
            "Gate verdict": verdict["table"],
        },
    )
    return {"version": version, "train": trained, "gate": verdict}


def _last_retrain_gold(rt: Runtime) -> int:
    stats = rt.store.last_run_stats("retrain")
    return int(stats.get("gold", 0)) if stats is not None else 0


def _record_retrain(rt: Runtime, n_gold: int, version: str) -> None:
    rt.store.record_run(_run_id("retrain"), "retrain", {"gold": n_gold, "version": version})


@flow(name="promote", log_prints=True, persist_result=True)
def promote(version: str, approve: bool | None = None, reload: bool = True) -> dict[str, Any]:
    """Approve a gated version (auto per setting, or explicitly) and hot-reload the filter."""
    settings = _flow_settings()
    do_approve = settings.gate_auto_approve if approve is None else approve
    if not do_approve:
        msg = f"version {version} waits for `labelloop approve {version}`"
        publish("promote", "promotion pending", {"Next step": msg})
        return {"approved": None, "message": msg}
    out = approve_task(settings, version)
    if reload:
        out["reload"] = reload_filter_task(settings)
    publish("promote", f"promoted version {version}", {"Result": md_table(out, ("", ""))})
    return out


@task(name="score-file", cache_policy=NO_CACHE, **SERVICE_RETRIES)
def score_file_task(settings: Settings, path: str, run_id: str) -> dict[str, Any]:
    """Production filter over one file; interest signals (eligible only) for the ad side."""
    return stages.score_file_to_signals(Runtime(settings), Path(path), run_id).as_dict()


@task(name="score-partitions", cache_policy=NO_CACHE)
def score_partitions_task(settings: Settings, paths: list[str], run_id: str) -> dict[str, Any]:
    """The production filter over partitioned input on the Dask cluster at
    ``LABELLOOP_DASK_ADDRESS`` (targeting.partitions): one model load per worker, output and
    decision log per partition, a manifest so that a rerun skips finished partitions. Progress:
    the run's ``score-progress`` artifact counts finished partitions (done before included)."""
    from labelloop.runtime import scoring_spec
    from targeting.partitions import dask_client, plan_partitions, score_partitions

    out = settings.signals / "partitioned"
    signals_dir = settings.signals / "partitioned-signals"
    signals_dir.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []

    def on_done(res: Any) -> None:
        sig = signals_dir / f"{res.name}.signals.jsonl"
        files.append({"partition": res.name, "records": res.records, "by_reason": res.by_reason,
                      "model_versions": res.model_versions, "signals_path": str(sig),
                      "signals": stages.write_signals(Path(res.output), sig)})  # fmt: skip

    progress: list[StepProgress] = []  # opened when the number of partitions is known

    def on_progress(finished: int, total: int) -> None:
        if not progress:
            progress.append(
                StepProgress(
                    run_id, "score partitions", total, artifact_key="score-progress"
                ).start()
            )
        progress[0].at_least(finished)

    client = dask_client(settings.dask_address, n_workers=settings.dask_workers)
    try:
        parts = plan_partitions([Path(p) for p in paths],
                                partition_bytes=settings.score_partition_bytes,
                                partition_rows=settings.score_partition_rows)  # fmt: skip
        report = score_partitions(client, parts, out, scoring_spec(settings), on_done=on_done,
                                  on_progress=on_progress)  # fmt: skip
    finally:
        client.close()
    for p in progress:
        p.finish()
    return {**report.as_dict(), "run_id": run_id, "files": files}


@flow(name="score_batch", log_prints=True, persist_result=True)
def score_batch(files: list[str] | None = None) -> dict[str, Any]:
    """Run the production filter over a day's conversations and write interest signals (on the
    Dask cluster at LABELLOOP_DASK_ADDRESS, partitioned, when it is set)."""
    settings = _flow_settings()
    run_id = _run_id("score")
    paths = files or [str(p) for p in sorted(settings.source_dir.glob("*.jsonl"))]
    if settings.dask_address:
        res = score_partitions_task(settings, paths, run_id)
        publish("score-batch", f"score_batch {run_id} (cluster)", {
            "Decisions": md_table(res["by_reason"], ("outcome", "records")),
            "Partitions": md_table({"scored": res["scored"], "skipped (done before)": res["skipped"],
                                    "failed": len(res["failed"]), "records/s": res["records_per_s"]},
                                   ("", "")),
        })  # fmt: skip
        return res
    futures = [score_file_task.submit(settings, p, run_id) for p in paths]
    progress = StepProgress(
        run_id, "score files", len(paths), artifact_key="score-progress"
    ).start()
    reports = []
    for f in futures:
        reports.append(f.result())
        progress.at_least(len(reports))
    progress.finish()
    by_reason: Counter[str] = Counter()
    for r in reports:
        by_reason.update(r.get("by_reason", {}))
    publish(
        "score-batch",
        f"score_batch {run_id}",
        {
            "Decisions": md_table(dict(by_reason), ("outcome", "records")),
            "Signals": md_table(
                {r["signals_path"]: r["signals"] for r in reports}, ("file", "signals")
            ),
        },
    )
    return {"run_id": run_id, "files": reports, "by_reason": dict(by_reason)}


def all_flows() -> dict[str, Flow[..., Any]]:
    return {
        "sample_and_propose": sample_and_propose,
        "collect_reviews": collect_reviews,
        "retrain": retrain,
        "promote": promote,
        "score_batch": score_batch,
    }


def run_with_runner(settings: Settings, name: str, **params: Any) -> Any:
    """Run one flow now with the task runner chosen by settings."""
    flows = all_flows()
    if name not in flows:
        raise KeyError(f"unknown flow {name!r}; known: {', '.join(sorted(flows))}")
    return flows[name].with_options(task_runner=task_runner(settings))(**params)
