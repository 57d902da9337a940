"""labelloop config show / env-example: effective values with their source, secrets masked, and
.env.example generated from the settings (drift guard)."""

from __future__ import annotations

import json
from pathlib import Path

from labelloop.config_report import effective_config, env_example
from labelloop.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_env_example_is_generated_from_settings() -> None:
    """Regenerate with `uv run labelloop config env-example > .env.example`."""
    assert (REPO / ".env.example").read_text(encoding="utf-8") == env_example()


def test_every_setting_is_documented_in_env_example() -> None:
    text = env_example()
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
        assert f"# LABELLOOP_{name.upper()}=" in text
    # secrets never appear with a value, not even the dev defaults
    for secret in (
        "labelloop-dev-password",
        "dev-filter-key",
        "dev-admin-key",
        "labelloop-dev-token",
    ):
        assert secret not in text


def test_sources_and_masking(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "LABELLOOP_MLFLOW_PORT=5055\nLABELLOOP_LABEL_STUDIO_PASSWORD=from-dotenv-77\n"
    )
    environ = {"LABELLOOP_HOST": "10.0.0.5", "LABELLOOP_FILTER_API_KEY": "env-secret-value-42"}
    s = Settings(_env_file=dotenv, host="10.0.0.5", filter_api_key="env-secret-value-42")  # type: ignore[call-arg, arg-type]
    rows = {r.name: r for r in effective_config(s, environ=environ, env_file=dotenv)}
    assert (rows["host"].value, rows["host"].source) == ("10.0.0.5", "environment")
    assert (rows["mlflow_port"].value, rows["mlflow_port"].source) == ("5055", ".env")
    assert (rows["prefect_port"].value, rows["prefect_port"].source) == ("4200", "default")
    assert (
        rows["filter_api_key"].value == "****42" and rows["filter_api_key"].source == "environment"
    )
    assert rows["label_studio_password"].value == "****77"
    assert rows["label_studio_password"].source == ".env"
    assert rows["filter_admin_key"].value == "**** (dev default)"
    assert all(
        "secret-value" not in r.value and "from-dotenv" not in r.value for r in rows.values()
    )
    assert len(rows) == len(Settings.model_fields)


def test_config_show_cli_masks_secrets(isolated_env: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from labelloop.cli import app

    monkeypatch.setenv("LABELLOOP_LABEL_STUDIO_TOKEN", "a-token-that-must-not-show-0123456789abcd")
    monkeypatch.setenv("LABELLOOP_PREFECT_PORT", "4300")
    res = CliRunner().invoke(app, ["config", "show", "--json", "--changed"])
    assert res.exit_code == 0, res.output
    assert "must-not-show" not in res.output
    data = json.loads(res.output)
    by_name = {r["name"]: r for r in data["settings"]}
    assert set(by_name) >= {"label_studio_token", "prefect_port", "state_dir"}
    assert by_name["prefect_port"] == {
        **by_name["prefect_port"],
        "value": "4300",
        "source": "environment",
    }
    assert "prefect_port" in by_name and "mlflow_port" not in by_name  # --changed
    assert data["derived"]["Prefect API"].endswith(":4300/api")
