"""The smoke's console: the closing summary (from a recorded run) and what reaches the console."""

from report.load import load_run
from report.summary import run_summary
from smoke.driver import console_line
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


def test_known_harmless_warnings_and_verl_step_lines_stay_off_the_console():
    harmless = [
        "\x1b[36m(pid=12860)\x1b[0m /x/verl/workers/engine/__init__.py:69: UserWarning: megatron engine is not "
        "available: ModuleNotFoundError(\"No module named 'megatron'\")",
        "(pid=1)   warnings.warn(f\"megatron engine is not available: {e!r}\", stacklevel=1)",
        "Warning: Failed to set NUMA affinity: libnuma.so: cannot open shared object file",
        "2026-12-01 17:06:29,700 - WARNING - transfer_queue.utils.common - target_num_threads 8 should not exceed "
        "total physical CPU cores 2. Setting to 2.",
        "(CareTaskRunner pid=1) step:1 - global_seqlen/min:2990.0 - actor/pg_loss:0.1",
        # verl 0.9.1's SFT dataset calls the Qwen-VL processor in transformers 5.9's deprecated way
        "WARNING:2026-12-01 18:32:50,293:Kwargs passed to `processor.__call__` have to be in `processor_kwargs` "
        "dict, not in `**kwargs`",
        "WARNING:2026-12-01 18:32:53,771:`torch_dtype` is deprecated! Use `dtype` instead!",
    ]
    for line in harmless:
        assert not console_line(line, verbose=False) and not console_line(line, verbose=True), line
    assert console_line("Traceback (most recent call last):", verbose=False)
    assert console_line("(WorkerDict pid=3) RuntimeError: gloo timed out", verbose=False)
    assert console_line("UserWarning: something new", verbose=False)  # an unknown warning is shown
    assert not console_line("(CareTaskRunner pid=1) dataset len: 17", verbose=False)
    assert console_line("(CareTaskRunner pid=1) dataset len: 17", verbose=True)


def test_the_smoke_process_silences_its_own_known_harmless_warnings(capsys):
    import logging
    import warnings

    from smoke.driver import quiet_known_harmless

    platform = logging.getLogger("verl.plugin.platform.platform_manager")
    saved = list(platform.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_harmless()
        warnings.warn("megatron engine is not available: ModuleNotFoundError(\"No module named 'megatron'\")",
                      UserWarning)
        warnings.warn("something else", UserWarning)
        kept = platform.filter(logging.LogRecord(platform.name, logging.WARNING, "", 0, "Platform 'nvidia' "
                                                 "(PlatformCUDA) is registered but not available.", None, None))
    platform.filters[:] = saved
    assert [str(w.message) for w in caught] == ["something else"]
    assert not kept
