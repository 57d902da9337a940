"""Partitioned batch scoring on a local Dask cluster: 1 worker vs 2 workers, on the real model.

    uv run --no-sync python benchmarks/cluster_speed.py --data ../shared/data/dev \\
        [--model-dir DIR] [--n 2000] [--workers 1,2] [--partition-kb 64] [--out OUT.json]

The model is the trained filter of ``benchmarks/bench_model.py`` (a local MLflow pyfunc
directory; trained first if missing). ``--n`` records (a round-robin mix of every dev file) are
written to one JSONL file, cut into partitions of ``--partition-kb``, and scored by
``targeting.partitions.score_partitions`` on a ``LocalCluster`` of N worker processes with one
thread each (one encoder thread per worker). Each worker first scores a small warm-up file (its
one model load), then the timed run starts. Reports records/s per worker count, the scaling
efficiency ``rate(N) / (N * rate(1))``, records/s per worker (= per core here), and the
machine's load average around each run (its 2 cores are shared with other jobs).
Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def run_level(
    workers: int, src: Path, warm: Path, model_dir: Path, work: Path, partition_bytes: int
) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from targeting.partitions import ScoringSpec, plan_partitions, score_partitions

    spec = ScoringSpec(model_uri=str(model_dir), tracking_uri=f"file://{work / 'mlruns'}",
                       model_cache_dir=str(work / "models"), onnx_threads=1)  # fmt: skip
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc, Client(lc) as client:  # fmt: skip
        client.wait_for_workers(workers, timeout=300)
        t0 = time.perf_counter()
        # warm-up: enough small partitions that every worker loads its model
        wparts = plan_partitions(
            [warm], partition_bytes=max(1, warm.stat().st_size // (4 * workers))
        )
        score_partitions(client, wparts, work / f"warm-{workers}", spec)
        warm_s = time.perf_counter() - t0
        parts = plan_partitions([src], partition_bytes=partition_bytes)
        load_before = [round(x, 2) for x in os.getloadavg()]
        rep = score_partitions(client, parts, work / f"out-{workers}", spec)
        load_after = [round(x, 2) for x in os.getloadavg()]
    return {
        "workers": workers,
        "partitions": len(parts),
        "records": rep.records,
        "seconds": round(rep.seconds, 2),
        "records_per_s": round(rep.per_second, 1),
        "failed": rep.failed,
        "warmup_and_model_load_s": round(warm_s, 1),
        "load_before": load_before,
        "load_after": load_after,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dev")
    ap.add_argument(
        "--model-dir", type=Path, default=REPO / ".labelloop" / "bench" / "filter-model"
    )
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--partition-kb", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.model_dir = args.model_dir.resolve()  # workers run with another working directory

    from filter_speed import emit_report, load_sample

    if not (args.model_dir / "MLmodel").exists():
        from bench_model import train_model

        train_model(args.data, args.model_dir, models_dir=REPO / ".labelloop" / "models")
    pool = load_sample(args.data, args.n + 200)
    report: dict[str, Any] = {"cpus": os.cpu_count(), "n": args.n, "model": str(args.model_dir),
                              "partition_kb": args.partition_kb, "levels": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        work = Path(tmp)
        src = work / "in.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in pool[200:]), encoding="utf-8")
        warm = work / "warm.jsonl"
        warm.write_text("".join(json.dumps(r) + "\n" for r in pool[:200]), encoding="utf-8")
        for w in [int(x) for x in args.workers.split(",") if x.strip()]:
            res = run_level(w, src, warm, args.model_dir, work, args.partition_kb * 1024)
            print(json.dumps(res), file=sys.stderr, flush=True)
            report["levels"].append(res)
    base = next((lv for lv in report["levels"] if lv["workers"] == 1), None)
    if base and base["records_per_s"]:
        for lv in report["levels"]:
            lv["per_worker_records_per_s"] = round(lv["records_per_s"] / lv["workers"], 1)
            lv["scaling_efficiency"] = round(
                lv["records_per_s"] / (lv["workers"] * base["records_per_s"]), 3
            )
    emit_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
