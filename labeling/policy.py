"""The targeting policy and the eligibility gate.

The policy is a YAML file shipped in the repo (``labeling/data/policy.yaml``); the sha256 of its
bytes is the policy version. The gate answers one question for a record: may this conversation be
used for ad targeting at all (before any content model looks at it)? It **fails closed**: a missing
or unknown country, an unparseable or naive date, an unknown or disabled surface, or a non-boolean
``account_linked`` all make the record ineligible, with a reason code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from labeling.records import Conversation, Surface

DEFAULT_POLICY_PATH = Path(__file__).parent / "data" / "policy.yaml"

# ISO 3166-1 alpha-2 officially assigned codes (249). Anything else is an unknown country.
ISO_COUNTRIES = frozenset(
    [
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    ]
)


class PolicyError(ValueError):
    """The policy file is invalid."""


class ExclusionReason(StrEnum):
    """Why a conversation produces no ad signal. The decision API exposes only these codes."""

    REGION = "region"
    UNLINKED_ACCOUNT = "unlinked_account"
    BEFORE_POLICY_DATE = "before_policy_date"
    SURFACE_DISABLED = "surface_disabled"
    SENSITIVE_TOPIC = "sensitive_topic"
    INVALID_RECORD = "invalid_record"
    MODEL_UNAVAILABLE = "model_unavailable"
    # a turn is in a language whose filter quality has not been measured (policy
    # ``supported_languages``): the filter cannot judge it, so it refuses (no category revealed)
    UNSUPPORTED_LANGUAGE = "unsupported_language"


class SensitiveCategory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    description: str = Field(min_length=10)
    examples: list[str] = Field(default_factory=list)


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    effective_date: date
    require_linked_account: bool = True
    enabled_surfaces: list[Surface]
    excluded_countries: dict[str, list[str]]
    sensitive_categories: dict[str, SensitiveCategory] = Field(min_length=1)
    # ISO 639-1 codes of the languages the filter may judge; a conversation with a turn in any
    # other (detected) language is not eligible (reason unsupported_language)
    supported_languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)

    @field_validator("supported_languages")
    @classmethod
    def _language_codes(cls, v: list[str]) -> list[str]:
        for code in v:
            if not (len(code) in (2, 3) and code.isalpha() and code == code.lower()):
                raise ValueError(f"supported_languages: {code!r} is not an ISO 639-1 code")
        return v

    @field_validator("excluded_countries")
    @classmethod
    def _iso_codes(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for group, codes in v.items():
            for c in codes:
                if c not in ISO_COUNTRIES:
                    raise ValueError(
                        f"excluded_countries.{group}: {c!r} is not an ISO 3166-1 alpha-2 code"
                    )
        return v

    @field_validator("sensitive_categories")
    @classmethod
    def _category_keys(cls, v: dict[str, SensitiveCategory]) -> dict[str, SensitiveCategory]:
        for key in v:
            if not key.isidentifier() or key != key.lower():
                raise ValueError(
                    f"sensitive category key {key!r} must be a lower_snake_case identifier"
                )
        return v


@dataclass(frozen=True)
class PolicyCheck:
    eligible: bool
    reason: ExclusionReason | None
    detail: str = ""


@dataclass(frozen=True)
class Policy:
    doc: PolicyDoc
    version: str  # sha256 of the file bytes
    path: Path

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.doc.sensitive_categories)

    @property
    def excluded_countries(self) -> frozenset[str]:
        return frozenset(c for codes in self.doc.excluded_countries.values() for c in codes)

    @property
    def effective_from(self) -> datetime:
        d = self.doc.effective_date
        return datetime(d.year, d.month, d.day, tzinfo=UTC)

    @property
    def short_version(self) -> str:
        return self.version[:12]

    @property
    def supported_languages(self) -> frozenset[str]:
        return frozenset(self.doc.supported_languages)

    def describe_categories(self) -> dict[str, str]:
        return {k: v.description for k, v in self.doc.sensitive_categories.items()}

    def check(self, record: Conversation | Mapping[str, Any]) -> PolicyCheck:
        """The eligibility gate. Fails closed on anything missing, unknown or unparseable."""
        if isinstance(record, Conversation):
            country: Any = record.country
            linked: Any = record.account_linked
            started: Any = record.started_at
            surface: Any = record.surface.value
        elif isinstance(record, Mapping):
            country = record.get("country")
            linked = record.get("account_linked")
            started = record.get("started_at")
            surface = record.get("surface")
        else:
            return PolicyCheck(False, ExclusionReason.INVALID_RECORD, "record is not an object")

        # Region first: an excluded person's data is never used, whatever else holds.
        if not isinstance(country, str) or country.strip().upper() not in ISO_COUNTRIES:
            return PolicyCheck(
                False, ExclusionReason.REGION, f"unknown or missing country {country!r}"
            )
        if country.strip().upper() in self.excluded_countries:
            return PolicyCheck(
                False, ExclusionReason.REGION, f"country {country.strip().upper()} is excluded"
            )
        if self.doc.require_linked_account and linked is not True:
            return PolicyCheck(False, ExclusionReason.UNLINKED_ACCOUNT, "account is not linked")
        ts = _parse_ts(started)
        if ts is None:
            return PolicyCheck(
                False,
                ExclusionReason.INVALID_RECORD,
                f"started_at {started!r} is not a tz-aware timestamp",
            )
        if ts < self.effective_from:
            return PolicyCheck(
                False,
                ExclusionReason.BEFORE_POLICY_DATE,
                f"started {ts.isoformat()} before {self.doc.effective_date.isoformat()}",
            )
        enabled = {s.value for s in self.doc.enabled_surfaces}
        if not isinstance(surface, str) or surface not in {s.value for s in Surface}:
            return PolicyCheck(
                False, ExclusionReason.SURFACE_DISABLED, f"unknown surface {surface!r}"
            )
        if surface not in enabled:
            return PolicyCheck(
                False, ExclusionReason.SURFACE_DISABLED, f"surface {surface} is disabled"
            )
        return PolicyCheck(True, None)


def _parse_ts(v: Any) -> datetime | None:
    if isinstance(v, datetime):
        ts = v
    elif isinstance(v, str):
        try:
            ts = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if ts.tzinfo is None or ts.utcoffset() is None:
        return None
    return ts.astimezone(UTC)


def load_policy(path: Path | None = None) -> Policy:
    """Load and validate a policy file; its sha256 becomes the version."""
    p = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {p}: {exc}") from exc
    try:
        data = yaml.safe_load(raw)
        doc = PolicyDoc.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise PolicyError(f"invalid policy file {p}: {exc}") from exc
    return Policy(doc=doc, version=hashlib.sha256(raw).hexdigest(), path=p)
