"""The champion/challenger gate, approval and rollback (MLflow registry aliases, no stages).

* :func:`evaluate` scores a version (the challenger) and the current ``@production`` (the champion)
  on the same frozen eval split (by default the one logged with the challenger's training run) and
  applies :class:`GateRules`:

  - per sensitive category with eval support: recall (share of its items blocked) >= floor;
  - false-block rate <= a ceiling (a model that blocks everything cannot pass);
  - long dialogues composed from the eval split (``experiments.composition``: a sensitive turn
    block inserted late into a long clean dialogue, and neutral controls): leak <= a ceiling,
    controls' false-block <= the false-block ceiling (a model that misses late mentions cannot
    pass); every sensitive eval conversation short enough is inserted once (up to
    ``GateRules.long_dialogues``), with ``long_dialogue_controls`` controls, on hosts used evenly;
  - leak rate <= the champion's;
  - interest micro-F1 >= champion's - tolerance.

  Each check's detail gives the items its rate stands on and the Wilson 95 % interval; a note
  names each category too small to show its recall floor at all (:func:`underpowered_floors`).
  Without a champion only the absolute rules apply. The verdict and a side-by-side
  table are logged as an MLflow run (tags ``labelloop.kind=gate``) and as tags on the version
  (``gate=passed|failed``, ``gate_run_id``, ``gate_summary``). Passing sets alias ``challenger``.
* :func:`approve` moves ``production`` to a version (the old one keeps alias ``previous``); a
  version whose gate did not pass needs ``force=True`` and a reason, both recorded as tags.
* :func:`rollback` points ``production`` back at ``previous``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experiments.dataset import Example
from experiments.evaluation import (
    EvalReport,
    LongDialogueReport,
    evaluate_bundle,
    evaluate_long_dialogues,
)
from experiments.registry import configure, load_eval_set
from experiments.training import CachedEmbedder, wilson_interval
from targeting.model import TargetingFilterModel, load_filter
from targeting.model_ref import FilterModelRef
from targeting.scorer import TextEmbedder

ALIAS_PREVIOUS = "previous"
ALIAS_CHALLENGER = "challenger"


class GateError(RuntimeError):
    """An approval/rollback request that the rules refuse."""


@dataclass(frozen=True)
class GateRules:
    sensitive_recall_floor: float = 0.98
    interest_f1_tolerance: float = 0.01
    max_false_block_rate: float = 0.10
    max_long_dialogue_leak_rate: float = 0.02
    # composed long dialogues: every eval conversation that can be inserted as a sensitive block,
    # up to this many (each once), and this many controls, the hosts used evenly. Fewer, on
    # hosts drawn at random, make the verdict a draw: 200 of each gave one model 1.0-4.0 % leak
    # and 3-12.5 % controls blocked over ten seeds
    long_dialogues: int = 2000
    long_dialogue_controls: int = 1000


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    challenger: float | None
    champion: float | None
    threshold: float | None
    detail: str = ""


@dataclass
class GateResult:
    version: str
    champion_version: str | None
    passed: bool
    checks: list[Check]
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    n_eval: int
    gate_run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def table_markdown(self) -> str:
        champ = f"v{self.champion_version}" if self.champion_version else "none"
        lines = [
            f"gate for v{self.version} vs champion {champ}: **{'PASSED' if self.passed else 'FAILED'}** "
            f"(eval items: {self.n_eval})",
            "",
            f"| check | challenger v{self.version} | champion {champ} | threshold | result |",
            "|---|---:|---:|---:|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| {c.name} | {_f(c.challenger)} | {_f(c.champion)} | {_f(c.threshold)} | "
                f"{'pass' if c.passed else 'FAIL'}{' - ' + c.detail if c.detail else ''} |"
            )
        keys = ["leak_rate", "false_block_rate", "interest_micro_f1", "interest_macro_f1"]
        lines += [
            "",
            f"| metric | challenger v{self.version} | champion {champ} |",
            "|---|---:|---:|",
        ]
        for k in keys:
            ch = self.champion_metrics.get(k) if self.champion_metrics else None
            lines.append(f"| {k} | {_f(self.challenger_metrics.get(k))} | {_f(ch)} |")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        failed = [c.name for c in self.checks if not c.passed]
        return "passed" if self.passed else "failed: " + ", ".join(failed)


def _f(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _nan(v: float) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _count(rate: float, n: int, what: str) -> str:
    """``"k of n <what> (95 % CI lo-hi %)"``: how many items a rate stands on, and how sure it is
    (Wilson interval)."""
    k = round(rate * n)
    lo, hi = wilson_interval(k, n)
    return f"{k} of {n} {what} (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)"


def apply_rules(
    challenger: EvalReport,
    champion: EvalReport | None,
    rules: GateRules,
    long_dialogues: LongDialogueReport | None = None,
) -> tuple[bool, list[Check]]:
    """The gate's verdict from two reports on the same eval split (pure; unit-tested)."""
    checks: list[Check] = []
    fb = challenger.false_block_rate
    if _nan(fb):
        checks.append(Check("false_block_rate <= ceiling", True, None, None,
                            rules.max_false_block_rate, "no clean eval items"))  # fmt: skip
    else:
        checks.append(Check("false_block_rate <= ceiling", fb <= rules.max_false_block_rate + 1e-12,
                            fb, champion.false_block_rate if champion else None,
                            rules.max_false_block_rate,
                            _count(fb, challenger.n_non_sensitive, "clean items blocked")))  # fmt: skip
    if long_dialogues is not None:
        ld = long_dialogues
        if ld.n_sensitive:
            checks.append(Check("long_dialogue_leak_rate <= ceiling",
                                ld.leak_rate <= rules.max_long_dialogue_leak_rate + 1e-12, ld.leak_rate,
                                None, rules.max_long_dialogue_leak_rate,
                                _count(ld.leak_rate, ld.n_sensitive, "composed dialogues passed")))  # fmt: skip
        else:
            checks.append(Check("long_dialogue_leak_rate <= ceiling", True, None, None,
                                rules.max_long_dialogue_leak_rate, "no long dialogue could be composed"))  # fmt: skip
        if ld.n_controls:
            checks.append(Check("long_dialogue_control_false_block <= ceiling",
                                ld.control_false_block_rate <= rules.max_false_block_rate + 1e-12,
                                ld.control_false_block_rate, None, rules.max_false_block_rate,
                                _count(ld.control_false_block_rate, ld.n_controls,
                                       "composed controls blocked")))  # fmt: skip
    for cat, m in challenger.per_category.items():
        if m["support"] <= 0:
            checks.append(
                Check(
                    f"recall[{cat}]",
                    True,
                    None,
                    None,
                    rules.sensitive_recall_floor,
                    "no eval items",
                )
            )
            continue
        champ = champion.per_category.get(cat, {}).get("recall") if champion else None
        ok = m["recall"] >= rules.sensitive_recall_floor - 1e-12
        checks.append(Check(f"recall[{cat}]", ok, m["recall"], champ, rules.sensitive_recall_floor,
                            _count(m["recall"], int(m["support"]), "items blocked")))  # fmt: skip
    if champion is not None:
        ch, cp = challenger.leak_rate, champion.leak_rate
        if _nan(ch) and _nan(cp):
            checks.append(
                Check("leak_rate <= champion", True, None, None, None, "no sensitive eval items")
            )
        else:
            ok = (not _nan(ch)) and (_nan(cp) or ch <= cp + 1e-12)
            checks.append(Check("leak_rate <= champion", ok, ch, cp, cp))
        ch, cp = challenger.interest_micro_f1, champion.interest_micro_f1
        if _nan(cp):
            checks.append(
                Check(
                    "interest_micro_f1 >= champion - tol",
                    True,
                    ch,
                    None,
                    None,
                    "champion has no interest score",
                )
            )
        else:
            thr = cp - rules.interest_f1_tolerance
            ok = (not _nan(ch)) and ch >= thr - 1e-12
            checks.append(Check("interest_micro_f1 >= champion - tol", ok, ch, cp, thr))
    return all(c.passed for c in checks), checks


def items_to_show(floor: float, z: float = 1.96) -> int | None:
    """The fewest items of a category whose recall can show ``floor``: with every one of them
    blocked, the Wilson lower bound (:func:`~experiments.training.wilson_interval`, n / (n + z²)
    at k = n) reaches it (None for a floor of 1)."""
    if floor >= 1.0:
        return None
    return max(1, math.ceil(floor * z * z / (1.0 - floor) - 1e-9))


def underpowered_floors(report: EvalReport, rules: GateRules) -> list[str]:
    """Notes for the categories whose recall floor the eval split is too small to show: their
    check passes or fails on a handful of conversations (more gold of them settles it)."""
    need = items_to_show(rules.sensitive_recall_floor)
    out: list[str] = []
    for cat, m in sorted(report.per_category.items()):
        n = int(m["support"])
        if n > 0 and (need is None or n < need):
            lo = wilson_interval(n, n)[0]
            out.append(
                f"recall[{cat}] rests on {n} eval item{'s' if n != 1 else ''}: even with all of "
                f"them blocked, its 95 % lower bound is {100 * lo:.1f} %, under the floor "
                f"{rules.sensitive_recall_floor}"
                + (f"; {need} items would show it" if need is not None else "")
            )
    return out


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    configure(tracking_uri)
    return MlflowClient()


def alias_version(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version of registered model ``name`` that ``alias`` points at (None: no such alias)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _score(
    model: TargetingFilterModel, examples: Sequence[Example], embedder: TextEmbedder | None
) -> EvalReport:
    assert model.bundle is not None
    report, _, _ = evaluate_bundle(model.bundle, examples, embedder)
    return report


def _long_dialogues(
    model: TargetingFilterModel,
    examples: Sequence[Example],
    rules: GateRules,
    embedder: TextEmbedder | None,
) -> LongDialogueReport:
    assert model.bundle is not None
    return evaluate_long_dialogues(
        model.bundle, examples, embedder, n=rules.long_dialogues,
        n_controls=rules.long_dialogue_controls, spread_hosts=True,
    )  # fmt: skip


def evaluate(
    version: str,
    *,
    tracking_uri: str,
    model: FilterModelRef,
    rules: GateRules = GateRules(),
    eval_examples: Sequence[Example] | None = None,
    experiment: str = "labelloop-targeting-filter",
) -> GateResult:
    """Run the gate for ``version`` of ``model.name`` against the version at ``model.alias``;
    log verdict + table; alias ``challenger`` on pass."""
    import mlflow

    client = _client(tracking_uri)
    mv = client.get_model_version(model.name, str(version))
    notes: list[str] = []
    examples = list(eval_examples) if eval_examples is not None else load_eval_set(mv.run_id)
    if not examples:
        raise GateError(f"version {version}: the eval split is empty; nothing to gate on")
    challenger_model = load_filter(model.version_uri(version))
    # the composed long dialogues are eval turns again: each text is embedded once (the
    # encoder's vector of a text does not depend on the batch it comes in)
    embedder = (
        CachedEmbedder(challenger_model.embedder) if challenger_model.embedder is not None else None
    )
    challenger = _score(challenger_model, examples, embedder)
    long_dialogues = _long_dialogues(challenger_model, examples, rules, embedder)
    champ_version = alias_version(tracking_uri, model.name, model.alias)
    champion: EvalReport | None = None
    if champ_version == str(version):
        notes.append("the version is the current production model; only absolute rules apply")
        champ_version = None
    elif champ_version is not None:
        champion_model = load_filter(model.version_uri(champ_version))
        champion = _score(champion_model, examples, champion_model.embedder)
    else:
        notes.append("no production champion; only absolute rules apply")
    passed, checks = apply_rules(challenger, champion, rules, long_dialogues)
    notes.extend(underpowered_floors(challenger, rules))
    result = GateResult(
        version=str(version), champion_version=champ_version, passed=passed, checks=checks,
        challenger_metrics=challenger.metrics(), champion_metrics=champion.metrics() if champion else None,
        n_eval=len(examples), notes=notes,
    )  # fmt: skip

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"gate-v{version}") as run:
        mlflow.set_tags({
            "labelloop.kind": "gate", "gate.version": str(version), "gate.champion": champ_version or "none",
            "gate.verdict": "passed" if passed else "failed",
        })  # fmt: skip
        mlflow.log_params({**asdict(rules), "n_eval": len(examples),
                           "n_long_dialogues": long_dialogues.n_sensitive})  # fmt: skip
        m = {f"challenger_{k}": v for k, v in challenger.metrics().items()}
        m["challenger_long_dialogue_leak_rate"] = long_dialogues.leak_rate
        m["challenger_long_dialogue_control_false_block_rate"] = (
            long_dialogues.control_false_block_rate
        )
        if champion:
            m.update({f"champion_{k}": v for k, v in champion.metrics().items()})
        mlflow.log_metrics({k: float(v) for k, v in m.items() if not _nan(float(v))})
        mlflow.log_metric("gate_passed", 1.0 if passed else 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "gate_table.md").write_text(
                result.table_markdown() + "\n" + "\n".join(notes), encoding="utf-8"
            )
            (Path(tmp) / "gate.json").write_text(json.dumps({
                "version": result.version, "champion_version": champ_version, "passed": passed,
                "checks": [asdict(c) for c in checks], "rules": asdict(rules), "notes": notes,
            }, indent=2, default=str), encoding="utf-8")  # fmt: skip
            mlflow.log_artifacts(tmp, artifact_path="gate")
        result.gate_run_id = run.info.run_id
    client.set_model_version_tag(model.name, str(version), "gate", "passed" if passed else "failed")
    client.set_model_version_tag(model.name, str(version), "gate_run_id", result.gate_run_id)
    client.set_model_version_tag(model.name, str(version), "gate_champion", champ_version or "none")
    client.set_model_version_tag(model.name, str(version), "gate_summary", result.summary()[:4000])
    client.set_model_version_tag(model.name, str(version), "gate_at", str(int(time.time())))
    if passed:
        client.set_registered_model_alias(model.name, ALIAS_CHALLENGER, str(version))
    return result


def approve(
    version: str,
    *,
    tracking_uri: str,
    model: FilterModelRef,
    force: bool = False,
    reason: str | None = None,
) -> dict[str, Any]:
    """Move ``model.alias`` (``production``) to ``version``; the old one becomes ``previous``."""
    client = _client(tracking_uri)
    mv = client.get_model_version(model.name, str(version))
    gate = (mv.tags or {}).get("gate", "not_evaluated")
    if gate != "passed":
        if not force:
            raise GateError(
                f"version {version} has gate status {gate!r}; run `labelloop evaluate {version}` "
                "or approve with --force and --reason"
            )
        if not reason or not reason.strip():
            raise GateError("--force needs a --reason (it is recorded on the version)")
    current = alias_version(tracking_uri, model.name, model.alias)
    if current == str(version):
        return {
            "version": str(version),
            "previous": alias_version(tracking_uri, model.name, ALIAS_PREVIOUS),
            "changed": False,
        }
    if force and gate != "passed":
        client.set_model_version_tag(model.name, str(version), "approval_forced", "true")
        client.set_model_version_tag(
            model.name, str(version), "approval_reason", (reason or "").strip()[:4000]
        )
    if current is not None:
        client.set_registered_model_alias(model.name, ALIAS_PREVIOUS, current)
    client.set_registered_model_alias(model.name, model.alias, str(version))
    client.set_model_version_tag(model.name, str(version), "approved_at", str(int(time.time())))
    if alias_version(tracking_uri, model.name, ALIAS_CHALLENGER) == str(version):
        client.delete_registered_model_alias(model.name, ALIAS_CHALLENGER)
    return {
        "version": str(version),
        "previous": current,
        "changed": True,
        "forced": bool(force and gate != "passed"),
    }


def rollback(*, tracking_uri: str, model: FilterModelRef) -> dict[str, Any]:
    """Point ``model.alias`` (``production``) back at ``previous`` (then ``previous`` is cleared)."""
    client = _client(tracking_uri)
    prev = alias_version(tracking_uri, model.name, ALIAS_PREVIOUS)
    if prev is None:
        raise GateError("no @previous version to roll back to")
    current = alias_version(tracking_uri, model.name, model.alias)
    client.set_registered_model_alias(model.name, model.alias, prev)
    client.delete_registered_model_alias(model.name, ALIAS_PREVIOUS)
    if current is not None:
        client.set_model_version_tag(model.name, current, "rolled_back_at", str(int(time.time())))
    return {"production": prev, "rolled_back": current}
