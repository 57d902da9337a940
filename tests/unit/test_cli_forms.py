"""Command-line forms: several paths after one ``--from-records`` or ``sample --input``, the model
version given as ``VERSION`` on both ``evaluate`` and ``approve``; the old spellings
(``sample FILES``, ``--version VERSION``) still work, hidden from the help, with a deprecation
notice on stderr; ``labelloop --help`` in sections.

The stage functions (train, gate, promote) are replaced by recorders: these tests check what the CLI parses and
hands on, not training or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from labelloop.cli import app
from labelloop.cli_common import spread_option_values


# ---- the argv rewrite ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--from-records", "a", "b"], ["--from-records", "a", "--from-records", "b"]),
        (["--from-records", "a", "--from-records", "b"], ["--from-records", "a", "--from-records", "b"]),
        (["--from-records=a", "b"], ["--from-records=a", "--from-records", "b"]),
        (["--from-records", "a", "b", "--json", "c"], ["--from-records", "a", "--from-records", "b", "--json", "c"]),
        (["--seed", "1", "x"], ["--seed", "1", "x"]),
        (["--from-records", "a", "--", "b"], ["--from-records", "a", "--", "b"]),
        (["--from-records", "--json"], ["--from-records", "--json"]),
    ],
)  # fmt: skip
def test_spread_option_values(args: list[str], expected: list[str]) -> None:
    assert spread_option_values(args, {"--from-records"}) == expected


# ---- train --from-records ------------------------------------------------------------------------
@pytest.fixture
def train_calls(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from labelloop import stages

    calls: list[dict[str, Any]] = []

    def fake_train(rt: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        outcome = SimpleNamespace(
            metrics={"leak_rate": 0.0, "false_block_rate": 0.0, "interest_micro_f1": 1.0},
            run_url="http://mlflow/run/1",
            model_uri="models:/filter/1",
            version="1",
            snapshot_hash="0" * 64,
        )
        return stages.TrainReport(outcome)  # type: ignore[arg-type]

    monkeypatch.setattr(stages, "train", fake_train)
    return calls


def _files(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for n in names:
        p = tmp_path / n
        p.write_text("{}\n", encoding="utf-8")
        out.append(p)
    return out


@pytest.mark.parametrize(
    "form",
    [
        lambda a, b, c: ["train", "--from-records", a, b, c],
        lambda a, b, c: ["train", "--from-records", a, "--from-records", b, "--from-records", c],
        lambda a, b, c: ["train", "--from-records", a, b, "--from-records", c],
        lambda a, b, c: ["train", f"--from-records={a}", b, c],
    ],
    ids=["one-flag", "repeated", "mixed", "equals"],
)
def test_train_takes_several_record_files(
    form: Any, train_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    a, b, c = _files(tmp_path, "a.jsonl", "b.jsonl", "c.jsonl")
    res = CliRunner().invoke(app, form(str(a), str(b), str(c)))
    assert res.exit_code == 0, res.output
    assert [call["from_records"] for call in train_calls] == [[a, b, c]]
    assert train_calls[0]["use_embeddings"] is True


def test_train_options_after_the_record_files(
    train_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    a, b = _files(tmp_path, "a.jsonl", "b.jsonl")
    res = CliRunner().invoke(app, ["train", "--from-records", str(a), str(b), "--no-embeddings"])
    assert res.exit_code == 0, res.output
    assert train_calls == [
        {"from_records": [a, b], "use_embeddings": False, "progress": train_calls[0]["progress"]}
    ]


def test_train_without_records_uses_the_store(train_calls: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(app, ["train"])
    assert res.exit_code == 0, res.output
    assert train_calls[0]["from_records"] is None


def test_train_names_a_missing_record_file(
    train_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    (a,) = _files(tmp_path, "a.jsonl")
    missing = tmp_path / "nope.jsonl"
    res = CliRunner().invoke(app, ["train", "--from-records", str(a), str(missing)])
    assert res.exit_code == 2
    assert "nope.jsonl" in res.output and train_calls == []


def test_train_still_refuses_a_stray_argument(train_calls: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(app, ["train", "--no-embeddings", "stray.jsonl"])
    assert res.exit_code == 2 and train_calls == []


# ---- sample --input ------------------------------------------------------------------------------
@pytest.fixture
def ingest_calls(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[Path]]:
    from labeling.sampling import SampleReport
    from labelloop import stages

    calls: list[list[Path]] = []

    def fake_ingest(rt: Any, paths: Any, **kwargs: Any) -> stages.IngestReport:
        calls.append(list(paths))
        return stages.IngestReport("r-1", len(calls[-1]), SampleReport(inserted=1))

    monkeypatch.setattr(stages, "ingest", fake_ingest)
    return calls


@pytest.mark.parametrize(
    "form",
    [
        lambda a, b: ["sample", "--input", a, b, "--json"],
        lambda a, b: ["sample", "-i", a, "-i", b, "--json"],
        lambda a, b: ["sample", f"--input={a}", b, "--seed", "1", "--json"],
    ],
    ids=["one-flag", "repeated", "equals"],
)
def test_sample_takes_several_input_files(
    form: Any, ingest_calls: list[list[Path]], tmp_path: Path
) -> None:
    a, b = _files(tmp_path, "a.jsonl", "b.jsonl")
    res = CliRunner().invoke(app, form(str(a), str(b)))
    assert res.exit_code == 0, res.output
    assert ingest_calls == [[a, b]]
    assert "deprecated" not in res.stderr


def test_sample_positional_files_still_work_with_a_notice(
    ingest_calls: list[list[Path]], tmp_path: Path
) -> None:
    a, b = _files(tmp_path, "a.jsonl", "b.jsonl")
    res = CliRunner().invoke(app, ["sample", str(a), str(b), "--json"])
    assert res.exit_code == 0, res.output
    assert ingest_calls == [[a, b]]
    assert "deprecated: labelloop sample FILES; use labelloop sample --input FILES" in res.stderr
    assert "deprecated" not in res.stdout  # the JSON report stays parseable
    assert '"inserted": 1' in res.stdout


def test_sample_needs_input_and_hides_the_old_form(ingest_calls: list[list[Path]]) -> None:
    missing = CliRunner().invoke(app, ["sample"])
    assert missing.exit_code == 2 and "--input" in missing.output and ingest_calls == []
    help_text = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--input" in help_text and "-i" in help_text
    assert "files" not in help_text.split("Usage:")[1].splitlines()[0].lower()


# ---- the model version: VERSION (or, deprecated, --version VERSION) --------------------------------
@pytest.fixture
def gate_calls(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    from labelloop import stages

    calls: list[tuple[str, str]] = []

    def fake_gate(rt: Any, version: str) -> Any:
        calls.append(("evaluate", version))
        result = SimpleNamespace(passed=True, notes=[], table_markdown=lambda: "| gate |")
        return stages.GateReport(result)  # type: ignore[arg-type]

    def fake_promote(rt: Any, version: str, **kwargs: Any) -> stages.PromoteReport:
        calls.append(("approve", version))
        return stages.PromoteReport(version, "1", changed=True)

    monkeypatch.setattr(stages, "gate", fake_gate)
    monkeypatch.setattr(stages, "promote", fake_promote)
    return calls


@pytest.mark.parametrize("command", ["evaluate", "approve"])
def test_version_positional(command: str, gate_calls: list[tuple[str, str]]) -> None:
    res = CliRunner().invoke(app, [command, "7"])
    assert res.exit_code == 0, res.output
    assert gate_calls == [(command, "7")]
    assert "deprecated" not in res.stderr


@pytest.mark.parametrize("command", ["evaluate", "approve"])
@pytest.mark.parametrize(
    "form",
    [["--version", "7"], ["-v", "7"], ["--version=7"], ["7", "--version", "7"]],
    ids=["long", "short", "equals", "both-agree"],
)
def test_version_option_still_works_with_a_notice(
    command: str, form: list[str], gate_calls: list[tuple[str, str]]
) -> None:
    res = CliRunner().invoke(app, [command, *form])
    assert res.exit_code == 0, res.output
    assert gate_calls == [(command, "7")]
    assert f"deprecated: labelloop {command} --version V; use labelloop {command} V" in res.stderr


@pytest.mark.parametrize("command", ["evaluate", "approve"])
def test_version_option_is_hidden_from_the_help(command: str) -> None:
    help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    assert "VERSION" in help_text
    assert "--version" not in help_text and "-v " not in help_text


@pytest.mark.parametrize("command", ["evaluate", "approve"])
def test_version_missing_or_conflicting(command: str, gate_calls: list[tuple[str, str]]) -> None:
    missing = CliRunner().invoke(app, [command])
    assert missing.exit_code == 2 and "give the model version as VERSION" in missing.output
    both = CliRunner().invoke(app, [command, "7", "--version", "8"])
    assert both.exit_code == 2 and "two different versions" in both.output
    assert gate_calls == []


def test_approve_force_keeps_working_with_either_form(gate_calls: list[tuple[str, str]]) -> None:
    for form in (["approve", "3", "--force", "--reason", "x"], ["approve", "--force", "-v", "3"]):
        res = CliRunner().invoke(app, form)
        assert res.exit_code == 0, res.output
    assert gate_calls == [("approve", "3"), ("approve", "3")]


# ---- the same option names across commands ---------------------------------------------------------
@pytest.mark.parametrize("command", ["sample", "propose", "plan", "filter"])
def test_record_files_are_given_with_input(command: str) -> None:
    from labelloop.cli import app as main

    cmd = typer.main.get_command(main).commands[command]  # type: ignore[attr-defined]
    [param] = [p for p in cmd.params if p.name in ("inputs", "input", "input_path")]
    assert param.opts == ["--input", "-i"] and not param.hidden


# ---- labelloop --help in sections ------------------------------------------------------------------
def test_help_groups_the_commands_in_sections() -> None:
    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    panels = [ln.strip("╭─╮ ") for ln in lines if ln.startswith("╭─")]
    assert panels == ["Options", "Loop", "Review", "Model", "Serving", "Stack"]
    section: dict[str, str] = {}
    current = ""
    for ln in lines:
        if ln.startswith("╭─"):
            current = ln.strip("╭─╮ ")
        elif ln.startswith("│ ") and ln[2:3].isalpha():
            section[ln[2:].split()[0]] = current
    assert section == {
        "sample": "Loop", "run": "Loop", "serve": "Loop", "demo": "Loop", "propose": "Loop",
        "plan": "Loop", "data": "Loop",
        "review": "Review", "annotate-sim": "Review",
        "train": "Model", "evaluate": "Model", "approve": "Model", "rollback": "Model",
        "models": "Model",
        "filter": "Serving", "audit": "Serving",
        "stack": "Stack", "store": "Stack", "config": "Stack",
    }  # fmt: skip
