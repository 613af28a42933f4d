"""The main job's embedded default end to end: ``python -m smoke`` (what
``bash run_care.sh --smoke`` runs) on CPU through verl's real v1 trainer, Ray included.

Each run is a subprocess under a hard time limit (``ray.get`` can ignore pytest's signal). The
assertions read verl's own step metrics, written by verl's file logger (one JSON line per step).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl")
# Each test runs the whole smoke (Ray, vLLM on CPU, minutes): never part of a quick "-m \"not slow and not ray\"" run.
pytestmark = [pytest.mark.slow, pytest.mark.ray]

from report.load import read_metrics  # noqa: E402
from smoke.cpu_run import SFT_STEPS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
QWEN3_SFT_STEPS = 40
HARD_LIMIT_S = 1500  # per smoke command; the whole CARE run (cold-start SFT, two vLLM engine starts, lmms-eval) takes ~12 min on 2 cores


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


def run_smoke(workdir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SMOKE_SFT_STEPS"} | {"PYTHONPATH": str(REPO)}  # the default users get
    log = workdir / f"smoke-{'-'.join(a.strip('-') for a in args)}.log"
    with open(log, "w") as fh:
        try:
            proc = subprocess.run([sys.executable, "-m", "smoke.driver", "--workdir", str(workdir), *args],
                                  cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=HARD_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"smoke {args} exceeded {HARD_LIMIT_S}s; log tail:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert proc.returncode == 0, f"smoke {args} failed (rc={proc.returncode}); log tail:\n{text[-6000:]}"
    return text


def finite(record: dict, key: str) -> float:
    value = record["data"].get(key)
    assert value is not None, f"step {record['step']} has no {key}"
    assert math.isfinite(float(value)), f"step {record['step']}: {key}={value}"
    return float(value)


def assert_sampler_is_the_policy(record: dict) -> None:
    """Rollout log-probs equal the actor's recomputation (both fp32 here), RGR-repaired rows included.

    An off-policy sampler (wrong image positions, stale weights after a sync, a misaligned repaired
    row) shows up here first; verl logs the comparison every step.
    """
    # Measured: ~4e-4 (KV-cached decoding vs one full forward); a sampler without the image
    # positions gave 0.7-0.9 here.
    diff = finite(record, "training/rollout_probs_diff_max")
    assert diff < SAMPLER_POLICY_BOUND, f"step {record['step']}: rollout and actor probabilities differ by up to {diff}"
    # a weight sync after every step (the first one replaces the engine's dummy start-up weights)
    assert finite(record, "timing_s/update_weights") > 0


SAMPLER_POLICY_BOUND = 1e-2


def assert_rollout_ran_on_vllm(workdir: Path, label: str, console: str) -> None:
    """Sampling went through verl's vLLM server on vLLM's CPU build, not a stand-in."""
    log = (workdir / "logs" / f"{label}.log").read_text()
    assert "CpuVLLMHttpServer pid=" in log, "no verl vLLMHttpServer actor in the run's log"
    assert "(EngineCore pid=" in log, "no vLLM engine process in the run's log"
    assert "rollout: verl's vLLMHttpServer on vLLM 0.24.0+cpu" in console


def stale_sampler_gap(old_policy: Path, new_policy: Path, prompt: str, samples: int = 8) -> tuple[float, float]:
    """verl's sampler-vs-policy metric (training/rollout_probs_diff_max, verl/utils/debug/metrics.py, the
    max over a batch) for ``samples`` responses sampled by ``new_policy``: (its value when the sampler
    holds the new weights, its value when the sampler still holds ``old_policy``'s, i.e. the weight syncs
    were skipped)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from verl import DataProto
    from verl.utils.debug.metrics import calculate_debug_metrics

    tokenizer = AutoTokenizer.from_pretrained(str(new_policy))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    new, old = (AutoModelForImageTextToText.from_pretrained(str(p), dtype=torch.float32).eval()
                for p in (new_policy, old_policy))
    synced, skipped = [], []
    for seed in range(samples):
        torch.manual_seed(seed)
        with torch.no_grad():
            full = new.generate(ids, max_new_tokens=48, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
            response = full[:, ids.shape[1]:]

            def log_probs(model):
                logits = model(full).logits[:, ids.shape[1] - 1:-1]
                return torch.log_softmax(logits.float(), -1).gather(-1, response[..., None]).squeeze(-1)

            actor, stale = log_probs(new), log_probs(old)
        batch = {"responses": response, "old_log_probs": actor, "response_mask": torch.ones_like(response)}
        synced.append(calculate_debug_metrics(DataProto.from_dict({**batch, "rollout_log_probs": actor.clone()})))
        skipped.append(calculate_debug_metrics(DataProto.from_dict({**batch, "rollout_log_probs": stale})))
    key = "training/rollout_probs_diff_max"
    return max(m[key] for m in synced), max(m[key] for m in skipped)


def assert_clip_split_by_sign(record: dict) -> None:
    """The actor's loss (vanilla_clip_by_sign, recipe/care/policy_loss.py) ran in the Ray workers."""
    split = finite(record, "actor/pg_clipfrac/pos_adv") + finite(record, "actor/pg_clipfrac/neg_adv")
    assert split == pytest.approx(finite(record, "actor/pg_clipfrac"), abs=1e-6), f"step {record['step']}"
    assert 0 <= finite(record, "actor/token_frac/pos_adv") + finite(record, "actor/token_frac/neg_adv") <= 1 + 1e-6


def assert_poisoned_rows_counted_and_named(workdir: Path, records: list[dict], console: str) -> None:
    """Every row the dataset skipped is in ``data/skipped_rows`` and has its ``care: skipped row`` line, and
    every rollout whose reward failed is in ``reward/failed_samples`` and has its ``care: reward failed`` line
    (the two counts are the run's own, whichever poisoned rows its sampler drew)."""
    log = (workdir / "logs" / "grpo-run1.log").read_text()
    skipped = sum(r["data"].get("data/skipped_rows", 0) for r in records)
    assert all("data/skipped_rows" in r["data"] for r in records)
    assert skipped > 0 and skipped == log.count("care: skipped row "), (skipped, log.count("care: skipped row "))
    failed = sum(r["data"].get("reward/failed_samples", 0) for r in records)
    assert failed == log.count("care: reward failed for row "), (failed, log.count("care: reward failed for row "))
    assert "poisoned rows (6 planted)" in console and "the run went on" in console


def assert_console_is_short_and_ends_with_a_summary(console: str, algo: str, workdir: Path) -> list[str]:
    """The smoke's console: no known-harmless warnings, no verl 50-metric step lines, a closing summary."""
    assert "engine is not available" not in console and "NUMA affinity" not in console
    assert not any(line.count(" - ") > 10 for line in console.splitlines()), "verl's step lines belong in the log"
    assert (workdir / "logs" / f"{algo}-run1.log").read_text().count("engine is not available") > 0  # still logged
    summary = console[console.index("---- summary ----"):].splitlines()
    assert len(summary) <= 16, summary
    text = "\n".join(summary)
    assert "stages: " in text and "report" in text
    assert f"{algo}: " in text and " steps (1-" in text
    assert "sampler vs policy: max |p_rollout - p_actor|" in text
    assert f"report: {workdir / 'report' / 'index.md'}" in text
    return summary


def assert_cold_start_sft_ran_through_verl(workdir: Path, log: str) -> None:
    """Stage 1: build_sft.py's set trained by verl's SFT trainer; CARE starts from its HF checkpoint."""
    report = (workdir / "sft_data" / "report.json").read_text()
    assert '"kept"' in report
    records = read_metrics(workdir / "metrics" / "sft.jsonl")  # verl's FileLogger, one line per SFT step
    assert [r["step"] for r in records] == list(range(1, SFT_STEPS + 1))
    losses = [finite(r, "train/loss") for r in records]
    for record in records:
        finite(record, "train/grad_norm")
        assert finite(record, "train/lr") > 0
    window = max(1, len(losses) // 5)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < 0.5 * first, f"SFT loss did not fall: {first:.3f} -> {last:.3f}"
    hf = workdir / f"sft-{SFT_STEPS}" / f"global_step_{SFT_STEPS}" / "huggingface"
    assert (hf / "config.json").exists() and any(hf.glob("*.safetensors"))
    assert f"actor_rollout_ref.model.path={hf}" in log or str(hf) in log, "CARE did not start from the SFT checkpoint"
    assert (workdir / "logs" / "sft.log").stat().st_size > 0, "the SFT run's output was not logged"
    summary = log[log.index("---- summary ----"):]
    assert "cold-start SFT, " in summary, "the summary does not list the SFT stage"


def assert_benchmarks_validated_and_evaluated(workdir: Path, validated: list[dict], label: str) -> None:
    """Each run validates on the six benchmark look-alikes after its last step
    (verl's val-core/<benchmark>/acc/mean@1 plus the trainer's macro), then the final checkpoint is
    merged by verl's merger and evaluated by lmms-eval on the same look-alikes (eval/results.json)."""
    import pyarrow.parquet as pq

    from evaluation.tasks import BENCHMARKS

    rows = {b: pq.read_metadata(workdir / "bench" / f"{b}.parquet").num_rows for b in BENCHMARKS}
    assert all(n > 0 for n in rows.values()), rows
    for record in validated:
        accs = [finite(record, f"val-core/{b}/acc/mean@1") for b in BENCHMARKS]
        assert all(0.0 <= a <= 1.0 for a in accs)
        assert finite(record, "val-core/macro/acc") == pytest.approx(sum(accs) / len(accs))
        for source in ("chartqa", "geometry3k"):  # the training mix's val split is validated too
            finite(record, f"val-core/{source}/acc/mean@1")
    results = json.loads((workdir / "eval" / "results.json").read_text())
    assert set(results["benchmarks"]) == set(BENCHMARKS)
    # lmms-eval read every question of each look-alike, the same questions verl validated on
    assert {b: v["n"] for b, v in results["benchmarks"].items()} == rows
    accs = [v["acc"] for v in results["benchmarks"].values()]
    assert all(0.0 <= a <= 1.0 for a in accs) and results["macro"] == pytest.approx(sum(accs) / len(accs))
    assert set(results["sample_logs"]) == set(BENCHMARKS) and results["prompt"] == "care"
    assert results["backend"] == "qwen2_5_vl" and "hf_model" in results["model"], "not verl's merged checkpoint"
    table = (workdir / "eval" / "results.md").read_text()
    assert "| +CARE (paper) |" in table and f"| {label} (smoke) |" in table


@pytest.mark.timeout(HARD_LIMIT_S + 60)
def test_care_smoke_runs_the_whole_loop_and_resumes(workdir):
    console = run_smoke(workdir, "--algo", "care", "--steps", "3")
    assert_cold_start_sft_ran_through_verl(workdir, console)
    run1 = read_metrics(workdir / "metrics" / "care-run1.jsonl")
    run2 = read_metrics(workdir / "metrics" / "care-run2.jsonl")

    # Steps 1-2 in the first run (checkpoint at 2), step 3 only in the resumed run.
    assert [r["step"] for r in run1] == [1, 2]
    assert [r["step"] for r in run2] == [3], "the resumed run must continue from the saved step"
    assert (workdir / "checkpoints" / "care" / "global_step_2").is_dir()
    assert (workdir / "checkpoints" / "care" / "global_step_3").is_dir()

    records = run1 + run2
    for record in records:
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "critic/advantages/mean"):
            finite(record, key)
        # CARE's diagnostics reach verl's metrics dict every step. Some are defined only for the
        # groups a step happens to have (sampling differs between machines): the variance ratio and
        # the mechanism signature need a mixed group, the rescue rate an all-wrong one.
        for key in ("care/groups/count", "care/acc", "care/subgroup_frac", "care/failure_signal_share",
                    "care/groups/mixed_frac", "care/groups/all_wrong_frac", "care/k_prime/0"):
            finite(record, key)
        if finite(record, "care/groups/mixed_frac") > 0:
            finite(record, "care/variance_ratio")
            assert any(k.startswith("care/signature/kp") for k in record["data"]), f"step {record['step']}"
        else:
            assert "care/variance_ratio" not in record["data"], "a ratio without a mixed group is made up"
        if finite(record, "care/groups/all_wrong_frac") > 0:
            finite(record, "care/rescue_rate")
        assert finite(record, "care/groups/count") == 4  # train_batch_size prompts, no padding groups lost
        assert_sampler_is_the_policy(record)
        assert_clip_split_by_sign(record)
        # RGR's repairs, decoded by vLLM, reach CARE's advantage step as reflected rows
        assert finite(record, "care/reflected_rows") == finite(record, "rgr/replaced"), f"step {record['step']}"
    assert_rollout_ran_on_vllm(workdir, "care-run1", console)
    assert_rollout_ran_on_vllm(workdir, "care-run2", console)

    # The sampler-vs-policy bound would catch skipped weight syncs: had vLLM kept the cold-start weights
    # it sampled with at step 1, verl's metric at step 3 would exceed it (measured on the run's own policies;
    # in a CI run one response gave 0.008, eight gave 0.20: verl's metric is a max over the step's batch).
    final_policy = workdir / "eval" / "hf_model"
    synced, skipped = stale_sampler_gap(workdir / f"sft-{SFT_STEPS}" / f"global_step_{SFT_STEPS}" / "huggingface",
                                        final_policy, "How many bars are in the chart?")
    assert synced == 0.0 and skipped > SAMPLER_POLICY_BOUND, (synced, skipped)

    # The cold-start SFT makes the reward visible: some groups take the anchored path or the rescue.
    anchored = sum(finite(r, "care/groups/mixed_frac") for r in records)
    rescued = sum(finite(r, "care/groups/all_wrong_frac") * r["data"].get("care/rescue_rate", 0.0) for r in records)
    assert anchored + rescued > 0, "no group took CARE's anchored path or the rescue"
    assert sum(finite(r, "care/acc") for r in records) > 0, "the reward never fired: nothing to learn from"

    # RGR: exactly one repair attempt per eligible (mixed) group, every step; some eligible overall.
    for record in records:
        eligible, triggered = finite(record, "rgr/eligible"), finite(record, "rgr/triggered")
        assert triggered == eligible, f"step {record['step']}: {triggered} repairs for {eligible} eligible groups"
        # A successful repair replaces a failure and can leave a mixed group all correct.
        mixed = finite(record, "care/groups/mixed_frac") * 4
        assert mixed <= eligible <= mixed + finite(record, "rgr/success"), f"step {record['step']}"
    assert sum(finite(r, "rgr/eligible") for r in records) > 0

    # care.records (on in the smoke): one group line per group per step, a repair line per RGR try
    record_dir = workdir / "checkpoints" / "care" / "care_records"
    groups = [json.loads(line) for line in (record_dir / "groups.jsonl").read_text().splitlines()]
    assert sorted({g["step"] for g in groups}) == [1, 2, 3] and len(groups) == 12
    repairs = (record_dir / "repairs.jsonl").read_text().splitlines() if (record_dir / "repairs.jsonl").exists() else []
    assert len(repairs) == sum(finite(r, "rgr/triggered") for r in records)

    assert_benchmarks_validated_and_evaluated(workdir, [run1[-1], run2[-1]], "care")

    # the report and the closing summary
    index = (workdir / "report" / "index.md").read_text()
    for figure in ("signature", "failure_signal_share", "variance_ratio", "clip_by_sign", "group_mix", "k_prime_hist",
                   "rgr", "accuracy", "step_time", "response_length"):
        assert (workdir / "report" / f"{figure}.png").stat().st_size > 0 and f"({figure}.png)" in index
    assert "groups (care.records)" in index, "the signature fit is over the group records"
    summary = "\n".join(assert_console_is_short_and_ends_with_a_summary(console, "care", workdir))
    assert "groups: 12 = " in summary and "anchored" in summary and "rescued" in summary
    assert "RGR: " in summary and "repairs tried" in summary
    assert "validation (val-core, step 3): benchmark macro " in summary
    assert "lmms-eval (eval/results.json): macro " in summary and "MMMU-Pro vision" in summary
    assert "evaluation: verl's merger + lmms-eval" in summary
    assert "| val-core macro average |" in index and (workdir / "report" / "validation.png").stat().st_size > 0
    assert "## Final evaluation (lmms-eval" in index and "| care | **" in index  # eval/results.json in the report


@pytest.mark.timeout(HARD_LIMIT_S + 60)
def test_grpo_baseline_runs_the_same_way(workdir):
    # The eval stage and the checkpoint round trip do not depend on ALGO (the CARE run covers both):
    # --no-eval and --no-resume keep CI short.
    # Poisoned rows ride along (smoke --poison): the run must go on, count each one and name it in the log.
    console = run_smoke(workdir, "--algo", "grpo", "--steps", "2", "--no-resume", "--no-eval", "--poison", "6")
    run1 = read_metrics(workdir / "metrics" / "grpo-run1.jsonl")
    assert [r["step"] for r in run1] == [1, 2]
    assert_poisoned_rows_counted_and_named(workdir, run1, console)
    for record in run1:
        finite(record, "actor/pg_loss")
        finite(record, "critic/advantages/mean")
        assert_sampler_is_the_policy(record)
        assert_clip_split_by_sign(record)  # the same diagnostics for the baseline
        assert not any(k.startswith("care/") for k in record["data"]), "GRPO must not run CARE's advantage step"
    assert_rollout_ran_on_vllm(workdir, "grpo-run1", console)
    # the same validation sets and macro average as the CARE run (care_baseline_sync): an A/B on the benchmarks
    finite(run1[-1], "val-core/macro/acc")
    assert not (workdir / "eval-grpo").exists()
    assert not (workdir / "checkpoints" / "grpo" / "care_records").exists()
    assert_console_is_short_and_ends_with_a_summary(console, "grpo", workdir)
    # the baseline joins the report next to the CARE run of the same workdir, when there is one
    index = (workdir / "report" / "index.md").read_text()
    assert "| grpo |" in index
    if (workdir / "metrics" / "care-run1.jsonl").exists():
        assert "| metric | care | grpo |" in index


@pytest.mark.timeout(HARD_LIMIT_S + 60)
def test_qwen3_vl_smoke_through_run_care_sh(workdir):
    """``bash run_care.sh --smoke --model qwen3-vl``: the tiny random Qwen3-VL (real Qwen3-VL tokenizer
    and template, single-token ``<think>``) through the same loop: CPU rollout, reward, RGR, think
    embeddings from verl's engine, CARE's advantages, update, weight sync."""
    env = {k: v for k, v in os.environ.items() if k != "SMOKE_SFT_STEPS"} | {
        "PYTHONPATH": str(REPO), "PYTHON": sys.executable, "ALGO": "care"}
    log = workdir / "smoke-qwen3-vl.log"
    with open(log, "w") as fh:
        try:
            # A shorter cold start than the default (CI time): the SFT stage's own effect is checked by
            # the CARE smoke; here it only has to run through verl for this family.
            proc = subprocess.run(["bash", str(REPO / "run_care.sh"), "--smoke", "--model", "qwen3-vl", "--workdir",
                                   str(workdir), "--steps", "2", "--no-resume", "--sft-steps", str(QWEN3_SFT_STEPS)],
                                  cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=HARD_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qwen3-vl smoke exceeded {HARD_LIMIT_S}s; log tail:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert proc.returncode == 0, f"qwen3-vl smoke failed (rc={proc.returncode}); log tail:\n{text[-6000:]}"
    assert_rollout_ran_on_vllm(workdir, "care-qwen3-vl-run1", text)
    # the cold-start SFT ran through verl for this family too, and CARE started from its checkpoint
    sft = read_metrics(workdir / "metrics" / "sft-qwen3-vl.jsonl")
    assert [r["step"] for r in sft] == list(range(1, QWEN3_SFT_STEPS + 1))
    hf = workdir / f"sft-qwen3-vl-{QWEN3_SFT_STEPS}" / f"global_step_{QWEN3_SFT_STEPS}" / "huggingface"
    assert (hf / "config.json").exists() and str(hf) in text
    records = read_metrics(workdir / "metrics" / "care-qwen3-vl-run1.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "critic/advantages/mean",
                    "care/groups/count", "care/acc", "care/subgroup_frac", "rgr/eligible"):
            finite(record, key)
        assert finite(record, "care/groups/count") == 4
        assert_sampler_is_the_policy(record)
        assert_clip_split_by_sign(record)
    # the six look-alikes validated after the last step, then verl's merger and lmms-eval's qwen3_vl backend
    finite(records[-1], "val-core/macro/acc")
    results = json.loads((workdir / "eval-care-qwen3-vl" / "results.json").read_text())
    assert results["backend"] == "qwen3_vl" and len(results["benchmarks"]) == 6
    assert "lmms-eval (eval-care-qwen3-vl/results.json): macro " in text
    # the CARE step had failures to contrast or rescue (a group without any failure has no subgroup)
    assert sum(finite(r, "care/groups/mixed_frac") + finite(r, "care/groups/all_wrong_frac") for r in records) > 0
