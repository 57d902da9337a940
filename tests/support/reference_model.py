"""A tiny keyword-based targeting-filter pyfunc that honours the decision contract.

It stands in for the trained model (``experiments/``) in tests: it bundles the
policy file as an artifact, applies the policy gate, flags a conversation as sensitive when a
keyword of a policy category occurs (e.g. "surgery" -> health) and proposes tier-1 IAB interests
from keywords. ``model_config["score"]`` is the score given to every interest (tests use it to tell
versions apart). **Not** a real classifier.

Contract (shared with the trained model): ``predict(records)`` with a list of conversation-record
dicts (or a DataFrame of them) returns one dict per record, in order::

    {conversation_id, eligible, interests: [{id, name, score}], excluded_reason,
     sensitive_category (audit only), model_version, policy_version}
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel

# keyword -> sensitive category (only categories present in the bundled policy are used)
SENSITIVE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "health": ("surgery", "therapist", "diagnosis", "medication", "anxious", "pregnant"),
    "religion": ("mosque", "church", "prayer", "bar mitzvah", "synagogue"),
    "political_views": ("vote", "election", "senate", "protest"),
    "sexual_orientation": ("came out", "lgbtq", "gay"),
    "ethnicity": ("racism", "ethnic"),
    "philosophical_beliefs": ("pacifist", "vegan for ethical"),
    "union_membership": ("union", "strike vote"),
}
# keyword -> tier-1 IAB interest name
INTEREST_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Travel": ("trail", "hike", "trip", "flight", "hotel", "travel"),
    "Food & Drink": ("recipe", "restaurant", "cook", "dinner", "pizza"),
    "Sports": ("football", "soccer", "tennis", "marathon", "basketball"),
    "Technology & Computing": ("laptop", "python", "phone", "software", "computer"),
    "Music and Audio": ("song", "guitar", "concert", "playlist"),
    "Style & Fashion": ("dress", "sneakers", "jacket", "outfit"),
}


def _words_re(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


class KeywordFilterModel(PythonModel):
    """Policy gate + keyword sensitivity + keyword interests."""

    def load_context(self, context: Any) -> None:
        from labeling.policy import load_policy
        from labeling.taxonomy import load_taxonomy

        self.policy = load_policy(Path(context.artifacts["policy"]))
        taxonomy = load_taxonomy()
        cfg = dict(context.model_config or {})
        self.score = float(cfg.get("score", 0.9))
        self.tag = str(cfg.get("tag", ""))
        self.fail_on = str(cfg.get("fail_on", ""))  # a conversation_id that makes predict raise
        self.sensitive = [
            (cat, _words_re(words))
            for cat, words in SENSITIVE_KEYWORDS.items()
            if cat in self.policy.categories
        ]
        self.interests = [
            (
                taxonomy.name_to_id(name),
                taxonomy.by_id(taxonomy.name_to_id(name)).name,
                _words_re(w),
            )
            for name, w in INTEREST_KEYWORDS.items()
        ]

    # No type hints on predict: MLflow would turn them into input validation (and warn).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        from labeling.records import render_turns

        records = (
            model_input.to_dict(orient="records")
            if hasattr(model_input, "to_dict")
            else model_input
        )
        out = []
        for rec in records:
            cid = rec.get("conversation_id")
            if self.fail_on and cid == self.fail_on:
                raise RuntimeError(f"scoring failure injected for {cid}")
            base = {
                "conversation_id": cid,
                "eligible": False,
                "interests": [],
                "excluded_reason": None,
                "sensitive_category": None,
                "model_version": self.tag or None,
                "policy_version": self.policy.version,
            }
            gate = self.policy.check(rec)
            if not gate.eligible:
                base["excluded_reason"] = gate.reason.value if gate.reason else "invalid_record"
                out.append(base)
                continue
            text = render_turns(rec["turns"])
            cat = next((c for c, rx in self.sensitive if rx.search(text)), None)
            if cat is not None:
                base["excluded_reason"] = "sensitive_topic"
                base["sensitive_category"] = cat
                out.append(base)
                continue
            base["eligible"] = True
            base["interests"] = [
                {"id": iid, "name": name, "score": self.score}
                for iid, name, rx in self.interests
                if rx.search(text)
            ]
            out.append(base)
        return out


def log_reference_model(
    tracking_uri: str,
    *,
    registered_name: str = "labelloop-targeting-filter",
    score: float = 0.9,
    tag: str = "",
    fail_on: str = "",
    alias: str | None = None,
    policy_path: Path | None = None,
    experiment: str = "labelloop-filter-reference",
) -> str:
    """Log and register a :class:`KeywordFilterModel`; return the new registered version.

    ``alias`` (e.g. ``production``) is moved to the new version when given.
    """
    import mlflow
    from mlflow import MlflowClient

    from labeling.policy import DEFAULT_POLICY_PATH, load_policy

    policy_file = Path(policy_path or DEFAULT_POLICY_PATH)
    policy = load_policy(policy_file)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with (
        mlflow.start_run(run_name=f"reference-filter{('-' + tag) if tag else ''}"),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=KeywordFilterModel(),
            artifacts={"policy": str(policy_file)},
            model_config={"score": score, "tag": tag, "fail_on": fail_on},
            registered_model_name=registered_name,
            metadata={"policy_version": policy.version, "kind": "keyword-reference"},
            pip_requirements=["mlflow"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_model_version_tag(registered_name, version, "policy_version", policy.version)
    if alias:
        client.set_registered_model_alias(registered_name, alias, version)
    return version
