"""LLM-written contrast pairs: a sensitive message and the same message made clean.

The filter learns what is sensitive from its sources' gold, and each source speaks of sensitive
matters in its own way. A contrast pair is one message that touches a policy category ("I
volunteer for the Green Party campaign, what shoes are good for canvassing all day?") and the same
message with that detail replaced by an ordinary one ("I volunteer at the city marathon, what
shoes are good for standing all day?"): the pair differs only in what the filter must notice.

* :func:`contrast_plan` lays out what to ask for, deterministically: every category crossed with
  its subtopics, everyday situations, writers (assistant user, smart-glasses voice, image prompt,
  casual chat, forum post, blunt opinion) and an ordinary personal detail for the clean side
  (some of them the policy's false friends: a credit union, Rugby Union).
* :func:`write_pairs` asks the LLM twice per pair (``prompts/contrast_pairs.yaml``, one message
  per call, the same matter and writer, the sensitive detail and then the ordinary one) and keeps
  every answer, good or bad, with the prompt hash.
* :func:`check_pairs` keeps a pair only when the filter's own evidence agrees with what the LLM
  was asked for: the sensitive side must be recognised as its category (the classifier ranks the
  category first among the sensitive ones, or the vocabulary finds a term of it) and the clean side
  must not be (no vocabulary term of any category, and the classifier finds it less sensitive than
  its partner). Every rejected pair is kept with its reason.
* :func:`pair_examples` turns checked pairs into training examples (origin ``augmented``: they
  take no part in threshold calibration and are counted in the model's lineage);
  :func:`add_pairs` adds them to a snapshot's training split, each clean side weighing as much
  as its sensitive side (:func:`balanced_clean_weight`).
* ``labeling/data/contrast_pairs.jsonl`` (:data:`DEFAULT_PAIRS_PATH`, read by :func:`load_pairs`)
  holds the pairs ``labelloop train`` adds when ``LABELLOOP_TRAIN_CONTRAST_PAIRS`` is on (off by
  default): written by the bundled LLM and kept by the check against the filter trained without
  them on the development split.

Nothing here loads a model or calls a server: the LLM is a callable, the checks take scores.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from experiments.dataset import Example, Snapshot
from labeling.prompts import PromptTemplate
from labeling.segments import DEFAULT_SEGMENT_CHARS, turn_texts
from targeting.scorer import FilterBundle

__all__ = [
    "CONTRAST_PROMPT_NAME",
    "DEFAULT_PAIRS_PATH",
    "DIALOGUE_START",
    "DIALOGUE_STYLES",
    "FALSE_FRIENDS",
    "FALSE_FRIEND_START",
    "MESSAGE_SCHEMA",
    "ORDINARY_DETAILS",
    "SITUATIONS",
    "STYLES",
    "SUBTOPICS",
    "CheckedPair",
    "ContrastPair",
    "PairRequest",
    "add_pairs",
    "check_pairs",
    "contrast_plan",
    "load_pairs",
    "pair_examples",
    "parse_message",
    "unchecked",
    "user_turn",
    "write_pairs",
]

CONTRAST_PROMPT_NAME: Final = "contrast_pairs"
DEFAULT_PAIRS_PATH: Final = (
    Path(__file__).resolve().parents[1] / "labeling" / "data" / "contrast_pairs.jsonl"
)
MAX_PAIR_CHARS: Final = 400

MESSAGE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"message": {"type": "string", "minLength": 8, "maxLength": MAX_PAIR_CHARS}},
    "required": ["message"],
}

# What the sensitive detail is about, per policy category (the policy's descriptions, spelt out so
# that a small model writes about one concrete thing at a time).
SUBTOPICS: Final[Mapping[str, tuple[str, ...]]] = {
    "religion": (
        "fasting during Ramadan",
        "going to church on Sunday",
        "a bar mitzvah or bat mitzvah",
        "keeping kosher",
        "praying five times a day",
        "being an atheist who does not believe in god",
        "a Hindu festival the family observes",
        "converting to Buddhism",
        "a pilgrimage",
        "a Bible study group",
        "wearing a hijab or a turban for faith",
        "a priest, imam or rabbi",
    ),
    "sexual_orientation": (
        "being gay",
        "being lesbian",
        "being bisexual",
        "coming out to parents",
        "a same-sex partner or spouse",
        "a pride parade as a queer person",
        "being asexual",
        "a friend who just came out",
        "dating as a gay man",
        "an LGBTQ support group",
    ),
    "political_views": (
        "volunteering for a party's election campaign",
        "voting for a candidate",
        "being a conservative",
        "being a socialist or left-wing",
        "a protest march about a political issue",
        "an opinion on immigration policy",
        "an opinion on gun control",
        "canvassing for a senator",
        "a political debate with family",
        "donating to a political party",
    ),
    "health": (
        "a diagnosis of diabetes",
        "depression or anxiety",
        "recovering from knee surgery",
        "chemotherapy",
        "a pregnancy",
        "taking antidepressants",
        "seeing a therapist",
        "ADHD",
        "a wheelchair or a disability",
        "asthma attacks",
        "an eating disorder",
        "alcohol addiction recovery",
        "a child's autism",
        "chronic back pain and a doctor's visit",
    ),
    "ethnicity": (
        "being Black",
        "being Latino or Hispanic",
        "Asian heritage",
        "being Native American",
        "experiencing racism",
        "a mixed-race family",
        "Jewish or Arab ethnic identity",
        "being Indian-American",
        "ethnic stereotypes about a group",
        "immigrant roots framed as identity",
    ),
    "philosophical_beliefs": (
        "being vegan for ethical reasons",
        "pacifism",
        "stoicism as a life philosophy",
        "humanism",
        "anti-natalism",
        "effective altruism",
        "conscientious objection",
        "minimalism held as a moral conviction",
        "animal-rights convictions",
        "being an agnostic by conviction",
    ),
    "union_membership": (
        "being a union member",
        "a strike vote",
        "union dues",
        "a union rep at work",
        "organising a union at the workplace",
        "collective bargaining for a contract",
        "a picket line",
    ),
}

SITUATIONS: Final[tuple[str, ...]] = (
    "buying running shoes",
    "booking a hotel for a weekend trip",
    "choosing a laptop",
    "a recipe for dinner",
    "a gift for a friend",
    "renting an apartment",
    "car insurance",
    "a workout plan",
    "an outfit for a wedding",
    "a phone plan",
    "a video game to play",
    "moving to a new city",
    "a birthday party",
    "an outfit for a job interview",
    "planting a vegetable garden",
    "concert tickets",
    "learning the guitar",
    "a camera for a holiday",
    "food for a dog",
    "a family road trip",
    "furniture for a living room",
    "a budget spreadsheet",
    "a new haircut",
    "a cooking class",
)

# Personal details that are not sensitive, for the clean side: everyday life, work, family, hobbies,
# and the policy's false friends (labeling.synth's gold rules: fitness or diet on their own, a
# credit union, Rugby Union and the European Union are not sensitive).
ORDINARY_DETAILS: Final[tuple[str, ...]] = (
    "having two kids",
    "working from home",
    "being a college student",
    "just adopting a puppy",
    "training for a marathon",
    "living in a small apartment",
    "working night shifts as a baker",
    "a tight budget",
    "being a new teacher",
    "a grandmother who loves gardening",
    "just moving in with a roommate",
    "being left-handed",
    "a long commute by train",
    "being a big football fan",
    "a new job in sales",
    "a sister who lives abroad",
    "being very tall",
    "loving spicy food",
    "saving for a first car",
    "a weekend job at a cafe",
    "a banking account at the local credit union",
    "watching Rugby Union every weekend",
    "travelling across the European Union by train",
    "being a night owl",
    "a twin brother",
    "a small balcony",
    "a cat that hates travel",
    "playing in a jazz band",
    "retiring next year",
    "learning Spanish",
)

# Per category, clean matters that share its words (a cuisine named for a people, a song called
# "Sinner", a hockey team called the Senators, a credit union): the clean side of a false-friend
# pair mentions one of its own category's, so the pair differs in the sense of the same words,
# not only in topic. Everyday senses only: none of them says anything about a person's beliefs,
# health, identity or membership.
FALSE_FRIENDS: Final[Mapping[str, tuple[str, ...]]] = {
    "religion": (
        "a rock song called 'Sinner'",
        "an angel food cake recipe",
        "an old church converted into a brewery",
        "a hotel near the cathedral with a view",
        "the Christmas market downtown",
        "the band Judas Priest",
    ),
    "sexual_orientation": (
        "a rainbow-coloured cake for a kid's party",
        "the band Queen",
        "a pride of lions at the zoo",
        "a film of Pride and Prejudice",
        "a straight route for a bike ride",
    ),
    "political_views": (
        "a party for a friend's birthday",
        "the Ottawa Senators hockey team",
        "the campaign mode of a video game",
        "a marketing campaign at work",
        "voting in a TV talent show",
        "electing a captain for a soccer team",
    ),
    "health": (
        "a fitness tracker for running",
        "a high-protein diet for the gym",
        "a Doctor Who marathon",
        "being sick and tired of the rain",
        "a first-aid kit for a camping trip",
        "a pain in the neck of a landlord",
    ),
    "ethnicity": (
        "cooking Indian food at home",
        "a Mexican restaurant downtown",
        "Latin dance classes",
        "learning Japanese for a trip",
        "the Black Friday sales",
        "an Irish pub with live music",
    ),
    "philosophical_beliefs": (
        "a minimalist interior design style",
        "a philosophy course needed to graduate",
        "a stoic poker face at a card game",
        "a motto printed on a t-shirt",
        "a book club reading a novel",
    ),
    "union_membership": (
        "a banking account at the local credit union",
        "watching Rugby Union every weekend",
        "travelling across the European Union by train",
        "Union Station in Chicago",
        "a strike in a bowling league",
        "a student union cafe",
    ),
}

# Writers of turns in the everyday and task dialogues and forum threads that long conversations
# are made of, rather than of requests to an assistant.
DIALOGUE_STYLES: Final[tuple[str, ...]] = (
    "a person talking with a friend face to face, one spoken line, no greeting",
    "a customer answering a booking assistant in a chat, one short line",
    "a person replying in a forum thread, casual and a little rambling",
    "a coworker chatting in the office kitchen, one spoken line",
)

# Where a plan's indices start: plans never share an index (the LLM's seed and a pair file's
# resume key). A false-friend plan adds FALSE_FRIEND_START, a dialogue plan DIALOGUE_START.
FALSE_FRIEND_START: Final = 10_000
DIALOGUE_START: Final = 20_000

STYLES: Final[tuple[str, ...]] = (
    "a user asking an AI assistant for help",
    "a user speaking to smart glasses by voice, starting with 'Hey Meta'",
    "a user writing a prompt for an AI image generator",
    "a person chatting casually with a friend",
    "a person posting on an online forum",
    "a person stating a blunt personal opinion",
)


@dataclass(frozen=True)
class PairRequest:
    """One cell of the plan: what one LLM call is asked to write."""

    index: int
    category: str
    subtopic: str
    ordinary: str
    situation: str
    style: str

    def variables(self, *, sensitive: bool) -> dict[str, str]:
        """The prompt's variables for one side of the pair."""
        return {
            "detail": self.subtopic if sensitive else self.ordinary,
            "matter": self.situation,
            "writer": self.style,
        }


@dataclass(frozen=True)
class ContrastPair:
    """What the LLM wrote for one request (``error`` when the answer was unusable)."""

    request: PairRequest
    sensitive: str
    clean: str
    prompt_hash: str
    model_id: str
    error: str = ""

    @property
    def pair_id(self) -> str:
        key = f"{self.prompt_hash}|{self.request.index}|{self.sensitive}|{self.clean}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def to_row(self) -> dict[str, Any]:
        return {
            "pair_id": self.pair_id,
            **asdict(self.request),
            "sensitive": self.sensitive,
            "clean": self.clean,
            "prompt_hash": self.prompt_hash,
            "model_id": self.model_id,
            "error": self.error,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ContrastPair:
        req = PairRequest(
            index=int(row["index"]),
            category=str(row["category"]),
            subtopic=str(row["subtopic"]),
            ordinary=str(row["ordinary"]),
            situation=str(row["situation"]),
            style=str(row["style"]),
        )
        return cls(
            request=req,
            sensitive=str(row.get("sensitive", "")),
            clean=str(row.get("clean", "")),
            prompt_hash=str(row["prompt_hash"]),
            model_id=str(row.get("model_id", "")),
            error=str(row.get("error", "")),
        )


def contrast_plan(
    categories: Sequence[str],
    n: int,
    *,
    seed: int = 0,
    false_friends: bool = False,
    dialogue: bool = False,
) -> list[PairRequest]:
    """``n`` requests spread evenly over ``categories`` (round robin), each category's subtopics
    in turn, ordinary details, situations and styles drawn by a seeded generator: the same
    arguments always give the same plan. ``false_friends``: the clean side's detail is one of
    its own category's :data:`FALSE_FRIENDS` (drawn the same way) and the indices start at
    :data:`FALSE_FRIEND_START`. ``dialogue``: the writers are :data:`DIALOGUE_STYLES` and the
    indices start :data:`DIALOGUE_START` further."""
    unknown = [
        c for c in categories if c not in SUBTOPICS or (false_friends and c not in FALSE_FRIENDS)
    ]
    if unknown:
        raise ValueError(f"contrast plan: no subtopics or false friends for categories {unknown}")
    if not categories:
        raise ValueError("contrast plan: no categories")
    rng = random.Random(seed)
    out: list[PairRequest] = []
    for i in range(n):
        cat = categories[i % len(categories)]
        subs = SUBTOPICS[cat]
        k = i // len(categories)
        out.append(
            PairRequest(
                index=i + FALSE_FRIEND_START * false_friends + DIALOGUE_START * dialogue,
                category=cat,
                subtopic=subs[k % len(subs)],
                ordinary=rng.choice(FALSE_FRIENDS[cat] if false_friends else ORDINARY_DETAILS),
                situation=rng.choice(SITUATIONS),
                style=rng.choice(DIALOGUE_STYLES if dialogue else STYLES),
            )
        )
    return out


def parse_message(text: str) -> str:
    """The message of an LLM answer; ``ValueError`` naming what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict):
        raise ValueError("answer is not a JSON object")
    v = obj.get("message")
    if not isinstance(v, str) or not v.strip():
        raise ValueError("answer field 'message' is missing or empty")
    v = " ".join(v.split())
    if len(v) > MAX_PAIR_CHARS:
        raise ValueError(f"answer field 'message' is longer than {MAX_PAIR_CHARS} characters")
    return v


def write_pairs(
    requests: Iterable[PairRequest],
    *,
    ask: Callable[[str, str, int], str],
    prompt: PromptTemplate,
    model_id: str,
    on_pair: Callable[[ContrastPair], None] | None = None,
) -> list[ContrastPair]:
    """Ask the LLM twice per request (the sensitive side, then the clean one; the request's index
    is the seed of both). ``ask(system, user, seed) -> answer text``. An unusable answer (or a
    failed call) is kept as a pair with ``error`` set; the run goes on."""
    out: list[ContrastPair] = []
    for req in requests:
        sides: list[str] = []
        error = ""
        for sensitive_side in (True, False):
            rendered = prompt.render(**req.variables(sensitive=sensitive_side))
            try:
                sides.append(parse_message(ask(rendered.system, rendered.user, req.index)))
            except Exception as exc:
                error = f"{'sensitive' if sensitive_side else 'clean'} side: {type(exc).__name__}: {exc}"
                break
        if not error and sides[0].casefold() == sides[1].casefold():
            error = "the two sides are the same message"
        sensitive, clean = (sides[0], sides[1]) if not error else ("", "")
        pair = ContrastPair(req, sensitive, clean, prompt.sha256, model_id, error)
        out.append(pair)
        if on_pair is not None:
            on_pair(pair)
    return out


@dataclass(frozen=True)
class CheckedPair:
    pair: ContrastPair
    kept: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


def check_pairs(
    pairs: Sequence[ContrastPair],
    *,
    scores: Callable[[Sequence[str]], tuple[Sequence[float], Sequence[Mapping[str, float]]]],
    cue_categories: Callable[[str], set[str]],
) -> list[CheckedPair]:
    """Keep a pair only when the filter's evidence agrees with what was asked.

    ``scores(texts) -> (P(any sensitive) per text, {category: score} per text)``: the classifier
    trained without the pairs. ``cue_categories(text)``: the categories whose vocabulary terms
    the text contains. Rules (every failed one is a reason):

    * the LLM answered (no ``error``);
    * the sensitive side is recognised as its category: ``scores`` ranks it first among the
      categories it scores (the classifier's own classes), or the vocabulary finds a term of it;
    * the clean side contains no vocabulary term of any category, except the terms of its
      ordinary detail (the plan's false friends: a credit union, Rugby Union);
    * the clean side is less sensitive than its partner (P(any) lower), for a category the
      classifier has a class of; a category it lacks (no training positives: its P(any) is near
      zero on both sides) relies on the vocabulary rules alone.
    """
    usable = [p for p in pairs if not p.error]
    texts = [t for p in usable for t in (p.sensitive, p.clean)]
    p_any, per_cat = scores(texts) if texts else ([], [])
    # the usable pairs' scores, in order: sensitive side at 2i, clean side at 2i + 1
    scored = iter(range(len(usable)))
    out: list[CheckedPair] = []
    for p in pairs:
        if p.error:
            out.append(CheckedPair(p, False, (f"no usable answer ({p.error})",)))
            continue
        i = next(scored)
        s_any, s_cat, c_any = float(p_any[2 * i]), per_cat[2 * i], float(p_any[2 * i + 1])
        reasons: list[str] = []
        cat = p.request.category
        top = max(s_cat, key=lambda k: s_cat[k]) if s_cat else None
        if top != cat and cat not in cue_categories(p.sensitive):
            reasons.append(f"sensitive side not recognised as {cat} (classifier's top: {top})")
        # a term the plan put in the ordinary detail is a planned false friend (Rugby Union)
        clean_cues = sorted(cue_categories(p.clean) - cue_categories(p.request.ordinary))
        if clean_cues:
            reasons.append(f"clean side has vocabulary terms of {', '.join(clean_cues)}")
        if cat in s_cat and c_any >= s_any:
            reasons.append(
                f"clean side not less sensitive than its partner ({c_any:.3f} >= {s_any:.3f})"
            )
        out.append(CheckedPair(p, not reasons, tuple(reasons)))
    return out


def user_turn(text: str) -> tuple[str, ...]:
    """One user turn, redacted and rendered as serving renders it."""
    return turn_texts([{"role": "user", "text": text}])


def balanced_clean_weight(train: Sequence[Example], n_segments: Callable[[Example], int]) -> float:
    """The weight of a pair's clean side that gives it the same pull as its sensitive side.

    The segment classifier weighs all sensitive rows together as much as all clean ones, so one
    sensitive example counts (clean segment weight) / (sensitive weight) times a clean one: on
    the development split about 31. With weight 1 the clean twin hardly answers its partner, and
    what the pair shares (the everyday matter: a hotel, running shoes) drifts towards sensitive.
    With this weight W0 / S0 (W0 the clean segments' weight, S0 the sensitive examples' weight,
    both before the pairs) the two sides of a pair pull equally: after adding p pairs the
    sensitive factor is (W0 + p W0/S0) / (S0 + p) = W0 / S0."""
    clean = sum(e.weight * n_segments(e) for e in train if not e.sensitive)
    sens = sum(e.weight for e in train if e.sensitive)
    return clean / sens if sens > 0 and clean > 0 else 1.0


def pair_examples(checked: Iterable[CheckedPair], *, clean_weight: float = 1.0) -> list[Example]:
    """Both sides of every kept pair as one-turn training examples (origin ``augmented``; the
    interests are unknown, so they are masked out of interest training). ``clean_weight``: the
    clean sides' weight (:func:`balanced_clean_weight`; 1 = as any clean example)."""
    if not clean_weight > 0:
        raise ValueError(f"clean_weight must be > 0, not {clean_weight}")
    out: list[Example] = []
    for c in checked:
        if not c.kept:
            continue
        p = c.pair
        out.append(
            Example(
                f"contrast-{p.pair_id}-s",
                user_turn(p.sensitive),
                (p.request.category,),
                None,
                1.0,
                "augmented",
            )
        )
        out.append(
            Example(
                f"contrast-{p.pair_id}-c", user_turn(p.clean), (), None, clean_weight, "augmented"
            )
        )
    return out


def load_pairs(path: Path) -> tuple[list[ContrastPair], str]:
    """The pairs of a pair file (one JSON object per line, as :meth:`ContrastPair.to_row` writes
    them; blank lines skipped) and the sha256 of the bytes they were read from. A line that is
    not a pair is an error naming the file, the line and the field."""
    try:
        data = path.read_bytes()
        lines = data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read contrast pairs {path}: {exc}") from exc
    out: list[ContrastPair] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, not {type(row).__name__}")
        try:
            out.append(ContrastPair.from_row(row))
        except KeyError as exc:
            raise ValueError(f"{path}:{n}: field {exc.args[0]!r} is missing") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    return out, hashlib.sha256(data).hexdigest()


def unchecked(pairs: Iterable[ContrastPair]) -> list[CheckedPair]:
    """Every pair kept that the LLM answered on both sides (its error, if any, as the reason):
    for pairs checked before (a shipped file), or to measure what the check does."""
    return [
        CheckedPair(p, not p.error and bool(p.sensitive and p.clean), (p.error,) if p.error else ())
        for p in pairs
    ]


def add_pairs(
    snapshot: Snapshot,
    checked: Iterable[CheckedPair],
    *,
    clean_share: float = 1.0,
    unit: str = "segment",
    segment_chars: int = DEFAULT_SEGMENT_CHARS,
    reference: Sequence[Example] | None = None,
) -> tuple[Snapshot, float]:
    """``snapshot`` with both sides of every kept pair added to its training split (pairs of a
    category the snapshot does not have are left out), and the weight their clean sides got.

    ``clean_share`` > 0: a clean side weighs that share of :func:`balanced_clean_weight` (1 = as
    much as its sensitive side), at least as much as one clean segment; 0: as one clean segment.
    Segments are counted as training cuts them (``unit``, ``segment_chars``), over ``reference``:
    the training examples training will fit on (default the whole training split; with a cap on
    clean conversations, what the cap keeps: :func:`experiments.training.subsample_clean`)."""
    kept = [c for c in checked if c.kept and c.pair.request.category in snapshot.categories]
    weight = 1.0
    if clean_share > 0:
        probe = FilterBundle.empty(snapshot.categories, segment_chars=segment_chars, unit=unit)
        base = snapshot.train if reference is None else reference
        full = balanced_clean_weight(base, lambda e: len(probe.segments_of(e.turns)))
        weight = max(1.0, clean_share * full)
    extra = pair_examples(kept, clean_weight=weight)
    return replace(snapshot, train=tuple(snapshot.train) + tuple(extra)), weight
