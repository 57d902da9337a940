"""Prompt files: strict loading, rendering and content hashing.

A prompt file (``prompts/<name>.yaml``) has ``name``, ``version``, the declared ``variables`` and two
Jinja templates, ``system`` and ``user``. Loading is strict:

* unknown top-level keys, a missing field or a template syntax error -> :class:`PromptError`;
* the variables the templates actually use (``jinja2.meta.find_undeclared_variables``) must equal
  the declared ``variables``; rendering must pass exactly those keys (no more, no fewer), and any
  undefined attribute inside the template raises (``StrictUndefined``).

The prompt's identity is the sha256 of the file bytes (:attr:`PromptTemplate.sha256`): any edit is a
new hash, recorded in every proposal row and in every MLflow run that uses it.

:func:`label_prompt_variables` builds the variables of the label-proposal prompt from the policy
and the taxonomy, so that what the prompt offers is always exactly the taxonomy's tier-1 interests
plus the policy's categories (the drift-guard test checks the rendered text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
import jinja2.meta
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeling.policy import Policy
from labeling.taxonomy import Taxonomy

PROMPTS_DIR: Final = Path(__file__).resolve().parent.parent / "prompts"
LABEL_PROMPT_NAME: Final = "propose_labels"

__all__ = [
    "LABEL_PROMPT_NAME",
    "PROMPTS_DIR",
    "PromptError",
    "PromptTemplate",
    "RenderedPrompt",
    "label_prompt_variables",
    "load_prompt",
    "offered_interests",
]


class PromptError(ValueError):
    """A prompt file is invalid, or rendering got the wrong variables."""


class PromptDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    version: int | str
    variables: list[str] = Field(min_length=1)
    system: str = Field(min_length=1)
    user: str = Field(min_length=1)


@dataclass(frozen=True)
class RenderedPrompt:
    system: str
    user: str
    prompt_hash: str

    def messages(self) -> list[tuple[str, str]]:
        """``[("system", ...), ("human", ...)]`` (LangChain message tuples)."""
        return [("system", self.system), ("human", self.user)]


_ENV: Final = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - plain-text prompts, never HTML
    keep_trailing_newline=False,
)


@dataclass(frozen=True)
class PromptTemplate:
    doc: PromptDoc
    sha256: str
    path: Path
    _system: jinja2.Template
    _user: jinja2.Template

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def version(self) -> str:
        return str(self.doc.version)

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(self.doc.variables)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def render(self, **variables: Any) -> RenderedPrompt:
        """Render both templates; the keys must be exactly the declared variables."""
        given = set(variables)
        missing = sorted(self.variables - given)
        unknown = sorted(given - self.variables)
        if missing or unknown:
            raise PromptError(
                f"prompt {self.name!r}: missing variables {missing}, unknown variables {unknown}"
            )
        try:
            system = self._system.render(**variables)
            user = self._user.render(**variables)
        except jinja2.UndefinedError as exc:
            raise PromptError(f"prompt {self.name!r}: {exc}") from exc
        return RenderedPrompt(system=system.strip(), user=user.strip(), prompt_hash=self.sha256)


def load_prompt(name_or_path: str | Path = LABEL_PROMPT_NAME) -> PromptTemplate:
    """Load ``prompts/<name>.yaml`` (or a path) strictly; see the module docstring."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = PROMPTS_DIR / f"{name_or_path}.yaml"
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PromptError(f"cannot read prompt file {p}: {exc}") from exc
    try:
        data = yaml.safe_load(raw)
        doc = PromptDoc.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise PromptError(f"invalid prompt file {p}: {exc}") from exc
    used: set[str] = set()
    templates: list[jinja2.Template] = []
    for part in ("system", "user"):
        src = getattr(doc, part)
        try:
            used |= jinja2.meta.find_undeclared_variables(_ENV.parse(src))
            templates.append(_ENV.from_string(src))
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{p}: {part} template: {exc}") from exc
    declared = set(doc.variables)
    if used != declared:
        raise PromptError(
            f"{p}: templates use variables {sorted(used)} but the file declares "
            f"{sorted(declared)} (undeclared: {sorted(used - declared)}, "
            f"unused: {sorted(declared - used)})"
        )
    return PromptTemplate(
        doc=doc,
        sha256=hashlib.sha256(raw).hexdigest(),
        path=p,
        _system=templates[0],
        _user=templates[1],
    )


def offered_interests(taxonomy: Taxonomy) -> tuple[tuple[str, str], ...]:
    """``(iab_id, name)`` of the interests the label prompt offers: the taxonomy's tier-1 nodes.

    Tier 2 is left out on purpose: 33 names keep the prompt short enough for a 1.5B model on
    two cores, and gold data is tier-1 only. Tier-2 refinement is the classifiers' job.
    """
    return tuple((i.id, i.name) for i in taxonomy.tier1())


def label_prompt_variables(
    policy: Policy,
    taxonomy: Taxonomy,
    *,
    examples: Sequence[Mapping[str, str]] = (),
    conversation: str,
) -> dict[str, Any]:
    """The variables of the label-proposal prompt (exactly its declared set)."""
    return {
        "categories": policy.describe_categories(),
        "interests": [name for _, name in offered_interests(taxonomy)],
        "examples": [dict(e) for e in examples],
        "conversation": conversation,
    }
