"""Speed of the targeting filter: batch throughput vs raw embedding throughput, HTTP latency.

    uv run --no-sync python benchmarks/filter_speed.py --data ../shared/data/dev \\
        [--mlflow-uri http://127.0.0.1:5000 --model-uri models:/labelloop-targeting-filter@production]

Without ``--mlflow-uri`` a throw-away MLflow server is started in a temp dir and the keyword
reference model (``targeting.reference_model``) is registered and served; with it, the given model
(default ``models:/labelloop-targeting-filter@production``) is used.

1. **Batch**: ``targeting.batch.filter_file`` (the ``labelloop filter`` code path: validation, gate,
   model, audit, output) over N records, in conversations/s; in the same run, raw embedding
   throughput of ``MiniLMEmbedder.embed`` on the same texts (``Conversation.text()``), the limit
   for an embedding-based model. Target: ratio >= 0.5.
2. **HTTP**: the real service (``uvicorn targeting.service:app`` in its own process on 127.0.0.1),
   a closed-loop load generator (own process; raw keep-alive HTTP/1.1 on asyncio, so the client
   costs little CPU) with 1 and 50 concurrent clients, each sending single-record requests for a
   bounded time. Reports p50/p90/p99/max latency and requests/s. Target: p99 <= 50 ms at 50.

Prints a JSON report (and writes it with ``--out``). Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-api-key-0123456789"
ADMIN_KEY = "bench-admin-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELLOOP_", "MLFLOW_"))}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env["MLFLOW_ENABLE_TELEMETRY"] = "false"
    env.update(extra)
    return env


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A temporary MLflow server, started by the local stack's own service code."""
    from infra.stack import Stack
    from labelloop.settings import Settings

    settings = Settings(
        _env_file=None, env="test", state_dir=root, host="127.0.0.1", mlflow_port=_free_port()
    )  # type: ignore[call-arg]
    stack = Stack(settings)
    try:
        stack.up(services=["mlflow"])
        yield settings.mlflow_uri
    finally:
        stack.down(services=["mlflow"])


@contextlib.contextmanager
def filter_service(state: Path, mlflow_uri: str, model_uri: str) -> Iterator[str]:
    port = _free_port()
    state.mkdir(parents=True, exist_ok=True)
    log = (state / "uvicorn.log").open("wb")
    env = _env(
        LABELLOOP_ENV="test",
        LABELLOOP_STATE_DIR=str(state),
        LABELLOOP_MLFLOW_TRACKING_URI=mlflow_uri,
        LABELLOOP_FILTER_MODEL_URI=model_uri,
        LABELLOOP_FILTER_API_KEY=API_KEY,
        LABELLOOP_FILTER_ADMIN_KEY=ADMIN_KEY,
        LABELLOOP_FILTER_POLL_S="3600",
    )
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "uvicorn"),
            "targeting.service:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=state,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/healthz", proc, 180)
        yield url
    finally:
        _stop(proc)
        log.close()


def load_sample(data: Path, n: int) -> list[dict[str, Any]]:
    """Up to n records, round-robin over the dev files (so every kind of text is in)."""
    files = sorted(data.glob("*.jsonl")) if data.is_dir() else [data]
    opened = [f.open(encoding="utf-8") for f in files]
    handles = list(opened)
    out: list[dict[str, Any]] = []
    try:
        while len(out) < n and handles:
            for h in list(handles):
                line = h.readline()
                if not line:
                    handles.remove(h)
                    continue
                if line.strip():
                    out.append(json.loads(line))
                if len(out) >= n:
                    break
    finally:
        for h in opened:
            h.close()
    return out


# ------------------------------------------------------------------ batch vs embeddings


def bench_batch(
    records: list[dict[str, Any]], mlflow_uri: str, model_uri: str, work: Path, chunk: int
) -> dict[str, Any]:
    from labeling.embeddings import MiniLMEmbedder
    from labeling.policy import load_policy
    from labeling.records import Conversation
    from targeting.audit import AuditLog
    from targeting.batch import filter_file
    from targeting.engine import FilterEngine
    from targeting.holder import ModelHolder

    src = work / "batch-in.jsonl"
    with src.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    holder = ModelHolder.for_uri(model_uri, mlflow_uri, poll_s=0, cache_dir=work / "models")
    res = holder.refresh()
    if holder.current is None:
        raise SystemExit(f"cannot load {model_uri}: {res.error}")
    engine = FilterEngine(holder, load_policy(), AuditLog(work / "audit" / "decisions.jsonl"))
    # warm-up (lazy model parts, caches) on a few records, not timed
    engine.decide(records[: min(32, len(records))], source="warmup")
    rep = filter_file(engine, src, work / "batch-out.jsonl", chunk_size=chunk)
    assert engine.audit is not None
    engine.audit.close()

    texts = [Conversation.model_validate(r).text() for r in records]
    emb = MiniLMEmbedder.from_models_dir(work / "minilm")
    emb.embed(texts[:32])  # load + warm-up
    t0 = time.perf_counter()
    emb.embed(texts)
    emb_s = time.perf_counter() - t0
    emb_rate = len(texts) / emb_s
    return {
        "records": rep.stats.records,
        "filter_s": round(rep.seconds, 3),
        "filter_conv_per_s": round(rep.per_second, 1),
        "embed_s": round(emb_s, 3),
        "embed_texts_per_s": round(emb_rate, 1),
        "ratio_filter_over_embed": round(rep.per_second / emb_rate, 3),
        "target_ratio": 0.5,
        "by_reason": rep.stats.by_reason,
        "model_versions": sorted(rep.model_versions),
        "chunk_size": chunk,
    }


# ------------------------------------------------------------------ HTTP load generator


def _request_bytes(host: str, port: int, record: dict[str, Any]) -> bytes:
    body = json.dumps({"records": [record]}).encode()
    head = (
        f"POST /v1/decisions HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(
    host: str,
    port: int,
    reqs: list[bytes],
    warm_end: float,
    end: float,
    lat: list[float],
    errors: list[str],
    max_requests: int,
    count: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    try:
        while time.perf_counter() < end and count[0] < max_requests:
            req = reqs[i % len(reqs)]
            i += 1
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            body = await reader.readexactly(length)
            t1 = time.perf_counter()
            if status != 200 or b'"decisions"' not in body:
                errors.append(f"{status}: {body[:120]!r}")
            elif t0 >= warm_end:
                lat.append(t1 - t0)
                count[0] += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _loadgen(
    url: str,
    records: list[dict[str, Any]],
    clients: int,
    seconds: float,
    warmup: float,
    max_requests: int,
) -> dict[str, Any]:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    host, port = url.removeprefix("http://").split(":")
    reqs = [_request_bytes(host, int(port), r) for r in records]
    lat: list[float] = []
    errors: list[str] = []
    count = [0]

    async def main() -> float:
        start = time.perf_counter()
        warm_end = start + warmup
        end = warm_end + seconds
        await asyncio.gather(
            *(
                _client(
                    host,
                    int(port),
                    reqs[c::clients] or reqs,
                    warm_end,
                    end,
                    lat,
                    errors,
                    max_requests,
                    count,
                )
                for c in range(clients)
            )
        )
        return time.perf_counter() - warm_end

    elapsed = asyncio.run(main())
    lat_ms = sorted(x * 1000 for x in lat)

    def pct(p: float) -> float:
        return round(lat_ms[min(len(lat_ms) - 1, int(p / 100 * len(lat_ms)))], 2) if lat_ms else -1

    return {
        "clients": clients,
        "requests": len(lat_ms),
        "errors": len(errors),
        "error_samples": errors[:3],
        "seconds": round(elapsed, 2),
        "req_per_s": round(len(lat_ms) / elapsed, 1) if elapsed > 0 else 0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(lat_ms[-1], 2) if lat_ms else -1,
        "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else -1,
    }


def bench_http(
    records: list[dict[str, Any]],
    url: str,
    concurrency: list[int],
    seconds: float,
    warmup: float,
    max_requests: int,
) -> list[dict[str, Any]]:
    out = []
    ctx = get_context("spawn")
    for c in concurrency:
        with ctx.Pool(1) as pool:  # the load generator runs in its own process
            out.append(pool.apply(_loadgen, (url, records, c, seconds, warmup, max_requests)))
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dev")
    ap.add_argument("--n", type=int, default=3000, help="records for the batch benchmark")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument(
        "--mlflow-uri", default=None, help="use this MLflow server (default: a temp one)"
    )
    ap.add_argument(
        "--model-uri",
        default="models:/labelloop-targeting-filter@production",
        help="model to benchmark (with --mlflow-uri; else the reference model is registered)",
    )
    ap.add_argument("--concurrency", default="1,50", help="comma-separated client counts")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = ap.parse_args(argv)

    records = load_sample(args.data, args.n)
    if not records:
        raise SystemExit(f"no records under {args.data}")
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "data": str(args.data),
        "sample": len(records),
    }
    with tempfile.TemporaryDirectory(prefix="filter-bench-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            if args.mlflow_uri:
                mlflow_uri, model_uri = args.mlflow_uri, args.model_uri
                report["model"] = model_uri
            else:
                from targeting.reference_model import log_reference_model

                (work / "mlflow").mkdir()
                mlflow_uri = stack.enter_context(mlflow_server(work / "mlflow"))
                version = log_reference_model(mlflow_uri, tag="bench", alias="production")
                model_uri = "models:/labelloop-targeting-filter@production"
                report["model"] = f"keyword reference model (targeting.reference_model) v{version}"
            if not args.skip_batch:
                report["batch"] = bench_batch(records, mlflow_uri, model_uri, work, args.chunk_size)
                print(json.dumps({"batch": report["batch"]}), file=sys.stderr)
            if not args.skip_http:
                url = stack.enter_context(filter_service(work / "svc", mlflow_uri, model_uri))
                levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
                report["http"] = bench_http(
                    records[:2000], url, levels, args.seconds, args.warmup, args.max_requests
                )
                report["http_target"] = "p99 <= 50 ms for single-record requests at 50 clients"
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
