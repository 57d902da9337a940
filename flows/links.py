"""Link artifacts: a flow run's page in the Prefect UI points to where its work can be seen --
the MLflow run and the registered model version after a retrain, the Label Studio review project
after review tasks were pushed. URLs are built from the typed configs of ``labelloop.runtime``
and never carry credentials."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from labelloop.safe_text import without_credentials

if TYPE_CHECKING:
    from labeling.studio import StudioConfig
    from targeting.model_ref import FilterModelRef

log = logging.getLogger(__name__)


def is_web_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("http://", "https://"))


def studio_project_url(studio: StudioConfig, project_id: int) -> str:
    """The data manager (task list) of a Label Studio project."""
    return without_credentials(f"{studio.base_url.rstrip('/')}/projects/{int(project_id)}/data")


def link(key: str, url: str | None, text: str, description: str) -> bool:
    """One Prefect link artifact in the current flow or task run; False (and nothing created)
    outside a run, for a URL that is not a web address, or when the server refuses it -- a
    link never fails a run."""
    from prefect.context import FlowRunContext, TaskRunContext

    if not is_web_url(url) or (FlowRunContext.get() is None and TaskRunContext.get() is None):
        return False
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(
            link=without_credentials(str(url)), link_text=text, key=key, description=description
        )
    except Exception as exc:
        log.warning("link artifact %s not created: %s", key, exc)
        return False
    return True


def training_links(
    trained: Mapping[str, Any], *, tracking_uri: str, model: FilterModelRef
) -> dict[str, str | None]:
    """The MLflow run of a retrain and the model version it registered."""
    from experiments.registry import model_version_url

    version = trained.get("version")
    run_url = trained.get("run_url")
    return {
        "mlflow-run": run_url if is_web_url(run_url) else None,
        "mlflow-model-version": (
            model_version_url(tracking_uri, model.name, version) if version is not None else None
        ),
    }


def link_training(
    trained: Mapping[str, Any], *, tracking_uri: str, model: FilterModelRef
) -> dict[str, bool]:
    """Link artifacts to the MLflow run and the registered version of a retrain."""
    urls = training_links(trained, tracking_uri=tracking_uri, model=model)
    version = trained.get("version")
    return {
        "mlflow-run": link("mlflow-run", urls["mlflow-run"], f"MLflow run {trained.get('run_id')}",
                           "the training run: metrics, parameters, evaluation artifacts"),
        "mlflow-model-version": link(
            "mlflow-model-version", urls["mlflow-model-version"],
            f"{model.name} version {version}", "the registered model version and its gate tags",
        ),
    }  # fmt: skip


def link_review_project(studio: StudioConfig, project_id: int | None) -> bool:
    """A link artifact to the Label Studio project that received the review tasks."""
    if project_id is None:
        return False
    return link(
        "label-studio-review",
        studio_project_url(studio, project_id),
        f"Label Studio project {project_id}",
        "the review tasks pushed by this run",
    )
