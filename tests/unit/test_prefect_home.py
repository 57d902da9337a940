"""Prefect's home is in the state dir: the stack's server and every process that runs flows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
from labelloop.settings import Settings
from flows.demo import point_prefect_at
point_prefect_at(Settings(_env_file=None))
from prefect.settings import get_current_settings
s = get_current_settings()
print(s.home)
print(s.results.local_storage_path)
print(s.profiles_path)
"""


def _probe(env: dict[str, str]) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LABELLOOP_"))}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, cwd=REPO, capture_output=True,
        text=True, timeout=300, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-3:]


def test_flows_keep_prefect_files_in_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    home, results, profiles = (Path(p) for p in _probe({"LABELLOOP_STATE_DIR": str(state)}))
    assert home == state.resolve() / "prefect"
    assert results.is_relative_to(home) and profiles.is_relative_to(home)


def test_a_prefect_home_set_by_the_user_wins(tmp_path: Path) -> None:
    mine = tmp_path / "my-prefect"
    env = {"LABELLOOP_STATE_DIR": str(tmp_path / "state"), "PREFECT_HOME": str(mine)}
    assert Path(_probe(env)[0]) == mine


def test_the_stack_server_runs_with_its_home_in_the_state_dir(tmp_path: Path) -> None:
    from infra.stack import SERVICES
    from labelloop.settings import Settings

    settings = Settings(_env_file=None, state_dir=tmp_path / "state")  # type: ignore[call-arg]
    prefect = next(s for s in SERVICES if s.name == "prefect")
    env = prefect.env(settings)
    assert Path(env["PREFECT_HOME"]) == settings.prefect_home
    assert settings.prefect_home.is_relative_to(settings.state)
    assert (
        str(settings.prefect_home / "prefect.db") in env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    )
