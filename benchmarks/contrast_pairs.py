"""Write LLM contrast pairs for the filter benchmark (``experiments.contrast``).

    uv run --no-sync python benchmarks/contrast_pairs.py write --n 700 \
        --out .labelloop/bench/contrast/pairs.jsonl

Two LLM calls per pair (the bundled local model unless ``--llm-url`` names an OpenAI-compatible
server that serves it), sampled at ``--temperature`` with the request's index as seed, so a rerun
writes the same pairs. The output is appended to as pairs arrive; a rerun skips the indices already
written, so the run can be stopped and resumed. Every answer is kept, an unusable one with its
error. ``filter_quality.py --contrast FILE`` checks the pairs and trains on the kept ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.contrast import (  # noqa: E402
    CONTRAST_PROMPT_NAME,
    MESSAGE_SCHEMA,
    ContrastPair,
    contrast_plan,
    load_pairs,
    write_pairs,
)
from labeling.llm import openai_response_format  # noqa: E402
from labeling.llm_server import chat_text  # noqa: E402
from labeling.policy import load_policy  # noqa: E402
from labeling.prompts import load_prompt  # noqa: E402

DEFAULT_MODEL = ROOT / ".labelloop" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def _asker(base_url: str, temperature: float, max_tokens: int) -> Any:
    client = httpx.Client(timeout=300.0, trust_env=False)

    def ask(system: str, user: str, seed: int) -> str:
        return chat_text(
            client,
            base_url,
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            response_format=openai_response_format(MESSAGE_SCHEMA),
        )

    return ask


def cmd_write(args: argparse.Namespace) -> int:
    policy = load_policy()
    prompt = load_prompt(CONTRAST_PROMPT_NAME)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[int] = set()
    if out.exists():
        done = {p.request.index for p in load_pairs(out)[0] if p.prompt_hash == prompt.sha256}
    plan = [
        r
        for r in contrast_plan(
            policy.categories,
            args.n,
            seed=args.seed,
            false_friends=args.false_friends,
            dialogue=args.dialogue,
        )
        if r.index not in done
    ]
    print(f"{len(done)} pairs already written, {len(plan)} to write", flush=True)
    if args.llm_url:
        base_url = args.llm_url
    else:
        from labeling.llm_server import embedded_server

        base_url = embedded_server(Path(args.model), n_ctx=2048, threads=args.threads).base_url
    served = args.llm_url or Path(args.model).name
    model_id = f"{served}@T{args.temperature}"
    first = plan[0].index if plan else 0
    t0 = time.monotonic()
    n_err = 0
    with out.open("a", encoding="utf-8") as fh:

        def on_pair(p: ContrastPair) -> None:
            nonlocal n_err
            n_err += bool(p.error)
            fh.write(json.dumps(p.to_row(), ensure_ascii=False) + "\n")
            fh.flush()
            k = p.request.index
            if k % 10 == 0:
                rate = (time.monotonic() - t0) / max(1, k + 1 - first)
                print(f"pair {k}: {rate:.1f} s per pair, {n_err} unusable", flush=True)

        write_pairs(
            plan,
            ask=_asker(base_url, args.temperature, args.max_tokens),
            prompt=prompt,
            model_id=model_id,
            on_pair=on_pair,
        )
    print(f"done in {time.monotonic() - t0:.0f} s; {n_err} unusable answers", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write pairs with the LLM")
    w.add_argument("--n", type=int, default=700)
    w.add_argument("--seed", type=int, default=0, help="the plan's seed")
    w.add_argument(
        "--false-friends",
        action="store_true",
        help="clean sides about matters that share the category's words (FALSE_FRIENDS)",
    )
    w.add_argument(
        "--dialogue",
        action="store_true",
        help="turns of everyday and task dialogues and forum threads (DIALOGUE_STYLES)",
    )
    w.add_argument("--out", required=True)
    w.add_argument("--model", default=str(DEFAULT_MODEL))
    w.add_argument("--llm-url", default="", help="an OpenAI-compatible base URL (…/v1)")
    w.add_argument("--temperature", type=float, default=0.7)
    w.add_argument("--max-tokens", type=int, default=120)
    w.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.cmd == "write":
        return cmd_write(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
