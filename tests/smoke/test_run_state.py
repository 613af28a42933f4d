"""smoke/run_state.py: the same command on the same workdir continues an unfinished run, else starts over."""

from smoke.run_state import STATE_FILE, open_run

PLAN = {"algo": "care", "steps": 3, "overrides": ["care.k=2"]}
STAGES = ["run1", "run2", "eval"]


def _run_folder(tmp_path):
    folder = tmp_path / "checkpoints" / "care"
    metrics = tmp_path / "metrics" / "care-run1.jsonl"
    metrics.parent.mkdir(parents=True)
    return folder, metrics


def test_a_new_workdir_starts_a_new_run(tmp_path):
    folder, metrics = _run_folder(tmp_path)
    state, how = open_run(folder, PLAN, STAGES, [metrics])
    assert how.startswith("a new run") and "starting over" not in how
    assert (folder / STATE_FILE).is_file() and state.finished == []


def test_an_unfinished_run_is_continued_with_its_checkpoints_and_metrics(tmp_path):
    folder, metrics = _run_folder(tmp_path)
    state, _ = open_run(folder, PLAN, STAGES, [metrics])
    state.finish("run1")
    (folder / "global_step_2").mkdir()
    metrics.write_text('{"step": 1, "data": {}}\n')
    again, how = open_run(folder, dict(PLAN), STAGES, [metrics])
    assert how.startswith("continuing") and "next: run2" in how
    assert again.done("run1") and not again.done("run2")
    assert (folder / "global_step_2").is_dir() and metrics.is_file()


def test_a_finished_run_or_another_plan_or_fresh_starts_over(tmp_path):
    folder, metrics = _run_folder(tmp_path)
    state, _ = open_run(folder, PLAN, STAGES, [metrics])
    for stage in STAGES:
        state.finish(stage)
    (folder / "global_step_3").mkdir()
    metrics.write_text("x\n")
    _, how = open_run(folder, PLAN, STAGES, [metrics])
    assert "the run there is finished" in how and not (folder / "global_step_3").exists() and not metrics.exists()

    state, _ = open_run(folder, PLAN, STAGES, [metrics])
    state.finish("run1")
    _, how = open_run(folder, {**PLAN, "steps": 5}, STAGES, [metrics])
    assert "other options (steps)" in how

    state, _ = open_run(folder, PLAN, STAGES, [metrics])
    state.finish("run1")
    again, how = open_run(folder, PLAN, STAGES, [metrics], fresh=True)
    assert "--fresh" in how and again.finished == []


def test_a_folder_without_state_is_not_resumed(tmp_path):
    folder, metrics = _run_folder(tmp_path)
    (folder / "global_step_1").mkdir(parents=True)
    _, how = open_run(folder, PLAN, STAGES, [metrics])
    assert "no smoke state" in how and not (folder / "global_step_1").exists()


def test_a_torn_state_file_starts_over(tmp_path):
    folder, metrics = _run_folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text('{"plan": {"al')
    state, how = open_run(folder, PLAN, STAGES, [metrics])
    assert "no smoke state" in how and state.finished == []
