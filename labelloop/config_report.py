"""The configuration as people read it: the effective value of every setting and where it came
from (``labelloop config show``), and ``.env.example`` generated from :class:`Settings`.

Sources, in pydantic-settings' order of precedence: an argument (tests), the environment
(``LABELLOOP_<NAME>``), the ``.env`` file, the default. Secrets are masked: ``****`` with the
last two characters for a set value, ``dev default`` when it is the documented development value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from labelloop.settings import Settings

ENV_PREFIX = "LABELLOOP_"
HEADER = """\
# labelloop settings: copy to .env and uncomment what you change. Generated from
# labelloop/settings.py by `labelloop config env-example > .env.example` (a test keeps the two
# equal). Every line shows the default. `labelloop config show` prints the effective value of
# each setting and where it comes from (environment, .env, default); secrets are masked.
"""


@dataclass(frozen=True)
class ConfigRow:
    name: str
    env_var: str
    value: str  # as shown (secrets masked)
    source: str  # environment | .env | default | argument
    description: str


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a .env file (what pydantic-settings reads; comments ignored)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mask(value: SecretStr, default: SecretStr | None) -> str:
    raw = value.get_secret_value()
    if default is not None and raw == default.get_secret_value():
        return "**** (dev default)"
    if len(raw) < 8:
        return "****"
    return "****" + raw[-2:]


def effective_config(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
) -> list[ConfigRow]:
    """Every setting: its effective value and its source (in declaration order)."""
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    dotenv = _read_dotenv(env_file) if env_file is not None else {}
    rows: list[ConfigRow] = []
    for name, field in type(settings).model_fields.items():
        var = env_var(name)
        value = getattr(settings, name)
        if var in env:
            source = "environment"
        elif var in dotenv:
            source = ".env"
        elif name in settings.model_fields_set:
            source = "argument"
        else:
            source = "default"
        if isinstance(value, SecretStr):
            default = field.default if isinstance(field.default, SecretStr) else None
            shown = mask(value, default)
        else:
            shown = _show(value)
        rows.append(ConfigRow(name, var, shown, source, field.description or ""))
    return rows


def derived(settings: Settings) -> dict[str, str]:
    """Values computed from the settings that people look for (URLs, paths)."""
    from labelloop.safe_text import without_credentials

    return {
        "label store": without_credentials(settings.db_url),
        "MLflow": without_credentials(settings.mlflow_uri),
        "Prefect API": without_credentials(settings.prefect_api),
        "Prefect home": str(settings.prefect_home),
        "Label Studio": without_credentials(settings.label_studio),
        "LLM server (local GGUF)": settings.llm_server_url,
        "filter": settings.filter_url,
        "models": str(settings.models_dir),
    }


def _example_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_example(settings_cls: type[Settings] = Settings) -> str:
    """The text of ``.env.example``: every setting, its description and its default."""
    lines = [HEADER]
    for name, field in settings_cls.model_fields.items():
        desc = (field.description or "").strip()
        default = field.default
        if isinstance(default, SecretStr):
            desc += " (secret; the dev default works only with LABELLOOP_ENV=dev)"
        lines.append(f"# {desc}" if desc else "#")
        lines.append(f"# {env_var(name)}={_example_value(default)}")
    return "\n".join(lines) + "\n"
