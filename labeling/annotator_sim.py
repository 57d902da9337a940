"""SIMULATED annotators, for demos and benchmarks only: never a source of real labels.

:func:`simulate` answers the open tasks of the review project through the Label Studio API as
separate Label Studio users (``sim-annotator-<n>@labelloop.local``, created by the admin), each
task until it has the annotations it needs (``required_annotations`` in the task data / the task
overlap), from the label store's copy of the input records' gold labels
(``ConversationRow.source_gold``: interests are tier-1 names -> IAB ids via the taxonomy; sensitive
categories as they are). With probability ``1 - accuracy`` an answer is perturbed once (an interest
added or dropped, or a sensitive category added or dropped). Where the record has no interest gold
(``null``), the annotator accepts the pre-annotation's interests. Open adjudication tasks are
answered the same way by ``sim-adjudicator@labelloop.local``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labeling.studio import StudioClient, parse_result, result_for

if TYPE_CHECKING:
    from labeling.studio import Projects
    from labeling.taxonomy import Taxonomy
    from labelloop.store import LabelStore

SIM_DOMAIN = "labelloop.local"
Progress = Callable[[str, int, int], None]


@dataclass
class SimReport:
    annotations: int = 0
    perturbed: int = 0
    adjudications: int = 0
    tasks_seen: int = 0
    no_gold: int = 0
    by_annotator: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _rng(seed: int, *parts: object) -> random.Random:
    h = hashlib.sha256("\x1f".join([str(seed), *map(str, parts)]).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def gold_labels(
    source_gold: Mapping[str, Any] | None, taxonomy: Taxonomy
) -> tuple[list[str] | None, list[str]]:
    """(interest ids or None if unknown, sensitive categories) from a record's gold."""
    if not source_gold:
        return None, []
    names = source_gold.get("interests")
    ids: list[str] | None = None
    if names is not None:
        ids = []
        for n in names:
            try:
                ids.append(taxonomy.name_to_id(str(n)))
            except KeyError:
                continue
    return ids, [str(c) for c in source_gold.get("sensitive") or []]


def noisy_answer(
    interests: Sequence[str],
    sensitive: Sequence[str],
    *,
    accuracy: float,
    rng: random.Random,
    interest_pool: Sequence[str],
    categories: Sequence[str],
) -> tuple[list[str], list[str], bool]:
    """The gold answer, perturbed once with probability 1 - accuracy; (interests, sensitive, perturbed)."""
    ints, sens = set(interests), set(sensitive)
    if rng.random() < accuracy:
        return sorted(ints), sorted(sens), False
    if rng.random() < 0.7:
        if ints and rng.random() < 0.5:
            ints.discard(rng.choice(sorted(ints)))
        else:
            ints.add(rng.choice([i for i in interest_pool if i not in ints] or list(interest_pool)))
    elif sens and rng.random() < 0.5:
        sens.discard(rng.choice(sorted(sens)))
    else:
        sens.add(rng.choice([c for c in categories if c not in sens] or list(categories)))
    return sorted(ints), sorted(sens), True


def _prediction_interests(task: Mapping[str, Any], taxonomy: Taxonomy) -> list[str]:
    for p in task.get("predictions") or []:
        result = p.get("result") if isinstance(p, Mapping) else None
        if result:
            return list(parse_result(result, taxonomy)[0])
    return []


def simulate(
    store: LabelStore,
    client: StudioClient,
    projects: Projects,
    taxonomy: Taxonomy,
    categories: Sequence[str],
    *,
    accuracy: float = 0.95,
    annotators: int = 3,
    seed: int = 0,
    adjudicate: bool = True,
    limit: int | None = None,
    progress: Progress | None = None,
) -> SimReport:
    """SIMULATION: answer open review (and adjudication) tasks; see the module doc."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if annotators < 1:
        raise ValueError(f"annotators must be >= 1, got {annotators}")
    report = SimReport()
    names = [f"sim-annotator-{i + 1}" for i in range(annotators)]
    uids = {n: client.ensure_user(n, f"{n}@{SIM_DOMAIN}") for n in names}
    pool = [i.id for i in taxonomy.tier1()]
    jobs: list[tuple[int, dict[str, Any]]] = [
        (projects.review, t) for t in client.iter_tasks(projects.review, full=True)
    ]
    adj_uid: int | None = None
    if adjudicate:
        adj_uid = client.ensure_user("sim-adjudicator", f"sim-adjudicator@{SIM_DOMAIN}")
        jobs += [
            (projects.adjudication, t) for t in client.iter_tasks(projects.adjudication, full=True)
        ]
    cids = {str((t.get("data") or {}).get("conversation_id")) for _, t in jobs}
    gold = store.source_gold(cids)
    total = len(jobs)
    for n, (pid, task) in enumerate(jobs, start=1):
        report.tasks_seen += 1
        cid = str((task.get("data") or {}).get("conversation_id"))
        anns = [a for a in task.get("annotations") or [] if isinstance(a, Mapping)]
        done_by = {int(a["completed_by"]) for a in anns if a.get("completed_by") is not None}
        if pid == projects.review:
            need = max(
                int(task.get("overlap") or 1),
                int((task.get("data") or {}).get("required_annotations") or 1),
            )
            missing = need - len([a for a in anns if not a.get("was_cancelled")])
            order = sorted(names, key=lambda nm: _rng(seed, "who", cid, nm).random())
            who = [nm for nm in order if uids[nm] not in done_by][: max(0, missing)]
        else:
            who = [] if anns else ["sim-adjudicator"]
        if limit is not None and report.annotations >= limit:
            break
        for name in who:
            ints, sens = gold_labels(gold.get(cid), taxonomy)
            if gold.get(cid) is None:
                report.no_gold += 1
            if ints is None:
                ints = _prediction_interests(task, taxonomy)
            rng = _rng(seed, "answer", pid, cid, name)
            a_ints, a_sens, perturbed = noisy_answer(
                ints, sens, accuracy=accuracy, rng=rng, interest_pool=pool, categories=categories
            )
            uid = uids.get(name) if name != "sim-adjudicator" else adj_uid
            client.create_annotation(
                int(task["id"]),
                result_for(a_ints, a_sens, taxonomy=taxonomy),
                completed_by=uid,
                lead_time=round(rng.uniform(8.0, 90.0), 1),
            )
            report.annotations += 1
            report.perturbed += int(perturbed)
            report.by_annotator[name] = report.by_annotator.get(name, 0) + 1
            if name == "sim-adjudicator":
                report.adjudications += 1
        if progress:
            progress("simulate", n, total)
    return report
