"""Human review against a real Label Studio server (started by this module, own state dir/port).

Label Studio's venv: ``$LABELLOOP_LS_VENV`` or ``<repo>/.labelloop/venvs/label-studio`` (created
by the stack code on first use if missing; slow). Each test uses its own project prefix and its
own SQLite label store, so tests do not see each other's tasks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from labeling.annotator_sim import simulate
from labeling.collection import pull
from labeling.policy import load_policy
from labeling.routing import RoutingConfig
from labeling.studio import (
    ADJUDICATION,
    StudioClient,
    bootstrap,
    config_choices,
    push,
    result_for,
)
from labeling.taxonomy import load_taxonomy
from labelloop.settings import Settings
from labelloop.store import LabelStore
from labelloop.store.models import (
    AnnotationRow,
    Base,
    ConversationRow,
    GoldLabelRow,
    ProposalRow,
    ReviewTaskRow,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy()
TAXONOMY = load_taxonomy(categories=POLICY.categories)
LABEL_SETS = {"interests": list(TAXONOMY.ids()), "sensitive": list(POLICY.categories)}
TIER1 = TAXONOMY.tier1()
CHILD = TAXONOMY.children(TIER1[0].id)[0]  # a tier-2 interest: a two-level Taxonomy path
SEARCHED = TAXONOMY.children(TIER1[1].id)[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ls_venv() -> Path:
    env = os.environ.get("LABELLOOP_LS_VENV")
    return Path(env) if env else REPO / ".labelloop" / "venvs" / "label-studio"


@pytest.fixture(scope="module")
def ls_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from infra.stack import Stack

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        state_dir=tmp_path_factory.mktemp("review-ls"),
        host="127.0.0.1",
        label_studio_port=_free_port(),
        ls_venv=_ls_venv(),
        label_studio_token=SecretStr("labelloop-review-test-token-7d1e2f"),
        label_studio_password=SecretStr("labelloop-review-test-pw-4411"),
    )
    stack = Stack(settings)
    stack.up(services=["label-studio"], timeout_s=600)
    try:
        yield settings
    finally:
        stack.down(services=["label-studio"])


@pytest.fixture(scope="module")
def client(ls_settings: Settings) -> StudioClient:
    from labelloop.runtime import studio_client

    return studio_client(ls_settings)


def make_store(
    path: Path, n: int, *, sensitive_every: int = 0, uncertainty: float = 0.9
) -> LabelStore:
    """n eligible conversations with source gold and one proposal each (all need review)."""
    store = LabelStore(f"sqlite:///{path}")
    Base.metadata.create_all(store.engine)
    rows, props = [], []
    for i in range(n):
        t1 = TIER1[i % len(TIER1)]
        sens = ["health"] if sensitive_every and i % sensitive_every == 0 else []
        cid = f"conv-{i:04d}"
        rows.append(
            {
                "conversation_id": cid,
                "account_hash": "a" * 64,
                "surface": "assistant_chat" if i % 2 else "smart_glasses",
                "country": "US",
                "account_linked": True,
                "eligible": True,
                "redacted_turns": [
                    {
                        "role": "user",
                        "modality": "text" if i % 2 else "voice",
                        "text": f"conversation {i}: tell me about {t1.name.lower()} [EMAIL]",
                    },
                    {"role": "assistant", "modality": "text", "text": f"sure, reply {i}"},
                ],
                "content_hash": f"hash-{i}",
                "source": "test",
                "source_gold": {"interests": [t1.name], "sensitive": sens},
                "policy_version": POLICY.version,
            }
        )
        props.append(
            ProposalRow(
                conversation_id=cid,
                proposer_id="test-proposer-v1",
                prompt_hash="p" * 8,
                model_id="fake",
                embedding_model_id=None,
                interests={t1.id: 0.7},
                sensitive={"health": 0.5} if sens else {},
                uncertainty=uncertainty,
                flags=["possible_sensitive"] if sens else [],
            )
        )
    store.add_conversations(rows)
    with store.session() as s:
        s.add_all(props)
    return store


def _task_count(client: StudioClient, project: int) -> int:
    return sum(1 for _ in client.iter_tasks(project))


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_bootstrap_is_idempotent_and_config_matches(client: StudioClient) -> None:
    prefix = _prefix()
    p1 = bootstrap(client, TAXONOMY, POLICY, prefix=prefix)
    p2 = bootstrap(client, TAXONOMY, POLICY, prefix=prefix)
    assert (p1.review, p1.adjudication) == (p2.review, p2.adjudication)
    assert p1.review != p1.adjudication
    titles = [p.title for p in client.ls.projects.list(title=prefix, page_size=100)]
    assert sorted(titles) == sorted(
        [f"{prefix} {p1.schema_version}", f"{prefix} {p1.schema_version}-adjudication"]
    )
    parsed = client.ls.projects.get(id=p1.review).parsed_label_config
    assert parsed["interests"]["type"] == "Taxonomy"
    assert sorted(parsed["interests"]["labels"]) == sorted(TAXONOMY.ids())  # aliases = IAB ids
    assert parsed["sensitive"]["labels"] == config_choices(p1.config)["sensitive"]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from labeling.policy import load_policy
    from labeling.routing import RoutingConfig
    from labeling.studio import StudioClient, push
    from labeling.taxonomy import load_taxonomy
    from labelloop.store import LabelStore
    db, url, token, prefix = sys.argv[1:5]
    policy = load_policy(); taxonomy = load_taxonomy(categories=policy.categories)
    push(LabelStore(f"sqlite:///{db}"), StudioClient(url, token), taxonomy=taxonomy, policy=policy,
         cfg=RoutingConfig(budget=1000, qa_sample_rate=0.0, overlap_share=0.25), run_id="killed",
         batch_size=2, prefix=prefix)
    """
)


@pytest.fixture(scope="module")
def imported(
    client: StudioClient, ls_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A push killed with SIGKILL halfway, then re-run; shared by the collection tests."""
    tmp = tmp_path_factory.mktemp("review-kill")
    n = 40
    store = make_store(tmp / "store.db", n, sensitive_every=5)
    prefix = _prefix()
    projects = bootstrap(client, TAXONOMY, POLICY, prefix=prefix)
    script = tmp / "push.py"
    script.write_text(KILL_SCRIPT)
    token = ls_settings.label_studio_token.get_secret_value()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tmp / "store.db"),
            ls_settings.label_studio,
            token,
            prefix,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 180
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = _task_count(client, projects.review)
        if seen >= 8:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the push finished before it could be killed; make batches slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = _task_count(client, projects.review)
    assert 0 < killed_at < n
    report = push(
        store,
        client,
        taxonomy=TAXONOMY,
        policy=POLICY,
        cfg=RoutingConfig(budget=1000, qa_sample_rate=0.0, overlap_share=0.25),
        run_id="resume",
        batch_size=10,
        prefix=prefix,
    )
    return {"store": store, "projects": projects, "n": n, "killed_at": killed_at, "report": report}


def test_killed_import_resumes_without_duplicates_or_losses(
    client: StudioClient, imported: dict[str, Any]
) -> None:
    store: LabelStore = imported["store"]
    projects = imported["projects"]
    n = imported["n"]
    tasks = list(client.iter_tasks(projects.review, full=True))
    assert len(tasks) == n
    cids = [t["data"]["conversation_id"] for t in tasks]
    assert len(set(cids)) == n
    with store.session() as s:
        rows = list(
            s.scalars(select(ReviewTaskRow).where(ReviewTaskRow.ls_project_id == projects.review))
        )
    assert len(rows) == n and all(r.status == "open" and r.ls_task_id for r in rows)
    assert {r.ls_task_id for r in rows} == {int(t["id"]) for t in tasks}
    # predictions (pre-annotations) carry the proposer id and a score
    pred = tasks[0]["predictions"][0]
    assert pred["model_version"] == "test-proposer-v1" and pred["score"] == pytest.approx(0.1)
    (interests,) = [r for r in pred["result"] if r["from_name"] == "interests"]
    assert interests["type"] == "taxonomy" and interests["score"] == pytest.approx(0.7)
    with store.session() as s:
        proposal_ids = {p.conversation_id: p.id for p in s.scalars(select(ProposalRow))}
    for t in tasks:  # each task links back to its proposal and shows its confidence
        link = t["data"]["proposal"]
        assert link["id"] == proposal_ids[t["data"]["conversation_id"]]
        assert link["confidence"] == pytest.approx(0.1)
        assert f"proposal #{link['id']} confidence 0.10" in t["data"]["header"]
    # every sensitive suspect needs two annotations, in our store and in Label Studio
    by_task = {int(t["id"]): t for t in tasks}
    for r in rows:
        if r.reason == "sensitive_suspect":
            assert r.overlap == 2
        assert by_task[r.ls_task_id]["overlap"] == r.overlap
    # running push again changes nothing
    again = push(
        store,
        client,
        taxonomy=TAXONOMY,
        policy=POLICY,
        cfg=RoutingConfig(budget=1000),
        run_id="again",
        prefix=projects_prefix(client, projects),
    )
    assert again.imported == 0 and _task_count(client, projects.review) == n


def projects_prefix(client: StudioClient, projects: Any) -> str:
    title = client.ls.projects.get(id=projects.review).title
    return str(title).rsplit(" ", 1)[0]


def test_simulated_annotations_become_gold_then_edit_and_skip(
    client: StudioClient, imported: dict[str, Any]
) -> None:
    store: LabelStore = imported["store"]
    projects = imported["projects"]
    sim = simulate(store, client, projects, TAXONOMY, POLICY.categories, accuracy=1.0, annotators=3)
    assert sim.annotations >= imported["n"]
    rep = pull(
        store,
        client,
        projects,
        run_id="pull-1",
        label_sets=LABEL_SETS,
        index_gold=None,
        taxonomy=TAXONOMY,
    )
    assert rep.annotations_new == sim.annotations
    assert rep.adjudication_sent == 0
    with store.session() as s:
        gold = {g.conversation_id: g for g in s.scalars(select(GoldLabelRow))}
        convs = {c.conversation_id: c for c in s.scalars(select(ConversationRow))}
    assert len(gold) == imported["n"]
    for cid, g in gold.items():
        src = convs[cid].source_gold or {}
        assert g.origin == "human"
        assert g.interests == [TAXONOMY.name_to_id(src["interests"][0])]
        assert g.sensitive == src["sensitive"]
    assert rep.agreement["interests"]["alpha"] == pytest.approx(1.0)
    # idempotent: nothing new -> nothing changes
    rep2 = pull(store, client, projects, run_id="pull-2", label_sets=LABEL_SETS, taxonomy=TAXONOMY)
    assert (
        rep2.annotations_new,
        rep2.annotations_updated,
        rep2.gold_created,
        rep2.gold_updated,
    ) == (0, 0, 0, 0)
    # an edit of an earlier annotation updates gold (revision + 1)
    with store.session() as s:
        one = s.scalars(
            select(ReviewTaskRow).where(
                ReviewTaskRow.ls_project_id == projects.review, ReviewTaskRow.overlap == 1
            )
        ).first()
        assert one is not None
        ann = s.scalars(
            select(AnnotationRow).where(AnnotationRow.ls_task_id == one.ls_task_id)
        ).first()
        assert ann is not None
        cid, ann_id = one.conversation_id, ann.ls_annotation_id
    new_interest = next(  # a tier-2 interest: its Taxonomy path has two levels
        c.id for t in TIER1 for c in TAXONOMY.children(t.id) if c.id not in gold[cid].interests
    )
    client.update_annotation(ann_id, result_for([new_interest], ["religion"], taxonomy=TAXONOMY))
    indexed: list[str] = []
    rep3 = pull(
        store,
        client,
        projects,
        run_id="pull-3",
        label_sets=LABEL_SETS,
        taxonomy=TAXONOMY,
        index_gold=lambda ex: indexed.extend(e.conversation_id for e in ex),
    )
    assert rep3.annotations_updated == 1 and rep3.gold_updated == 1
    assert indexed == [cid]
    with store.session() as s:
        g = s.scalars(select(GoldLabelRow).where(GoldLabelRow.conversation_id == cid)).one()
        assert (g.interests, g.sensitive, g.revision) == ([new_interest], ["religion"], 2)


def test_disagreement_goes_to_adjudication_and_only_adjudicated_answer_is_gold(
    client: StudioClient, tmp_path: Path
) -> None:
    store = make_store(
        tmp_path / "adj.db", 3, sensitive_every=1
    )  # all sensitive suspects: overlap 2
    prefix = _prefix()
    rep = push(
        store,
        client,
        taxonomy=TAXONOMY,
        policy=POLICY,
        cfg=RoutingConfig(qa_sample_rate=0.0),
        run_id="adj",
        prefix=prefix,
    )
    projects = rep.projects
    assert projects is not None and rep.imported == 3
    u1 = client.ensure_user("rev-a", f"rev-a-{prefix}@labelloop.local")
    u2 = client.ensure_user("rev-b", f"rev-b-{prefix}@labelloop.local")
    tasks = sorted(client.iter_tasks(projects.review), key=lambda t: t["data"]["conversation_id"])
    t_dis, t_agree, t_skip = tasks
    tid = int(t_dis["id"])
    client.create_annotation(
        tid, result_for([CHILD.id], ["health"], taxonomy=TAXONOMY), completed_by=u1, lead_time=10
    )
    client.create_annotation(
        tid, result_for([CHILD.id], ["religion"], taxonomy=TAXONOMY), completed_by=u2, lead_time=12
    )
    for u in (u1, u2):
        client.create_annotation(
            int(t_agree["id"]), result_for([TIER1[1].id], [], taxonomy=TAXONOMY), completed_by=u
        )
        client.create_annotation(int(t_skip["id"]), [], completed_by=u, was_cancelled=True)
    r1 = pull(store, client, projects, run_id="p1", label_sets=LABEL_SETS, taxonomy=TAXONOMY)
    assert r1.adjudication_sent == 1 and r1.skipped == 2
    cid = t_dis["data"]["conversation_id"]
    with store.session() as s:
        g = s.scalars(select(GoldLabelRow).where(GoldLabelRow.conversation_id == cid)).one()
        assert (g.origin, g.sensitive, g.interests, g.weight) == (
            "provisional",
            ["health", "religion"],
            [],
            0.0,
        )
        review = s.scalars(
            select(ReviewTaskRow).where(
                ReviewTaskRow.conversation_id == cid, ReviewTaskRow.ls_project_id == projects.review
            )
        ).one()
        assert review.status == ADJUDICATION
        skipped = s.scalars(
            select(ReviewTaskRow).where(
                ReviewTaskRow.conversation_id == t_skip["data"]["conversation_id"],
                ReviewTaskRow.ls_project_id == projects.review,
            )
        ).one()
        assert skipped.status == "skipped"
        assert {
            a.status
            for a in s.scalars(
                select(AnnotationRow).where(AnnotationRow.ls_task_id == int(t_skip["id"]))
            )
        } == {"skipped"}
        assert (
            s.scalars(
                select(GoldLabelRow).where(
                    GoldLabelRow.conversation_id == t_skip["data"]["conversation_id"]
                )
            ).first()
            is None
        )
    adj_tasks = list(client.iter_tasks(projects.adjudication, full=True))
    assert [t["data"]["conversation_id"] for t in adj_tasks] == [cid]
    assert sorted(p["model_version"] for p in adj_tasks[0]["predictions"]) == sorted(
        [f"annotator:rev-a-{prefix}@labelloop.local", f"annotator:rev-b-{prefix}@labelloop.local"]
    )
    for pred in adj_tasks[0]["predictions"]:
        (interests,) = [r for r in pred["result"] if r["from_name"] == "interests"]
        assert interests["type"] == "taxonomy"
        assert interests["value"]["taxonomy"] == [[TIER1[0].id, CHILD.id]]
    assert (
        pull(
            store, client, projects, run_id="p2", label_sets=LABEL_SETS, taxonomy=TAXONOMY
        ).adjudication_sent
        == 0
    )
    judge = client.ensure_user("judge", f"judge-{prefix}@labelloop.local")
    client.create_annotation(
        int(adj_tasks[0]["id"]),
        result_for([CHILD.id], ["religion"], taxonomy=TAXONOMY),
        completed_by=judge,
    )
    pull(store, client, projects, run_id="p3", label_sets=LABEL_SETS, taxonomy=TAXONOMY)
    with store.session() as s:
        g = s.scalars(select(GoldLabelRow).where(GoldLabelRow.conversation_id == cid)).one()
        assert (g.origin, g.sensitive, g.interests) == ("adjudicated", ["religion"], [CHILD.id])


CHROMIUM = Path(os.environ.get("LABELLOOP_CHROMIUM", "/usr/bin/chromium"))


def test_reviewer_sees_the_suspect_turn_highlighted(
    client: StudioClient, ls_settings: Settings, tmp_path: Path
) -> None:
    """The task view in a real browser: the suspect turn is marked and pre-annotated as evidence.
    The interests are a Taxonomy tree pre-annotated with the proposal, searchable by name.
    Screenshots are kept in <repo>/.labelloop/screenshots/ for a person to look at."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or LABELLOOP_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    from labeling.studio import EVIDENCE_LABEL
    from targeting.evidence import LexiconTurnScorer
    from targeting.scorer import load_lexicon_file

    store = LabelStore(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(store.engine)
    turns = [
        {"role": "user", "modality": "text", "text": "Find me a quiet Italian place for Friday."},
        {"role": "assistant", "modality": "text", "text": "Trattoria Roma has a table at 8 pm."},
        {"role": "user", "modality": "text", "text": "Great. I'm vegan for ethical reasons, do they have options?"},
        {"role": "assistant", "modality": "text", "text": "Yes, they have three vegan dishes."},
    ]  # fmt: skip
    store.add_conversations([{
        "conversation_id": "browser-1", "account_hash": "a" * 64, "surface": "assistant_chat",
        "country": "US", "account_linked": True, "eligible": True, "redacted_turns": turns,
        "languages": ["en"] * 4, "language": "en", "content_hash": "h-browser-1", "source": "test",
        "policy_version": POLICY.version,
    }])  # fmt: skip
    with store.session() as s:
        s.add(ProposalRow(conversation_id="browser-1", proposer_id="test-proposer-v1",
                          prompt_hash="p" * 8, model_id="fake", embedding_model_id=None,
                          interests={CHILD.id: 0.7}, sensitive={"philosophical_beliefs": 0.6},
                          uncertainty=0.8, flags=["possible_sensitive"]))  # fmt: skip
    prefix = _prefix()
    scorer = LexiconTurnScorer(load_lexicon_file(categories=POLICY.categories), POLICY.categories)
    report = push(store, client, taxonomy=TAXONOMY, policy=POLICY,
                  cfg=RoutingConfig(budget=10, qa_sample_rate=0.0), run_id="browser", prefix=prefix,
                  turn_scorer=scorer)  # fmt: skip
    assert report.imported == 1
    project = report.projects.review
    (task,) = list(client.iter_tasks(project))
    assert task["data"]["turn_scores"][2] == 1.0  # "vegan for ethical reasons" is a keyword
    base = f"http://{ls_settings.host}:{ls_settings.label_studio_port}"
    shots = REPO / ".labelloop" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "review-task-evidence.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/user/login/", timeout=120_000)
        page.fill("input[name=email]", ls_settings.label_studio_username)
        page.fill("input[name=password]", ls_settings.label_studio_password.get_secret_value())
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle", timeout=120_000)
        page.goto(f"{base}/projects/{project}/data?task={task['id']}", timeout=120_000)
        page.get_by_text("vegan for ethical reasons", exact=False).first.wait_for(timeout=120_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shot), full_page=True)
        body = page.inner_text("body")
        # the interests control is Label Studio's Taxonomy tree, pre-annotated with the proposal
        chosen = page.locator(".lsf-taxonomy .ant-select-selection-item").all()
        chosen_titles = [c.get_attribute("title") for c in chosen]
        # searching the tree finds an interest by name, shown under its tier-1
        page.locator(".lsf-taxonomy .ant-select-selector").click()
        search = page.locator(".ant-select-dropdown input").first
        search.wait_for(timeout=60_000)
        search.fill(SEARCHED.name)
        page.locator(".ant-select-tree-title", has_text=SEARCHED.name).first.wait_for(
            timeout=60_000
        )
        page.wait_for_timeout(500)
        tree_titles = page.locator(".ant-select-dropdown .ant-select-tree-title").all_inner_texts()
        page.screenshot(path=str(shots / "review-task-taxonomy.png"), full_page=True)
        browser.close()
    assert "sensitive? 1.00" in body  # the suspect turn's speaker line carries its score
    assert EVIDENCE_LABEL in body  # the evidence label and its pre-annotated region
    assert "suspect turn(s): 3" in body and "language: en" in body
    assert shot.stat().st_size > 10_000
    assert chosen_titles == [f"{TIER1[0].name} / {CHILD.name}"]
    assert SEARCHED.name in tree_titles and TIER1[1].name in tree_titles  # node under its parent
    assert TIER1[0].name not in tree_titles  # the tree is filtered by the search
    assert f"proposal #{task['data']['proposal']['id']} confidence 0.20" in body
