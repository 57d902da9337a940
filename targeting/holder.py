"""The model holder: the one reference to the targeting-filter model that is serving now.

* Alias mode (the default): resolves ``models:/<name>@<alias>`` to a registered version with
  ``MlflowClient.get_model_version_by_alias``, downloads and loads *that version*
  (``models:/<name>/<version>``, so the alias moving mid-load cannot mix versions), and swaps the
  reference. :meth:`ModelHolder.refresh` does it once (``POST /admin/reload``); a daemon thread
  does it every ``poll_s`` seconds (:meth:`start`). Loading happens beside the serving model:
  requests keep using the old one until the new one is fully loaded.
* Fixed mode: a given model URI (``models:/name/3``, ``runs:/<id>/model``, a local directory) is
  loaded once (``labelloop filter --model-uri``).

Callers take ``holder.current`` **once** per request/batch and use that :class:`LoadedModel` for
every record of it, so a swap never splits a request between versions, in-flight requests finish
on the old model, and nothing is dropped (the swap is a single reference assignment). A failed
load keeps the current model and records ``last_error``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from labelloop.safe_text import without_credentials
from targeting.decide import AUDIT_PARAM

log = logging.getLogger("labelloop.targeting")

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?$")


class Predictor(Protocol):
    def predict(self, data: Any) -> Any: ...


@dataclass(frozen=True)
class ResolvedVersion:
    uri: str
    """What to load (``models:/name/version`` for the registry)."""
    version: str
    name: str | None = None
    alias: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    download_uri: str | None = None
    """Where the artifacts are (``mlflow-artifacts:/...``); default ``uri``."""


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and the metadata stamped on every decision it makes."""

    model: Predictor
    uri: str
    version: str
    name: str | None
    alias: str | None
    run_id: str | None
    policy_version: str | None
    loaded_at: datetime
    local_dir: Path | None = None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "uri": without_credentials(self.uri),
            "run_id": self.run_id,
            "policy_version": self.policy_version,
            "loaded_at": self.loaded_at.isoformat(),
        }


@dataclass(frozen=True)
class RefreshResult:
    changed: bool
    previous_version: str | None
    version: str | None
    error: str | None = None


Resolver = Callable[[], ResolvedVersion]
Loader = Callable[[ResolvedVersion], LoadedModel]


def parse_model_uri(model_uri: str) -> tuple[str, str] | None:
    """``(name, alias)`` for ``models:/name@alias``; None for any fixed URI."""
    m = _ALIAS_URI.match(model_uri.strip())
    return (m["name"], m["alias"]) if m else None


class DirectPredictor:
    """Calls a pyfunc's ``PythonModel.predict(context, records)`` directly.

    ``PyFuncModel.predict`` first enforces the logged input signature (converting the records to
    a DataFrame and back): ~1.7 ms for one record and ~0.3 ms per record in a batch of 64, more
    than the scoring of a small model. The engine has already validated every record against the
    stricter record contract, so the filter skips that step. Falls back to ``PyFuncModel.predict``
    for models that are not a ``PythonModel``.
    """

    def __init__(self, python_model: Any, context: Any, pyfunc: Any) -> None:
        self.python_model = python_model
        self.context = context
        self.metadata = getattr(pyfunc, "metadata", None)

    def predict(self, data: Any) -> Any:
        # the full decisions: the engine writes the sensitive category to the decision log
        return self.python_model.predict(self.context, data, {AUDIT_PARAM: True})

    @classmethod
    def wrap(cls, pyfunc: Any) -> Predictor:
        try:
            inner = pyfunc.unwrap_python_model()
            context = pyfunc._model_impl.context
        except Exception:  # not a PythonModel flavour (or mlflow internals changed)
            return cast(Predictor, pyfunc)
        if not callable(getattr(inner, "predict", None)):
            return cast(Predictor, pyfunc)
        return cls(inner, context, pyfunc)


def _policy_version_of(model: Any, tags: dict[str, str]) -> str | None:
    meta = getattr(getattr(model, "metadata", None), "metadata", None)
    if isinstance(meta, dict):
        for key in ("policy_version", "policy_hash"):
            if isinstance(meta.get(key), str):
                return str(meta[key])
    for key in ("policy_version", "policy_hash"):
        if key in tags:
            return tags[key]
    return None


class MlflowSource:
    """Resolve and load the filter model from an MLflow server (tracking = registry URI)."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        registry_uri: str | None = None,
        cache_dir: Path | None = None,
        direct: bool = True,
        configure: Callable[[Any], None] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.cache_dir = cache_dir
        self.direct = direct
        # called with the unwrapped python model after each load, before it serves (threads,
        # caches); an error fails that load (the serving model stays)
        self.configure = configure

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def resolve_alias(self, name: str, alias: str) -> ResolvedVersion:
        client = self.client()
        mv = client.get_model_version_by_alias(name, alias)
        return ResolvedVersion(
            uri=f"models:/{name}/{mv.version}",
            version=str(mv.version),
            name=name,
            alias=alias,
            run_id=mv.run_id,
            tags=dict(mv.tags or {}),
            # models:/ URIs given to download_artifacts ignore its tracking/registry arguments
            # (mlflow 3.17 resolves them against the global URI): resolve them here instead.
            download_uri=client.get_model_version_download_uri(name, str(mv.version)),
        )

    def fixed(self, model_uri: str) -> ResolvedVersion:
        m = re.match(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$", model_uri)
        if m:
            client = self.client()
            mv = client.get_model_version(m["name"], m["version"])
            return ResolvedVersion(
                uri=model_uri,
                version=str(mv.version),
                name=m["name"],
                run_id=mv.run_id,
                tags=dict(mv.tags or {}),
                download_uri=client.get_model_version_download_uri(m["name"], str(mv.version)),
            )
        return ResolvedVersion(uri=model_uri, version=model_uri)

    def load(self, rv: ResolvedVersion) -> LoadedModel:
        import mlflow.pyfunc
        from mlflow.artifacts import download_artifacts

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

        local_dir: Path | None = None
        if Path(rv.uri).exists():
            target = rv.uri
        else:
            base = self.cache_dir
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            local_dir = Path(tempfile.mkdtemp(prefix=f"v{rv.version}-"[:40], dir=base))
            target = download_artifacts(
                artifact_uri=rv.download_uri or rv.uri,
                dst_path=str(local_dir),
                tracking_uri=self.tracking_uri,
                registry_uri=self.registry_uri,
            )
        try:
            model = mlflow.pyfunc.load_model(target, suppress_warnings=True)
            if self.configure is not None:
                try:
                    inner = model.unwrap_python_model()
                except Exception:  # not a PythonModel flavour: nothing to configure
                    inner = None
                if inner is not None:
                    self.configure(inner)
        except BaseException:
            if local_dir is not None:
                shutil.rmtree(local_dir, ignore_errors=True)
            raise
        return LoadedModel(
            model=DirectPredictor.wrap(model) if self.direct else model,
            uri=rv.uri,
            version=rv.version,
            name=rv.name,
            alias=rv.alias,
            run_id=rv.run_id,
            policy_version=_policy_version_of(model, rv.tags),
            loaded_at=datetime.now(UTC),
            local_dir=local_dir,
        )


def serving_configurer(
    *, onnx_threads: int | None = None, embed_cache: int = 0, require_training_numerics: bool = True
) -> Callable[[Any], None]:
    """What is done to every model loaded to serve decisions (the filter service, the batch
    filter, the cluster workers): ``TargetingFilterModel.configure_serving`` with these knobs
    (encoder threads, embedding cache, the check that this CPU computes the encoder as training
    did); a model without that method is served as it is."""

    def configure(python_model: Any) -> None:
        tune = getattr(python_model, "configure_serving", None)
        if callable(tune):
            tune(onnx_threads=onnx_threads, embed_cache=embed_cache,
                 require_training_numerics=require_training_numerics)  # fmt: skip

    return configure


class ModelHolder:
    """Holds the serving model; hot-swaps it on :meth:`refresh` and from a polling thread."""

    def __init__(
        self,
        *,
        resolver: Resolver | None,
        loader: Loader | None,
        poll_s: float = 30.0,
        describe: str = "",
        keep_dirs: int = 2,
    ) -> None:
        self._resolver = resolver
        self._loader = loader
        self.poll_s = poll_s
        self.describe = without_credentials(describe)
        self.keep_dirs = keep_dirs
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old: list[LoadedModel] = []
        self.last_error: str | None = None
        self.last_check: datetime | None = None
        self.swaps = 0

    # ---- construction helpers ----
    @classmethod
    def for_registry(
        cls,
        tracking_uri: str,
        name: str,
        alias: str,
        *,
        poll_s: float = 30.0,
        cache_dir: Path | None = None,
        configure: Callable[[Any], None] | None = None,
    ) -> ModelHolder:
        src = MlflowSource(tracking_uri, cache_dir=cache_dir, configure=configure)
        return cls(
            resolver=lambda: src.resolve_alias(name, alias),
            loader=src.load,
            poll_s=poll_s,
            describe=f"models:/{name}@{alias} on {tracking_uri}",
        )

    @classmethod
    def for_uri(
        cls,
        model_uri: str,
        tracking_uri: str,
        *,
        poll_s: float = 30.0,
        cache_dir: Path | None = None,
        configure: Callable[[Any], None] | None = None,
    ) -> ModelHolder:
        """``models:/name@alias`` follows the alias (polling); anything else is loaded once.
        ``configure``: see :class:`MlflowSource`."""
        alias = parse_model_uri(model_uri)
        if alias is not None:
            return cls.for_registry(
                tracking_uri, alias[0], alias[1], poll_s=poll_s, cache_dir=cache_dir,
                configure=configure,
            )  # fmt: skip
        src = MlflowSource(tracking_uri, cache_dir=cache_dir, configure=configure)
        return cls(
            resolver=lambda: src.fixed(model_uri), loader=src.load, poll_s=0.0, describe=model_uri
        )

    @classmethod
    def empty(cls) -> ModelHolder:
        """A holder that never has a model (every decision fails closed)."""
        return cls(resolver=None, loader=None, poll_s=0.0, describe="no model configured")

    # ---- state ----
    @property
    def current(self) -> LoadedModel | None:
        """The serving model. Read it once per request (a plain reference read is atomic)."""
        return self._current

    def set_model(self, loaded: LoadedModel) -> None:
        """Install a model directly (tests, embedding in another process)."""
        with self._load_lock:
            self._swap(loaded)

    def _swap(self, loaded: LoadedModel) -> None:
        old = self._current
        self._current = loaded  # the atomic swap
        self.swaps += 1
        if old is not None:
            self._old.append(old)
            # Old models stay referenced by in-flight requests; only their download dirs go,
            # and only for models older than the last ``keep_dirs`` (they may load lazily).
            while len(self._old) > self.keep_dirs:
                gone = self._old.pop(0)
                if gone.local_dir is not None:
                    shutil.rmtree(gone.local_dir, ignore_errors=True)

    def refresh(self, *, force: bool = False) -> RefreshResult:
        """Resolve the alias; load and swap if the version changed (or ``force``). Never raises."""
        if self._resolver is None or self._loader is None:
            self.last_error = "no model source configured"
            return RefreshResult(False, None, None, self.last_error)
        with self._load_lock:
            prev = self._current
            prev_v = prev.version if prev is not None else None
            self.last_check = datetime.now(UTC)
            try:
                rv = self._resolver()
                if (
                    prev is not None
                    and rv.version == prev.version
                    and rv.uri == prev.uri
                    and not force
                ):
                    self.last_error = None
                    return RefreshResult(False, prev_v, prev_v)
                t0 = time.monotonic()
                loaded = self._loader(rv)
                self._swap(loaded)
                log.info(
                    "filter model %s version %s loaded in %.1fs (was %s)",
                    rv.name or rv.uri,
                    rv.version,
                    time.monotonic() - t0,
                    prev_v,
                )
                self.last_error = None
                return RefreshResult(True, prev_v, loaded.version)
            except Exception as exc:  # keep serving the old model
                self.last_error = without_credentials(f"{type(exc).__name__}: {exc}")[:2000]
                log.warning(
                    "filter model refresh from %s failed: %s", self.describe, self.last_error
                )
                return RefreshResult(False, prev_v, prev_v, self.last_error)

    # ---- background polling ----
    def start(self) -> None:
        """Load now (in the background) and then poll every ``poll_s`` s (0 = load once)."""
        if self._thread is not None or self._resolver is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="filter-model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.refresh()
        retry_s = 2.0
        while True:
            if self._current is None:
                wait = min(retry_s, self.poll_s) if self.poll_s > 0 else retry_s
                retry_s = min(retry_s * 2, 60.0)
            elif self.poll_s > 0:
                wait = self.poll_s
            else:
                return
            if self._stop.wait(wait):
                return
            self.refresh()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout)

    def wait_loaded(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._current is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
