"""Speed of the targeting filter on a real trained model: batch vs raw MiniLM, HTTP under load.

    uv run --no-sync python benchmarks/filter_speed.py --data ../shared/data/dev \\
        [--model-dir DIR] [--concurrency 1,10,50] [--workers 1] [--onnx-threads N] [--profile DIR] [--out OUT.json]

The model is a filter trained on the dev data (``benchmarks/bench_model.py``: MiniLM,
``TrainConfig(c_segment=8.0)``, saved as a local MLflow pyfunc directory). ``--model-dir`` reuses
one; a missing directory is trained first (a few minutes; embeddings cached with ``--embed-cache``).
Never the keyword toy model. In one run:

1. **Batch**, short and long conversations separately (``--n`` each; short: the conversation
   text is at most 400 characters, e.g. one assistant request; long: 1,500+ characters, e.g. a
   forum post or a long dialogue): ``targeting.batch.filter_file`` (the ``labelloop filter`` code
   path: validation, gate, segments, model, audit, output) in records/s, and raw
   ``MiniLMEmbedder.embed`` texts/s on the same conversation texts (``Conversation.text()``, the
   model's token limit) -- the ceiling for an embedding model. Target: ratio >= 0.5 on short.
2. **HTTP**: the real service (``uvicorn labelloop.serving:app``, ``--workers``) in its own process
   group, a closed-loop load generator in its own process (raw keep-alive HTTP/1.1 on asyncio)
   with 1, 10 and 50 clients sending single-record requests (a round-robin mix of every dev file)
   for ``--seconds`` each. Reports p50/p90/p99/max, requests/s, errors, 429s, the micro-batch
   sizes reached (from ``/metrics``), the embedding-cache hit rate, and the resident memory of
   every server process. Target: p99 <= 100 ms at 50 clients, no errors.
   With ``--profile DIR`` (one worker; needs ``py-spy`` on PATH) the service is sampled by py-spy
   during each level's measured window: the raw stacks go to ``DIR`` and the report gets the share
   of the server's CPU samples per part of the serving path (encoder, scoring, language ID,
   redaction, decision log, HTTP server, web framework, JSON, event loop).

The machine's load average is recorded before and after every part (the 2 cores are shared).
Prints a JSON report (and writes it with ``--out``). Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from labeling.int8 import machine_facts  # noqa: E402

API_KEY = "bench-api-key-0123456789"
ADMIN_KEY = "bench-admin-key-0123456789"
SHORT_CHARS = 400
LONG_CHARS = 1500


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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
def filter_service(
    state: Path, model_dir: Path, *, workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``uvicorn labelloop.serving:app`` serving ``model_dir`` (a local pyfunc directory)."""
    port = _free_port()
    state.mkdir(parents=True, exist_ok=True)
    log = (state / "uvicorn.log").open("wb")
    env = _env(
        LABELLOOP_ENV="test",
        LABELLOOP_STATE_DIR=str(state),
        LABELLOOP_MLFLOW_TRACKING_URI=f"file://{state / 'mlruns'}",
        LABELLOOP_FILTER_MODEL_URI=str(model_dir),
        LABELLOOP_FILTER_API_KEY=API_KEY,
        LABELLOOP_FILTER_ADMIN_KEY=ADMIN_KEY,
        LABELLOOP_FILTER_POLL_S="0",
        **(extra_env or {}),
    )
    cmd = [str(Path(sys.executable).parent / "uvicorn"), "labelloop.serving:app",
           "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
           "--app-dir", str(REPO)]  # fmt: skip
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=state,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{url}/healthz", proc, 300)
        if workers > 1:  # every worker loads its own model: wait until all answer healthy
            time.sleep(2.0)
            for _ in range(600):
                if all(_healthy_once(url) for _ in range(4 * workers)):
                    break
                time.sleep(0.5)
        yield url, proc
    finally:
        _stop(proc)
        log.close()


def _healthy_once(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/healthz", timeout=5, trust_env=False).status_code == 200
    return False


def tree_rss_mb(pid: int) -> dict[str, Any]:
    """Resident memory of a process and its children (each worker), in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    rss = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            rss[p.pid] = round(p.memory_info().rss / 2**20, 1)
    # with --workers the root is uvicorn's supervisor (no model); the workers are its children
    workers = [v for k, v in rss.items() if k != pid] or list(rss.values())
    return {
        "per_process_mb": rss,
        "per_worker_mb": workers,
        "total_mb": round(sum(rss.values()), 1),
    }


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


def split_by_length(records: list[dict[str, Any]], n: int) -> dict[str, list[dict[str, Any]]]:
    """Up to n short (text <= 400 chars) and n long (text >= 1,500 chars) records."""
    from labeling.records import Conversation

    short: list[dict[str, Any]] = []
    long: list[dict[str, Any]] = []
    for r in records:
        try:
            size = len(Conversation.model_validate(r).text())
        except Exception:
            continue
        if size <= SHORT_CHARS and len(short) < n:
            short.append(r)
        elif size >= LONG_CHARS and len(long) < n:
            long.append(r)
    return {"short": short, "long": long}


# ------------------------------------------------------------------ batch vs embeddings


def bench_batch(
    sets: dict[str, list[dict[str, Any]]],
    warm: list[dict[str, Any]],
    model_dir: Path,
    work: Path,
    chunk: int,
    *,
    embed_cache: int,
    onnx_threads: int | None,
) -> dict[str, Any]:
    from labeling.embeddings import MiniLMEmbedder
    from labeling.policy import load_policy
    from labeling.records import Conversation
    from targeting.audit import AuditLog
    from targeting.batch import filter_file
    from targeting.engine import FilterEngine
    from targeting.holder import ModelHolder

    holder = ModelHolder.for_uri(
        str(model_dir), f"file://{work / 'mlruns'}", poll_s=0, cache_dir=work / "models",
        configure=lambda m: m.configure_serving(onnx_threads=onnx_threads, embed_cache=embed_cache),
    )  # fmt: skip
    res = holder.refresh()
    if holder.current is None:
        raise SystemExit(f"cannot load {model_dir}: {res.error}")
    python_model = holder.current.model.python_model  # type: ignore[attr-defined]
    max_length = python_model.bundle.embed_max_length
    engine = FilterEngine(holder, load_policy(), AuditLog(work / "audit" / "decisions.jsonl"))
    engine.decide(warm, source="warmup")  # lazy parts (ONNX session), on other records
    raw = MiniLMEmbedder.from_models_dir(REPO / ".labelloop" / "models", max_length=max_length)
    if onnx_threads is not None:
        raw.intra_op_num_threads = onnx_threads
    raw.embed(["warm up"] * 8)
    out: dict[str, Any] = {"embed_cache": embed_cache, "onnx_threads": onnx_threads,
                           "raw_max_length": max_length}  # fmt: skip
    for name, records in sets.items():
        if not records:
            continue
        src = work / f"batch-{name}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        load_before = load_avg()
        stats0 = python_model.embed_cache_stats() or {"hits": 0, "misses": 0}
        rep = filter_file(engine, src, work / f"batch-{name}-out.jsonl", chunk_size=chunk)
        stats1 = python_model.embed_cache_stats() or {"hits": 0, "misses": 0}
        texts = [Conversation.model_validate(r).text() for r in records]
        t0 = time.perf_counter()
        raw.embed(texts)
        emb_rate = len(texts) / (time.perf_counter() - t0)
        hits, misses = stats1["hits"] - stats0["hits"], stats1["misses"] - stats0["misses"]
        out[name] = {
            "records": rep.stats.records,
            "mean_chars": round(statistics.fmean(len(t) for t in texts), 1),
            "filter_s": round(rep.seconds, 3),
            "filter_records_per_s": round(rep.per_second, 1),
            "raw_minilm_texts_per_s": round(emb_rate, 1),
            "ratio": round(rep.per_second / emb_rate, 3),
            "embed_cache_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
            "by_reason": rep.stats.by_reason,
            "load_before": load_before,
            "load_after": load_avg(),
        }
        print(json.dumps({f"batch-{name}": out[name]}), file=sys.stderr, flush=True)
    out["target_ratio_short"] = 0.5
    assert engine.audit is not None
    engine.audit.close()
    return out


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
        "errors": sum(1 for e in errors if not e.startswith("429")),
        "rejected_429": sum(1 for e in errors if e.startswith("429")),
        "error_samples": errors[:3],
        "seconds": round(elapsed, 2),
        "req_per_s": round(len(lat_ms) / elapsed, 1) if elapsed > 0 else 0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(lat_ms[-1], 2) if lat_ms else -1,
        "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else -1,
    }


def scrape(url: str) -> dict[str, float]:
    """The service's counters that the benchmark reports (one worker's view)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name in (
                "labelloop_filter_batch_records_sum",
                "labelloop_filter_batch_records_count",
                "labelloop_filter_embed_cache_hits_total",
                "labelloop_filter_embed_cache_misses_total",
            ):
                out[smp.name] = smp.value
            elif smp.name == "labelloop_filter_batch_records_bucket":
                out[f"le={smp.labels['le']}"] = smp.value
            elif smp.name == "labelloop_filter_rejected_total":
                out["rejected"] = out.get("rejected", 0.0) + smp.value
    return out  # fmt: skip


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    calls = after.get("labelloop_filter_batch_records_count", 0) - before.get(
        "labelloop_filter_batch_records_count", 0
    )
    recs = after.get("labelloop_filter_batch_records_sum", 0) - before.get(
        "labelloop_filter_batch_records_sum", 0
    )
    hist = {k[3:]: after[k] - before.get(k, 0) for k in after if k.startswith("le=")}
    # smallest bucket bound that holds every batch of the level = the largest batch size seen
    largest = next((le for le, c in hist.items() if c >= calls and calls), None)
    hits = after.get("labelloop_filter_embed_cache_hits_total", 0) - before.get(
        "labelloop_filter_embed_cache_hits_total", 0
    )
    miss = after.get("labelloop_filter_embed_cache_misses_total", 0) - before.get(
        "labelloop_filter_embed_cache_misses_total", 0
    )
    return {
        "engine_calls": int(calls),
        "mean_batch_records": round(recs / calls, 2) if calls else None,
        "largest_batch_at_most": largest,
        "embed_cache_hit_rate": round(hits / (hits + miss), 3) if hits + miss else None,
    }


# Where a server's CPU time goes, from py-spy's raw (collapsed) stacks. A sample is charged to
# the first of the filter's own parts found from the innermost frame outwards; a sample in
# none of them to the first web/serialisation part found the same way; else "other".
PROFILE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("encoder: ONNX inference", ("onnxruntime",)),
    ("encoder: tokenization", ("tokenizers", "encode_batch")),
    ("encoder: other (cache, pooling)", ("labeling/embeddings.py", "labeling/embedding_cache.py")),
    ("decision log (audit append)", ("targeting/audit.py",)),
    ("language ID", ("labeling/language.py",)),
    ("redaction", ("labeling/redaction.py", "labeling/person_names.py")),
    ("scoring (segments, features, classifiers)",
     ("targeting/scorer.py", "labeling/segments.py", "sklearn", "scipy")),
    ("record parsing and policy", ("labeling/records.py", "labeling/policy.py")),
    ("engine and model (other)", ("targeting/",)),
)  # fmt: skip
WEB_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("request/response models (pydantic)", ("pydantic",)),
    ("JSON", ("json/", "orjson")),
    ("web framework (FastAPI/Starlette)", ("fastapi", "starlette")),
    ("HTTP server (uvicorn)", ("uvicorn", "h11", "httptools")),
    ("metrics", ("prometheus_client",)),
    ("event loop and threads (asyncio, anyio)", ("asyncio", "anyio", "threading.py")),
    ("service code", ("labelloop/serving.py", "targeting/service.py")),
)


def profile_parts(raw: Path) -> dict[str, Any]:
    """Share of CPU samples per part of the serving path, from ``py-spy record --format raw``."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        frames = stack.split(";")[::-1]  # innermost first
        part = "other"
        for table in (PROFILE_PARTS, WEB_PARTS):
            hit = next(
                (name for f in frames for name, keys in table if any(k in f for k in keys)), None
            )
            if hit is not None:
                part = hit
                break
        counts[part] = counts.get(part, 0) + int(n_s)
        total += int(n_s)
    shares = {
        k: round(100.0 * v / total, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
    }
    return {"samples": total, "percent": shares}


def _py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy on PATH (e.g. `uv tool install py-spy`)")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
           "--rate", "200", "--format", "raw", "--nonblocking", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_http(
    records: list[dict[str, Any]],
    url: str,
    proc: subprocess.Popen[bytes],
    concurrency: list[int],
    seconds: float,
    warmup: float,
    max_requests: int,
    workers: int,
    profile_dir: Path | None = None,
) -> list[dict[str, Any]]:
    out = []
    ctx = get_context("spawn")
    for c in concurrency:
        load_before = load_avg()
        before = scrape(url) if workers == 1 else {}
        with ctx.Pool(1) as pool:  # the load generator runs in its own process
            job = pool.apply_async(_loadgen, (url, records, c, seconds, warmup, max_requests))
            spy = None
            if profile_dir is not None and workers == 1:
                time.sleep(warmup)  # profile the measured window only
                raw = profile_dir / f"http-{c}-clients.txt"
                spy = _py_spy(proc.pid, seconds, raw)
            res = job.get()
            if spy is not None:
                spy.wait(timeout=seconds + 60)
                res["profile"] = {"raw": str(raw), **profile_parts(raw)}
        if workers == 1:  # /metrics is per worker: only meaningful with one
            res.update(batch_sizes(before, scrape(url)))
        res["memory"] = tree_rss_mb(proc.pid)
        res["load_before"], res["load_after"] = load_before, load_avg()
        print(json.dumps({"http": res}), file=sys.stderr, flush=True)
        out.append(res)
    return out


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dev")
    ap.add_argument(
        "--model-dir", type=Path, default=REPO / ".labelloop" / "bench" / "filter-model"
    )
    ap.add_argument("--train-n", type=int, default=3000, help="records to train on if no model")
    ap.add_argument(
        "--embed-cache-file",
        type=Path,
        default=None,
        help="SQLite embedding cache for training (speeds up a retrain)",
    )
    ap.add_argument("--n", type=int, default=1000, help="records per batch set (short, long)")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--concurrency", default="1,10,50", help="comma-separated client counts")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--onnx-threads", type=int, default=None, help="encoder threads per worker")
    ap.add_argument("--embed-cache", type=int, default=20_000, help="LRU entries (0 = off)")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument(
        "--profile", type=Path, default=None,
        help="sample the service with py-spy during each HTTP level (one worker) and write the "
        "raw stacks and the share of CPU per part of the serving path here",
    )  # fmt: skip
    args = ap.parse_args(argv)
    args.model_dir = args.model_dir.resolve()  # the service runs with another working directory

    if not (args.model_dir / "MLmodel").exists():
        from bench_model import train_model

        print(f"training the benchmark model into {args.model_dir} ...", file=sys.stderr)
        trained = train_model(args.data, args.model_dir, n=args.train_n,
                              models_dir=REPO / ".labelloop" / "models", cache=args.embed_cache_file)  # fmt: skip
        print(json.dumps(trained), file=sys.stderr)
    pool = load_sample(args.data, 12 * args.n)
    if not pool:
        raise SystemExit(f"no records under {args.data}")
    sets = split_by_length(pool[64:], args.n)
    report: dict[str, Any] = {
        "machine": {**machine_facts(), "python": platform.python_version(),
                    "load_at_start": load_avg()},
        "data": str(args.data),
        "model": str(args.model_dir),
        "workers": args.workers,
        "onnx_threads": args.onnx_threads,
        "embed_cache": args.embed_cache,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="filter-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_batch:
            report["batch"] = bench_batch(sets, pool[:64], args.model_dir, work, args.chunk_size,
                                          embed_cache=args.embed_cache, onnx_threads=args.onnx_threads)  # fmt: skip
        if not args.skip_http:
            extra = {"LABELLOOP_FILTER_EMBED_CACHE": str(args.embed_cache)}
            if args.onnx_threads is not None:
                extra["LABELLOOP_FILTER_ONNX_THREADS"] = str(args.onnx_threads)
            with filter_service(work / "svc", args.model_dir, workers=args.workers,
                                extra_env=extra) as (url, proc):  # fmt: skip
                levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
                if args.profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                report["http"] = bench_http(pool[: 2 * args.n], url, proc, levels, args.seconds,
                                            args.warmup, args.max_requests, args.workers,
                                            args.profile)  # fmt: skip
                report["http_target"] = "p99 <= 100 ms for single-record requests at 50 clients"
    report["machine"]["load_at_end"] = load_avg()
    emit_report(report, args.out)
    return report


def emit_report(report: dict[str, Any], out: Path | None) -> None:
    """Print the JSON report; with ``out`` also write it there."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
