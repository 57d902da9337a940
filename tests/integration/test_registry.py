"""Training -> MLflow run -> registered version -> gate -> approve/rollback, on a real MLflow server.

The server is started by ``infra.stack.Stack(settings).up(services=["mlflow"])`` (sqlite backend,
served artifacts, free port, temporary state dir). Models here use TF-IDF features only (no ONNX
needed); ``test_minilm_model_end_to_end`` (marked ``model``) bundles the real MiniLM.
"""

from __future__ import annotations

import os
import socket
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from experiments.dataset import Snapshot, snapshot_from_records
from experiments.gate import GateError, GateRules, alias_version, approve, evaluate, rollback
from experiments.registry import (
    TrainOutcome,
    default_prototypes,
    log_and_register,
    train_and_register,
)
from experiments.training import TrainConfig, train_filter
from labeling.policy import Policy, load_policy
from labeling.records import Conversation
from labeling.synth import generate
from labeling.taxonomy import Taxonomy, load_taxonomy
from labelloop.settings import Settings
from targeting.model_ref import FilterModelRef

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TFIDF_ONLY = TrainConfig(use_embeddings=False, use_tfidf=True)
FILTER = FilterModelRef(name="labelloop-targeting-filter", alias="production")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture(scope="module")
def mlflow_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from infra.stack import Stack

    state = tmp_path_factory.mktemp("mlflow-state")
    settings = Settings(
        _env_file=None, env="test", state_dir=state, host="127.0.0.1", mlflow_port=_free_port()
    )  # type: ignore[call-arg]
    stack = Stack(settings)
    try:
        stack.up(services=["mlflow"])
        yield settings
    finally:
        stack.down(services=["mlflow"])


@pytest.fixture(scope="module")
def uri(mlflow_settings: Settings) -> str:
    return mlflow_settings.mlflow_uri


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def taxonomy(policy: Policy) -> Taxonomy:
    return load_taxonomy(categories=policy.categories)


@pytest.fixture(scope="module")
def snapshot(policy: Policy, taxonomy: Taxonomy) -> Snapshot:
    convs = [Conversation.model_validate(r) for r in generate(700, 11)]
    return snapshot_from_records(convs, taxonomy, policy.categories)


@pytest.fixture(scope="module")
def v1(uri: str, snapshot: Snapshot, policy: Policy, taxonomy: Taxonomy) -> TrainOutcome:
    return train_and_register(
        snapshot, tracking_uri=uri, model_name=FILTER.name, policy=policy, taxonomy=taxonomy,
        embedder=None, onnx_path=None, tokenizer_path=None, config=TFIDF_ONLY,
        lineage={"prompt_hash": "p-test"},
    )  # fmt: skip


def _broken(uri: str, snapshot: Snapshot, policy: Policy, taxonomy: Taxonomy) -> TrainOutcome:
    """A challenger that never blocks: thresholds unreachable, no floors, prototypes or lexicon."""
    res = train_filter(
        snapshot, taxonomy, None, config=TFIDF_ONLY, prototype_texts=default_prototypes(policy)
    )
    bundle = replace(
        res.bundle,
        any_threshold=1.01,
        sensitive_thresholds=dict.fromkeys(res.bundle.categories, 1.01),
        prototypes={},
        lexicon=dict.fromkeys(res.bundle.categories, ()),
    )
    return log_and_register(
        snapshot, replace(res, bundle=bundle), tracking_uri=uri, model_name=FILTER.name,
        policy=policy, taxonomy=taxonomy, embedder=None, onnx_path=None, tokenizer_path=None,
        config=TFIDF_ONLY,
    )  # fmt: skip


def test_training_logs_run_and_registers_version(v1: TrainOutcome, uri: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    assert v1.version == "1"
    assert v1.run_url.startswith(uri)
    run = MlflowClient(uri).get_run(v1.run_id)
    assert run.data.tags["snapshot_hash"] == v1.snapshot_hash
    assert run.data.tags["prompt_hash"] == "p-test"
    for k in ("policy_version", "taxonomy_version", "label_store_revision", "label_studio_project"):
        assert k in run.data.tags
    for k in (
        "leak_rate",
        "false_block_rate",
        "interest_micro_f1",
        "interest_macro_f1",
        "recall_health",
    ):
        assert k in run.data.metrics
    assert run.inputs is not None
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {v1.snapshot_hash[:32]}
    names = {a.path for a in MlflowClient(uri).list_artifacts(v1.run_id, "eval")}
    assert {"eval/confusion_matrices.png", "eval/pr_curves_sensitive.png", "eval/per_category_metrics.csv",
            "eval/eval_set.jsonl"} <= names  # fmt: skip
    info = mlflow.models.get_model_info(v1.model_uri)
    assert info.signature is not None
    assert info.saved_input_example_info is not None


def test_pyfunc_predict_through_mlflow(v1: TrainOutcome, record_factory: Any) -> None:
    import mlflow.pyfunc
    import pandas as pd

    from targeting.model import load_filter

    make = record_factory
    recs = [
        make(conversation_id="ok"),
        make(conversation_id="de", country="DE"),
        make(
            conversation_id="sens",
            turns=[{"role": "user", "text": "Our union rep says the strike vote is Thursday."}],
        ),
    ]
    for r in recs:
        r.pop("gold")
    model = mlflow.pyfunc.load_model(v1.model_uri)
    out = model.predict(pd.DataFrame(recs))
    by = {d["conversation_id"]: d for d in out}
    assert by["de"]["eligible"] is False and by["de"]["excluded_reason"] == "region"
    assert by["sens"]["excluded_reason"] == "sensitive_topic" and by["sens"]["interests"] == []
    assert by["ok"]["policy_version"] == load_policy().version
    filt = load_filter(v1.model_uri)
    assert filt.model_version == "1"
    bad = filt.decide([{"conversation_id": "bad", "country": "US"}, "nonsense"])
    assert [d.excluded_reason for d in bad] == ["invalid_record", "invalid_record"]


def test_signature_outputs_name_the_interests(v1: TrainOutcome) -> None:
    import mlflow

    info = mlflow.models.get_model_info(v1.model_uri)
    assert info.signature is not None and info.signature.outputs is not None
    outputs = {c.name: c for c in info.signature.outputs.inputs}
    assert {"conversation_id", "eligible", "interests", "excluded_reason"} <= set(outputs)
    interests = outputs["interests"].to_dict()  # an array of {id, name, score} objects
    assert interests["type"] == "array" and interests["items"]["type"] == "object"
    assert set(interests["items"]["properties"]) == {"id", "name", "score"}


PORTABLE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, os, sys
    model_dir, repo = sys.argv[1], os.path.realpath(sys.argv[2])
    # the repository is importable here only through the editable install's path entry: drop it
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.realpath(p) != repo]
    missing = [m for m in ("labeling", "targeting") if importlib.util.find_spec(m) is None]
    import mlflow.pyfunc
    model = mlflow.pyfunc.load_model(model_dir)
    records = json.loads(sys.argv[3])
    out = model.predict(records)
    import labeling, targeting
    print(json.dumps({"missing_before_load": missing, "decisions": out,
                      "code_from": [labeling.__file__, targeting.__file__]}))
    """
)


def test_registered_model_loads_outside_the_repository(
    v1: TrainOutcome, tmp_path_factory: pytest.TempPathFactory, record_factory: Any
) -> None:
    """The model directory, copied away from the repo, loads in a Python whose cwd and sys.path
    do not include the repo: its code (labeling, targeting) travels with the model."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile

    import mlflow

    repo = Path(__file__).resolve().parents[2]
    outside = Path(tempfile.mkdtemp(prefix="labelloop-portable-"))
    try:
        assert not outside.resolve().is_relative_to(repo)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=v1.model_uri, dst_path=str(tmp_path_factory.mktemp("dl"))
        )
        model_dir = outside / "model"
        shutil.copytree(local, model_dir)
        assert (model_dir / "code" / "labeling").is_dir()
        assert (model_dir / "code" / "targeting").is_dir()
        recs = [
            record_factory(conversation_id="ok"),
            record_factory(conversation_id="de", country="DE"),
        ]
        for r in recs:
            r.pop("gold")
        script = outside / "load.py"
        script.write_text(PORTABLE_SCRIPT)
        env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")
        }
        proc = subprocess.run(
            [sys.executable, "-I", str(script), str(model_dir), str(repo), json.dumps(recs)],
            cwd=outside, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["missing_before_load"] == ["labeling", "targeting"]
        assert all(Path(f).resolve().is_relative_to(model_dir.resolve()) for f in got["code_from"])
        by = {d["conversation_id"]: d for d in got["decisions"]}
        assert by["de"]["eligible"] is False and by["de"]["excluded_reason"] == "region"
        assert isinstance(by["ok"]["interests"], list)
        assert by["ok"]["policy_version"] == load_policy().version
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_registered_model_serves_with_mlflow_models_serve(
    v1: TrainOutcome, uri: str, record_factory: Any
) -> None:
    """``mlflow models serve`` (the local env) answers /invocations in MLflow's documented input
    format with the same decisions as the pyfunc loaded in this process."""
    import contextlib
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    import httpx
    import mlflow.pyfunc

    port = _free_port()
    outside = Path(tempfile.mkdtemp(prefix="labelloop-serve-"))
    # the scoring server is started as `uvicorn ...` from PATH: the venv's bin first
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = uri
    log = (outside / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", v1.model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (outside / "serve.log").read_text()[-4000:]
            try:
                if httpx.get(f"{base}/ping", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (outside / "serve.log").read_text()[-4000:]
            time.sleep(1)
        recs = [
            record_factory(conversation_id="ok"),
            record_factory(conversation_id="de", country="DE"),
            record_factory(
                conversation_id="sens",
                turns=[{"role": "user", "text": "Our union rep says the strike vote is Thursday."}],
            ),
        ]
        for r in recs:
            r.pop("gold")
        res = httpx.post(f"{base}/invocations", json={"dataframe_records": recs}, timeout=120)
        assert res.status_code == 200, res.text
        served = res.json()["predictions"]
        by = {d["conversation_id"]: d for d in served}
        assert set(by) == {"ok", "de", "sens"}
        assert by["de"]["eligible"] is False and by["de"]["excluded_reason"] == "region"
        assert by["sens"]["eligible"] is False
        assert by["sens"]["excluded_reason"] == "sensitive_topic" and by["sens"]["interests"] == []
        assert by["ok"]["policy_version"] == load_policy().version
        for d in served:  # the ad side's view: never the category, the turn or the languages
            assert not {"sensitive_category", "trigger_turn", "languages"} & set(d)
            assert isinstance(d["interests"], list)
            assert all(set(i) == {"id", "name", "score"} for i in d["interests"])
        # the same answers as the model loaded here (decisions, interests and scores)
        local = mlflow.pyfunc.load_model(v1.model_uri).predict(recs)
        assert served == json.loads(json.dumps(local))
        # a record that breaks the signature is refused with 400, not answered
        bad = httpx.post(
            f"{base}/invocations",
            json={"dataframe_records": [{"conversation_id": "x", "turns": "nonsense"}]},
            timeout=60,
        )
        assert bad.status_code == 400
    finally:
        # the server's own process group: mlflow and the uvicorn it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(outside, ignore_errors=True)


def test_gate_approve_rollback(
    v1: TrainOutcome, uri: str, snapshot: Snapshot, policy: Policy, taxonomy: Taxonomy
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    # the TF-IDF-only model trained on a few dozen items is far from the production ceilings
    # (false-block, long-dialogue leak); those are covered by the unit tests of the rules, this
    # test is about the registry mechanics: aliases, tags, comparison with the champion
    lenient = GateRules(
        sensitive_recall_floor=0.5, max_false_block_rate=1.0, max_long_dialogue_leak_rate=1.0
    )
    # no champion: only absolute rules
    r1 = evaluate("1", tracking_uri=uri, model=FILTER, rules=lenient)
    assert r1.passed, r1.table_markdown()
    assert r1.champion_version is None
    assert alias_version(uri, FILTER.name, "challenger") == "1"
    assert client.get_model_version("labelloop-targeting-filter", "1").tags["gate"] == "passed"
    assert r1.gate_run_id is not None
    assert client.get_run(r1.gate_run_id).data.tags["gate.verdict"] == "passed"
    approve("1", tracking_uri=uri, model=FILTER)
    assert alias_version(uri, FILTER.name, "production") == "1"
    assert alias_version(uri, FILTER.name, "challenger") is None

    # a broken challenger fails the gate against the champion
    broken = _broken(uri, snapshot, policy, taxonomy)
    assert broken.version == "2"
    r2 = evaluate("2", tracking_uri=uri, model=FILTER, rules=lenient)
    assert not r2.passed
    assert r2.champion_version == "1"
    failed = {c.name for c in r2.checks if not c.passed}
    assert "leak_rate <= champion" in failed
    assert any(n.startswith("recall[") for n in failed)
    with pytest.raises(GateError):
        approve("2", tracking_uri=uri, model=FILTER)
    with pytest.raises(GateError):
        approve("2", tracking_uri=uri, model=FILTER, force=True)
    assert alias_version(uri, FILTER.name, "production") == "1"

    forced = approve("2", tracking_uri=uri, model=FILTER, force=True, reason="incident drill")
    assert forced["forced"] is True
    tags = client.get_model_version("labelloop-targeting-filter", "2").tags
    assert tags["approval_forced"] == "true" and tags["approval_reason"] == "incident drill"
    assert alias_version(uri, FILTER.name, "production") == "2"
    assert alias_version(uri, FILTER.name, "previous") == "1"

    rb = rollback(tracking_uri=uri, model=FILTER)
    assert rb == {"production": "1", "rolled_back": "2"}
    assert alias_version(uri, FILTER.name, "production") == "1"
    with pytest.raises(GateError):
        rollback(tracking_uri=uri, model=FILTER)

    # an equivalent retrain passes against the champion (same leak rate, same F1)
    v3 = train_and_register(
        snapshot, tracking_uri=uri, model_name=FILTER.name, policy=policy, taxonomy=taxonomy,
        embedder=None, onnx_path=None, tokenizer_path=None, config=TFIDF_ONLY,
    )  # fmt: skip
    r3 = evaluate(str(v3.version), tracking_uri=uri, model=FILTER, rules=lenient)
    assert r3.passed, r3.table_markdown()
    assert r3.champion_version == "1"


def test_cli_models_list_and_refusals(
    v1: TrainOutcome, mlflow_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelloop.cli import app

    monkeypatch.setenv("LABELLOOP_MLFLOW_TRACKING_URI", mlflow_settings.mlflow_uri)
    monkeypatch.setenv("LABELLOOP_STATE_DIR", str(mlflow_settings.state))
    runner = CliRunner()
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    assert "labelloop-targeting-filter" in res.output
    res = runner.invoke(app, ["approve", "999"])
    assert res.exit_code != 0


def test_cli_train_from_records(
    mlflow_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from labeling.synth import write_jsonl
    from labelloop.cli import app

    src = tmp_path / "gold.jsonl"
    write_jsonl(generate(300, 5), src)
    monkeypatch.setenv("LABELLOOP_MLFLOW_TRACKING_URI", mlflow_settings.mlflow_uri)
    monkeypatch.setenv("LABELLOOP_STATE_DIR", str(tmp_path / "state"))
    res = CliRunner().invoke(app, ["train", "--from-records", str(src), "--no-embeddings"])
    assert res.exit_code == 0, res.output
    assert "run: http://" in res.output


@pytest.mark.model
def test_minilm_model_end_to_end(
    uri: str, snapshot: Snapshot, policy: Policy, taxonomy: Taxonomy, tmp_path: Path
) -> None:
    from labeling.assets import EMBEDDING_MODEL_ID, ensure_embedding_model
    from labeling.embeddings import MiniLMEmbedder
    from targeting.model import load_filter

    onnx, tok = ensure_embedding_model(tmp_path / "models")
    small = Snapshot(
        snapshot.train[:250], snapshot.eval[:60], snapshot.categories, snapshot.lineage
    )
    out = train_and_register(
        small, tracking_uri=uri, model_name=FILTER.name, policy=policy, taxonomy=taxonomy,
        embedder=MiniLMEmbedder(onnx, tok, max_length=128),
        onnx_path=onnx, tokenizer_path=tok, embedding_model_id=EMBEDDING_MODEL_ID, register=True,
    )  # fmt: skip
    filt = load_filter(out.model_uri)
    assert filt.embedder is not None
    recs = generate(20, 77)
    decisions = filt.decide(recs)
    assert len(decisions) == 20
    assert all(d.excluded_reason != "model_unavailable" for d in decisions)
    from mlflow import MlflowClient

    from labeling.int8 import machine_facts

    tags = MlflowClient(uri).get_run(out.run_id).data.tags  # the machine its vectors came from
    assert tags["training_cpu"] == machine_facts()["cpu"] and tags["training_onnxruntime"]
    assert "training_int8_isa" in tags
    # how this machine computed the encoder (this file's products are float: exact anywhere)
    assert filt.bundle is not None and filt.bundle.meta["encoder_numerics"] == {
        "int8_weight_extent": 0, "int8_products_exact": True, "cpu": machine_facts()["cpu"],
    }  # fmt: skip
    assert tags["training_encoder_int8_exact"] == "true"
    filt.configure_serving()  # served where it was trained
    assert filt.numerics_mismatch is None
