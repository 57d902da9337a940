"""Benchmark of the human-review loop with SIMULATED annotators (Label Studio for real).

    uv run --no-sync python benchmarks/review_loop.py --data-dir ../shared/data/dev --n 300

Steps: pick ~N records (stratified over the dev files) -> gate + redact into a fresh SQLite label
store -> proposals (``--proposals fabricated``: noisy copies of the gold labels, because the real
proposer is slow on 2 CPU cores; say so when quoting numbers) -> ``push`` (route + import) ->
simulated annotators -> ``pull`` -> simulated adjudicator -> ``pull``. Prints tasks created, review
rate, QA precision of auto-accepted labels, agreement, and seconds per 100 imports / pulled
annotations. Starts its own Label Studio (temporary state dir) unless ``--ls-url`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labeling.annotator_sim import simulate  # noqa: E402
from labeling.collection import pull  # noqa: E402
from labeling.policy import load_policy  # noqa: E402
from labeling.routing import RoutingConfig  # noqa: E402
from labeling.sampling import sample_into_store  # noqa: E402
from labeling.studio import StudioClient, push  # noqa: E402
from labeling.taxonomy import load_taxonomy  # noqa: E402
from labelloop.runtime import studio_client  # noqa: E402
from labelloop.store import LabelStore  # noqa: E402
from labelloop.store.models import Base, ConversationRow, ProposalRow  # noqa: E402


def pick_records(data_dir: Path, n: int, seed: int, out: Path) -> int:
    files = sorted(data_dir.glob("*.jsonl"))
    rng = random.Random(seed)
    per = max(1, n // len(files))
    lines: list[str] = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            all_lines = [ln for ln in fh if ln.strip()]
        lines += rng.sample(all_lines, min(per, len(all_lines)))
    rng.shuffle(lines)
    out.write_text("".join(lines[:n]), encoding="utf-8")
    return min(n, len(lines))


def fabricate_proposals(store: LabelStore, taxonomy: Any, categories: list[str], seed: int) -> int:
    """Noisy copies of the gold labels (a stand-in for the LLM + kNN proposer)."""
    rng = random.Random(seed)
    tier1 = [i.id for i in taxonomy.tier1()]
    rows = []
    with store.session() as s:
        for c in s.scalars(select(ConversationRow).where(ConversationRow.eligible.is_(True))):
            gold = c.source_gold or {}
            names = gold.get("interests")
            ids = []
            for name in names or []:
                with contextlib.suppress(KeyError):
                    ids.append(taxonomy.name_to_id(name))
            interests: dict[str, float] = {}
            if names is None or rng.random() < 0.15:  # unknown or wrong
                interests[rng.choice(tier1)] = round(rng.uniform(0.3, 0.7), 3)
            else:
                for i in ids:
                    interests[i] = round(rng.uniform(0.6, 0.98), 3)
            sensitive: dict[str, float] = {}
            flags: list[str] = []
            for cat in gold.get("sensitive") or []:
                if rng.random() < 0.9:
                    sensitive[cat] = round(rng.uniform(0.55, 0.99), 3)
            if not gold.get("sensitive") and rng.random() < 0.05:
                sensitive[rng.choice(categories)] = round(rng.uniform(0.3, 0.7), 3)
            if sensitive:
                flags.append("possible_sensitive")
            if rng.random() < 0.08:
                flags.append("llm_knn_disagree")
            confs = list(interests.values()) + list(sensitive.values())
            unc = min(
                1.0,
                max(
                    0.0, 1.0 - (sum(confs) / len(confs) if confs else 0.5) + rng.uniform(-0.1, 0.1)
                ),
            )
            rows.append(
                ProposalRow(
                    conversation_id=c.conversation_id,
                    proposer_id="fabricated-noisy-gold",
                    prompt_hash="none",
                    model_id="fabricated",
                    embedding_model_id=None,
                    interests=interests,
                    sensitive=sensitive,
                    uncertainty=round(unc, 3),
                    flags=flags,
                )
            )
        s.add_all(rows)
    return len(rows)


def start_ls(tmp: Path) -> tuple[Any, Any]:
    from pydantic import SecretStr

    from infra.stack import Stack
    from labelloop.settings import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=tmp / "state",
        label_studio_port=port,
        ls_venv=REPO / ".labelloop" / "venvs" / "label-studio",
        label_studio_token=SecretStr("labelloop-bench-token-0a1b2c3d4e"),
    )
    stack = Stack(settings)
    t0 = time.perf_counter()
    stack.up(services=["label-studio"], timeout_s=900)
    print(f"label studio up in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return stack, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "dev")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", type=float, default=0.95)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--ls-url")
    ap.add_argument("--ls-token")
    ap.add_argument("--out", type=Path, help="write the JSON results here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="review-bench-"))
    stack = None
    if args.ls_url:
        client = StudioClient(args.ls_url, args.ls_token)
    else:
        stack, settings = start_ls(tmp)
        client = studio_client(settings)
    try:
        policy = load_policy()
        taxonomy = load_taxonomy(categories=policy.categories)
        store = LabelStore(f"sqlite:///{tmp / 'store.db'}")
        Base.metadata.create_all(store.engine)
        picked = pick_records(args.data_dir, args.n, args.seed, tmp / "picked.jsonl")
        sample_into_store(
            [tmp / "picked.jsonl"],
            policy=policy,
            store=store,
            quarantine_path=tmp / "quarantine.jsonl",
            run_id="bench",
        )
        n_props = fabricate_proposals(store, taxonomy, list(policy.categories), args.seed)
        prefix = f"bench-{int(time.time())}"
        cfg = RoutingConfig(budget=args.budget, seed=args.seed)
        t = time.perf_counter()
        rep = push(
            store,
            client,
            taxonomy=taxonomy,
            policy=policy,
            cfg=cfg,
            run_id="bench-push",
            prefix=prefix,
        )
        push_s = time.perf_counter() - t
        assert rep.projects is not None
        t = time.perf_counter()
        sim1 = simulate(
            store,
            client,
            rep.projects,
            taxonomy,
            policy.categories,
            accuracy=args.accuracy,
            annotators=args.annotators,
            seed=args.seed,
        )
        sim_s = time.perf_counter() - t
        labels = {"interests": list(taxonomy.ids()), "sensitive": list(policy.categories)}
        t = time.perf_counter()
        p1 = pull(
            store, client, rep.projects, run_id="bench-pull-1", label_sets=labels, taxonomy=taxonomy
        )
        pull_s = time.perf_counter() - t
        sim2 = simulate(
            store,
            client,
            rep.projects,
            taxonomy,
            policy.categories,
            accuracy=args.accuracy,
            annotators=args.annotators,
            seed=args.seed,
        )
        p2 = pull(
            store, client, rep.projects, run_id="bench-pull-2", label_sets=labels, taxonomy=taxonomy
        )
        t = time.perf_counter()
        p3 = pull(
            store, client, rep.projects, run_id="bench-pull-3", label_sets=labels, taxonomy=taxonomy
        )
        noop_s = time.perf_counter() - t
        r = rep.routing
        results = {
            "records_picked": picked,
            "proposals": n_props,
            "proposals_kind": "fabricated from noisy gold (not the LLM proposer)",
            "routing": r,
            "review_rate": round(r.get("needs_review", 0) / max(1, r.get("total", 1)), 4),
            "tasks_created": rep.imported,
            "push_s": round(push_s, 2),
            "push_s_per_100_tasks": round(100 * push_s / max(1, rep.imported), 2),
            "sim_annotations": sim1.annotations + sim2.annotations,
            "sim_s_per_100_annotations": round(100 * sim_s / max(1, sim1.annotations), 2),
            "pull_1": {k: v for k, v in p1.as_dict().items() if k not in ("agreement", "qa")},
            "pull_s_per_100_annotations": round(100 * pull_s / max(1, p1.annotations_new), 2),
            "adjudications_answered": sim2.adjudications,
            "pull_2_gold_created": p2.gold_created,
            "noop_pull_s": round(noop_s, 2),
            "noop_pull_changes": p3.gold_created + p3.gold_updated + p3.annotations_new,
            "agreement": p2.agreement,
            "qa": p2.qa,
            "accuracy": args.accuracy,
            "annotators": args.annotators,
        }
        print(json.dumps(results, indent=2))
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))
    finally:
        if stack is not None:
            stack.down(services=["label-studio"])


if __name__ == "__main__":
    main()
