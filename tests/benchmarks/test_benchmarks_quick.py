"""Every script in benchmarks/ runs end to end in its --quick mode, so none can rot.

The scripts are collected from the folder: a new script without a --quick mode fails here unless it
is listed in ``NO_QUICK`` with the reason and where it is checked instead. Only the output's shape
and properties that hold whatever the machine's load are checked; the figures themselves are
ratios printed by the scripts (README), never timed assertions here.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
# A quick mode takes 2-40 s on a quiet 2-core machine, up to ~180 s (the verl-engine ones) at load
# average 10; the bound catches a quick mode that has grown into a real run, not a busy machine.
QUICK_TIMEOUT_S = 300
pytestmark = [pytest.mark.slow, pytest.mark.timeout(QUICK_TIMEOUT_S + 30)]

# Files in benchmarks/ with no --quick run here: the reason, and where they are checked instead.
NO_QUICK = {
    "gpu_check.py": "its real mode needs a GPU; the CPU mode (--device cpu --quick) runs in tests/benchmarks/test_gpu_check.py",
    "smoke_sft_accuracy.py": "trains the smoke's tiny model through torchrun + verl's SFT trainer for each length, "
                             "then samples every training prompt: minutes even for one short length. Its "
                             "imports and arguments are checked below (--help)",
    "rgr_sim_reward.py": "not a script: the reward function that verl loads by path in bench_rgr_rollout.py's "
                         "run, so that script's --quick covers it",
    "kill_resume.py": "SIGKILLs and restarts real smoke training jobs (Ray, vLLM-CPU), minutes per launch; its "
                      "pieces (the whole-job kill, the checks, the table) run in tests/benchmarks/test_kill_resume.py",
    "multinode_check.py": "starts a two-raylet Ray cluster and submits smoke jobs to it, tens of minutes; its "
                          "pieces (commands, ps parsing, log checks) run in tests/benchmarks/test_multinode_check.py",
}
# Scripts other branches are changing that lack --quick today: strict xfail, so the merge that adds
# the quick mode fails here until its entry is removed.
PENDING_QUICK: dict[str, str] = {}
# Scripts that need a package beyond the test extras (vLLM: scripts/install_cpu_stack.sh installs its CPU build).
NEEDS = {"bench_rgr_prefix_cache.py": "vllm"}
# Extra flags so the quick run covers every code path of the script.
QUICK_ARGS = {"bench_records.py": ["--quick", "--trainer"]}


def scripts() -> list[str]:
    return sorted(path.name for path in BENCHMARKS.glob("*.py"))


def run_script(script: str, *args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)
    assert proc.returncode == 0, f"{script} {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    return [line for line in proc.stdout.splitlines() if line.strip()]


def ratio(line: str, label: str) -> float:
    found = re.fullmatch(rf"{re.escape(label)}: (\d+\.\d+)", line)
    assert found, f"line {line!r} is not '{label}: X'"
    return float(found.group(1))


def check_advantage(lines: list[str]) -> None:
    assert ratio(lines[-1], "care/grpo time ratio") > 0
    parts = " ".join(lines)
    for part in ("spans (records -> masks)", "pool mask field", "advantages (sequence)", "token weights (region)", "metrics"):
        assert part in parts


def check_rgr_rollout(lines: list[str]) -> None:
    off = next(line for line in lines if line.startswith("rgr off:"))
    on = next(line for line in lines if line.startswith("rgr on :"))
    assert "64 rows" in off and "64 rows" in on  # 8 prompts x 8, none lost
    assert int(re.search(r"repairs (\d+)", on).group(1)) > 0 and "repairs 0 " in off
    assert float(re.search(r"timing_s/rgr (\d+\.\d+)", on).group(1)) > 0
    # the original rollouts are the same in both runs, RGR only adds work: never shorter
    assert ratio(lines[-1], "rgr rollout makespan ratio") >= 1.0


def check_think_embedding(lines: list[str]) -> None:
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])
    assert result["logprob_diff"] == 0.0  # the tap leaves verl's log-probs untouched
    assert result["time_on"] > 0 and result["time_off"] > 0
    assert 0 < result["tap_s_per_pass"] < result["time_on"]  # the pooling ran, inside the pass
    assert ratio(lines[-1], "think-embedding tap time ratio") > 0


def check_records(lines: list[str]) -> None:
    assert lines[0].startswith("batch: 8 prompts x 8 rollouts x 256 tokens")
    written = re.search(r"records on: .*\((\d+) KiB of JSON lines per step\)", " ".join(lines))
    assert written and int(written.group(1)) > 0  # the "on" steps did write records
    assert ratio(next(line for line in lines if line.startswith("trainer step")),
                 "trainer step records on/off time ratio") > 0
    assert ratio(lines[-1], "records on/off time ratio") > 0


def check_build_mix(lines: list[str]) -> None:
    total = next(line for line in lines if line.startswith("total "))
    read, kept = (int(v) for v in total.split()[1:3])
    assert read == 200 and kept == read  # every synthetic question is distinct: nothing dropped
    found = re.fullmatch(r"rows/s: (\d+), peak RSS MiB: (\d+)", lines[-1])
    assert found and int(found.group(1)) > 0 and int(found.group(2)) > 0, lines[-1]


def check_verifiers(lines: list[str]) -> None:
    assert any(line.startswith("mix: 256 responses") for line in lines)
    assert int(re.search(r"verifications/s per core: (\d+)", " ".join(lines)).group(1)) > 0
    beside = next(line for line in lines if line.startswith("correct beside hostile:"))
    assert beside.endswith("scored wrong: 0 of 4"), beside  # a hostile neighbour never costs a right answer
    assert lines[-1].startswith("hostile: ") and lines[-1].endswith("scored right: 0")


def check_rgr_prefix_cache(lines: list[str]) -> None:
    other = next(line for line in lines if line.startswith("cached share of the repair prompt, other replica"))
    assert "mean 0.000" in other  # a replica that never saw the failure holds none of its prefix
    # on the failure's engine the prompt, image and think prefix (whole KV blocks of them) are cached
    assert ratio(lines[-1], "repair prefix-cache hit rate (sticky)") > 0.3


CHECKS = {
    "bench_rgr_prefix_cache.py": check_rgr_prefix_cache,
    "bench_verifiers.py": check_verifiers,
    "bench_advantage.py": check_advantage,
    "bench_rgr_rollout.py": check_rgr_rollout,
    "bench_think_embedding.py": check_think_embedding,
    "bench_records.py": check_records,
    "bench_build_mix.py": check_build_mix,
}


def quick_params():
    for script in scripts():
        if script in NO_QUICK:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=PENDING_QUICK[script])] if script in PENDING_QUICK else []
        yield pytest.param(script, marks=marks, id=script)


def test_every_listed_script_exists():
    """An exclusion or check for a script that is gone would hide nothing, but would mislead."""
    present = set(scripts())
    for listed in (*NO_QUICK, *PENDING_QUICK, *NEEDS, *QUICK_ARGS, *CHECKS):
        assert listed in present, f"{listed} is listed in {Path(__file__).name} but not in benchmarks/"


@pytest.mark.parametrize("script", list(quick_params()))
def test_quick_mode_runs(script):
    source = (BENCHMARKS / script).read_text()
    assert '"--quick"' in source, (f"benchmarks/{script} has no --quick mode: add one that runs in seconds, "
                                   f"or list it in NO_QUICK with the reason")
    if script in NEEDS:
        pytest.importorskip(NEEDS[script])
    lines = run_script(script, *QUICK_ARGS.get(script, ["--quick"]))
    assert lines, f"{script} --quick printed nothing"
    assert re.search(r": \d", lines[-1]), f"{script}: the last line {lines[-1]!r} is not its figure"
    check = CHECKS.get(script)
    if check is not None:
        check(lines)


def test_sft_accuracy_script_imports_and_parses():
    lines = run_script("smoke_sft_accuracy.py", "--help")
    assert any("--steps" in line for line in lines)
