"""Label Studio (Community) projects for human review: label config, bootstrap, task import.

* :func:`label_config` generates the labeling interface from the taxonomy and the policy: the
  redacted conversation as a dialogue (speaker = role, plus modality when not text; a header shows
  the surface), the interests as a searchable tree (Label Studio's ``Taxonomy`` tag: every
  taxonomy interest nested under its parent; ``value`` = the readable name, ``alias`` = the IAB id,
  so a result is a list of id paths ``[[tier-1 id, id], ...]``; the full path in ``hint``),
  multi-choice sensitive categories from the policy plus ``none``, and an optional comment.
* :func:`bootstrap` is idempotent: one review project and one ``…-adjudication`` project per label
  schema version (sha256 of the generated config), the version in their titles.
* :func:`push` routes the new proposals (``labeling.routing``), writes silver labels for the
  auto-accepted ones, and imports the selected ones as tasks with predictions (pre-annotations:
  ``model_version`` = proposer id, ``score`` = 1 - uncertainty, per-label scores = confidence);
  each task links back to its proposal (``data.proposal``: id, proposer, confidence, per-label
  confidences, also shown in the task header).

Crash safety of the import: the intent is written to ``review_tasks`` first (status
``importing``); tasks are imported in small batches and their ids recorded per batch; before
importing, any pending intent is reconciled against the project's tasks listed by
``conversation_id``. A run killed at any point and re-run therefore creates no duplicate task
and loses none.

Task data carries only the conversation id, the surface and the *redacted* turns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from labeling.gold import upsert_gold
from labeling.routing import (
    Dispatch,
    ProposalView,
    Reason,
    Route,
    RoutingConfig,
    RoutingResult,
    route,
)
from labeling.segments import turn_texts
from labelloop.store import TaskIntent
from labelloop.store.models import ConversationRow, ProposalRow

if TYPE_CHECKING:
    from labeling.policy import Policy
    from labeling.taxonomy import Interest, Taxonomy
    from labelloop.store import LabelStore

NONE_CHOICE = "none"
INTERESTS = "interests"
SENSITIVE = "sensitive"
COMMENT = "comment"
OBJECT = "dialogue"
EVIDENCE = "evidence"
EVIDENCE_LABEL = "sensitive?"
# a turn whose sensitive score reaches this is highlighted as evidence in the pre-annotation
EVIDENCE_THRESHOLD = 0.5
PROJECT_PREFIX = "labelloop review"
ADJUDICATION_SUFFIX = "-adjudication"

# review_tasks.status
QUEUED = "queued"
IMPORTING = "importing"
OPEN = "open"
ADJUDICATION = "adjudication"
DONE = "done"
SKIPPED = "skipped"

Progress = Callable[[str, int, int], None]


class StudioError(RuntimeError):
    """A Label Studio call failed; the message names the project/task."""


# ---- label config ------------------------------------------------------------------------------
def label_config(taxonomy: Taxonomy, policy: Policy) -> str:
    """The Label Studio labeling config (XML) for this taxonomy + policy (deterministic)."""
    root = ET.Element("View")
    ET.SubElement(root, "Header", {"value": "$header", "size": "5"})
    # the turns that made the conversation a sensitive suspect come highlighted (pre-annotated
    # regions with their score); a reviewer confirms or rejects them
    ev = ET.SubElement(root, "ParagraphLabels", {"name": EVIDENCE, "toName": OBJECT})
    ET.SubElement(
        ev,
        "Label",
        {
            "value": EVIDENCE_LABEL,
            "background": "#ff9f9f",
            "hint": "this turn is why the conversation may be sensitive (score from the filter)",
        },
    )
    ET.SubElement(
        root,
        "Paragraphs",
        {
            "name": OBJECT,
            "value": "$turns",
            "layout": "dialogue",
            "nameKey": "speaker",
            "textKey": "text",
            "savetextresult": "no",
        },
    )
    row = ET.SubElement(root, "View", {"style": "display: flex; gap: 2em; align-items: flex-start"})
    left = ET.SubElement(row, "View", {"style": "flex: 2"})
    ET.SubElement(
        left,
        "Header",
        {
            "value": "Ad interests the user shows (IAB Content Taxonomy 3.1): pick all that apply",
            "size": "5",
        },
    )
    # a searchable tree (Label Studio's Taxonomy tag): tier-1 interests with their descendants;
    # the IAB id is each node's alias, so results carry ids ([tier-1 id, ..., id] paths)
    tree = ET.SubElement(
        left,
        "Taxonomy",
        {
            "name": INTERESTS,
            "toName": OBJECT,
            "leafsOnly": "false",
            "showFullPath": "true",
            "pathSeparator": " / ",
            "placeholder": "search interests (IAB Content Taxonomy 3.1)",
        },
    )

    def add(parent: ET.Element, node: Interest) -> None:
        el = ET.SubElement(
            parent,
            "Choice",
            {"value": node.name, "alias": node.id, "hint": f"IAB {node.id}: {node.path}"},
        )
        for child in taxonomy.children(node.id):
            add(el, child)

    for t1 in taxonomy.tier1():
        add(tree, t1)
    right = ET.SubElement(row, "View", {"style": "flex: 1"})
    ET.SubElement(
        right,
        "Header",
        {"value": f"Sensitive topics (policy {policy.short_version})", "size": "5"},
    )
    sens = ET.SubElement(
        right, "Choices", {"name": SENSITIVE, "toName": OBJECT, "choice": "multiple"}
    )
    ET.SubElement(
        sens,
        "Choice",
        {"value": NONE_CHOICE, "html": "none of these", "hint": "no sensitive topic"},
    )
    for key, desc in policy.describe_categories().items():
        label = policy.doc.sensitive_categories[key].label
        ET.SubElement(sens, "Choice", {"value": key, "html": label, "hint": desc})
    ET.SubElement(right, "Header", {"value": "Comment (optional)", "size": "6"})
    ET.SubElement(
        right,
        "TextArea",
        {
            "name": COMMENT,
            "toName": OBJECT,
            "rows": "2",
            "maxSubmissions": "1",
            "placeholder": "anything the adjudicator should know",
        },
    )
    return ET.tostring(root, encoding="unicode")


def schema_version(config: str) -> str:
    return hashlib.sha256(config.encode("utf-8")).hexdigest()[:12]


def config_choices(config: str) -> dict[str, list[str]]:
    """Control tag name (Choices or Taxonomy) -> its values (the alias where a choice has one),
    in document order, nested choices included."""
    root = ET.fromstring(config)  # noqa: S314 - our own generated XML
    out: dict[str, list[str]] = {}
    for tag in ("Choices", "Taxonomy"):
        for control in root.iter(tag):
            out[control.attrib["name"]] = [
                c.attrib.get("alias", c.attrib["value"]) for c in control.iter("Choice")
            ]
    return out


def taxonomy_path(taxonomy: Taxonomy | None, interest_id: str) -> list[str]:
    """The Taxonomy-tag path of an interest: [tier-1 id, ..., id] (just [id] without one)."""
    if taxonomy is None or interest_id not in taxonomy:
        return [interest_id]
    path = [interest_id]
    node = taxonomy.by_id(interest_id)
    while node.parent_id is not None:
        node = taxonomy.by_id(node.parent_id)
        path.insert(0, node.id)
    return path


def interest_ids_from_taxonomy(
    paths: Sequence[Sequence[str]], taxonomy: Taxonomy | None = None
) -> list[str]:
    """IAB ids from a Taxonomy result (``value.taxonomy``: one path per selection; the last item
    is the selected node). Items are aliases (ids); a path of names (a Label Studio that ignored
    the aliases) is resolved through the taxonomy."""
    out: list[str] = []
    for path in paths:
        if not path:
            continue
        last = str(path[-1])
        if taxonomy is not None and last not in taxonomy:
            try:
                last = taxonomy.by_name(" > ".join(str(p) for p in path)).id
            except KeyError:
                with contextlib.suppress(KeyError):  # else kept as is: validation reports it
                    last = taxonomy.by_name(last).id
        if last not in out:
            out.append(last)
    return out


def parse_result(
    result: Sequence[Mapping[str, Any]], taxonomy: Taxonomy | None = None
) -> tuple[list[str], list[str], str | None]:
    """(interest ids, sensitive categories, comment) of a Label Studio annotation result."""
    interests: set[str] = set()
    sensitive: set[str] = set()
    comment: str | None = None
    for item in result or []:
        value = item.get("value") or {}
        name = item.get("from_name")
        if name == INTERESTS:
            if "taxonomy" in value:
                interests.update(interest_ids_from_taxonomy(value.get("taxonomy") or [], taxonomy))
            interests.update(str(v) for v in value.get("choices", []))  # older projects
        elif name == SENSITIVE:
            sensitive.update(str(v) for v in value.get("choices", []))
        elif name == COMMENT:
            text = value.get("text") or []
            comment = "\n".join(str(t) for t in text) if isinstance(text, list) else str(text)
    sensitive.discard(NONE_CHOICE)
    return sorted(interests), sorted(sensitive), comment


def result_for(
    interests: Sequence[str],
    sensitive: Sequence[str],
    scores: Mapping[str, float] | None = None,
    *,
    taxonomy: Taxonomy | None = None,
) -> list[dict[str, Any]]:
    """A Label Studio result (annotation or prediction) for these labels."""
    out: list[dict[str, Any]] = []
    if interests:
        item: dict[str, Any] = {
            "from_name": INTERESTS,
            "to_name": OBJECT,
            "type": "taxonomy",
            "value": {"taxonomy": [taxonomy_path(taxonomy, i) for i in sorted(interests)]},
        }
        if scores is not None:
            item["score"] = round(min(scores.get(i, 0.0) for i in interests), 4)
        out.append(item)
    sens = sorted(sensitive) or [NONE_CHOICE]
    item = {
        "from_name": SENSITIVE,
        "to_name": OBJECT,
        "type": "choices",
        "value": {"choices": sens},
    }
    if scores is not None and sensitive:
        item["score"] = round(min(scores.get(s, 0.0) for s in sensitive), 4)
    out.append(item)
    return out


def evidence_regions(
    turns: Sequence[Mapping[str, Any]],
    scores: Sequence[float],
    threshold: float = EVIDENCE_THRESHOLD,
) -> list[dict[str, Any]]:
    """Pre-annotated regions (whole turns) for the turns whose sensitive score reaches
    ``threshold``, each with its score."""
    out: list[dict[str, Any]] = []
    for i, (t, sc) in enumerate(zip(turns, scores, strict=False)):
        if sc < threshold:
            continue
        out.append({
            "id": f"evidence-{i}", "from_name": EVIDENCE, "to_name": OBJECT,
            "type": "paragraphlabels", "score": round(float(sc), 4),
            "value": {"start": str(i), "end": str(i), "startOffset": 0,
                      "endOffset": len(str(t["text"])), "paragraphlabels": [EVIDENCE_LABEL]},
        })  # fmt: skip
    return out


def task_payload(
    conv: ConversationRow,
    proposal: ProposalView | None,
    *,
    reason: str,
    overlap: int,
    label_threshold: float,
    answers: Sequence[Mapping[str, Any]] | None = None,
    turn_scores: Sequence[float] | None = None,
    turn_scores_source: str = "",
    proposal_id: int | None = None,
    taxonomy: Taxonomy | None = None,
) -> dict[str, Any]:
    """One import item: redacted turns + conversation id (+ the proposal as a prediction, with
    the turns that look sensitive highlighted when ``turn_scores`` are given). The task links
    back to its proposal: ``data.proposal`` = its id in the label store, the proposer, its
    confidence (1 - uncertainty) and every proposed label with its confidence (also in the
    header, so a reviewer sees how sure the proposer was)."""
    turns = conv.redacted_turns
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"conversation {conv.conversation_id!r} field 'redacted_turns': missing")
    rendered = []
    for i, t in enumerate(turns):
        if not isinstance(t, Mapping) or "text" not in t or "role" not in t:
            raise ValueError(
                f"conversation {conv.conversation_id!r} field 'redacted_turns.{i}': not a turn"
            )
        modality = t.get("modality") or "text"
        speaker = str(t["role"]) if modality == "text" else f"{t['role']} ({modality})"
        if (
            turn_scores is not None
            and i < len(turn_scores)
            and turn_scores[i] >= EVIDENCE_THRESHOLD
        ):
            speaker = f"{speaker} \u26a0 sensitive? {turn_scores[i]:.2f}"
        rendered.append({"speaker": speaker, "text": str(t["text"])})
    uncertainty = proposal.uncertainty if proposal is not None else 1.0
    languages = list(conv.languages or [])
    shown = sorted({c for c in languages if c != "und"})
    suspects = [i for i, sc in enumerate(turn_scores or []) if sc >= EVIDENCE_THRESHOLD]
    data: dict[str, Any] = {
        "conversation_id": conv.conversation_id,
        "surface": conv.surface,
        "header": (
            f"{conv.surface} · {len(rendered)} turn(s) · language: {', '.join(shown) or 'unknown'}"
            f" · review reason: {reason} · uncertainty {uncertainty:.2f} · annotations needed: "
            f"{overlap}"
            + (f" · suspect turn(s): {', '.join(str(i + 1) for i in suspects)}" if suspects else "")
        ),
        "turns": rendered,
        "uncertainty": round(uncertainty, 4),
        "reason": reason,
        "required_annotations": overlap,
        "languages": languages,
        "turn_scores": [round(float(x), 4) for x in turn_scores]
        if turn_scores is not None
        else None,
        "turn_scores_source": turn_scores_source or None,
    }
    if proposal is not None:
        labels = {
            **{_interest_name(taxonomy, k): round(float(v), 4) for k, v in proposal.interests.items()},
            **{k: round(float(v), 4) for k, v in proposal.sensitive.items()},
        }  # fmt: skip
        top = sorted(labels.items(), key=lambda kv: -kv[1])[:5]
        data["proposal"] = {
            "id": proposal_id,
            "proposer": proposal.proposer_id or None,
            "confidence": round(1.0 - proposal.uncertainty, 4),
            "labels": labels,
        }
        data["header"] += (
            f" · proposal #{proposal_id if proposal_id is not None else '?'} confidence "
            f"{1.0 - proposal.uncertainty:.2f}"
            + (": " + ", ".join(f"{k} {v:.2f}" for k, v in top) if top else "")
        )
    item: dict[str, Any] = {"data": data}
    if answers is not None:  # adjudication: each annotator's answer as a prediction
        item["predictions"] = [
            {
                "model_version": f"annotator:{a.get('annotator', '?')}",
                "score": 0.0,
                "result": result_for(
                    a.get("interests") or [], a.get("sensitive") or [], taxonomy=taxonomy
                ),
            }
            for a in answers
        ]
    elif proposal is not None:
        ints, sens = proposal.labels(label_threshold)
        scores = {**proposal.interests, **proposal.sensitive}
        evidence = evidence_regions(turns, turn_scores) if turn_scores is not None else []
        item["predictions"] = [
            {
                "model_version": proposal.proposer_id or "proposer",
                "score": round(1.0 - proposal.uncertainty, 4),
                "result": result_for(ints, sens, scores, taxonomy=taxonomy) + evidence,
            }
        ]
    return item


def _interest_name(taxonomy: Taxonomy | None, interest_id: str) -> str:
    if taxonomy is None or interest_id not in taxonomy:
        return interest_id
    return taxonomy.by_id(interest_id).name


# ---- Label Studio client -----------------------------------------------------------------------
@dataclass(frozen=True)
class StudioConfig:
    """Where Label Studio is and the API token to use there."""

    base_url: str
    api_key: str = field(repr=False)


class StudioClient:
    """The few Label Studio calls labelloop needs, through label-studio-sdk 2.x."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 120.0) -> None:
        from label_studio_sdk import LabelStudio

        self.base_url = base_url
        self.ls = LabelStudio(base_url=base_url, api_key=api_key, timeout=timeout_s)

    @classmethod
    def from_config(cls, config: StudioConfig) -> StudioClient:
        return cls(config.base_url, config.api_key)

    # projects
    def find_project(self, title: str) -> int | None:
        p: Any
        for p in self.ls.projects.list(title=title, page_size=100):
            if p.title == title:
                return int(p.id)
        return None

    def create_project(self, title: str, config: str, description: str) -> int:
        p: Any = self.ls.projects.create(
            title=title,
            label_config=config,
            description=description,
            show_collab_predictions=True,
            show_skip_button=True,
            maximum_annotations=1,
        )
        return int(p.id)

    def project_config(self, project_id: int) -> str:
        return str(self.ls.projects.get(id=project_id).label_config)

    def annotation_count(self, project_id: int) -> int:
        """Annotations submitted in the project so far (skipped ones excluded)."""
        p: Any = self.ls.projects.get(id=project_id)
        return int(getattr(p, "total_annotations_number", 0) or 0)

    # tasks
    def iter_tasks(
        self, project_id: int, *, updated_after: datetime | None = None, full: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Tasks as dicts (id, data, overlap[, annotations, updated_at]), oldest first."""
        query: dict[str, Any] = {"ordering": ["tasks:id"]}
        if updated_after is not None:
            query["filters"] = {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:updated_at",
                        "operator": "greater",
                        "type": "Datetime",
                        "value": updated_after.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    }
                ],
            }
        kwargs: dict[str, Any] = {
            "project": project_id,
            "page_size": 200,
            "query": json.dumps(query),
        }
        if full:
            kwargs["fields"] = "all"
        else:
            kwargs["include"] = "id,data,overlap"
        t: Any
        for t in self.ls.tasks.list(**kwargs):
            d = t.dict() if hasattr(t, "dict") else dict(t)
            yield d

    def import_tasks(self, project_id: int, items: Sequence[Mapping[str, Any]]) -> list[int]:
        request: Any = [dict(i) for i in items]
        r = self.ls.projects.import_tasks(id=project_id, request=request, return_task_ids=True)
        ids = [int(i) for i in (getattr(r, "task_ids", None) or [])]
        if len(ids) != len(items):
            raise StudioError(
                f"project {project_id}: imported {len(items)} tasks, Label Studio returned "
                f"{len(ids)} ids"
            )
        return ids

    def set_overlap(self, task_id: int, overlap: int) -> None:
        self.ls.tasks.update(id=str(task_id), overlap=overlap)

    def delete_task(self, task_id: int) -> None:
        self.ls.tasks.delete(id=str(task_id))

    # annotations
    def create_annotation(
        self,
        task_id: int,
        result: Sequence[Mapping[str, Any]],
        *,
        completed_by: int | None = None,
        lead_time: float | None = None,
        was_cancelled: bool = False,
    ) -> int:
        kwargs: dict[str, Any] = {"result": list(result), "was_cancelled": was_cancelled}
        if completed_by is not None:
            kwargs["completed_by"] = completed_by
        if lead_time is not None:
            kwargs["lead_time"] = lead_time
        a = self.ls.annotations.create(id=task_id, **kwargs)
        return int(a.id or 0)

    def update_annotation(self, annotation_id: int, result: Sequence[Mapping[str, Any]]) -> None:
        self.ls.annotations.update(id=annotation_id, result=list(result))

    # users
    def users(self) -> dict[int, str]:
        """User id -> a stable annotator name (email, else username)."""
        return {
            int(u.id): str(u.email or u.username or f"user:{u.id}") for u in self.ls.users.list()
        }

    def ensure_user(self, username: str, email: str) -> int:
        for uid, name in self.users().items():
            if name == email:
                return uid
        u = self.ls.users.create(username=username, email=email, first_name=username)
        return int(u.id)


# ---- bootstrap ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Projects:
    review: int
    adjudication: int
    schema_version: str
    config: str


def project_title(version: str, prefix: str = PROJECT_PREFIX) -> str:
    return f"{prefix} {version}"


def bootstrap(
    client: StudioClient, taxonomy: Taxonomy, policy: Policy, *, prefix: str = PROJECT_PREFIX
) -> Projects:
    """Find or create the review + adjudication projects of this label schema (idempotent)."""
    config = label_config(taxonomy, policy)
    version = schema_version(config)
    title = project_title(version, prefix)
    ids: list[int] = []
    for t, desc in (
        (title, "labelloop human review of label proposals (redacted conversations)."),
        (
            title + ADJUDICATION_SUFFIX,
            "Disagreements and label-error re-reviews; the answer here becomes gold.",
        ),
    ):
        pid = client.find_project(t)
        if pid is None:
            pid = client.create_project(
                t,
                config,
                f"{desc} taxonomy {taxonomy.short_version}, policy {policy.short_version}",
            )
        ids.append(pid)
    return Projects(review=ids[0], adjudication=ids[1], schema_version=version, config=config)


# ---- push --------------------------------------------------------------------------------------
@dataclass
class PushReport:
    run_id: str
    projects: Projects | None = None
    routing: dict[str, int] = field(default_factory=dict)
    silver_written: int = 0
    imported: int = 0
    reconciled: int = 0
    duplicates_removed: int = 0
    overlap_set: int = 0
    invalid: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "review_project": self.projects.review if self.projects else None,
            "adjudication_project": self.projects.adjudication if self.projects else None,
            "schema_version": self.projects.schema_version if self.projects else None,
            "routing": self.routing,
            "silver_written": self.silver_written,
            "imported": self.imported,
            "reconciled": self.reconciled,
            "duplicates_removed": self.duplicates_removed,
            "overlap_set": self.overlap_set,
            "invalid": self.invalid,
            "seconds": round(self.seconds, 3),
        }


def view_of(
    row: ProposalRow, conv: ConversationRow | None, embedding: Sequence[float] | None = None
) -> ProposalView:
    from labeling.records import render_turns

    text = render_turns(conv.redacted_turns) if conv is not None and conv.redacted_turns else None
    return ProposalView.from_row(
        row, content_hash=conv.content_hash if conv else None, text=text, embedding=embedding
    )


def _with_embeddings(
    views: Sequence[ProposalView], embed: Callable[[Sequence[str]], Any]
) -> list[ProposalView]:
    todo = [v for v in views if v.embedding is None and v.text]
    if not todo:
        return list(views)
    vecs = embed([v.text or "" for v in todo])
    filled = {v.conversation_id: [float(x) for x in vec] for v, vec in zip(todo, vecs, strict=True)}
    return [
        replace(v, embedding=filled[v.conversation_id]) if v.conversation_id in filled else v
        for v in views
    ]


def route_pending(
    store: LabelStore,
    review_project: int,
    cfg: RoutingConfig,
    *,
    run_id: str,
    silver_weight: float = 0.5,
    embeddings: Mapping[str, Sequence[float]] | None = None,
    embed: Callable[[Sequence[str]], Any] | None = None,
    report: PushReport | None = None,
) -> RoutingResult:
    """Route unrouted proposals + the queued backlog; persist routes, silver labels, intents.

    ``embed`` (texts -> vectors, e.g. MiniLM) fills in the embeddings that ``embeddings`` lacks,
    for the near-duplicate rule and ``selection="diverse"``; without either, routing compares
    word vectors of the texts.
    """
    report = report if report is not None else PushReport(run_id)
    with store.review() as tx:
        queued_ids = tx.task_conversation_ids(review_project, QUEUED)
        in_review = tx.task_conversation_ids_not_in(review_project, QUEUED)
        unrouted = tx.unrouted_conversation_ids()
        candidates = (unrouted | queued_ids) - in_review
        latest = tx.latest_proposals(candidates)
        convs = tx.conversations(list(latest))
        views: list[ProposalView] = []
        rows: dict[str, ProposalRow] = {}
        for cid, row in latest.items():
            conv = convs.get(cid)
            if conv is None or not conv.eligible or not conv.redacted_turns:
                report.invalid.append(
                    f"{cid}: conversation missing, ineligible or without redacted text"
                )
                tx.set_proposal_route(row, "rejected")
                continue
            try:
                views.append(view_of(row, conv, (embeddings or {}).get(cid)))
            except ValueError as exc:
                report.invalid.append(str(exc))
                tx.set_proposal_route(row, "invalid")
                continue
            rows[cid] = row
        if embed is not None:
            views = _with_embeddings(views, embed)
        result = route(views, cfg)
        by_view = {v.conversation_id: v for v in views}
        existing = tx.tasks_of(review_project, list(rows))
        # proposals already in review (not queued) keep their task; just mark them routed
        for cid in unrouted & in_review:
            tx.route_unrouted_proposals(cid, Route.NEEDS_REVIEW.value)
        for d in result.decisions:
            row = rows[d.conversation_id]
            tx.set_proposal_route(row, d.route.value)
            tx.route_unrouted_proposals(d.conversation_id, "superseded", except_id=row.id)
            view = by_view[d.conversation_id]
            ints, sens = view.labels(cfg.label_threshold)
            if d.route == Route.AUTO_ACCEPTED and upsert_gold(
                tx, d.conversation_id, ints, sens, "silver", silver_weight
            ):
                report.silver_written += 1
            if d.dispatch == Dispatch.AUTO:
                continue
            detail = {
                "proposal_id": row.id,
                "proposer_id": row.proposer_id,
                "uncertainty": view.uncertainty,
                "reasons": [r.value for r in d.reasons],
                "duplicate_of": d.duplicate_of,
            }
            if Reason.QA_SAMPLE in d.reasons:
                detail["silver"] = {"interests": ints, "sensitive": sens}
            status = IMPORTING if d.dispatch == Dispatch.SEND else QUEUED
            intent = TaskIntent(
                conversation_id=d.conversation_id, project_id=review_project, status=status,
                reason=d.reason, priority=d.priority, overlap=d.overlap, run_id=run_id,
                detail=detail,
            )  # fmt: skip
            task = existing.get(d.conversation_id)
            if task is None:
                # ON CONFLICT DO NOTHING: a concurrent push that routed the same conversation
                # first keeps its task; this run does not fail on it
                tx.insert_task_if_absent(intent)
            elif task.status == QUEUED:
                tx.reroute_task(task, intent)
    report.routing = result.counts
    return result


def reconcile(store: LabelStore, client: StudioClient, project_id: int, report: PushReport) -> None:
    """Match pending intents to tasks that already exist in the project (by conversation_id)."""
    with store.review() as tx:
        pending = {r.conversation_id: r for r in tx.tasks_with_status(project_id, IMPORTING)}
        if not pending:
            return
        by_cid: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in client.iter_tasks(project_id):
            cid = (t.get("data") or {}).get("conversation_id")
            if isinstance(cid, str):
                by_cid[cid].append(t)
        for cid, row in pending.items():
            tasks = sorted(by_cid.get(cid, []), key=lambda t: int(t["id"]))
            if not tasks:
                continue
            keep = tasks[0]
            for extra in tasks[1:]:  # never expected; heals a duplicate left by an older bug
                if not extra.get("total_annotations"):
                    client.delete_task(int(extra["id"]))
                    report.duplicates_removed += 1
            tx.link_task(row, int(keep["id"]), OPEN)
            if row.overlap > 1 and int(keep.get("overlap") or 1) == row.overlap:
                tx.merge_task_detail(row, {"overlap_set": True})
            report.reconciled += 1


class TurnScorer(Protocol):
    """Per-turn sensitive scores of conversations given as rendered, redacted turns
    (``targeting.evidence``); ``source`` says where they come from (shown to reviewers)."""

    source: str

    def __call__(self, conversations: Sequence[Sequence[str]]) -> list[tuple[float, ...]]: ...


def import_pending(
    store: LabelStore,
    client: StudioClient,
    project_id: int,
    *,
    label_threshold: float,
    batch_size: int = 25,
    report: PushReport,
    progress: Progress | None = None,
    turn_scorer: TurnScorer | None = None,
    taxonomy: Taxonomy | None = None,
) -> None:
    """Import every ``importing`` intent of the project, batch by batch (see module doc)."""
    reconcile(store, client, project_id, report)
    with store.review() as tx:
        pending = [
            (
                r.id,
                r.conversation_id,
                r.reason or "review",
                r.overlap,
                (r.detail or {}).get("proposal_id"),
                (r.detail or {}).get("answers"),
            )
            for r in tx.tasks_with_status_by_priority(project_id, IMPORTING)
        ]
    total = len(pending)
    done = 0
    if progress:
        progress("import", 0, total)
    for start in range(0, total, batch_size):
        batch = pending[start : start + batch_size]
        with store.review() as tx:
            convs = tx.conversations([b[1] for b in batch])
            props = tx.proposals([b[4] for b in batch if b[4] is not None])
            items: list[dict[str, Any]] = []
            kept: list[tuple[int, str, int]] = []
            scores = _turn_scores(turn_scorer, convs, report)
            for row_id, cid, reason, overlap, pid, answers in batch:
                conv = convs.get(cid)
                prop = props.get(pid) if pid is not None else None
                try:
                    if conv is None:
                        raise ValueError(f"conversation {cid!r}: not in the label store")
                    view = view_of(prop, conv) if prop is not None else None
                    items.append(
                        task_payload(
                            conv,
                            view,
                            reason=reason,
                            overlap=overlap,
                            label_threshold=label_threshold,
                            answers=answers,
                            turn_scores=scores.get(cid),
                            turn_scores_source=turn_scorer.source if turn_scorer else "",
                            proposal_id=pid,
                            taxonomy=taxonomy,
                        )
                    )
                    kept.append((row_id, cid, overlap))
                except ValueError as exc:
                    report.invalid.append(str(exc))
                    bad = tx.task(row_id)
                    if bad is not None:
                        tx.set_task_status(bad, "invalid")
        if items:
            ids = client.import_tasks(project_id, items)
            with store.review() as tx:
                for (row_id, _cid, _overlap), task_id in zip(kept, ids, strict=True):
                    row = tx.task(row_id)
                    if row is not None:
                        tx.link_task(row, task_id, OPEN)
            report.imported += len(ids)
        set_overlaps(store, client, project_id, report)
        done += len(batch)
        if progress:
            progress("import", done, total)
    set_overlaps(store, client, project_id, report)


def _turn_scores(
    scorer: TurnScorer | None, convs: Mapping[str, ConversationRow], report: PushReport
) -> dict[str, tuple[float, ...]]:
    """Per-turn scores of the batch's conversations; a scorer failure never blocks the push."""
    if scorer is None:
        return {}
    ids = [
        cid for cid, c in convs.items() if isinstance(c.redacted_turns, list) and c.redacted_turns
    ]
    try:
        rendered = [turn_texts(convs[cid].redacted_turns or [], redacted=True) for cid in ids]
        return dict(zip(ids, scorer(rendered), strict=True))
    except Exception as exc:
        report.invalid.append(f"turn scores unavailable ({scorer.source}): {exc}")
        return {}


def set_overlaps(
    store: LabelStore, client: StudioClient, project_id: int, report: PushReport
) -> None:
    """Tell Label Studio which open tasks need two annotations (idempotent)."""
    with store.review() as tx:
        for row in tx.multi_annotation_tasks(project_id):
            if (row.detail or {}).get("overlap_set"):
                continue
            assert row.ls_task_id is not None
            client.set_overlap(row.ls_task_id, row.overlap)
            tx.merge_task_detail(row, {"overlap_set": True})
            report.overlap_set += 1


def push(
    store: LabelStore,
    client: StudioClient,
    *,
    taxonomy: Taxonomy,
    policy: Policy,
    cfg: RoutingConfig,
    run_id: str,
    silver_weight: float = 0.5,
    batch_size: int = 25,
    embeddings: Mapping[str, Sequence[float]] | None = None,
    embed: Callable[[Sequence[str]], Any] | None = None,
    progress: Progress | None = None,
    prefix: str = PROJECT_PREFIX,
    turn_scorer: TurnScorer | None = None,
) -> PushReport:
    """Bootstrap, route the pending proposals, import the selected ones (resumable); with a
    ``turn_scorer`` the suspect turns come highlighted."""
    t0 = time.perf_counter()
    report = PushReport(run_id)
    projects = bootstrap(client, taxonomy, policy, prefix=prefix)
    remember_projects(store, projects)
    report.projects = projects
    route_pending(
        store,
        projects.review,
        cfg,
        run_id=run_id,
        silver_weight=silver_weight,
        embeddings=embeddings,
        embed=embed,
        report=report,
    )
    import_pending(
        store,
        client,
        projects.review,
        label_threshold=cfg.label_threshold,
        batch_size=batch_size,
        report=report,
        progress=progress,
        turn_scorer=turn_scorer,
        taxonomy=taxonomy,
    )
    report.seconds = time.perf_counter() - t0
    return report


def remember_projects(store: LabelStore, projects: Projects) -> None:
    """Record the project ids of this schema version in ``sync_state`` (for ``review status``)."""
    value = json.dumps({"review": projects.review, "adjudication": projects.adjudication})
    store.set_sync_values({f"ls:projects:{projects.schema_version}": value})


def remembered_projects(store: LabelStore, version: str) -> Projects | None:
    value = store.sync_value(f"ls:projects:{version}")
    if value is None:
        return None
    ids = json.loads(value)
    return Projects(int(ids["review"]), int(ids["adjudication"]), version, "")
