"""The whole cycle on a small synthetic set against the real servers (Prefect, MLflow, Label
Studio, the filter service, PostgreSQL for the label store) and the real local LLM.

sample -> propose -> review tasks -> SIMULATED annotators -> collect -> retrain -> gate ->
approve -> the filter serves the new version -> score a batch; then every flow again: no duplicates.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from infra.stack import Stack
from labelloop.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
N = 32


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def e2e(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[tuple[Settings, dict[str, Any]]]:
    state = tmp_path_factory.mktemp("e2e-state")
    prefect, mlflow, ls, flt = _free_ports(4)
    env = {
        # The label store of the whole cycle is a real PostgreSQL server (started by the tests):
        # the other integration tests (review, chaos, Dask runner) run on SQLite, the default.
        "LABELLOOP_DATABASE_URL": postgres_server.create_database("e2e_cycle"),
        "LABELLOOP_ENV": "test",
        "LABELLOOP_STATE_DIR": str(state),
        "LABELLOOP_PREFECT_PORT": str(prefect),
        "LABELLOOP_MLFLOW_PORT": str(mlflow),
        "LABELLOOP_LABEL_STUDIO_PORT": str(ls),
        "LABELLOOP_FILTER_PORT": str(flt),
        "LABELLOOP_SOURCE_DIR": str(state / "incoming"),
        "LABELLOOP_LS_VENV": os.environ.get(
            "LABELLOOP_LS_VENV", str(REPO / ".labelloop" / "venvs" / "label-studio")
        ),
        "LABELLOOP_FILTER_POLL_S": "0",
        "LABELLOOP_REVIEW_BUDGET": "40",
        "LABELLOOP_RETRAIN_MIN_NEW_GOLD": "5",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    # reuse the assembled model files (make test installs them into the repo's state dir)
    settings.models_dir.parent.mkdir(parents=True, exist_ok=True)
    repo_models = REPO / ".labelloop" / "models"
    if repo_models.is_dir() and not settings.models_dir.exists():
        settings.models_dir.symlink_to(repo_models, target_is_directory=True)
    stack = Stack(settings)
    try:
        # generous: the machine may be busy with other jobs while the servers start
        stack.up(services=["prefect", "mlflow", "label-studio", "filter"], timeout_s=900)
        from flows.demo import reporting_to, run_cycle

        # the stack's Prefect server, even if prefect was imported earlier in this session
        with reporting_to(settings.prefect_api):
            out = run_cycle(settings, n=N, seed=11)
            yield settings, out
    finally:
        stack.down()
        mp.undo()


def _count(settings: Settings, model: Any) -> int:
    from labelloop.store import LabelStore

    store = LabelStore(settings.db_url)
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_review_tasks_equal_items_routed(e2e):
    _, out = e2e
    push = out["sample_and_propose"]["push"]
    routing = push["routing"]
    assert push["imported"] + push.get("reconciled", 0) == routing.get("dispatch_send", 0)
    assert push["imported"] > 0


def test_gold_equals_resolved_annotations(e2e):
    settings, _ = e2e
    from labelloop.store import LabelStore
    from labelloop.store.models import AnnotationRow, GoldLabelRow, ReviewTaskRow

    with LabelStore(settings.db_url).session() as s:
        human_gold = set(
            s.scalars(
                select(GoldLabelRow.conversation_id).where(
                    GoldLabelRow.origin.in_(["human", "adjudicated"])
                )
            )
        )
        done = set(
            s.scalars(select(ReviewTaskRow.conversation_id).where(ReviewTaskRow.status == "done"))
        )
        annotated = set(
            s.scalars(
                select(AnnotationRow.conversation_id).where(AnnotationRow.status == "completed")
            )
        )
        # the retrain's label-error check may reopen a resolved task: its gold stays until
        # the adjudicator answers
        reopened = set(
            s.scalars(
                select(ReviewTaskRow.conversation_id).where(
                    ReviewTaskRow.reason == "label_error", ReviewTaskRow.status != "done"
                )
            )
        )
    assert human_gold, "no gold labels came back from review"
    # every resolved review task became gold, and gold exists only where people annotated
    assert human_gold - reopened == done - reopened
    assert human_gold <= annotated


def test_model_registered_with_lineage_and_gate_verdict(e2e):
    settings, out = e2e
    from mlflow import MlflowClient

    version = out["retrain"]["version"]
    # the label-error check ran against the real Label Studio (counts, no error)
    errs = out["retrain"]["train"]["label_errors"]
    assert "error" not in errs and errs["queued"] <= errs["issues"], errs
    client = MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)
    mv = client.get_model_version("labelloop-targeting-filter", version)
    run = client.get_run(mv.run_id)
    tags = {**run.data.tags, **run.data.params}
    for key in ("policy", "taxonomy", "prompt", "snapshot"):
        assert any(key in k for k in tags), f"no lineage tag mentioning {key}: {sorted(tags)}"
    assert any("gate" in k for k in mv.tags), mv.tags
    aliases = client.get_registered_model("labelloop-targeting-filter").aliases
    # promoted only through its gate: never forced by the demo
    assert mv.tags.get("approval_forced") != "true"
    if out["promote"].get("approved"):
        assert mv.tags["gate"] == "passed" and aliases.get("production") == version
    else:
        assert mv.tags["gate"] == "failed" and aliases.get("production") != version
        assert out["promote"]["reason"] and out["retrain"]["gate"]["failed_checks"]


def test_filter_serves_new_version_and_no_sensitive_record_eligible(e2e):
    settings, out = e2e
    version = out["retrain"]["version"]
    data = Path(out["synth"]["path"])
    if not out["promote"].get("approved"):  # no production model: every decision fails closed
        assert set(out["score_batch"]["by_reason"]) <= {"model_unavailable", "region",
                                                        "unlinked_account", "before_policy_date",
                                                        "surface_disabled", "invalid_record",
                                                        "unsupported_language"}  # fmt: skip
        return
    records = [json.loads(line) for line in data.read_text().splitlines()]
    headers = {"X-API-Key": settings.filter_api_key.get_secret_value()}
    model = httpx.get(f"{settings.filter_url}/v1/model", headers=headers, timeout=30).json()
    assert str(model["version"]) == str(version)
    decisions = []
    for i in range(0, len(records), 32):
        r = httpx.post(f"{settings.filter_url}/v1/decisions", json={"records": records[i : i + 32]},
                       headers=headers, timeout=120)  # fmt: skip
        assert r.status_code == 200, r.text
        decisions += r.json()["decisions"]
    by_id = {d["conversation_id"]: d for d in decisions}
    for rec in records:
        d = by_id[rec["conversation_id"]]
        assert "sensitive_category" not in d
        assert str(d["model_version"]) == str(version)
        if rec["gold"]["sensitive"] or rec["country"] in {"DE", "FR", "GB", "KR"}:
            assert d["eligible"] is False and d["interests"] == [], rec["conversation_id"]
    # score_batch went through the same filter: its counts cover every record of the file
    assert sum(out["score_batch"]["by_reason"].values()) == len(records)
    assert out["score_batch"]["files"][0]["model_versions"] == [str(version)]


def test_rerunning_every_flow_creates_no_duplicates(e2e):
    settings, out = e2e
    from flows.loop import collect_reviews, sample_and_propose, score_batch
    from labelloop.store.models import (
        AnnotationRow,
        ConversationRow,
        GoldLabelRow,
        ProposalRow,
        ReviewTaskRow,
    )

    tables = (ConversationRow, ProposalRow, ReviewTaskRow, AnnotationRow, GoldLabelRow)
    before = {t.__tablename__: _count(settings, t) for t in tables}
    data = out["synth"]["path"]
    again = sample_and_propose(files=[data])
    assert again["ingest"]["inserted"] == 0
    assert again["propose"]["n"] == 0
    collect_reviews()
    score_batch(files=[data])
    after = {t.__tablename__: _count(settings, t) for t in tables}
    assert after == before
