"""Progress of long commands when stderr is a log file rather than a terminal."""

from __future__ import annotations

import pytest

from labelloop import cli_common


def test_plain_progress_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([0.0, 0.0, 1.0, 11.5, 12.0, 12.0])  # start, then one reading per update
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    with cli_common.cli_progress(True) as update:
        update("embed segments", 10, 100)  # first line of a phase: shown
        update("embed segments", 20, 100)  # 1 s later: throttled
        update("embed segments", 90, 100)  # 11.5 s after the first: shown
        update("embed segments", 100, 100)  # complete: always shown
        update("fit", 0, 0)  # a phase without a total
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "embed segments: 10/100",
        "embed segments: 90/100",
        "embed segments: 100/100",
        "fit: 0",
    ]


def test_disabled_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with cli_common.cli_progress(False) as update:
        update("embed", 1, 2)
    assert capsys.readouterr().err == ""
