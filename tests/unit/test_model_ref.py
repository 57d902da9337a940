"""The filter's registered name and alias come from the settings, for training, the gate and
serving alike (no second owner)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from labelloop.settings import Settings
from targeting.model_ref import FilterModelRef

NAME, ALIAS = "acme-filter", "live"


@pytest.fixture
def custom(isolated_env: Path) -> Settings:
    return Settings(filter_model_name=NAME, filter_model_alias=ALIAS, gate_auto_approve=True)


class FakeRegistry:
    """The calls of MlflowClient the gate and the registry listing make, on one dict of aliases."""

    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], str] = {}
        self.tags: dict[tuple[str, str], dict[str, str]] = {}

    def get_model_version(self, name: str, version: str) -> Any:
        return SimpleNamespace(tags=self.tags.get((name, version), {}), run_id="r" + version)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        from mlflow.exceptions import MlflowException

        if (name, alias) not in self.aliases:
            raise MlflowException(f"no alias {alias} on {name}")
        return SimpleNamespace(version=self.aliases[(name, alias)])

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[(name, alias)] = version

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        del self.aliases[(name, alias)]

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags.setdefault((name, version), {})[key] = value


def test_runtime_builds_the_ref_from_the_settings(custom: Settings) -> None:
    from labelloop.runtime import filter_model_ref, scoring_spec, served_model_uri

    ref = filter_model_ref(custom)
    assert ref == FilterModelRef(name=NAME, alias=ALIAS)
    assert ref.alias_uri == f"models:/{NAME}@{ALIAS}"
    assert ref.version_uri(4) == f"models:/{NAME}/4"
    assert served_model_uri(custom) == f"models:/{NAME}@{ALIAS}"
    assert scoring_spec(custom).model_uri == f"models:/{NAME}@{ALIAS}"
    fixed = custom.model_copy(update={"filter_model_uri": "/models/fixed"})
    assert served_model_uri(fixed) == "/models/fixed"


def test_training_registers_under_the_configured_name(
    custom: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import experiments.registry as registry
    from labelloop import stages
    from labelloop.runtime import Runtime

    seen: dict[str, Any] = {}
    monkeypatch.setattr(stages, "build_snapshot", lambda rt, from_records=None: "snap")
    monkeypatch.setattr(stages, "with_training_pairs", lambda snapshot, pairs, cfg: snapshot)
    monkeypatch.setattr(registry, "train_and_register", lambda snapshot, **kw: seen.update(kw))
    stages.train(Runtime(custom), use_embeddings=False)
    assert seen["model_name"] == NAME


def test_gate_and_approval_move_the_configured_alias_of_the_configured_name(
    custom: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import experiments.gate as gate
    from labelloop import stages
    from labelloop.runtime import Runtime

    registry = FakeRegistry()
    registry.tags[(NAME, "3")] = {"gate": "passed"}
    registry.aliases[(NAME, ALIAS)] = "2"
    monkeypatch.setattr(gate, "_client", lambda tracking_uri: registry)
    evaluated: list[FilterModelRef] = []

    def fake_evaluate(version: str, **kw: Any) -> Any:
        evaluated.append(kw["model"])
        return SimpleNamespace(passed=True)

    monkeypatch.setattr(gate, "evaluate", fake_evaluate)
    gated = stages.gate(Runtime(custom), "3")
    assert gated.approved and gated.promoted == stages.PromoteReport("3", "2", changed=True)
    assert evaluated == [FilterModelRef(NAME, ALIAS)]
    assert registry.aliases == {(NAME, ALIAS): "3", (NAME, "previous"): "2"}
    assert gate.alias_version(custom.mlflow_uri, NAME, ALIAS) == "3"
    assert gate.alias_version(custom.mlflow_uri, "labelloop-targeting-filter", ALIAS) is None

    gate.rollback(tracking_uri=custom.mlflow_uri, model=FilterModelRef(NAME, ALIAS))
    assert registry.aliases == {(NAME, ALIAS): "2"}


def test_serving_follows_the_configured_name_and_alias(custom: Settings) -> None:
    from labelloop.runtime import engine_from_settings, service_config
    from targeting.service import make_holder

    assert service_config(custom).model == FilterModelRef(NAME, ALIAS)
    assert make_holder(service_config(custom)).describe.startswith(f"models:/{NAME}@{ALIAS} on ")
    engine = engine_from_settings(custom, load=False)
    assert engine.holder.describe.startswith(f"models:/{NAME}@{ALIAS} on ")
