"""URLs of the link artifacts: MLflow run and model version, Label Studio project."""

from __future__ import annotations

import pytest

from experiments.registry import model_version_url
from flows.links import link, link_review_project, studio_project_url, training_links
from labeling.studio import StudioConfig
from targeting.model_ref import FilterModelRef

MODEL = FilterModelRef(name="labelloop-targeting-filter", alias="production")


def test_model_version_url_points_at_the_version_page_without_credentials() -> None:
    assert (
        model_version_url("http://127.0.0.1:5000/", MODEL.name, 7)
        == "http://127.0.0.1:5000/#/models/labelloop-targeting-filter/versions/7"
    )
    url = model_version_url("https://ops:s3cret@mlflow.example:443", "my model/x", "12")
    assert url == "https://***@mlflow.example:443/#/models/my%20model%2Fx/versions/12"
    assert model_version_url("file:///srv/mlruns", MODEL.name, 1) is None  # no UI to link to


def test_studio_project_url_is_the_task_list_without_credentials() -> None:
    cfg = StudioConfig("http://127.0.0.1:8080/", api_key="token-never-in-urls")
    assert studio_project_url(cfg, 3) == "http://127.0.0.1:8080/projects/3/data"
    leaky = StudioConfig("http://admin:pw@ls.internal:8080", api_key="t")
    assert studio_project_url(leaky, 12) == "http://***@ls.internal:8080/projects/12/data"


def test_training_links_from_a_retrain_result() -> None:
    trained = {"run_id": "abc", "version": "4",
               "run_url": "http://127.0.0.1:5000/#/experiments/1/runs/abc"}  # fmt: skip
    assert training_links(trained, tracking_uri="http://127.0.0.1:5000", model=MODEL) == {
        "mlflow-run": "http://127.0.0.1:5000/#/experiments/1/runs/abc",
        "mlflow-model-version": "http://127.0.0.1:5000/#/models/labelloop-targeting-filter/versions/4",
    }
    local = {"run_id": "abc", "version": None, "run_url": "/srv/mlruns (experiment 1, run abc)"}
    assert training_links(local, tracking_uri="/srv/mlruns", model=MODEL) == {
        "mlflow-run": None,
        "mlflow-model-version": None,
    }


def test_links_outside_a_flow_run_create_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**_: object) -> None:
        raise AssertionError("no artifact outside a run")

    monkeypatch.setattr("prefect.artifacts.create_link_artifact", boom)
    assert link("mlflow-run", "http://127.0.0.1:5000/#/x", "run", "d") is False
    assert link_review_project(StudioConfig("http://127.0.0.1:8080", "t"), 5) is False
    assert link_review_project(StudioConfig("http://127.0.0.1:8080", "t"), None) is False
