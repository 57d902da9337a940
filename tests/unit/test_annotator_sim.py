"""Simulated annotators answer in the review config's format (Taxonomy paths), no server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from labeling.annotator_sim import simulate
from labeling.policy import load_policy
from labeling.studio import Projects, parse_result
from labeling.taxonomy import load_taxonomy
from labelloop.store import LabelStore
from labelloop.store.models import Base, ConversationRow

POLICY = load_policy()
TAXONOMY = load_taxonomy(categories=POLICY.categories)


class FakeStudio:
    """The calls ``simulate`` makes, recording the annotations it creates."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.created: list[tuple[int, list[dict[str, Any]], int | None]] = []
        self.users: dict[str, int] = {}

    def ensure_user(self, username: str, email: str) -> int:
        return self.users.setdefault(username, 100 + len(self.users))

    def iter_tasks(self, project: int, *, full: bool = False) -> Iterator[dict[str, Any]]:
        return iter([t for t in self.tasks if t["project"] == project])

    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], *, completed_by: int | None = None,
        lead_time: float | None = None, **_: Any,
    ) -> Mapping[str, Any]:  # fmt: skip
        self.created.append((task_id, result, completed_by))
        return {"id": len(self.created)}


def test_simulated_answers_are_taxonomy_paths(tmp_path: Path) -> None:
    t1 = next(t for t in TAXONOMY.tier1() if TAXONOMY.children(t.id))
    child = TAXONOMY.children(t1.id)[0]
    store = LabelStore(f"sqlite:///{tmp_path / 'ls.db'}")
    Base.metadata.create_all(store.engine)
    with store.session() as s:
        s.add(ConversationRow(
            conversation_id="c-1", account_hash="x", surface="assistant_chat", country="US",
            account_linked=True, eligible=True, content_hash="h-1", source="test",
            redacted_turns=[{"role": "user", "text": "hi", "modality": "text"}],
            source_gold={"interests": [child.name, t1.name], "sensitive": ["health"]},
            policy_version=POLICY.version,
        ))  # fmt: skip
    client = FakeStudio([{"id": 7, "project": 1, "overlap": 2, "annotations": [],
                          "data": {"conversation_id": "c-1", "required_annotations": 2}}])  # fmt: skip
    projects = Projects(review=1, adjudication=2, schema_version="v", config="<View/>")
    rep = simulate(store, client, projects, TAXONOMY, POLICY.categories,  # type: ignore[arg-type]
                   accuracy=1.0, annotators=3, adjudicate=False)  # fmt: skip
    assert rep.annotations == 2 and len(client.created) == 2
    assert len({by for _, _, by in client.created}) == 2  # two different annotators
    for task_id, result, _ in client.created:
        assert task_id == 7
        (interests,) = [r for r in result if r["from_name"] == "interests"]
        assert interests["type"] == "taxonomy"
        assert sorted(interests["value"]["taxonomy"]) == sorted([[t1.id, child.id], [t1.id]])
        assert parse_result(result, TAXONOMY)[:2] == (sorted([t1.id, child.id]), ["health"])
