"""Training's (stage, done, total) reports as progress steps."""

from __future__ import annotations

from flows.progress import listen, stages_progress, step_progress


def test_each_training_stage_is_a_step_that_listeners_see_finish() -> None:
    seen: list[tuple[str, int, int]] = []
    with listen(lambda step, done, total: seen.append((step, done, total))):
        on = stages_progress("train-1", "training")
        on("embed", 0, 4096)
        on("embed", 2048, 4096)
        assert step_progress("train-1:embed") is not None
        on("embed", 4096, 4096)
        on("fit", 1, 3)
    assert step_progress("train-1:embed") is None  # finished steps are closed
    assert [s for s in seen if s[0] == "embed"] == [
        ("embed", 0, 4096),
        ("embed", 2048, 4096),
        ("embed", 4096, 4096),
    ]
    assert seen[-1] == ("fit", 1, 3)
