"""The closing summary a person reads at the end of a run (report/summary.py), from recorded runs."""

from report.load import load_run
from report.summary import run_summary
from tests.report.test_report import CARE_METRICS, CARE_RECORDS, GRPO_METRICS, spec


def test_summary_counts_groups_repairs_and_the_sampler_gap_from_the_records():
    lines = run_summary(load_run(spec("care", *CARE_METRICS, CARE_RECORDS)))
    text = "\n".join(lines)
    assert lines[0].startswith("care: 3 steps (1-3), train accuracy")
    # the fixture's 12 group records: 9 mixed (anchored), 3 all-wrong (each rescued); 9 repairs tried
    assert "groups: 12 = 0 all-correct, 9 mixed, 3 all-wrong; CARE subgroups: 9 anchored, 3 rescued" in text
    assert "RGR: 9 repairs tried, 9 kept in the batch, 0 repaired" in text
    assert "sampler vs policy: max |p_rollout - p_actor| = 0.00036" in text
    assert len(lines) <= 5


def test_summary_reports_the_last_validation_with_the_benchmark_macro_average():
    run = load_run(spec("care", *CARE_METRICS))
    assert not any(line.startswith("validation") for line in run_summary(run))  # nothing validated
    run.steps[2].update({"val-core/mathvista/acc/mean@1": 0.5, "val-core/macro/acc": 0.2})
    run.steps[3].update({"val-core/mathvista/acc/mean@1": 0.75, "val-core/chartqa/acc/mean@1": 1.0,
                         "val-core/macro/acc": 0.125})
    line = next(line for line in run_summary(run) if line.startswith("validation"))
    assert line == "validation (val-core, step 3): benchmark macro 0.125; chartqa 1, mathvista 0.75"


def test_summary_without_records_counts_from_the_step_metrics_and_baselines_say_less():
    with_records = run_summary(load_run(spec("care", *CARE_METRICS, CARE_RECORDS)))
    from_metrics = run_summary(load_run(spec("care", *CARE_METRICS)))
    assert from_metrics[1] == with_records[1]  # the same group counts either way
    grpo = run_summary(load_run(spec("grpo", *GRPO_METRICS)))
    assert grpo[0].startswith("grpo: 2 steps (1-2), train reward") and not any("RGR" in line for line in grpo)
