"""The CPU smoke run: tiny model + tiny data built offline, then a few CARE steps through verl's real trainer.

    python -m smoke [--algo care|grpo|dapo|gspo] [--workdir DIR] [--steps 3] [key=value ...]
    bash run_care.sh --smoke                 # the same, ALGO from the environment

What it does, with no GPU and no network:

1. **Tiny model, cold-start SFT**: the random tiny Qwen2.5-VL of :mod:`smoke.tiny_models`
   (real Qwen2.5 vocabulary, real processor and chat template), fine-tuned by the pipeline's own
   cold-start stage: a tiny Vision-R1-cold look-alike (two sharegpt JSON files and image folders,
   drawn with PIL) goes through the real ``data_prep/build_sft.py`` (rewritten into
   ``<think>...</think><answer>N</answer>`` with the RL instruction), then verl's own SFT trainer
   (``torchrun -m recipe.care.main_sft``, the recipe's ``care_sft.yaml`` at tiny scale, FSDP2 on
   gloo) trains it and saves the Hugging Face checkpoint the CARE runs start from; its metrics go
   through verl's file logger to ``<workdir>/metrics/sft.jsonl``. A random model never answers
   correctly, so without this every group is all-wrong and the reward is invisible; after it,
   sampled answers are right some of the time, so groups are mixed (CARE's anchored path) as well
   as all-wrong (the rescue). The questions are countable (bars in a chart, a number printed in a
   triangle) on other pictures than the RL set's, and the SFT stops short of memorising, so the
   policy still has something to learn.
2. **Tiny data**: ChartQA- and Geometry3K-shaped datasets drawn with PIL (like
   ``tests/data_prep``), saved with ``datasets.save_to_disk`` and turned into verl parquet by the
   real ``data_prep/build_mix.py``.
3. **Training**: ``python -m recipe.care.main_care`` on verl's CPU platform
   (``verl_cpu``: gloo, FSDP engine on CPU, sdpa) with verl's own vLLM rollout on vLLM's CPU
   build (``rollout.name=vllm``, :mod:`verl_cpu.vllm_cpu`), the ``care`` reward manager, RGR
   when ``recipe.care.rgr`` is installed;
   steps 1..N-1 with a checkpoint at step N-1, then a second run that resumes from it and does step N.
   Each run validates after its last step on look-alikes of the six evaluation benchmarks
   (``data_prep/bench_fixtures.py`` through the real ``data_prep/build_bench.py``; the mix excludes
   them with ``--exclude-bench``), greedy, one pass: ``val-core/<benchmark>/acc/mean@1`` and
   ``val-core/macro/acc``, as ``BENCH_DIR`` gives a GPU run.
4. **Evaluation**: the pipeline's eval stage (``python -m evaluation.run_eval``) on the last
   checkpoint: verl's model merger, then lmms-eval's Hugging Face backend on CPU (its own virtualenv,
   created on first use) on the same look-alikes; ``<workdir>/eval/results.json`` and ``results.md``.
5. **Report** with plots (``report``) and a closing summary.

Sizes: 4 prompts x 6 rollouts per step, responses <= 48 tokens, K=2, one FSDP worker. It shows
that the whole loop runs (rollout, reward, RGR, think embeddings, advantages, update, weight sync,
checkpoint, resume); it says nothing about speed or accuracy, which need GPUs and a real model.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from evaluation.run_eval import lmms_eval_venv_ready
from recipe.care.launch_args import detach_from_ray_job
from report.load import read_metrics
from smoke.console import ANSI, VERL_STEP_LINE, console_line, log, quiet_known_harmless
from smoke.cpu_run import (MAX_RESPONSE, SFT_BATCH, SFT_LR, SFT_MAX_LENGTH, SFT_STEPS, existing_ray_cluster, job_env,
                           job_overrides, rgr_available, rgr_overrides)
from smoke.run_state import open_run
from smoke.tiny_data import build_bench_data, build_data, build_sft_data

REPO = Path(__file__).resolve().parents[1]

ANSWER_FORMAT = "<think>{reason}</think><answer>{answer}</answer>"


# ---------------------------------------------------------------------------------------------
# tiny model + cold-start SFT (verl's SFT trainer)
# ---------------------------------------------------------------------------------------------
def chat_prompt(row: dict, processor) -> tuple[str, list]:
    """A verl parquet row -> (chat-templated prompt text with one image slot per ``<image>``, images)."""
    from PIL import Image

    images = [Image.open(io.BytesIO(img["bytes"])).convert("RGB") for img in row["images"]]
    content = []
    for i, part in enumerate(row["prompt"][-1]["content"].split("<image>")):
        if i:
            content.append({"type": "image"})
        if part:
            content.append({"type": "text", "text": part})
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    return prompt, images


SFT_CPU_OVERRIDES = (
    # verl's SFT trainer on the CPU platform (verl_cpu): sdpa, fp32, no compile, padded batches
    "trainer.device=cpu",
    "+model.override_config.attn_implementation=sdpa",
    "model.use_fused_kernels=false",
    "model.use_remove_padding=false",  # Qwen2.5-VL mrope + packing fails on CPU, as in the RL runs
    "model.enable_gradient_checkpointing=false",
    "engine.use_torch_compile=false",
    "+engine.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
    "data.num_workers=0",
)


def sft_overrides(base: Path, sft_data: Path, ckpt: Path, steps: int) -> list[str]:
    """The smoke's cold-start stage: the recipe config (care_sft.yaml) at the tiny model's scale."""
    return [
        *SFT_CPU_OVERRIDES,
        f"model.path={base}",
        f"data.train_files=[{','.join(sorted(str(p) for p in sft_data.glob('train-*.parquet')))}]",
        f"data.max_length={SFT_MAX_LENGTH}",
        f"data.max_token_len_per_gpu={SFT_MAX_LENGTH * SFT_BATCH}",
        f"data.train_batch_size={SFT_BATCH}",
        f"data.micro_batch_size_per_gpu={SFT_BATCH}",
        # a random 10M-parameter model needs a far larger step than a 7B one (5e-6) to learn in minutes
        f"optim.lr={SFT_LR}",
        "optim.lr_warmup_steps_ratio=0",
        "optim.lr_scheduler_type=constant",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=1000",  # the step count decides
        "trainer.save_freq=-1",  # the last step saves
        "trainer.logger=[console,file]",
        "trainer.project_name=care-verl-smoke",
        "trainer.experiment_name=sft_smoke",
        f"trainer.default_local_dir={ckpt}",
        "trainer.resume_mode=disable",
        "trainer.seed=0",
    ]


def run_sft(python: str, base: Path, sft_data: Path, ckpt: Path, steps: int, metrics: Path,
            timeout: float | None = None) -> Path:
    """``torchrun -m recipe.care.main_sft`` (verl's SFT trainer) on CPU; returns the Hugging Face checkpoint."""
    shutil.rmtree(ckpt, ignore_errors=True)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.unlink(missing_ok=True)
    # one process on the whole machine: both cores (the Ray jobs pin OMP to 1 thread per worker)
    # torchrun's ranks are not Ray processes, even when the smoke runs as a `ray job submit` entrypoint
    env = detach_from_ray_job({**job_env(), "VERL_USE_EXTERNAL_MODULES": "verl_cpu,recipe.care.verl_fixes",
                               "VERL_FILE_LOGGER_PATH": str(metrics),
                               "OMP_NUM_THREADS": str(max(1, min(4, os.cpu_count() or 1)))})
    cmd = [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1",
           "-m", "recipe.care.main_sft", *sft_overrides(base, sft_data, ckpt, steps)]
    log(f"cold-start SFT: torchrun -m recipe.care.main_sft ... ({steps} steps of {SFT_BATCH}, lr {SFT_LR})")
    run_logged(cmd, env, "cold-start SFT", metrics.parent.parent / "logs" / "sft.log", timeout)
    hf = ckpt / f"global_step_{steps}" / "huggingface"
    if not (hf / "config.json").exists():
        raise SystemExit(f"[smoke] verl's SFT trainer wrote no Hugging Face checkpoint at {hf}")
    losses = [r["data"]["train/loss"] for r in read_metrics(metrics) if "train/loss" in r["data"]]
    if losses:
        log(f"SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps (verl metrics: {metrics})")
    return hf


# --model: the tiny model's family. The GPU presets' names (recipe/care/presets.py) map to their family.
SMOKE_MODELS = ("qwen2.5-vl", "qwen3-vl")


def smoke_family(model: str) -> str:
    from recipe.care.presets import PRESETS

    if model in SMOKE_MODELS:
        return model
    if model in PRESETS:
        return PRESETS[model].family
    raise SystemExit(f"[smoke] unknown --model {model!r}; choose one of {', '.join([*SMOKE_MODELS, *PRESETS])}")


def tiny_base_dir(family: str) -> Path:
    from smoke.tiny_models import tiny_qwen3_vl_dir, tiny_qwen25_vl_dir

    return tiny_qwen3_vl_dir() if family == "qwen3-vl" else tiny_qwen25_vl_dir()


def build_model(workdir: Path, python: str, rl_train_files: list[str], sft_steps: int,
                timeout: float | None = None, family: str = "qwen2.5-vl") -> Path:
    """Tiny random model of ``family`` -> build_sft.py cold-start set -> verl SFT; returns the SFT checkpoint."""
    base = tiny_base_dir(family)
    tag = "" if family == "qwen2.5-vl" else f"-{family}"  # per family: a workdir can hold both
    ckpt = workdir / f"sft{tag}-{sft_steps}"
    hf = ckpt / f"global_step_{sft_steps}" / "huggingface"
    if not (ckpt / ".complete").exists():
        sft_data = build_sft_data(workdir, base, python, rl_train_files)
        run_sft(python, base, sft_data, ckpt, sft_steps, workdir / "metrics" / f"sft{tag}.jsonl", timeout)
        (ckpt / ".complete").write_text(json.dumps({"steps": sft_steps, "lr": SFT_LR, "batch": SFT_BATCH}))
    return hf


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
def run_job(python: str, algo: str, overrides: list[str], label: str, timeout: float | None, metrics: Path) -> None:
    """One ``main_care`` run; verl's file logger writes its step metrics to ``metrics`` (JSON lines).

    The run's whole output goes to ``<workdir>/logs/<metrics stem>.log``; the console gets a line
    per finished step and the lines that may matter (see :func:`console_line`), or everything but
    known-harmless warnings with ``SMOKE_VERBOSE=1``.
    """
    metrics.parent.mkdir(parents=True, exist_ok=True)  # an earlier file (a killed run's) is kept by main_care
    log_path = metrics.parent.parent / "logs" / f"{metrics.stem}.log"
    overrides = [*overrides, f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}"]
    # --model none: the smoke's own sizes, not a GPU preset (main_care's default is one)
    cmd = [python, "-m", "recipe.care.main_care", "--algo", algo, "--model", "none", *overrides]
    log(f"{label}: python -m recipe.care.main_care --algo {algo} ... ({len(overrides)} overrides); log: {log_path}")
    run_logged(cmd, {**job_env(), "VERL_FILE_LOGGER_PATH": str(metrics)}, label, log_path, timeout, metrics)


def run_logged(cmd: list[str], env: dict, label: str, log_path: Path, timeout: float | None,
               step_metrics: Path | None = None) -> None:
    """Run ``cmd`` with its whole output in ``log_path`` and only what may matter on the console.

    ``step_metrics``: verl's file-logger output of a PPO run, for one short console line per step.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    verbose = os.environ.get("SMOKE_VERBOSE", "") not in ("", "0")
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        reader = threading.Thread(target=_route_output, args=(proc.stdout, log_file, step_metrics, verbose),
                                  daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(10)
            raise SystemExit(f"[smoke] {label} exceeded {timeout}s; full log: {log_path}\n{_tail(log_path)}")
        reader.join(30)
    if proc.returncode != 0:
        raise SystemExit(f"[smoke] {label} failed with exit code {proc.returncode}; full log: {log_path}\n"
                         f"{_tail(log_path)}")


def _route_output(stream, log_file, metrics: Path | None, verbose: bool) -> None:
    for line in stream:
        log_file.write(line)
        log_file.flush()
        if console_line(line, verbose):
            print(line, end="", flush=True)
        match = metrics is not None and VERL_STEP_LINE.search(ANSI.sub("", line))
        if match:
            step_line(metrics, int(match.group(1)))


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# (label, metric key, format) of the one line printed per finished step.
STEP_LINE_KEYS = (("loss", "actor/pg_loss", ".3g"), ("acc", "care/acc", ".2f"), ("reward", "critic/score/mean", ".2f"),
                  ("mixed", "care/groups/mixed_frac", ".2f"), ("all-wrong", "care/groups/all_wrong_frac", ".2f"),
                  ("RGR tried", "rgr/triggered", ".0f"), ("repaired", "rgr/success", ".0f"),
                  ("len", "response_length/mean", ".0f"), ("time", "timing_s/step", ".0f"))


def step_line(metrics: Path, step: int) -> None:
    """A short line for a finished step (verl's console logger prints all ~100 metrics; they stay in the log)."""
    try:
        line = next((r for r in read_metrics(metrics) if r.get("step") == step), None)
    except (OSError, ValueError):  # the file logger may be mid-write
        line = None
    if line is None:
        log(f"step {step} done")
        return
    data = line["data"]
    parts = [f"{name} {data[key]:{spec}}" + ("s" if key == "timing_s/step" else "")
             for name, key, spec in STEP_LINE_KEYS if isinstance(data.get(key), (int, float))]
    log(f"step {step}: " + ", ".join(parts))


def run_eval_stage(python: str, ckpt: Path, bench_raw: Path, workdir: Path, family: str, label: str,
                   timeout: float | None) -> dict:
    """The pipeline's eval stage on the run's last checkpoint: ``python -m evaluation.run_eval`` (what
    ``bash run_care.sh --stage eval`` runs) merges the FSDP actor with verl's model merger, then lmms-eval
    (its own virtualenv, created on first use) runs the six look-alikes through its Hugging Face backend
    on CPU, greedy, with the trained prompt; writes ``<workdir>/eval/results.json`` and ``results.md``
    (``eval-<label>/`` for another ALGO or model family, so runs sharing a workdir keep their own)."""
    out = eval_dir(workdir, label)
    shutil.rmtree(out, ignore_errors=True)
    backend = "qwen3_vl" if family == "qwen3-vl" else "qwen2_5_vl"
    cmd = [python, "-m", "evaluation.run_eval", str(ckpt), "--backend", backend, "--device", "cpu",
           "--data-dir", str(bench_raw), "--max-new-tokens", str(MAX_RESPONSE), "--out", str(out),
           "--label", f"{label} (smoke)"]
    venv_note = "" if lmms_eval_venv_ready() else " (first use: creating lmms-eval's virtualenv, ~3 min, ~7 GB)"
    log_path = workdir / "logs" / f"{out.name}.log"
    log(f"evaluation: python -m evaluation.run_eval {ckpt} --backend {backend} --device cpu --data-dir {bench_raw} "
        f"...{venv_note}; log: {log_path}")
    run_logged(cmd, job_env(), "evaluation", log_path, timeout)
    return {**json.loads((out / "results.json").read_text()), "path": f"{out.name}/results.json"}


def eval_dir(workdir: Path, run_tag: str) -> Path:
    """Where a smoke run's eval stage writes: ``eval/`` for the default CARE run, ``eval-<tag>/`` else."""
    return workdir / ("eval" if run_tag == "care" else f"eval-{run_tag}")


def eval_summary(results: dict) -> str:
    """One line: lmms-eval's accuracy per benchmark and the macro average (``eval/results.json``)."""
    from evaluation.tasks import TITLES

    per = ", ".join(f"{TITLES.get(b, b)} {v['acc']:.2f} (n={v['n']})" for b, v in results["benchmarks"].items())
    return f"lmms-eval ({results['path']}): macro {results['macro']:.3f}; {per}"


def poisoned_copy(workdir: Path, train_files: list[str], n: int) -> list[str]:
    """The first training shard copied to ``<workdir>/data-poisoned-<n>/`` with ``n`` poisoned rows
    (:func:`smoke.tiny_data.poison_shard`, deterministic), the rest unchanged; built once per workdir."""
    from smoke.tiny_data import poison_shard

    folder = workdir / f"data-poisoned-{n}"
    target = folder / Path(train_files[0]).name
    listing = folder / "poisoned.json"
    if not listing.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(train_files[0], target)
        # the build's report.json: the preflight takes a folder without one for an interrupted build
        report = Path(train_files[0]).parent / "report.json"
        if report.exists():
            shutil.copyfile(report, folder / "report.json")
        listing.write_text(json.dumps(poison_shard(target, n), indent=1))
    rows = json.loads(listing.read_text())
    log(f"training on {target}: {len(rows)} poisoned rows ("
        + ", ".join(f"row {r['row']} id={r['id']}: {r['kind']}" for r in rows) + ")")
    return [str(target), *train_files[1:]]


def poison_summary(workdir: Path, run_tag: str, n: int) -> str:
    """What the run made of the poisoned rows, from its metrics: rows the dataset skipped (and replaced),
    rollouts whose reward failed, by reason."""
    rows = {}
    for path in sorted((workdir / "metrics").glob(f"{run_tag}-run*.jsonl"), key=metrics_file_order):
        for row in read_metrics(path):
            rows[row["step"]] = row["data"]  # a restarted run's later line for a step wins
    skipped = sum(d.get("data/skipped_rows", 0) for d in rows.values())
    failed = sum(d.get("reward/failed_samples", 0) for d in rows.values())
    reasons = sorted({k.split("/", 2)[2] for d in rows.values() for k in d if k.startswith("reward/reason/")})
    return (f"poisoned rows ({n} planted): the dataset skipped {skipped:.0f} row reads over {len(rows)} steps "
            f"(data/skipped_rows), the reward failed {failed:.0f} rollouts (reward/failed_samples"
            + (f"; reasons seen: {', '.join(reasons)}" if reasons else "") + "); the run went on")


def metrics_file_order(path: Path) -> tuple[int, float]:
    """``<run>-run2.jsonl`` after ``<run>-run1.jsonl``; within a run, the files main_care moved aside when the
    run was restarted (``-run1.1``, ``-run1.2``, ... oldest first) before the current one, so later steps win."""
    match = re.search(r"-run(\d+)(?:\.(\d+))?\.jsonl$", path.name)
    if not match:
        return (0, 0.0)
    return (int(match.group(1)), float(match.group(2)) if match.group(2) else float("inf"))


def write_report(workdir: Path, algos: list[str]) -> tuple[Path | None, list]:
    """``<workdir>/report``: every ALGO whose smoke metrics exist, overlaid (its care.records group/repair records from its run folder)."""
    from report import ReportInputError, build_report, load_run

    runs = []
    for algo in algos:
        files = sorted((workdir / "metrics").glob(f"{algo}-run*.jsonl"), key=metrics_file_order)
        if not files:
            continue
        records = workdir / "checkpoints" / algo / "care_records"  # care.records: groups.jsonl, repairs.jsonl
        evaluation = eval_dir(workdir, algo) / "results.json"
        spec = f"{algo}=" + ",".join(str(p) for p in [*files, *([records] if records.is_dir() else []),
                                                      *([evaluation] if evaluation.is_file() else [])])
        try:
            runs.append(load_run(spec))
        except ReportInputError as exc:
            log(f"report: {exc}")
    if not runs:
        return None, []
    result = build_report(runs, workdir / "report",
                          command=f"python -m report {' '.join(f'{r.label}=...' for r in runs)} --out "
                                  f"{workdir / 'report'} (smoke/driver.py write_report)")
    return result, runs


def rollout_summary() -> str:
    """Which engine sampled: the CPU run's rollout is verl's own vLLM server on vLLM's CPU build."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        engine = f"vLLM {version('vllm')}"
    except PackageNotFoundError:
        engine = "vLLM (version unknown)"
    return (f"rollout: verl's vLLMHttpServer on {engine} (CPU build, verl_cpu/vllm_cpu.py): training, RGR "
            "repair and validation generations, a weight sync after every step")


def print_summary(stages: list[str], result, runs: list, current: str, eval_results: dict | None = None) -> None:
    from report.summary import run_summary

    log("-" * 30 + " summary " + "-" * 30)
    log("stages: " + "; ".join(stages))
    log(rollout_summary())
    for run in sorted(runs, key=lambda r: r.label != current):  # this run first, then the ones overlaid
        for i, line in enumerate(run_summary(run)):
            log(("" if i == 0 else "  ") + line)
    if eval_results is not None:
        log(eval_summary(eval_results))
    if result is not None:
        skipped = f", skipped: {', '.join(result.skipped)}" if result.skipped else ""
        log(f"report: {result.index} ({len(result.figures)} figures{skipped}); runs overlaid: "
            + ", ".join(r.label for r in runs))
    log(f"full logs: {Path(runs[0].sources[0]).parent.parent / 'logs'}" if runs else "no metrics written")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default=os.environ.get("ALGO", "care"), choices=["care", "grpo", "dapo", "gspo"])
    p.add_argument("--workdir", default=os.environ.get("SMOKE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "care-verl-smoke")),
                   help="data, models, checkpoints, metrics, logs (default: $SMOKE_DIR, else $TMPDIR/care-verl-smoke); "
                        "under `ray job submit` it must be absolute")
    p.add_argument("--n-gpus-per-node", dest="devices_per_node", type=int, default=1,
                   help="FSDP workers per node (CPU \"devices\"); a resume needs the same nnodes x this as the run it continues")
    p.add_argument("--nnodes", type=int, default=int(os.environ.get("NNODES") or 1),
                   help="Ray nodes (default: $NNODES, else 1): one CPU worker and one TransferQueue storage unit each")
    p.add_argument("--steps", type=int, default=3, help="total steps; the first run stops at steps-1 and saves")
    p.add_argument("--sft-steps", type=int, default=int(os.environ.get("SMOKE_SFT_STEPS", SFT_STEPS)),
                   help="cold-start SFT steps of the tiny model through verl's SFT trainer (default %(default)s)")
    p.add_argument("--no-resume", action="store_true", help="one run of --steps steps, no checkpoint round trip")
    p.add_argument("--save-freq", type=int, default=None,
                   help="checkpoint every N steps (default: the last step of each run)")
    p.add_argument("--run-name", default=None,
                   help="folder name of this run under <workdir>/checkpoints and its metrics files (default: the ALGO, "
                        "plus the model family when not qwen2.5-vl)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: delete this run's checkpoints and metrics first (by default the same command "
                        "on the same workdir continues an unfinished run)")
    p.add_argument("--poison", type=int, default=0, metavar="N",
                   help="train on a copy of the training shard with N poisoned rows (undecodable image, no prompt, no "
                        "gold, a 200k-character prompt, a gold the verifier cannot parse); the run must go on and count them")
    p.add_argument("--build-only", action="store_true", help="build the tiny model and data, then exit")
    p.add_argument("--timeout", type=float, default=None, help="seconds per training run")
    p.add_argument("--no-bench", dest="bench", action="store_false",
                   help="no benchmark look-alikes: no validation on them during RL, no final evaluation")
    p.add_argument("--no-eval", dest="eval", action="store_false",
                   help="skip the final evaluation (verl's model merger + lmms-eval on the look-alikes)")
    p.add_argument("--model", default="qwen2.5-vl",
                   help="tiny model family: qwen2.5-vl (default) | qwen3-vl (a GPU preset name picks its family)")
    return p.parse_known_args(argv)


def smoke_workdir(workdir: str, environ) -> Path:
    """``workdir`` as an absolute path. In a ``ray job submit`` entrypoint (Ray sets
    ``RAY_JOB_CONFIG_JSON_ENV_VAR`` there) the current folder is the job's temporary copy of the
    repository, so a relative workdir would put data and checkpoints where nobody finds them."""
    if not os.path.isabs(os.path.expanduser(workdir)) and "RAY_JOB_CONFIG_JSON_ENV_VAR" in environ:
        raise SystemExit(f"[smoke] --workdir / SMOKE_DIR {workdir!r} is relative; inside a Ray job that is the job's "
                         "temporary copy of the repository: give an absolute path (SMOKE_DIR=/abs/dir)")
    return Path(workdir).expanduser().resolve()


def main(argv: list[str] | None = None) -> int:
    from data_prep.schema import BENCHMARKS

    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    quiet_known_harmless()
    python = sys.executable
    workdir = smoke_workdir(args.workdir, os.environ)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = existing_ray_cluster()
    log(f"workdir {workdir}; Ray: " + (f"the running cluster at {cluster}" if cluster else "a cluster of its own")
        + f", {args.nnodes} node(s)")
    family = smoke_family(args.model)

    t0 = time.time()
    bench_dir = bench_raw = None
    if args.bench:
        bench_dir, bench_raw = build_bench_data(workdir, tiny_base_dir(family), python)
    bench_files = [str(bench_dir / f"{b}.parquet") for b in BENCHMARKS] if bench_dir else []
    files = build_data(workdir, tiny_base_dir(family), python, bench_dir)
    train_files, val_file = files[:-1], files[-1]
    if args.poison:
        train_files = poisoned_copy(workdir, train_files, args.poison)
    t_data = time.time() - t0
    model = build_model(workdir, python, train_files, args.sft_steps, args.timeout, family)
    log(f"tiny model and data ready in {time.time() - t0:.0f}s: model={model} train={train_files}")
    if args.build_only:
        return 0

    # per family, so a Qwen3-VL run never resumes from a Qwen2.5-VL checkpoint in the same workdir
    run_tag = args.run_name or (args.algo if family == "qwen2.5-vl" else f"{args.algo}-{family}")
    ckpt = workdir / "checkpoints" / run_tag
    if args.algo == "care" and rgr_available():
        extra = [*rgr_overrides(), *extra]
        log("RGR on (recipe.care.agent_loop)")
    elif args.algo == "care":
        log("RGR off: recipe/care/rgr.py / agent_loop.py not installed")
    metrics = workdir / "metrics"
    one_run = args.no_resume or args.steps < 2
    first = args.steps if one_run else args.steps - 1
    training = [("run", args.steps)] if one_run else [("run1", first), ("run2", args.steps)]
    # What shapes the training: the same command on the same workdir continues an unfinished run of this
    # plan (a killed or preempted smoke); anything else starts over.
    plan = {"algo": args.algo, "family": family, "steps": args.steps, "one_run": one_run, "save_freq": args.save_freq,
            "sft_steps": args.sft_steps, "bench": bool(bench_files), "world_size": args.nnodes * args.devices_per_node, "poison": args.poison, "overrides": extra}
    state, how = open_run(ckpt, plan, [name for name, _ in training] + (["eval"] if bench_raw is not None and args.eval else []),
                          sorted(metrics.glob(f"{run_tag}-run*.jsonl")), fresh=args.fresh)
    log(how)
    stages = [f"data ({t_data:.0f}s)", f"cold-start SFT, {args.sft_steps} steps through verl ({time.time() - t0 - t_data:.0f}s)"]
    where = {"nnodes": args.nnodes, "existing_cluster": cluster is not None, "devices_per_node": args.devices_per_node}
    for i, (name, last) in enumerate(training):
        start = 1 if i == 0 else training[i - 1][1] + 1
        save = args.save_freq or last
        label = (f"{name} (steps {start}-{last}" if last > start else f"{name} (step {last}") + \
            (f", checkpoint every {save}" if save < last else f", checkpoint at {last}") + \
            (", resuming from the previous run's checkpoint)" if i else ")")
        if state.done(name):
            log(f"{label}: finished before, skipped")
        else:
            run_job(python, args.algo, job_overrides(args.algo, model, train_files, val_file, ckpt, last, save,
                                                     bench_files, **where) + extra, label, args.timeout,
                    metrics / f"{run_tag}-{'run1' if name == 'run' else name}.jsonl")
            state.finish(name)
        stages.append(f"{run_tag} {label}")
    log(f"training done in {time.time() - t0:.0f}s; checkpoints under {ckpt}")
    if bench_files:
        stages[-1] += " (each run validates on the six benchmark look-alikes after its last step)"
    eval_results = None
    if bench_raw is not None and args.eval:
        t_eval = time.time()
        eval_results = run_eval_stage(python, ckpt, bench_raw, workdir, family, run_tag, args.timeout)
        state.finish("eval")
        stages.append(f"evaluation: verl's merger + lmms-eval ({time.time() - t_eval:.0f}s)")
    try:
        algos = ["care", "grpo", "dapo", "gspo"]
        result, runs = write_report(workdir, algos if run_tag in algos else [run_tag])
        stages.append("report")
    except Exception as exc:  # training succeeded; a broken report must not hide that (the summary says why)
        log(f"report not written: {exc!r}")
        result, runs = None, []
    print_summary(stages, result, runs, run_tag, eval_results)
    if args.poison:
        log(poison_summary(workdir, run_tag, args.poison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
