"""Fail-closed scoring: the one code path of the filter service and of ``labelloop filter``.

For a batch of raw records (decoded JSON values) :meth:`FilterEngine.decide`:

1. takes the serving model **once** (``holder.current``) for the whole batch;
2. validates each record (:func:`labeling.records.parse_record`: the record contract and limits)
   -> ``invalid_record`` for a malformed one, without failing the others;
3. applies the policy gate (:meth:`labeling.policy.Policy.check`) -> region, unlinked_account,
   before_policy_date, surface_disabled: such records never reach the content model;
4. scores the rest with the model (``predict(list of record dicts without gold)``); no model, a
   scoring error or an answer that breaks the decision contract -> ``model_unavailable`` for the
   records concerned (a failing batch is retried record by record, so one poisonous record does
   not take the others down);
5. enforces the contract on every model answer (fail closed): only ``eligible is True`` is
   eligible; a sensitive category or an exclusion reason makes it ineligible; an ineligible
   decision carries no interests;
6. appends one audit entry per decision (with the sensitive category, the only place it goes).
   A decision is returned only once it is in the log, and one record affects only itself: a
   decision whose entry cannot be written (e.g. a string that is not valid UTF-8 from the model)
   is replaced by a fail-closed ``model_unavailable`` decision that can, and that one is logged.
   If the log itself cannot be written, :class:`~targeting.audit.AuditError` propagates and no
   decision of the batch leaves (the service answers 503 fail-closed; a batch run stops and can
   be resumed): no targeting without an audit trail.

Conversation ids that are not valid Unicode (a lone surrogate) are shown escaped (``\\ud800``)
in decisions and in the log; such a record is ``invalid_record``.

:meth:`FilterDecision.public` is what leaves the process (API responses, batch output): it has no
sensitive category and no detail, by construction.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from labeling.language import primary_language
from labeling.policy import ExclusionReason, Policy
from labeling.records import Conversation, Limits, QuarantinedRecord, parse_record, printable
from targeting.audit import AuditLog, encodable
from targeting.holder import LoadedModel, ModelHolder

log = logging.getLogger("labelloop.targeting")

PUBLIC_FIELDS = (
    "conversation_id",
    "eligible",
    "interests",
    "excluded_reason",
    "model_version",
    "policy_version",
)
REASONS = frozenset(r.value for r in ExclusionReason)


@dataclass(frozen=True)
class BadInput:
    """An input item that could not even be decoded (e.g. a JSONL line that is not JSON)."""

    reason: str
    conversation_id: str | None = None


@dataclass(frozen=True)
class FilterDecision:
    conversation_id: str | None
    eligible: bool
    interests: list[dict[str, Any]]
    excluded_reason: str | None
    model_version: str | None
    policy_version: str | None
    sensitive_category: str | None = None  # AUDIT ONLY
    detail: str = ""  # AUDIT ONLY: why invalid / unavailable (never record content)
    trigger_turn: int | None = None  # AUDIT ONLY: index of the turn that made it sensitive
    languages: tuple[str, ...] = ()  # AUDIT ONLY: detected language per turn

    def public(self) -> dict[str, Any]:
        """The decision as the ad side sees it (no sensitive category, no detail)."""
        return {
            "conversation_id": self.conversation_id,
            "eligible": self.eligible,
            "interests": [dict(i) for i in self.interests] if self.eligible else [],
            "excluded_reason": self.excluded_reason,
            "model_version": self.model_version,
            "policy_version": self.policy_version,
        }


@dataclass
class BatchStats:
    records: int = 0
    eligible: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    # main language of the records whose turns were read (policy gate passed)
    by_language: dict[str, int] = field(default_factory=dict)

    def add(self, decisions: Sequence[FilterDecision]) -> None:
        for d in decisions:
            self.records += 1
            if d.eligible:
                self.eligible += 1
            key = d.excluded_reason or "eligible"
            self.by_reason[key] = self.by_reason.get(key, 0) + 1
            if d.languages:
                lang = primary_language(d.languages)
                self.by_language[lang] = self.by_language.get(lang, 0) + 1


class ContractError(ValueError):
    """A model answer that breaks the decision contract."""


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"


def _clean_interests(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, list | tuple):
        raise ContractError("interests is not a list")
    out = []
    for it in raw:
        if not isinstance(it, Mapping):
            raise ContractError("an interest is not an object")
        iid, name = it.get("id"), it.get("name")
        score: Any = it.get("score")
        if not isinstance(iid, str) or not iid:
            raise ContractError("an interest has no string id")
        if hasattr(score, "item"):  # numpy scalar
            score = score.item()
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ContractError(f"interest {iid}: score is not a number")
        s = float(score)
        if not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ContractError(f"interest {iid}: score {s} is outside [0, 1]")
        out.append(
            {
                "id": iid,
                "name": printable(str(name)) if name is not None else iid,
                "score": round(s, 6),
            }
        )
    return out


class FilterEngine:
    """Validation, gate, scoring and audit for batches of records (thread-safe)."""

    def __init__(
        self,
        holder: ModelHolder,
        policy: Policy,
        audit: AuditLog | None,
        *,
        limits: Limits = Limits(),
    ) -> None:
        self.holder = holder
        self.policy = policy
        self.audit = audit
        self.limits = limits

    # ---- public ----
    def decide(
        self,
        items: Sequence[Any],
        *,
        source: str = "api",
        request_id: str | None = None,
        first_index: int = 0,
    ) -> list[FilterDecision]:
        """One decision per item, in order, each in the audit log. Never raises for bad data or
        a bad model; raises :class:`~targeting.audit.AuditError` if the log cannot be written."""
        return self.decide_groups(
            [(items, request_id or uuid.uuid4().hex)], source=source, first_index=first_index
        )[0]

    def decide_groups(
        self,
        groups: Sequence[tuple[Sequence[Any], str]],
        *,
        source: str = "api",
        first_index: int = 0,
    ) -> list[list[FilterDecision]]:
        """Decide several requests ``(items, request_id)`` with one model call and one audit
        append (the service's micro-batching); one decision list per group, in order."""
        loaded = self.holder.current  # one model for the whole batch
        items = [it for g, _ in groups for it in g]
        try:
            decisions = self._decide(items, loaded, source)
        except Exception as exc:  # last resort: fail closed for the whole batch
            log.exception("filter engine error; failing closed for %d records", len(items))
            decisions = [
                self._unavailable(_cid_of(it), loaded, f"engine error: {type(exc).__name__}")
                for it in items
            ]
        index = [(rid, first_index + n) for g, rid in groups for n in range(len(g))]
        decisions = self._audit(decisions, loaded, source, index)
        out: list[list[FilterDecision]] = []
        pos = 0
        for g, _ in groups:
            out.append(decisions[pos : pos + len(g)])
            pos += len(g)
        return out

    # ---- steps ----
    def _decide(
        self, items: Sequence[Any], loaded: LoadedModel | None, source: str
    ) -> list[FilterDecision]:
        out: list[FilterDecision | None] = [None] * len(items)
        to_score: list[tuple[int, Conversation]] = []
        mv = loaded.version if loaded is not None else None
        for i, item in enumerate(items):
            try:
                early = self._check(item, i, mv, source)
            except Exception as exc:  # one record nobody foresaw: it alone fails closed
                log.warning("record %d could not be checked: %s", i, type(exc).__name__)
                early = self._unavailable(
                    _cid_of(item), loaded, f"check error: {type(exc).__name__}"
                )
            if isinstance(early, FilterDecision):
                out[i] = early
            else:
                to_score.append((i, early))
        if to_score:
            if loaded is None:
                for i, rec in to_score:
                    out[i] = self._unavailable(rec.conversation_id, None, "no model loaded")
            else:
                for (i, _), d in zip(
                    to_score, self._score([r for _, r in to_score], loaded), strict=True
                ):
                    out[i] = d
        assert all(d is not None for d in out)
        return [d for d in out if d is not None]

    def _check(
        self, item: Any, i: int, mv: str | None, source: str
    ) -> FilterDecision | Conversation:
        """The record (to be scored) or its decision (invalid, or excluded by the gate)."""
        if isinstance(item, BadInput):
            return self._excluded(
                _opt_printable(item.conversation_id),
                ExclusionReason.INVALID_RECORD,
                mv,
                item.reason,
            )
        rec = parse_record(item, source=source, line=i + 1, raw="", limits=self.limits)
        if isinstance(rec, QuarantinedRecord):
            detail = (f"field {rec.field}: " if rec.field else "") + rec.reason
            return self._excluded(rec.conversation_id, ExclusionReason.INVALID_RECORD, mv, detail)
        gate = self.policy.check(rec)
        if not gate.eligible:
            reason = gate.reason or ExclusionReason.INVALID_RECORD
            return self._excluded(rec.conversation_id, reason, mv, gate.detail)
        return rec

    def _score(self, recs: list[Conversation], loaded: LoadedModel) -> list[FilterDecision]:
        payload = [r.model_dump(mode="json", exclude={"gold"}) for r in recs]
        try:
            answers = self._predict(loaded, payload)
        except Exception as exc:
            if len(recs) == 1:
                log.warning("scoring %s failed: %s", recs[0].conversation_id, exc)
                return [
                    self._unavailable(
                        recs[0].conversation_id, loaded, f"scoring error: {exc}"[:300]
                    )
                ]
            log.warning("scoring a batch of %d failed (%s); retrying one by one", len(recs), exc)
            return [d for r in recs for d in self._score([r], loaded)]
        return [
            self._sanitize(a, r.conversation_id, loaded) for a, r in zip(answers, recs, strict=True)
        ]

    @staticmethod
    def _predict(loaded: LoadedModel, payload: list[dict[str, Any]]) -> list[Any]:
        answers = loaded.model.predict(payload)
        if hasattr(answers, "to_dict"):  # a DataFrame
            answers = answers.to_dict(orient="records")
        if not isinstance(answers, list | tuple):
            raise ContractError(
                f"predict returned {type(answers).__name__}, not a list of decisions"
            )
        if len(answers) != len(payload):
            raise ContractError(
                f"predict returned {len(answers)} decisions for {len(payload)} records"
            )
        return list(answers)

    def _sanitize(self, raw: Any, cid: str, loaded: LoadedModel) -> FilterDecision:
        try:
            if not isinstance(raw, Mapping):
                raise ContractError("decision is not an object")
            if raw.get("conversation_id") != cid:
                raise ContractError("decision is for another conversation_id")
            eligible_raw = raw.get("eligible")
            if not _is_bool(eligible_raw):
                raise ContractError("eligible is not a boolean")
            reason = raw.get("excluded_reason")
            if reason is not None and (not isinstance(reason, str) or reason not in REASONS):
                raise ContractError(f"unknown excluded_reason {reason!r}")
            category = raw.get("sensitive_category")
            if category is not None and (not isinstance(category, str) or not category):
                raise ContractError("sensitive_category is not a string")
            interests = _clean_interests(raw.get("interests"))
            policy_v = raw.get("policy_version")
            trigger = raw.get("trigger_turn")
            if trigger is not None and (isinstance(trigger, bool) or not isinstance(trigger, int)):
                raise ContractError("trigger_turn is not an integer")
            langs_raw = raw.get("languages") or []
            if hasattr(langs_raw, "tolist"):
                langs_raw = langs_raw.tolist()
            if not isinstance(langs_raw, list | tuple) or not all(
                isinstance(x, str) and len(x) <= 8 for x in langs_raw
            ):
                raise ContractError("languages is not a list of language codes")
        except ContractError as exc:
            log.warning("model %s broke the decision contract for %s: %s", loaded.version, cid, exc)
            return self._unavailable(cid, loaded, f"contract: {exc}")
        eligible = bool(eligible_raw) and reason is None and category is None
        if category is not None and reason is None:
            reason = ExclusionReason.SENSITIVE_TOPIC.value
        if not eligible and reason is None:
            reason = ExclusionReason.MODEL_UNAVAILABLE.value
        return FilterDecision(
            conversation_id=cid,
            eligible=eligible,
            interests=interests if eligible else [],
            excluded_reason=reason,
            model_version=loaded.version,
            policy_version=(policy_v if isinstance(policy_v, str) and policy_v else None)
            or loaded.policy_version
            or self.policy.version,
            sensitive_category=category,
            trigger_turn=trigger if category is not None else None,
            languages=tuple(langs_raw),
        )

    def _excluded(
        self, cid: str | None, reason: ExclusionReason, model_version: str | None, detail: str
    ) -> FilterDecision:
        return FilterDecision(
            cid, False, [], reason.value, model_version, self.policy.version, None, detail
        )

    def _unavailable(
        self, cid: str | None, loaded: LoadedModel | None, detail: str
    ) -> FilterDecision:
        return FilterDecision(
            cid,
            False,
            [],
            ExclusionReason.MODEL_UNAVAILABLE.value,
            loaded.version if loaded is not None else None,
            (loaded.policy_version if loaded is not None else None) or self.policy.version,
            None,
            detail,
        )

    def _audit(
        self,
        decisions: list[FilterDecision],
        loaded: LoadedModel | None,
        source: str,
        index: list[tuple[str, int]],
    ) -> list[FilterDecision]:
        """Log every decision; returns the decisions as logged (raises AuditError if the log
        cannot be written at all: then no decision may leave)."""
        if self.audit is None or not decisions:
            return decisions
        ts = datetime.now(UTC).isoformat()
        model_name = loaded.name if loaded is not None else None
        out: list[FilterDecision] = []
        entries: list[dict[str, Any]] = []
        for n, d in enumerate(decisions):
            entry = _entry(d, ts, source, index[n], model_name)
            if not encodable(entry):
                log.warning(
                    "decision %s/%d cannot be logged as it is; failing closed for that record",
                    index[n][0],
                    index[n][1],
                )
                d = FilterDecision(
                    _opt_printable(d.conversation_id),
                    False,
                    [],
                    ExclusionReason.MODEL_UNAVAILABLE.value,
                    _opt_printable(d.model_version),
                    _opt_printable(d.policy_version),
                    None,
                    "decision could not be logged as it was (not valid UTF-8); failed closed",
                )
                entry = _entry(d, ts, source, index[n], model_name)
                if not encodable(entry):  # cannot happen: every string above is printable
                    entry = {k: printable(v) if isinstance(v, str) else v for k, v in entry.items()}
            out.append(d)
            entries.append(entry)
        self.audit.append_many(entries)
        return out


def _entry(
    d: FilterDecision, ts: str, source: str, where: tuple[str, int], model_name: str | None
) -> dict[str, Any]:
    return {
        "ts": ts,
        "source": source,
        "request_id": where[0],
        "index": where[1],
        "conversation_id": d.conversation_id,
        "eligible": d.eligible,
        "excluded_reason": d.excluded_reason,
        "interests": [[i["id"], i["score"]] for i in d.interests],
        "sensitive_category": d.sensitive_category,
        "trigger_turn": d.trigger_turn,
        "languages": list(d.languages) or None,
        "model_name": model_name,
        "model_version": d.model_version,
        "policy_version": d.policy_version,
        "detail": d.detail or None,
    }


def _opt_printable(s: str | None) -> str | None:
    return printable(s) if isinstance(s, str) else s


def _cid_of(item: Any) -> str | None:
    if isinstance(item, BadInput):
        return _opt_printable(item.conversation_id)
    if isinstance(item, Mapping):
        cid = item.get("conversation_id")
        return printable(cid) if isinstance(cid, str) else None
    return None
