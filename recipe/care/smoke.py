"""The CPU smoke run: tiny model + tiny data built offline, then a few CARE steps through verl's real trainer.

    python -m recipe.care.smoke [--algo care|grpo|dapo|gspo] [--workdir DIR] [--steps 3] [key=value ...]
    bash run_care.sh --smoke                 # the same, ALGO from the environment

What it does, with no GPU and no network:

1. **Tiny model**: the random tiny Qwen2.5-VL of :mod:`recipe.care.tiny_models` (real Qwen2.5
   vocabulary, real processor and chat template), then a short **supervised warm-up** (plain
   transformers, a few hundred optimiser steps, ~1 min) on the training prompts with responses in
   CARE's format ``<think>...</think><answer>N</answer>``. A random model never answers correctly,
   so without it every group is all-wrong and the reward is invisible; after it, sampled answers
   are right some of the time, so groups are mixed (CARE's anchored path) as well as all-wrong
   (the rescue). The questions are countable (bars in a chart, a number printed in a triangle) and
   the warm-up stops short of memorising, so the policy still has something to learn.
2. **Tiny data**: ChartQA- and Geometry3K-shaped datasets drawn with PIL (like
   ``tests/data_prep``), saved with ``datasets.save_to_disk`` and turned into verl parquet by the
   real ``data_prep/build_mix.py``.
3. **Training**: ``python -m recipe.care.main_care`` on verl's CPU platform
   (``recipe.care.cpu``: gloo, FSDP engine on CPU, sdpa) with the CPU rollout
   (``rollout.name=hf_cpu``), the ``care`` reward manager, RGR when ``recipe.care.rgr`` is installed;
   steps 1..N-1 with a checkpoint at step N-1, then a second run that resumes from it and does step N.

Sizes: 4 prompts x 6 rollouts per step, responses <= 48 tokens, K=2, one FSDP worker. It shows
that the whole loop runs (rollout, reward, RGR, think embeddings, advantages, update, weight sync,
checkpoint, resume); it says nothing about speed or accuracy, which need GPUs and a real model.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ANSWER_FORMAT = "<think>{reason}</think><answer>{answer}</answer>"
CHART_QUESTION = "How many bars are in the chart?"
GEOMETRY_QUESTION = "<image>What number is written inside the triangle?"

# Smoke sizes (the issue: batch 2-4 prompts, n = 5-6 >= 1 + K, short responses, 2-3 steps).
RGR_MANAGER = "recipe.care.agent_loop.CareAgentLoopManager"
BATCH, ROLLOUT_N, CARE_K, CARE_M = 4, 6, 2, 3
# Warm-up steps, measured by sampling 6 answers per training prompt at temperature 1: 100 steps
# gave 20% accuracy with 47% of groups mixed (a step of 4 groups then has no mixed group ~8% of
# the time); 200 steps (~1 min) gave 25%, 76% mixed, 24% all-wrong: both CARE paths in most steps;
# 300 steps gave 44%, 82% mixed, only 12% all-wrong (few rescues left to see).
WARMUP_STEPS = 200
MAX_PROMPT, MAX_RESPONSE = 320, 48


def log(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# tiny data
# ---------------------------------------------------------------------------------------------
def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def draw_bars(n_bars: int, seed: int, size=(112, 84)):
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width = (size[0] - 12) // n_bars
    for i in range(n_bars):
        height = rng.randint(15, size[1] - 15)
        x0 = 6 + i * width
        draw.rectangle([x0 + 2, size[1] - 6 - height, x0 + width - 2, size[1] - 6], fill=(31, 119, 180))
    return image


def draw_triangle(number: int, seed: int, size=(84, 84)):
    from PIL import Image, ImageDraw

    rng = random.Random(1000 + seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(6, size[1] - 6), (size[0] - 6, size[1] - 6), (rng.randint(20, 64), 8)], outline="black", width=2)
    draw.text((size[0] // 2 - 3, size[1] // 2), str(number), fill="red")
    return image


def write_fixtures(root: Path, n_chart: int = 12, n_geo: int = 12, seed: int = 0) -> dict[str, str]:
    """ChartQA / Geometry3K look-alikes in their hub layouts (``datasets.save_to_disk``)."""
    import datasets

    rng = random.Random(seed)
    chart = lambda i, n: {"image": {"bytes": _png(draw_bars(n, seed * 100 + i)), "path": None},  # noqa: E731
                          "query": CHART_QUESTION, "label": [str(n)], "human_or_machine": 0}
    geo = lambda i, n: {"images": [{"bytes": _png(draw_triangle(n, seed * 100 + i)), "path": None}],  # noqa: E731
                        "problem": GEOMETRY_QUESTION, "answer": str(n), "id": str(i), "choices": []}
    chart_rows = [chart(i, rng.choice([2, 3, 4])) for i in range(n_chart)]
    geo_rows = [geo(i, rng.choice([5, 6, 7])) for i in range(n_geo)]
    chart_test = [chart(900 + i, 5) for i in range(2)]
    geo_test = [geo(900 + i, 8) for i in range(2)]
    chart_features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                        "label": datasets.List(datasets.Value("string")),
                                        "human_or_machine": datasets.Value("int64")})
    geo_features = datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string"),
                                      "answer": datasets.Value("string"), "id": datasets.Value("string"),
                                      "choices": datasets.List(datasets.Value("string"))})
    paths = {}
    for name, train, test, features in (("chartqa", chart_rows, chart_test, chart_features),
                                        ("geometry3k", geo_rows, geo_test, geo_features)):
        path = root / name
        datasets.DatasetDict({"train": datasets.Dataset.from_list(train, features=features),
                              "test": datasets.Dataset.from_list(test, features=features)}).save_to_disk(str(path))
        paths[name] = str(path)
    return paths


def build_data(workdir: Path, tokenizer_dir: Path, python: str) -> list[str]:
    """Fixtures -> ``data_prep/build_mix.py`` -> verl parquet shards; returns [train files..., val file]."""
    out = workdir / "data"
    done = out / "report.json"
    if not done.exists():
        fixtures = write_fixtures(workdir / "fixtures")
        cmd = [python, str(REPO / "data_prep" / "build_mix.py"), "--sources", "chartqa,geometry3k",
               "--chartqa", fixtures["chartqa"], "--geometry3k", fixtures["geometry3k"],
               "--out", str(out), "--overwrite", "--val-size", "4", "--tokenizer", str(tokenizer_dir),
               "--max-prompt-tokens", str(MAX_PROMPT), "--workers", "1", "--no-progress"]
        log("building the training mix: " + " ".join(cmd[1:]))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"build_mix.py failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    train = sorted(str(p) for p in out.glob("train-*.parquet"))
    val = out / "val.parquet"
    if not train or not val.exists():
        raise RuntimeError(f"build_mix.py wrote no train-*.parquet / val.parquet into {out}")
    return [*train, str(val)]


# ---------------------------------------------------------------------------------------------
# tiny model + supervised warm-up
# ---------------------------------------------------------------------------------------------
def _ground_truth(row: dict) -> str:
    gt = row["reward_model"]["ground_truth"]
    if isinstance(gt, str) and gt.startswith("["):
        gt = json.loads(gt)
    return str(gt[0] if isinstance(gt, (list, tuple)) else gt)


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


def _warmup_examples(parquet_files: list[str], processor) -> list[dict]:
    import pyarrow.parquet as pq

    examples = []
    for path in parquet_files:
        for row in pq.read_table(path).to_pylist():
            prompt, images = chat_prompt(row, processor)
            response = ANSWER_FORMAT.format(reason=" count ", answer=_ground_truth(row)) + "<|im_end|>"
            examples.append({"prompt": prompt, "response": response, "images": images})
    return examples


def warm_up(base_dir: Path, out_dir: Path, parquet_files: list[str], steps: int, lr: float = 3e-3, seed: int = 0) -> None:
    """Short SFT of the random tiny model on format + answer; saved as a hub-style checkpoint."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(str(base_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(base_dir), dtype=torch.float32, attn_implementation="sdpa")
    examples = _warmup_examples(parquet_files, processor)
    batches = []
    for ex in examples:
        enc = processor(text=[ex["prompt"] + ex["response"]], images=ex["images"], return_tensors="pt")
        n_resp = len(processor.tokenizer(ex["response"], add_special_tokens=False)["input_ids"])
        labels = enc["input_ids"].clone()
        labels[:, : labels.shape[1] - n_resp] = -100
        batches.append({**enc, "labels": labels})
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    model.train()
    t0 = time.time()
    for step in range(steps):
        batch = rng.choice(batches)
        loss = model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            log(f"warm-up step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    (out_dir / ".complete").write_text(json.dumps({"steps": steps, "lr": lr, "seed": seed}))


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
    from recipe.care.tiny_models import tiny_qwen3_vl_dir, tiny_qwen25_vl_dir

    return tiny_qwen3_vl_dir() if family == "qwen3-vl" else tiny_qwen25_vl_dir()


def build_model(workdir: Path, parquet_files: list[str], warmup_steps: int, family: str = "qwen2.5-vl") -> Path:
    base = tiny_base_dir(family)
    out = workdir / (f"model-warm{warmup_steps}" if family == "qwen2.5-vl" else f"model-{family}-warm{warmup_steps}")
    if not (out / ".complete").exists():
        log(f"supervised warm-up of the tiny {family} ({warmup_steps} steps) -> {out}")
        warm_up(base, out, parquet_files, warmup_steps)
    return out


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
def rgr_available() -> bool:
    try:
        import recipe.care.agent_loop  # noqa: F401
        import recipe.care.rgr  # noqa: F401
    except Exception:
        return False
    return (REPO / "recipe" / "care" / "config" / "rgr.yaml").exists()


def external_modules() -> str:
    """The CPU plugin plus the modules the CARE config loads in every verl process (one source of truth)."""
    from recipe.care.main_care import compose_config

    recipe_modules = str(compose_config([]).ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES)
    return ",".join(["recipe.care.cpu", *recipe_modules.split(",")])


def job_overrides(algo: str, model: Path, train_files: list[str], val_file: str, ckpt_dir: Path, steps: int,
                  save_step: int) -> list[str]:
    from recipe.care.cpu import CPU_CONFIG_OVERRIDES

    external = external_modules()
    overrides = [
        *CPU_CONFIG_OVERRIDES,
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files=[{','.join(train_files)}]",
        f"data.val_files=[{val_file}]",
        f"data.train_batch_size={BATCH}",
        f"data.max_prompt_length={MAX_PROMPT}",
        f"data.max_response_length={MAX_RESPONSE}",
        "data.dataloader_num_workers=0",
        "data.shuffle=true",
        f"actor_rollout_ref.rollout.n={ROLLOUT_N}",
        "actor_rollout_ref.rollout.name=hf_cpu",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        # one process each on a 2-core machine (verl's defaults start 8 reward and 8 storage actors)
        "reward.num_workers=1",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={BATCH}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.optim.lr=1e-4",
        # FSDP2 on gloo in fp32 (FSDP1's sync_module_states wants the module on an accelerator)
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
        "actor_rollout_ref.ref.use_torch_compile=false",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=false",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.actor.fsdp_config.param_offload=false",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=false",
        "actor_rollout_ref.ref.fsdp_config.param_offload=false",
        "actor_rollout_ref.model.use_remove_padding=false",  # Qwen2.5-VL mrope + packing fails on CPU (verl-integration.md)
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={save_step}",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        "trainer.logger=[console,file]",
        "trainer.project_name=care-verl-smoke",
        f"trainer.experiment_name={algo}_smoke",
        f"trainer.default_local_dir={ckpt_dir}",
        "trainer.resume_mode=auto",
        "+ray_kwargs.ray_init.num_cpus=32",
        "+ray_kwargs.ray_init.object_store_memory=536870912",
        "+ray_kwargs.ray_init.include_dashboard=false",
        f"ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES='{external}'",
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM=cpu",
        "+ray_kwargs.ray_init.runtime_env.env_vars.TOKENIZERS_PARALLELISM='false'",
        "+ray_kwargs.ray_init.runtime_env.env_vars.OMP_NUM_THREADS='1'",
    ]
    if algo == "care":
        overrides += [f"care.k={CARE_K}", f"care.m={CARE_M}"]
    return overrides


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "VERL_PLATFORM": "cpu",
        "VERL_USE_EXTERNAL_MODULES": external_modules(),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
    })
    return env


def run_job(python: str, algo: str, overrides: list[str], label: str, timeout: float | None, metrics: Path) -> None:
    """One ``main_care`` run; verl's file logger writes its step metrics to ``metrics`` (JSON lines)."""
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.unlink(missing_ok=True)
    overrides = [*overrides, f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}"]
    cmd = [python, "-m", "recipe.care.main_care", "--algo", algo, *overrides]
    log(f"{label}: python -m recipe.care.main_care --algo {algo} ... ({len(overrides)} overrides)")
    proc = subprocess.run(cmd, cwd=REPO, env={**job_env(), "VERL_FILE_LOGGER_PATH": str(metrics)}, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"[smoke] {label} failed with exit code {proc.returncode}")
    summarize(metrics)


SUMMARY_KEYS = ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "critic/score/mean", "response_length/mean",
                "care/", "rgr/", "timing_s/step")


def read_metrics(path: Path) -> list[dict]:
    """verl's FileLogger records: ``{"step": int, "data": {metric: value}}`` per line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(path: Path) -> None:
    for record in read_metrics(path):
        data = record["data"]
        picked = {k: v for k, v in sorted(data.items())
                  if any(k == key or (key.endswith("/") and k.startswith(key)) for key in SUMMARY_KEYS)
                  and isinstance(v, (int, float))}
        log(f"step {record['step']}: " + ", ".join(f"{k}={v:.4g}" for k, v in picked.items()))


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="recipe.care.smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default=os.environ.get("ALGO", "care"), choices=["care", "grpo", "dapo", "gspo"])
    p.add_argument("--workdir", default=os.environ.get("SMOKE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "care-verl-smoke")))
    p.add_argument("--steps", type=int, default=3, help="total steps; the first run stops at steps-1 and saves")
    p.add_argument("--warmup-steps", type=int, default=int(os.environ.get("SMOKE_WARMUP_STEPS", WARMUP_STEPS)),
                   help="supervised warm-up steps of the tiny model (default %(default)s)")
    p.add_argument("--no-resume", action="store_true", help="one run of --steps steps, no checkpoint round trip")
    p.add_argument("--fresh", action="store_true", help="delete the previous checkpoints of this ALGO first")
    p.add_argument("--build-only", action="store_true", help="build the tiny model and data, then exit")
    p.add_argument("--timeout", type=float, default=None, help="seconds per training run")
    p.add_argument("--model", default="qwen2.5-vl",
                   help="tiny model family: qwen2.5-vl (default) | qwen3-vl (a GPU preset name picks its family)")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    python = sys.executable
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    family = smoke_family(args.model)

    t0 = time.time()
    files = build_data(workdir, tiny_base_dir(family), python)
    train_files, val_file = files[:-1], files[-1]
    model = build_model(workdir, train_files, args.warmup_steps, family)
    log(f"tiny model and data ready in {time.time() - t0:.0f}s: model={model} train={train_files}")
    if args.build_only:
        return 0

    # per family, so a Qwen3-VL run never resumes from a Qwen2.5-VL checkpoint in the same workdir
    run_tag = args.algo if family == "qwen2.5-vl" else f"{args.algo}-{family}"
    ckpt = workdir / "checkpoints" / run_tag
    if args.fresh or not args.no_resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    if args.algo == "care" and rgr_available():
        # `++` adds or overrides: works whether or not care_trainer.yaml already includes rgr.yaml.
        extra = [f"++actor_rollout_ref.rollout.agent.agent_loop_manager_class={RGR_MANAGER}",
                 "++care.rgr.enable=true", *extra]
        log("RGR on (recipe.care.agent_loop)")
    elif args.algo == "care":
        log("RGR off: recipe/care/rgr.py / agent_loop.py not installed")
    metrics = workdir / "metrics"
    if args.no_resume or args.steps < 2:
        run_job(python, args.algo, job_overrides(args.algo, model, train_files, val_file, ckpt, args.steps,
                                                 args.steps) + extra, "run", args.timeout,
                metrics / f"{run_tag}-run1.jsonl")
    else:
        first = args.steps - 1
        run_job(python, args.algo, job_overrides(args.algo, model, train_files, val_file, ckpt, first, first) + extra,
                f"run 1 (steps 1-{first}, checkpoint at {first})", args.timeout, metrics / f"{run_tag}-run1.jsonl")
        run_job(python, args.algo, job_overrides(args.algo, model, train_files, val_file, ckpt, args.steps,
                                                 args.steps) + extra,
                f"run 2 (resume from step {first}, to step {args.steps})", args.timeout,
                metrics / f"{run_tag}-run2.jsonl")
    log(f"done in {time.time() - t0:.0f}s; checkpoints under {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
