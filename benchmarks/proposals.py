"""Benchmark of label proposals: LLM alone, kNN alone, combined (LLM + kNN + lexicon, cascade).

    uv run --no-sync python benchmarks/proposals.py [DEV_DIR] [--n-eval 500] [--n-llm 60] \
        [--n-llm-alone 20] [--seed-per-file 400] [--models-dir DIR]

Each dev file is shuffled (seeded); the first ``--seed-per-file`` records are the labelled part put
into a fresh Chroma collection (origin "dev", plus the cold-start seeds), the next ones are
held out: ``--n-eval`` conversations spread evenly over the six files. kNN alone runs on all of
them; the combined proposer on the first ``--n-llm`` of them (stratified), the LLM alone on the
first ``--n-llm-alone`` (it is slow here: one call per conversation on two shared cores).

Metrics: per-category sensitive recall/precision/F1 (a category counts when its confidence >=
0.5), ``any`` = the possible_sensitive flag as a detector of "has any sensitive label", interest
micro precision/recall/F1 on tier-1 ids (only where gold interests are known; predicted =
confidence >= 0.5), expected calibration error (10 bins over every (conversation, label) pair:
all tier-1 interests where gold is known plus every category), LLM call rate, conversations/s,
LLM calls/s, LLM s/conversation and, for the runs that propose one conversation at a time
(combined, LLM alone), the p50/p95 latency of a proposal and of the LLM part of it.

MLflow: the run is logged to the experiment ``labelloop-proposer-bench`` (parameters: prompt
hash, model, provider, k; the metrics above per proposer; the JSON report as an artifact) at
``--mlflow-uri``, by default the stack's MLflow server when it answers, else a SQLite file under
the state dir (``<state_dir>/bench/mlflow.db``: ``uv run mlflow ui --backend-store-uri
sqlite:///.labelloop/bench/mlflow.db``). ``--no-mlflow``: the JSON only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labeling.llm import parse_llm_spec
from labeling.llm_traces import experiment_id, unreachable_reason
from labeling.policy import load_policy
from labeling.proposals import Proposal, ProposalInput, ProposeStats
from labeling.records import Conversation, read_records
from labeling.sampling import to_row
from labeling.taxonomy import load_taxonomy
from labeling.vectorstore import IndexedExample
from labelloop.runtime import build_proposer
from labelloop.settings import Settings
from labelloop.store import LabelStore
from labelloop.store.models import Base


def load_split(
    dev: Path, seed_per_file: int, n_eval: int, rnd: random.Random
) -> tuple[list[Any], list[Any]]:
    files = sorted(dev.glob("*.jsonl"))
    per_file_eval = max(1, n_eval // len(files))
    gold_part: list[Conversation] = []
    evals: list[list[Conversation]] = []
    for f in files:
        recs = [r for r in read_records([f]) if isinstance(r, Conversation) and r.gold is not None]
        rnd.shuffle(recs)
        k = min(seed_per_file, len(recs) // 2)
        gold_part += recs[:k]
        evals.append(recs[k : k + per_file_eval])
    # interleave so that any prefix is stratified across files
    held: list[Conversation] = []
    for i in range(max(len(e) for e in evals)):
        held += [e[i] for e in evals if i < len(e)]
    return gold_part, held[:n_eval]


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return round(2 * tp / (2 * tp + fp + fn), 3) if tp + fp + fn else None


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None without values."""
    if not values:
        return None
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def latencies(per_item_s: list[float], llm_s: list[float]) -> dict[str, float | None]:
    """p50/p95 seconds of one proposal (``per_item_s``) and of its LLM calls (``llm_s``: the
    proposals that called the model)."""

    def r(x: float | None) -> float | None:
        return round(x, 4) if x is not None else None

    return {
        "latency_p50_s": r(percentile(per_item_s, 0.5)),
        "latency_p95_s": r(percentile(per_item_s, 0.95)),
        "llm_latency_p50_s": r(percentile(llm_s, 0.5)),
        "llm_latency_p95_s": r(percentile(llm_s, 0.95)),
    }


def propose_one_at_a_time(
    proposer: Any, items: list[ProposalInput], stats: ProposeStats, label: str
) -> tuple[list[Proposal], dict[str, float | None]]:
    """Proposals one conversation at a time (as the review loop meets them), with latencies."""
    props: list[Proposal] = []
    per_item: list[float] = []
    llm_s: list[float] = []
    for n, it in enumerate(items):
        before = stats.llm_latency_s
        t = time.perf_counter()
        got = proposer.propose([it], stats=stats)
        per_item.append(time.perf_counter() - t)
        if stats.llm_latency_s > before:
            llm_s.append(stats.llm_latency_s - before)
        props += got
        if n % 10 == 9:
            print(f"{label} {n + 1}/{len(items)} llm {stats.llm_called}", file=sys.stderr)
    return props, latencies(per_item, llm_s)


def metrics(
    props: list[Proposal],
    gold: dict[str, Any],
    taxonomy: Any,
    categories: tuple[str, ...],
    stats: ProposeStats,
) -> dict[str, Any]:
    tier1 = [i.id for i in taxonomy.tier1()]
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    itp = ifp = ifn = 0
    pairs: list[tuple[float, int]] = []
    for p in props:
        g = gold[p.conversation_id]
        gs = set(g.sensitive)
        ps = {c for c, v in p.sensitive.items() if v >= 0.5}
        for c in categories:
            tp[c] += c in gs and c in ps
            fp[c] += c not in gs and c in ps
            fn[c] += c in gs and c not in ps
            pairs.append((p.sensitive.get(c, 0.0), int(c in gs)))
        flag = "possible_sensitive" in p.flags
        tp["any"] += bool(gs) and flag
        fp["any"] += (not gs) and flag
        fn["any"] += bool(gs) and not flag
        if g.interests is not None:
            gi = {taxonomy.tier1_of(taxonomy.name_to_id(n)).id for n in g.interests}
            pi = {k for k, v in p.interests.items() if v >= 0.5}
            itp += len(gi & pi)
            ifp += len(pi - gi)
            ifn += len(gi - pi)
            pairs += [(p.interests.get(t, 0.0), int(t in gi)) for t in tier1]
    per_cat = {}
    for c in (*categories, "any"):
        support = tp[c] + fn[c]
        if support == 0 and fp[c] == 0:
            continue
        per_cat[c] = {
            "support": support,
            "recall": _ratio(tp[c], support),
            "precision": _ratio(tp[c], tp[c] + fp[c]),
            "f1": _f1(tp[c], fp[c], fn[c]),
        }
    stp = sum(tp[c] for c in categories)
    sfn = sum(fn[c] for c in categories)
    sfp = sum(fp[c] for c in categories)
    bins: list[list[tuple[float, int]]] = [[] for _ in range(10)]
    for conf, y in pairs:
        bins[min(9, int(conf * 10))].append((conf, y))
    ece = sum(
        abs(sum(c for c, _ in b) / len(b) - sum(y for _, y in b) / len(b)) * len(b)
        for b in bins
        if b
    )
    d = stats.as_dict()
    return {
        "n": len(props),
        "sensitive_recall": _ratio(stp, stp + sfn),
        "sensitive_precision": _ratio(stp, stp + sfp),
        "sensitive_f1": _f1(stp, sfp, sfn),
        "per_category": per_cat,
        "interest_precision": _ratio(itp, itp + ifp),
        "interest_recall": _ratio(itp, itp + ifn),
        "interest_micro_f1": _f1(itp, ifp, ifn),
        "ece": round(ece / max(1, len(pairs)), 4),
        "llm_call_rate": d["llm_call_rate"],
        "llm_calls": d["llm_calls"],
        "conversations_per_s": d["conversations_per_s"],
        "llm_calls_per_s": round(stats.llm_calls / stats.wall_s, 3) if stats.wall_s > 0 else None,
        "llm_s_per_conversation": round(stats.llm_latency_s / max(1, stats.n), 3),
        "invalid": stats.invalid,
        "cascade": d["cascade"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "dev", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/dev")
    )
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--n-llm", type=int, default=60)
    ap.add_argument("--n-llm-alone", type=int, default=20)
    ap.add_argument("--seed-per-file", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models-dir", default=None, help="default: <state_dir>/models")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    ap.add_argument(
        "--mlflow-uri",
        default=None,
        help="log the run here (default: the stack's MLflow when it answers, else "
        "sqlite:///<state_dir>/bench/mlflow.db)",
    )
    ap.add_argument("--no-mlflow", action="store_true", help="write the JSON only")
    args = ap.parse_args()

    rnd = random.Random(args.seed)
    policy = load_policy()
    taxonomy = load_taxonomy(categories=policy.categories)
    work = Path(tempfile.mkdtemp(prefix="bench-proposals-"))
    # traces would add their own export work to every timed LLM call: off here
    s = Settings(state_dir=work, llm_trace=False)  # type: ignore[call-arg]
    if args.models_dir:
        (work / "models").symlink_to(Path(args.models_dir).resolve())
    t0 = time.perf_counter()
    gold_part, held = load_split(Path(args.dev), args.seed_per_file, args.n_eval, rnd)

    def text_of(c: Conversation) -> str:
        from labeling.records import render_turns

        return render_turns(to_row(c, policy, "bench", None)["redacted_turns"] or [])

    store = LabelStore(f"sqlite:///{work / 'bench.db'}")
    Base.metadata.create_all(store.engine)
    knn_only = build_proposer(s, store=None, with_llm=False)
    knn_only.lexicon = None
    assert knn_only.index is not None
    examples = []
    for c in gold_part:
        assert c.gold is not None
        ints = (
            None
            if c.gold.interests is None
            else tuple(taxonomy.name_to_id(n) for n in c.gold.interests)
        )
        examples.append(
            IndexedExample(c.conversation_id, text_of(c), ints, tuple(c.gold.sensitive), "dev")
        )
    knn_only.index.upsert(examples)
    print(
        f"indexed {len(examples)} gold examples in {time.perf_counter() - t0:.0f}s; held out {len(held)}",
        file=sys.stderr,
    )
    gold = {c.conversation_id: c.gold for c in held}
    items = [ProposalInput(c.conversation_id, text_of(c)) for c in held]
    results: dict[str, Any] = {}

    st = ProposeStats()
    props = knn_only.propose(items, stats=st)
    results["knn"] = metrics(props, gold, taxonomy, policy.categories, st)
    print("knn", json.dumps(results["knn"]), file=sys.stderr)

    combined = build_proposer(s, store=store, with_llm=True)
    st = ProposeStats()
    sub = items[: args.n_llm]
    props, lat = propose_one_at_a_time(combined, sub, st, "combined")
    results["combined"] = {**metrics(props, gold, taxonomy, policy.categories, st), **lat}
    results["combined_knn_same_subset"] = metrics(
        knn_only.propose(sub, stats=(st2 := ProposeStats())), gold, taxonomy, policy.categories, st2
    )
    print("combined", json.dumps(results["combined"]), file=sys.stderr)

    llm_only = combined
    llm_only.index = None
    llm_only.lexicon = None
    llm_only.cascade = type(combined.cascade)(enabled=False)
    assert llm_only.labeler is not None
    llm_only.labeler.store = None  # no cache: the combined run's answers had few-shot examples
    st = ProposeStats()
    props, lat = propose_one_at_a_time(llm_only, items[: args.n_llm_alone], st, "llm alone")
    results["llm"] = {**metrics(props, gold, taxonomy, policy.categories, st), **lat}

    results["setup"] = {
        "dev": args.dev,
        "indexed": len(examples),
        "n_eval": len(items),
        "n_llm": len(sub),
        "n_llm_alone": min(len(items), args.n_llm_alone),
        "model_id": combined.model_id,
        "provider": parse_llm_spec(s.llm).provider,
        "prompt_hash": combined.prompt.sha256,
        "knn_k": s.knn_k,
        "fewshot_k": s.fewshot_k,
        "cascade_enabled": s.cascade_enabled,
        "seed_per_file": args.seed_per_file,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print_table(results)
    out = Path(args.out) if args.out else work / "proposals.json"
    out.write_text(json.dumps(results, indent=2))
    if not args.no_mlflow:
        uri = args.mlflow_uri or default_tracking_uri(Settings())
        url = log_run(results, out, tracking_uri=uri)
        print(f"MLflow run: {url}", file=sys.stderr)


BENCH_EXPERIMENT = "labelloop-proposer-bench"
PROPOSERS = ("llm", "knn", "combined_knn_same_subset", "combined")


def default_tracking_uri(settings: Settings) -> str:
    """The stack's MLflow server when it answers, else a SQLite file under the state dir."""
    if unreachable_reason(settings.mlflow_uri, timeout_s=3.0) is None:
        return settings.mlflow_uri
    path = (settings.state / "bench" / "mlflow.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def run_params(results: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters: the setup (prompt hash, model, provider, k, sizes)."""
    return {k: v for k, v in results["setup"].items() if k != "seconds"}


def run_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Every numeric metric as ``<proposer>.<metric>`` and
    ``<proposer>.<category>.<precision|recall|f1|support>`` (None values left out)."""
    out: dict[str, float] = {}
    for name in PROPOSERS:
        for k, v in results[name].items():
            if k == "per_category":
                for cat, m in v.items():
                    for mk, mv in m.items():
                        if isinstance(mv, int | float):
                            out[f"{name}.{cat}.{mk}"] = float(mv)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{name}.{k}"] = float(v)
    out["seconds"] = float(results["setup"]["seconds"])
    return out


def log_run(
    results: dict[str, Any],
    report: Path,
    *,
    tracking_uri: str,
    experiment: str = BENCH_EXPERIMENT,
) -> str:
    """Log the benchmark as one MLflow run (params, metrics, the JSON report); its URL."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from experiments.registry import run_url

    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(tracking_uri, experiment)
    setup = results["setup"]
    run = client.create_run(
        exp_id,
        run_name=f"proposals-{setup['prompt_hash'][:8]}-{setup['model_id'].split('@')[0]}",
        tags={"labelloop.kind": "proposer-bench", "prompt_hash": setup["prompt_hash"],
              "model_id": setup["model_id"], "mlflow.source.name": "benchmarks/proposals.py"},
    )  # fmt: skip
    rid = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        rid,
        metrics=[Metric(k, v, now, 0) for k, v in run_metrics(results).items()],
        params=[Param(k, str(v)[:6000]) for k, v in run_params(results).items()],
    )
    client.log_artifact(rid, str(report))
    client.set_terminated(rid)  # the client alone: no global tracking URI or active run
    return run_url(tracking_uri, exp_id, rid)


def print_table(r: dict[str, Any]) -> None:
    cols = ["llm", "knn", "combined_knn_same_subset", "combined"]
    head = ["metric", "LLM alone", "kNN alone", "kNN (combined subset)", "combined"]
    rows: list[list[str]] = []

    def fmt(v: Any) -> str:
        return "-" if v is None else str(v)

    for k in (
        "n",
        "sensitive_recall",
        "sensitive_precision",
        "sensitive_f1",
        "interest_precision",
        "interest_recall",
        "interest_micro_f1",
        "ece",
        "llm_call_rate",
        "conversations_per_s",
        "llm_calls_per_s",
        "llm_s_per_conversation",
        "latency_p50_s",
        "latency_p95_s",
        "llm_latency_p50_s",
        "llm_latency_p95_s",
        "invalid",
    ):
        rows.append([k, *(fmt(r[c].get(k)) for c in cols)])
    cats = sorted({c for col in cols for c in r[col]["per_category"]})
    for c in cats:
        for m in ("recall", "precision"):
            rows.append(
                [
                    f"{c} {m}",
                    *(
                        fmt(r[col]["per_category"].get(c, {}).get(m))
                        + (
                            f" (n={r[col]['per_category'][c]['support']})"
                            if m == "recall" and c in r[col]["per_category"]
                            else ""
                        )
                        for col in cols
                    ),
                ]
            )
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)))
    print(json.dumps(r["setup"]))


if __name__ == "__main__":
    main()
