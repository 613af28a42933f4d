"""python -m report on metrics and records recorded from the CPU smoke
(tests/report/fixtures: care = 3 steps with care.records on, grpo = 2 steps; see README there)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from report.__main__ import main as report_main
from report.build import build_report
from report.figures import PANELS, macro_average, panel_clip_by_sign
from report.load import ReportInputError, load_run
from tests.report.synthetic import ideal_group

REPO = Path(__file__).resolve().parents[2]

FIXTURES = Path(__file__).parent / "fixtures"
CARE_METRICS = [FIXTURES / "care-run1.jsonl", FIXTURES / "care-run2.jsonl"]
CARE_RECORDS = FIXTURES / "care_records"
GRPO_METRICS = [FIXTURES / "grpo-run1.jsonl", FIXTURES / "grpo-run2.jsonl"]
ALL_PANELS = {p.name for p in PANELS}
# What CARE's trainer adds to verl's metrics; a baseline has none of it.
CARE_ONLY = {"signature", "failure_signal_share", "variance_ratio", "group_mix", "k_prime_hist", "rescue_rate", "rgr",
             "accuracy"}


def spec(label, *paths):
    return f"{label}=" + ",".join(str(p) for p in paths)


def care_run():
    return load_run(spec("care", *CARE_METRICS, CARE_RECORDS))


def grpo_run():
    return load_run(spec("grpo", *GRPO_METRICS))


def test_care_run_draws_every_mechanism_panel_and_notes_the_missing_validation(tmp_path):
    run = care_run()
    assert sorted(run.steps) == [1, 2, 3] and run.groups and run.repairs
    result = build_report([run], tmp_path)
    assert set(result.figures) == ALL_PANELS - {"validation"}
    assert "val-core" in result.skipped["validation"]
    for path in result.figures.values():
        assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = result.index.read_text()
    for name in result.figures:
        assert f"]({name}.png)" in index
    assert "## Skipped panels" in index and "**validation**" in index
    assert "groups (care.records)" in index  # the signature fit is over the group records


def test_baseline_without_care_keys_skips_care_panels_and_says_why(tmp_path):
    result = build_report([grpo_run()], tmp_path)
    assert set(result.skipped) == CARE_ONLY | {"validation"}
    assert set(result.figures) == ALL_PANELS - CARE_ONLY - {"validation"}
    index = result.index.read_text()
    for name in result.skipped:
        assert f"**{name}**: {result.skipped[name]}" in index
    assert not (tmp_path / "signature.png").exists()


def test_metrics_without_records_fit_the_signature_over_step_buckets(tmp_path):
    run = load_run(spec("care", *CARE_METRICS))
    assert not run.groups
    result = build_report([run], tmp_path)
    assert "signature" in result.figures and "per-step K′ buckets" in result.index.read_text()


def test_two_runs_overlay_on_shared_axes_with_a_column_each(tmp_path):
    runs = [care_run(), grpo_run()]
    fig = panel_clip_by_sign(runs)
    for ax in fig.axes:
        assert ax.get_legend_handles_labels()[1] == ["care", "grpo"]
        assert ax.get_xlabel() == "training step" and ax.get_ylabel() and ax.get_title()
    result = build_report(runs, tmp_path)
    index = result.index.read_text()
    assert "| metric | care | grpo |" in index and "| step time (s) |" in index
    assert "signature" in result.figures  # drawn for the run that has it


def test_truncated_last_line_of_a_live_run_is_skipped_with_a_note(tmp_path):
    live = tmp_path / "care-run1.jsonl"
    text = CARE_METRICS[0].read_text()
    live.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # the run is mid-write
    run = load_run(spec("care", live))
    assert sorted(run.steps) == [1] and len(run.notes) == 1 and "incomplete" in run.notes[0]
    result = build_report([run], tmp_path / "out")
    assert "incomplete, skipped" in result.index.read_text()


@pytest.mark.parametrize("content, message", [
    ("", "no complete line"),
    ('{"step": 1, "data": {"a": 1}}\n{"step": 2, "da\n{"step": 3, "data": {}}\n', "line 2 is not valid JSON"),
    ('{"name": "x", "value": 3}\n', "not a verl file-logger line"),
    ("step,loss\n1,0.3\n", "not valid JSON"),
])
def test_empty_or_foreign_file_is_a_clear_error_naming_it(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(ReportInputError, match=message) as err:
        load_run(str(bad))
    assert str(bad) in str(err.value)


def test_cli_exit_code_and_message_for_bad_input(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2  # an empty folder
    assert "no verl file-logger metrics" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_on_a_run_folder_and_a_second_run(tmp_path, capsys):
    folder = tmp_path / "care_qwen"
    folder.mkdir()
    for path in CARE_METRICS:
        shutil.copy(path, folder)
    shutil.copytree(CARE_RECORDS, folder / "ckpt" / "care_records")
    out = tmp_path / "report"
    assert report_main([str(folder), spec("grpo", *GRPO_METRICS), "--out", str(out)]) == 0
    assert "figures" in capsys.readouterr().out
    index = (out / "index.md").read_text()
    assert "| care_qwen |" in index and "| grpo |" in index and (out / "signature.png").exists()


def test_validation_curves_and_macro_average(tmp_path):
    run = care_run()
    scores = {1: (0.2, 0.4), 3: (0.5, 0.3)}
    for step, (chart, geo) in scores.items():
        run.steps[step].update({"val-core/chartqa/acc/mean@1": chart, "val-core/geometry3k/acc/mean@1": geo,
                                "val-core/chartqa/acc/mean@4": 0.9, "val-aux/chartqa/reward/mean@1": 0.1})
    assert macro_average(run) == ([1, 3], [pytest.approx(0.3), pytest.approx(0.4)])
    result = build_report([run], tmp_path)
    assert "validation" in result.figures
    index = result.index.read_text()
    assert "| val-core macro average | 0.4 (best 0.4 @ 3) |" in index
    assert "| val chartqa | 0.5 (best 0.5 @ 3) |" in index  # mean@1 (single pass) over mean@4


def test_the_macro_average_is_the_trainers_six_benchmark_mean_when_logged(tmp_path):
    """With benchmarks validated next to the training mix's val split, the macro average is the
    trainer's val-core/macro/acc (the six only), not a mean that counts the mix's sources too."""
    run = care_run()
    for step in (1, 3):
        run.steps[step].update({"val-core/chartqa/acc/mean@1": 1.0, "val-core/mathvista/acc/mean@1": 0.25,
                                "val-core/macro/acc": 0.1 * step})
    assert macro_average(run) == ([1, 3], [pytest.approx(0.1), pytest.approx(0.3)])
    index = build_report([run], tmp_path).index.read_text()
    assert "| val-core macro average | 0.3 (best 0.3 @ 3) |" in index


def test_ideal_group_records_give_r_1_in_the_report(tmp_path):
    records = tmp_path / "ideal" / "care_records"
    records.mkdir(parents=True)
    groups = [ideal_group(step, f"g{step}-{kp}", kp) for step in (1, 2) for kp in (1, 2, 3, 4)]
    (records / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    run = load_run(str(tmp_path / "ideal"))
    result = build_report([run], tmp_path / "out")
    assert "signature" in result.figures
    row = next(line for line in result.index.read_text().splitlines() if line.startswith("| ideal | groups"))
    assert row.split("|")[3:8] == [" 8 ", " 1 ", " 1 ", " 1 ", " 1 "]


def test_a_step_rewritten_after_a_crash_keeps_its_last_records(tmp_path):
    records = tmp_path / "care_records"
    records.mkdir()
    first = [ideal_group(1, "a", 1), ideal_group(2, "old-a", 1), ideal_group(2, "old-b", 2)]  # crashed after step 2
    resumed = [ideal_group(2, "new", 3), ideal_group(3, "c", 4)]  # resumed from the step-1 checkpoint
    for rec in first:
        rec["run"] = "20261201T170000-11"
    for rec in resumed:
        rec["run"] = "20261201T171500-12"
    (records / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in first + resumed))
    run = load_run(str(records))
    assert [g["group"] for g in run.groups] == ["a", "new", "c"]


def eval_summary(acc: float) -> dict:
    """A results.json as the eval stage writes it (evaluation/results.py write_results)."""
    from evaluation.results import paper_reference
    from evaluation.tasks import BENCHMARKS

    benchmarks = {b: {"acc": acc, "n": 3, "task": f"care_{b}"} for b in BENCHMARKS}
    return {"benchmarks": benchmarks, "macro": acc, **paper_reference(), "model": "/x/hf_model", "prompt": "care"}


def test_the_eval_stages_results_join_the_report_beside_the_papers_rows(tmp_path):
    """A run's results.json (named in the spec, or at the stage's default <run folder>/eval/) becomes
    the final table: the paper's rows, then one row per evaluated run; a foreign JSON is refused."""
    care_eval = tmp_path / "care_eval.json"
    care_eval.write_text(json.dumps(eval_summary(0.5)))
    folder = tmp_path / "grpo_run"
    (folder / "eval").mkdir(parents=True)
    shutil.copy(GRPO_METRICS[0], folder / "metrics.jsonl")
    (folder / "eval" / "results.json").write_text(json.dumps(eval_summary(0.25)))
    runs = [load_run(spec("care", *CARE_METRICS, care_eval)), load_run(spec("grpo", folder))]
    assert runs[0].evaluation["macro"] == 0.5 and runs[1].evaluation["macro"] == 0.25
    index = build_report(runs, tmp_path / "out").index.read_text()
    table = index[index.index("## Final evaluation"):]
    assert "| +CARE (paper) | 74.7 |" in table
    assert "| care | **50.0** |" in table and "| grpo | **25.0** |" in table and table.count("**50.00** |") == 1
    foreign = tmp_path / "other.json"
    foreign.write_text(json.dumps({"accuracy": 1}))
    with pytest.raises(ReportInputError, match="not the eval stage's results.json"):
        load_run(spec("care", *CARE_METRICS, foreign))
    assert "## Final evaluation" not in build_report([care_run()], tmp_path / "none").index.read_text()


def test_the_final_table_shows_only_what_the_results_files_hold(tmp_path):
    """Without the reference rows and titles in results.json, the table is our rows under the benchmark keys."""
    bare = {k: v for k, v in eval_summary(0.5).items() if k not in ("titles", "reference")}
    (tmp_path / "results.json").write_text(json.dumps(bare))
    index = build_report([load_run(spec("care", *CARE_METRICS, tmp_path / "results.json"))], tmp_path / "out")
    table = index.index.read_text().split("## Final evaluation")[1].split("## Figures")[0]
    assert "(paper)" not in table and "| model | mathvista | mathverse |" in table
    assert "| care | **50.0** |" in table


def test_the_report_reads_results_json_without_importing_the_evaluation_package():
    code = ("import report, report.__main__, sys; "
            "bad = sorted(m for m in sys.modules if m == 'evaluation' or m.startswith('evaluation.')); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_eval_stage_gets_its_table_without_matplotlib():
    """evaluation/results.py renders results.md with report.eval_table: that must not load the figures."""
    code = "import evaluation.results, sys; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_metrics_moved_aside_merge_in_run_order_not_text_order(tmp_path):
    """metrics.10.jsonl was written after metrics.2.jsonl (and metrics.jsonl last): the later file wins."""
    for name, value in (("metrics.2.jsonl", 2), ("metrics.10.jsonl", 10), ("metrics.jsonl", 11), ("metrics.1.jsonl", 1)):
        (tmp_path / name).write_text(json.dumps({"step": 3, "data": {"x": value}}) + "\n")
    assert load_run(str(tmp_path)).steps[3]["x"] == 11
    (tmp_path / "metrics.jsonl").unlink()
    assert load_run(str(tmp_path)).steps[3]["x"] == 10
