"""Progress of long flow steps: a Prefect progress artifact per run, and listeners in-process.

A step (e.g. the LLM proposals of ``sample_and_propose``) opens a :class:`StepProgress` with its
total; tasks call :meth:`StepProgress.advance` as items finish (thread-safe: the thread task runner
runs batches in parallel). Each advance

* calls every listener registered with :func:`listen` (``labelloop demo`` draws a progress bar
  with the time remaining from them), and
* updates the run's Prefect progress artifact (percent done, shown on the flow run page), at most
  every ``artifact_every_s`` seconds and once at the end.

With the Dask task runner, tasks run in other processes: the listeners there see nothing, the
artifact is still updated per finished batch by the flow itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[str, int, int], None]  # (step, done, total)
_LISTENERS: list[Listener] = []
_LOCK = threading.Lock()
_ACTIVE: dict[str, StepProgress] = {}


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Receive (step, done, total) from every step of the flows run in this process."""
    with _LOCK:
        _LISTENERS.append(listener)
    try:
        yield
    finally:
        with _LOCK:
            _LISTENERS.remove(listener)


class StepProgress:
    """Done/total of one step of one flow run."""

    def __init__(
        self,
        key: str,
        step: str,
        total: int,
        *,
        artifact_key: str = "progress",
        artifact_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        artifacts: bool = True,
    ) -> None:
        self.key = key
        self.step = step
        self.total = total
        self.done = 0
        self.artifact_every_s = artifact_every_s
        self.clock = clock
        self._last_artifact = -1e18
        self._artifact_id: Any = None
        self._artifacts = artifacts
        self.artifact_key = artifact_key
        self._lock = threading.Lock()

    def start(self) -> StepProgress:
        with _LOCK:
            _ACTIVE[self.key] = self
        if self._artifacts:
            self._artifact_id = _create_artifact(self.artifact_key, self.step)
        self._notify()
        return self

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done = min(self.total, self.done + n)
        self._notify()

    def at_least(self, done: int) -> None:
        """Raise the count to ``done`` (a flow that only sees finished batches, e.g. on Dask)."""
        with self._lock:
            if done <= self.done:
                return
            self.done = min(self.total, done)
        self._notify()

    def finish(self) -> None:
        with self._lock:
            self.done = self.total
        self._notify(force=True)
        with _LOCK:
            _ACTIVE.pop(self.key, None)

    @property
    def percent(self) -> float:
        return 100.0 if self.total <= 0 else round(100.0 * self.done / self.total, 1)

    def _notify(self, *, force: bool = False) -> None:
        with _LOCK:
            listeners = list(_LISTENERS)
        for fn in listeners:
            try:
                fn(self.step, self.done, self.total)
            except Exception as exc:  # a broken listener never stops a run
                log.debug("progress listener failed: %s", exc)
        now = self.clock()
        if self._artifact_id is not None and (
            force or self.done >= self.total or now - self._last_artifact >= self.artifact_every_s
        ):
            self._last_artifact = now
            _update_artifact(self._artifact_id, self.percent)


def stages_progress(key: str, artifact_prefix: str) -> Callable[[str, int, int], None]:
    """A ``(stage, done, total)`` callback -- what training reports -- that opens one
    :class:`StepProgress` per stage: a progress artifact ``<artifact_prefix>-<stage>`` on the run,
    and the listeners see the stage as a step."""
    steps: dict[str, StepProgress] = {}
    lock = threading.Lock()

    def on(stage: str, done: int, total: int) -> None:
        with lock:
            p = steps.get(stage)
            if p is None or p.total != total:
                slug = re.sub(r"[^a-z0-9]+", "-", f"{artifact_prefix}-{stage}".lower()).strip("-")
                p = steps[stage] = StepProgress(
                    f"{key}:{stage}", stage, total, artifact_key=slug
                ).start()
        if done >= total:
            p.finish()
        else:
            p.at_least(done)

    return on


def step_progress(key: str) -> StepProgress | None:
    """The active step with this key (tasks in the same process find it by the run's key)."""
    with _LOCK:
        return _ACTIVE.get(key)


def _create_artifact(key: str, step: str) -> Any:
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    try:
        from prefect.artifacts import create_progress_artifact

        return create_progress_artifact(progress=0.0, key=key, description=step)
    except Exception as exc:  # no server: progress is only shown in-process
        log.debug("no progress artifact: %s", exc)
        return None


def _update_artifact(artifact_id: Any, percent: float) -> None:
    try:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(artifact_id=artifact_id, progress=percent)
    except Exception as exc:
        log.debug("progress artifact not updated: %s", exc)
