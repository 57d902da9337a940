"""Chaos: real processes killed with SIGKILL mid-run, then run again; servers that are not there.

What each scenario proves (``make chaos`` runs this file; procedure and results: docs/chaos.md):

* ``labelloop filter`` killed mid-run, rerun: the output holds every input line's decision
  exactly once, in order; the decision log verifies and holds every output decision.
* ``labelloop sample`` killed mid-run, rerun: the label store holds exactly the rows of an
  uninterrupted run (0 duplicates, 0 lost).
* two ``labelloop sample`` runs at once on the same input: both succeed, each row once.
* the filter service killed with SIGKILL under load and restarted: every decision a client
  received is in the decision log, which verifies.
* MLflow / Label Studio not running: the command names the service and ``labelloop stack up``.

The filter model is the keyword reference pyfunc saved to a local directory (no MLflow server).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from targeting.audit import verify
from tests.conftest import make_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
API_KEY = "chaos-api-key-0123456789"
ADMIN_KEY = "chaos-admin-key-9876543210"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELLOOP_", "MLFLOW_"))}
    env.update(
        {
            "LABELLOOP_STATE_DIR": str(state),
            "LABELLOOP_FILTER_API_KEY": API_KEY,
            "LABELLOOP_FILTER_ADMIN_KEY": ADMIN_KEY,
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update(extra)
    return env


def _labelloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "labelloop.cli", *args]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _wait_until(cond: Any, proc: subprocess.Popen[bytes], timeout: float, what: str) -> bool:
    """True once ``cond()`` holds; False if the process ended first (too fast to interrupt)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"{what} not reached after {timeout}s")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The keyword reference filter saved as a local MLflow pyfunc directory."""
    import warnings

    import mlflow

    from labeling.policy import DEFAULT_POLICY_PATH, load_policy
    from tests.support.reference_model import KeywordFilterModel

    path = tmp_path_factory.mktemp("model") / "reference-filter"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=KeywordFilterModel(),
            artifacts={"policy": str(DEFAULT_POLICY_PATH)},
            model_config={"score": 0.8},
            metadata={"policy_version": load_policy().version},
            pip_requirements=["mlflow"],
        )
    return path


def _write_records(path: Path, n: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    with path.open("w") as fh:
        for cid in ids:
            fh.write(json.dumps(make_record(conversation_id=cid)) + "\n")
    return ids


# ---------------------------------------------------------------- labelloop filter


def test_filter_killed_mid_run_resumes_with_nothing_lost_or_twice(
    model_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = _write_records(src, 30_000, "f")
    cmd = _labelloop("filter", "-i", str(src), "-o", str(out), "--model-uri", str(model_dir),
                     "--chunk-size", "250", "--json")  # fmt: skip
    env = _env(state)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    progress = out.with_name("out.jsonl.partial.state")

    def some_done() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return int(json.loads(progress.read_text())["records"]) >= 2_000
        return False

    interrupted = _wait_until(some_done, proc, 900, "2,000 decisions")
    _kill_group(proc)
    assert interrupted, "the run finished before it could be killed; use a bigger input"
    assert not out.exists() and progress.exists()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["resumed_from"] >= 2_000
    decided = [json.loads(x)["conversation_id"] for x in out.read_text().split("\n") if x]
    assert decided == ids  # 0 lost, 0 twice, in input order
    audit = state / "audit" / "decisions.jsonl"
    res = verify(audit)
    assert res.ok, res
    entries = [json.loads(x) for x in audit.read_text().split("\n") if x]
    run = [e for e in entries if e["request_id"] == report["run_id"]]
    assert {e["index"] for e in run} == set(range(len(ids)))
    assert len(run) - len(ids) <= 250  # at most the chunk in flight when the process died
    print(
        f"filter: killed after {report['resumed_from']} of {len(ids)} decisions; rerun resumed "
        f"run {report['run_id']}: output {len(decided)} decisions, {len(set(decided))} distinct, "
        f"in order; decision log verifies ({res.n} entries, {len(run) - len(ids)} entries of "
        "the chunk in flight logged twice)"
    )


# ---------------------------------------------------------------- labelloop sample


def _store_rows(state: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(state / "labelstore.db") as con:
        rows = con.execute(
            "SELECT conversation_id, eligible, exclusion_reason, content_hash, redacted_turns "
            "FROM conversations"
        ).fetchall()
    out = {r[0]: r[1:] for r in rows}
    assert len(out) == len(rows), "duplicate conversation_id rows"
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labeling.synth import generate, write_jsonl

    path = tmp_path_factory.mktemp("synth") / "synth.jsonl"
    write_jsonl(generate(6000, 3), path)
    return path


@pytest.fixture(scope="module")
def reference_rows(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The label store after one uninterrupted `labelloop sample`."""
    state = tmp_path_factory.mktemp("sample-reference")
    done = subprocess.run(_labelloop("sample", "--input", str(synth), "--json"), env=_env(state), cwd=REPO,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return _store_rows(state)


def test_sample_killed_mid_run_then_rerun_equals_an_uninterrupted_run(
    synth: Path, reference_rows: dict[str, Any], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = _env(state)
    proc = subprocess.Popen(_labelloop("sample", "--input", str(synth)), env=env, cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    db = state / "labelstore.db"

    def some_rows() -> bool:
        if not db.exists():
            return False
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(db, timeout=0.1) as con:
            return int(con.execute("SELECT count(*) FROM conversations").fetchone()[0]) > 0
        return False

    interrupted = _wait_until(some_rows, proc, 1200, "the first stored rows")
    _kill_group(proc)
    partial = len(_store_rows(state))
    done = subprocess.run(_labelloop("sample", "--input", str(synth), "--json"), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _store_rows(state)
    assert rows == reference_rows  # 0 duplicates, 0 lost, same content
    if interrupted:
        assert 0 < partial <= len(reference_rows)
    print(
        f"sample: killed with {partial} of {len(reference_rows)} rows stored "
        f"(interrupted: {interrupted}); after the rerun {len(rows)} rows, identical to an "
        "uninterrupted run"
    )


def test_two_sample_runs_at_once_store_each_row_once(
    synth: Path, reference_rows: dict[str, Any], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = _env(state)
    # the schema first, so both runs race on the inserts rather than on the migration
    subprocess.run(_labelloop("store", "init"), env=env, cwd=REPO, check=True, timeout=300,
                   capture_output=True)  # fmt: skip
    procs = [
        subprocess.Popen(
            _labelloop("sample", "--input", str(synth)),
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, errs = p.communicate(timeout=1200)
        assert p.returncode == 0, errs.decode()[-2000:]
    assert _store_rows(state) == reference_rows
    print(f"sample x2 at once: both exit 0, {len(reference_rows)} rows, each once")


# ---------------------------------------------------------------- the filter service


class _Server:
    def __init__(self, state: Path, model_dir: Path, port: int) -> None:
        self.env = _env(state, LABELLOOP_FILTER_MODEL_URI=str(model_dir),
                        LABELLOOP_FILTER_POLL_S="0")  # fmt: skip
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        uvicorn = Path(sys.executable).with_name("uvicorn")
        self.proc = subprocess.Popen(
            [str(uvicorn), "labelloop.serving:app", "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "warning"],
            env=self.env, cwd=REPO, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the filter service exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError("the filter service did not become healthy")

    def kill(self) -> None:
        assert self.proc is not None
        _kill_group(self.proc)


def test_filter_service_killed_under_load_loses_no_logged_decision(
    model_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = _Server(state, model_dir, _free_port())
    server.start()
    answered: list[dict[str, Any]] = []
    failed = {"n": 0}
    stop = threading.Event()
    lock = threading.Lock()

    def client(k: int) -> None:
        i = 0
        with httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=30,
                          trust_env=False) as c:  # fmt: skip
            while not stop.is_set():
                recs = [make_record(conversation_id=f"s{k}-{i}-{j}") for j in range(1 + i % 3)]
                i += 1
                try:
                    r = c.post("/v1/decisions", json={"records": recs})
                except httpx.HTTPError:
                    with lock:
                        failed["n"] += 1
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    with lock:
                        answered.append(r.json())
                else:
                    assert r.json()["fail_closed"] is True

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):  # kill and restart twice while the clients keep sending
            deadline = time.monotonic() + 300
            start = len(answered)
            while len(answered) < start + 150 and time.monotonic() < deadline:
                time.sleep(0.05)
            server.kill()
            server.start()
        deadline = time.monotonic() + 300
        start = len(answered)
        while len(answered) < start + 150 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.kill()
    assert len(answered) >= 450 and failed["n"] > 0  # the kills were felt by the clients
    audit = state / "audit" / "decisions.jsonl"
    res = verify(audit)
    assert res.ok, res
    logged = {}
    for line in audit.read_text().split("\n"):
        if line:
            e = json.loads(line)
            logged[(e["request_id"], e["index"])] = e
    n_decisions = sum(len(b["decisions"]) for b in answered)
    print(
        f"filter service: killed -9 and restarted twice under 6 clients; {len(answered)} "
        f"answered requests ({n_decisions} decisions), {failed['n']} failed connections; "
        f"decision log verifies ({res.n} entries), every answered decision in it"
    )
    for body in answered:
        for n, d in enumerate(body["decisions"]):
            e = logged[(body["request_id"], n)]  # every answered decision is in the log
            assert (e["conversation_id"], e["eligible"], e["excluded_reason"]) == (
                d["conversation_id"], d["eligible"], d["excluded_reason"]
            )  # fmt: skip


# ---------------------------------------------------------------- servers that are not there


@pytest.mark.parametrize(
    ("args", "service"),
    [(("models", "list"), "MLflow"), (("review", "push"), "Label Studio")],
)
def test_missing_servers_are_named_with_how_to_start_them(
    args: tuple[str, ...], service: str, tmp_path: Path
) -> None:
    env = _env(
        tmp_path / "state",
        LABELLOOP_MLFLOW_PORT=str(_free_port()),
        LABELLOOP_LABEL_STUDIO_PORT=str(_free_port()),
        LABELLOOP_LABEL_STUDIO_TOKEN="chaos-token",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
    )
    t0 = time.monotonic()
    done = subprocess.run(_labelloop(*args), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    took = time.monotonic() - t0
    assert done.returncode == 3, (done.stdout[-1000:], done.stderr[-2000:])
    assert f"{service} is not reachable" in done.stderr and "labelloop stack up" in done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    print(f"{' '.join(args)}: exit 3 after {took:.1f}s: {last}")
