"""The targeting decision for a batch of conversation records. Fails closed, per record.

Order of checks for every record:

1. record validation (``labeling.records.parse_record`` with the size limits) -> ``invalid_record``;
2. the policy gate (``Policy.check``) -> region / unlinked_account / before_policy_date /
   surface_disabled;
3. the language of every turn (``labeling.language``): a turn in a language the policy does not
   list in ``supported_languages`` -> ``unsupported_language`` (the filter refuses what its
   quality was not measured on);
4. redaction and rendering of every turn (``labeling.segments.scored_texts``, the same text
   training scores), then the content scorer on every segment of every turn: one sensitive
   segment anywhere -> ``sensitive_topic``; the category and the index of the turn that
   triggered it are kept for the **audit log only** (callers that answer the ad side must drop
   them: :meth:`Decision.public`);
5. interests above their per-label thresholds (only for eligible records).

Any exception while scoring makes the affected records ``model_unavailable`` (a failing batch is
retried record by record so one poisonous record does not take the others down); no scorer at all
-> every gated record is ``model_unavailable``. A decision with ``eligible=False`` never carries
interests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from labeling.language import turn_languages, unsupported
from labeling.policy import ExclusionReason, Policy
from labeling.records import Conversation, Limits, parse_record
from labeling.segments import scored_texts
from targeting.scorer import ContentVerdict

log = logging.getLogger(__name__)
AUDIT_ONLY = ("sensitive_category", "trigger_turn", "languages")
AUDIT_PARAM = "audit"
"""The pyfunc's ``predict`` param that adds the :data:`AUDIT_ONLY` fields (the filter engine's
direct call sets it; MLflow's scoring server does not pass params the signature lacks)."""


class ContentJudge(Protocol):
    """Scores conversations given as rendered, redacted turns (``labeling.segments.turn_texts``);
    ``targeting.model.TargetingFilterModel`` and test fakes."""

    def judge_conversations(
        self, conversations: Sequence[Sequence[str]]
    ) -> list[ContentVerdict]: ...


@dataclass(frozen=True)
class InterestScore:
    id: str
    name: str
    score: float


@dataclass(frozen=True)
class Decision:
    conversation_id: str | None
    eligible: bool
    interests: tuple[InterestScore, ...] = ()
    excluded_reason: str | None = None
    sensitive_category: str | None = None  # AUDIT ONLY
    model_version: str | None = None
    policy_version: str | None = None
    detail: str = field(default="", compare=False)
    trigger_turn: int | None = None  # AUDIT ONLY: the turn that made it sensitive
    languages: tuple[str, ...] = ()  # detected language per turn ("und": too short to tell)

    def __post_init__(self) -> None:
        if not self.eligible and self.interests:
            raise ValueError("an ineligible decision must not carry interests")
        if self.eligible and self.excluded_reason is not None:
            raise ValueError("an eligible decision has no excluded_reason")

    def to_dict(self) -> dict[str, Any]:
        """Full decision, including the sensitive category and trigger turn (for the audit log)."""
        return {
            "conversation_id": self.conversation_id,
            "eligible": self.eligible,
            "interests": [{"id": i.id, "name": i.name, "score": i.score} for i in self.interests],
            "excluded_reason": self.excluded_reason,
            "sensitive_category": self.sensitive_category,
            "trigger_turn": self.trigger_turn,
            "languages": list(self.languages),
            "model_version": self.model_version,
            "policy_version": self.policy_version,
        }

    def public(self) -> dict[str, Any]:
        """What the ad side may see: never the sensitive category or the triggering turn."""
        d = self.to_dict()
        for k in AUDIT_ONLY:
            d.pop(k)
        return d


def _cid(raw: Any) -> str | None:
    if isinstance(raw, Conversation):
        return raw.conversation_id
    if isinstance(raw, Mapping):
        v = raw.get("conversation_id")
        return v if isinstance(v, str) and v else None
    return None


def _plain(v: Any) -> Any:
    """pandas/numpy values -> plain JSON-like Python (a DataFrame row is a dict of these)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None  # type: ignore[assignment]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if np is not None:
        if isinstance(v, np.ndarray):
            return [_plain(x) for x in v.tolist()]
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            f = float(v)
            return None if math.isnan(f) else f
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if type(v).__name__ in ("NaTType", "NAType"):
        return None
    return v


def normalize_input(model_input: Any) -> list[Any]:
    """A DataFrame, a list of dicts/Conversations, or one dict -> a list of records."""
    if isinstance(model_input, Mapping):
        return [model_input]
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        rows = model_input.to_dict(orient="records")
        out = []
        for r in rows:
            d = {k: _plain(v) for k, v in r.items()}
            if d.get("gold") is None:
                d.pop("gold", None)
            out.append(d)
        return out
    if isinstance(model_input, Iterable) and not isinstance(model_input, str | bytes):
        return list(model_input)
    raise TypeError(f"unsupported model input type {type(model_input).__name__}")


def _validate(raw: Any, limits: Limits) -> Conversation | str:
    if isinstance(raw, Conversation):
        return raw
    if not isinstance(raw, Mapping):
        return "record is not an object"
    obj = {k: _plain(v) for k, v in raw.items()}
    if obj.get("gold") is None:
        obj.pop("gold", None)
    res = parse_record(obj, source="request", line=0, raw="", limits=limits)
    if isinstance(res, Conversation):
        return res
    return f"field {res.field!r}: {res.reason}" if res.field else res.reason


def decide_batch(
    records: Sequence[Any],
    *,
    policy: Policy,
    judge: ContentJudge | None,
    model_version: str | None,
    interest_names: Mapping[str, str] | None = None,
    limits: Limits = Limits(),
) -> list[Decision]:
    """One decision per input record, in order. Never raises for bad records or scorer errors."""
    pv = policy.version
    decisions: list[Decision | None] = [None] * len(records)
    pending: list[tuple[int, Conversation, tuple[str, ...], tuple[str, ...]]] = []
    for i, raw in enumerate(records):
        cid = _cid(raw)
        try:
            conv = _validate(raw, limits)
        except Exception as exc:
            conv = f"unreadable record: {type(exc).__name__}"
        if isinstance(conv, str):
            decisions[i] = Decision(cid, False, excluded_reason=ExclusionReason.INVALID_RECORD.value,
                                    model_version=model_version, policy_version=pv, detail=conv)  # fmt: skip
            continue
        gate = policy.check(conv)
        if not gate.eligible:
            reason = (
                gate.reason.value
                if gate.reason is not None
                else ExclusionReason.INVALID_RECORD.value
            )
            decisions[i] = Decision(conv.conversation_id, False, excluded_reason=reason,
                                    model_version=model_version, policy_version=pv, detail=gate.detail)  # fmt: skip
            continue
        try:
            langs = turn_languages(
                (t.text for t in conv.turns), supported=policy.supported_languages
            )
        except Exception as exc:
            decisions[i] = _unavailable(
                conv.conversation_id, model_version, pv, f"language detection failed: {exc}"
            )
            continue
        foreign = unsupported(langs, policy.supported_languages)
        if foreign:
            detail = ", ".join(f"turn {t}: {c}" for t, c in foreign[:5])
            decisions[i] = Decision(conv.conversation_id, False, excluded_reason=ExclusionReason.UNSUPPORTED_LANGUAGE.value,
                                    model_version=model_version, policy_version=pv, detail=detail,
                                    languages=langs)  # fmt: skip
            continue
        if judge is None:
            decisions[i] = _unavailable(conv.conversation_id, model_version, pv, "no model loaded")
            continue
        try:
            turns = scored_texts(conv)
        except Exception as exc:
            decisions[i] = _unavailable(
                conv.conversation_id, model_version, pv, f"redaction failed: {exc}"
            )
            continue
        pending.append((i, conv, turns, langs))

    if pending and judge is not None:
        verdicts = _judge_fail_closed(judge, [t for _, _, t, _ in pending])
        names = interest_names or {}
        for (i, conv, _, langs), v in zip(pending, verdicts, strict=True):
            if v is None:
                decisions[i] = _unavailable(
                    conv.conversation_id, model_version, pv, "scoring failed"
                )
            elif v.blocked:
                decisions[i] = Decision(conv.conversation_id, False, excluded_reason=ExclusionReason.SENSITIVE_TOPIC.value,
                                        sensitive_category=v.sensitive_category, model_version=model_version,
                                        policy_version=pv, trigger_turn=v.trigger_turn, languages=langs)  # fmt: skip
            else:
                ints = tuple(
                    InterestScore(iid, names.get(iid, iid), float(s)) for iid, s in v.interests
                )
                decisions[i] = Decision(
                    conv.conversation_id, True, ints, None, None, model_version, pv,
                    languages=langs,
                )  # fmt: skip
    out: list[Decision] = []
    for i, d in enumerate(decisions):
        out.append(
            d if d is not None else _unavailable(_cid(records[i]), model_version, pv, "no decision")
        )
    return out


def _judge_fail_closed(
    judge: ContentJudge, convs: list[tuple[str, ...]]
) -> list[ContentVerdict | None]:
    try:
        verdicts = judge.judge_conversations(convs)
        if len(verdicts) != len(convs):
            raise RuntimeError(f"scorer returned {len(verdicts)} verdicts for {len(convs)} records")
        return list(verdicts)
    except Exception:
        log.exception("batch scoring failed; retrying record by record")
    out: list[ContentVerdict | None] = []
    for t in convs:
        try:
            v = judge.judge_conversations([t])
            out.append(v[0] if len(v) == 1 else None)
        except Exception:
            out.append(None)
    return out


def _unavailable(cid: str | None, mv: str | None, pv: str, detail: str) -> Decision:
    return Decision(cid, False, excluded_reason=ExclusionReason.MODEL_UNAVAILABLE.value,
                    model_version=mv, policy_version=pv, detail=detail)  # fmt: skip
