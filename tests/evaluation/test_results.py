"""Aggregation of lmms-eval output into results.json / results.md, on lmms-eval-shaped fixtures."""

import json
import math
import os

import pytest

from evaluation.results import EvalResultError, check_sample_logs, collect, find_results_file, write_results
from evaluation.tasks import BENCHMARKS, LMMS_TASKS, PAPER_ROWS

ACCS = dict(zip(BENCHMARKS, [0.75, 0.5, 0.25, 0.625, 0.375, 0.125]))
NS = dict(zip(BENCHMARKS, [1000, 3940, 3040, 900, 1730, 1730]))


def lmms_results(accs=ACCS, ns=NS) -> dict:
    """The shape lmms-eval 0.7.3 (lm-eval-harness fork) writes to <model>/<time>_results.json."""
    results, n_samples = {}, {}
    for bench, acc in accs.items():
        task = LMMS_TASKS[bench]
        results[task] = {"alias": task, "acc_score,none": acc, "acc_score_stderr,none": "N/A",
                         "format_score,none": 1.0, "format_score_stderr,none": "N/A"}
        n_samples[task] = {"original": ns[bench], "effective": ns[bench]}
    return {"results": results, "group_subtasks": {t: [] for t in results}, "configs": {}, "versions": {},
            "n-samples": n_samples, "config": {"model": "qwen2_5_vl"}}


def test_collect_macro_is_the_unweighted_mean():
    summary = collect(lmms_results())
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    assert summary["benchmarks"]["mathverse"] == {"acc": 0.5, "n": 3940, "task": LMMS_TASKS["mathverse"]}
    assert summary["macro"] == pytest.approx(sum(ACCS.values()) / 6)  # not weighted by n


@pytest.mark.parametrize("bench", BENCHMARKS)
def test_missing_task_fails_loudly_and_names_it(bench):
    raw = lmms_results()
    del raw["results"][LMMS_TASKS[bench]]
    with pytest.raises(EvalResultError, match=bench):
        collect(raw)


@pytest.mark.parametrize("damage", ["no_metric", "nan", "zero_samples", "no_n_samples", "string_value"])
def test_empty_or_broken_task_fails(damage):
    raw = lmms_results()
    task = LMMS_TASKS["mmmu"]
    if damage == "no_metric":
        del raw["results"][task]["acc_score,none"]
    elif damage == "nan":
        raw["results"][task]["acc_score,none"] = math.nan
    elif damage == "zero_samples":
        raw["n-samples"][task] = {"original": 0, "effective": 0}
    elif damage == "no_n_samples":
        del raw["n-samples"][task]
    else:
        raw["results"][task]["acc_score,none"] = "N/A"
    with pytest.raises(EvalResultError, match="mmmu"):
        collect(raw)


def test_write_results_json_and_markdown(tmp_path):
    summary = write_results(lmms_results(), str(tmp_path), label="care step 100")
    on_disk = json.load(open(tmp_path / "results.json"))
    assert on_disk["benchmarks"]["mathvista"] == {"acc": 0.75, "n": 1000, "task": LMMS_TASKS["mathvista"]}
    assert on_disk["macro"] == pytest.approx(summary["macro"])
    md = (tmp_path / "results.md").read_text()
    assert "| care step 100 | **75.0** | **50.0** | **25.0** | **62.5** | **37.5** | **12.5** | **43.75** |" in md
    for name in PAPER_ROWS:
        assert name in md
    assert "| +CARE (paper) | 74.7 | 56.8 | 32.6 | 62.5 | 39.7 | 37.1 | 50.57 |" in md


def test_results_json_holds_what_its_table_needs(tmp_path):
    """The report renders results.json alone (no evaluation import): the file carries the titles and the
    paper's rows, and the report's table of it is the results.md table."""
    from report.eval_table import comparison_table

    write_results(lmms_results(), str(tmp_path), label="care step 100")
    on_disk = json.load(open(tmp_path / "results.json"))
    assert list(on_disk["titles"]) == list(BENCHMARKS)
    assert set(on_disk["reference"]["rows"]) == set(PAPER_ROWS)
    care = on_disk["reference"]["rows"]["+CARE (paper)"]
    assert list(care["benchmarks"].values()) == list(PAPER_ROWS["+CARE (paper)"]) and care["macro"] == 50.57
    assert (tmp_path / "results.md").read_text().endswith(comparison_table({"care step 100": on_disk}))


def test_write_results_refuses_incomplete_output_and_writes_nothing(tmp_path):
    raw = lmms_results()
    del raw["results"][LMMS_TASKS["mathvision"]]
    with pytest.raises(EvalResultError):
        write_results(raw, str(tmp_path))
    assert not os.path.exists(tmp_path / "results.json")


def test_results_file_and_sample_logs_are_found_in_lmms_evals_layout(tmp_path):
    with pytest.raises(EvalResultError, match="no \\*_results.json"):
        find_results_file(str(tmp_path))
    model_dir = tmp_path / "__tmp__hf_model"
    model_dir.mkdir()
    (model_dir / "20261201_120000_results.json").write_text(json.dumps(lmms_results()))
    assert find_results_file(str(tmp_path)) == str(model_dir / "20261201_120000_results.json")
    for task in list(LMMS_TASKS.values())[:-1]:
        (model_dir / f"20261201_120000_samples_{task}.jsonl").write_text('{"doc_id": 0}\n')
    with pytest.raises(EvalResultError, match=LMMS_TASKS["mmmu_pro_vision"]):
        check_sample_logs(str(tmp_path))
    (model_dir / f"20261201_120000_samples_{LMMS_TASKS['mmmu_pro_vision']}.jsonl").write_text('{"doc_id": 0}\n')
    assert set(check_sample_logs(str(tmp_path))) == set(BENCHMARKS)
