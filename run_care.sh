#!/usr/bin/env bash
# CARE (or a baseline) on Qwen2.5-VL-7B-Instruct with the data_prep/build_mix.py mix, through verl 0.9.1.
#
#   bash run_care.sh [--dry-run] [key=value ...]        # any verl/CARE hydra override passes through
#   ALGO=grpo bash run_care.sh ...                        # grpo | dapo | gspo | care (default), same data/reward/budget
#   bash run_care.sh --stage eval CHECKPOINT [--backend vllm|qwen2_5_vl] [--out DIR] [...]  # lmms-eval, six benchmarks
#   bash run_care.sh --smoke [key=value ...]              # CPU only, offline: tiny model + data, 3 steps + resume
#                                                         # (recipe/care/smoke.py; ignores the GPU settings below)
#
# Environment (defaults in brackets):
#   MODEL_PATH [Qwen/Qwen2.5-VL-7B-Instruct]  DATA_DIR [data/care_mix] (train-*.parquet shards and val.parquet from data_prep/build_mix.py)
#   N_GPUS_PER_NODE [8]  NNODES [1]  EXPERIMENT_NAME [${ALGO}_qwen2_5_vl_7b]  PROJECT_NAME [care-verl]
#   BENCH_DIR [unset] (data_prep/build_bench.py's six parquets: also validate on them, greedy, val-core/macro/acc)
#   TRAIN_BATCH_SIZE [128]  ROLLOUT_N [8]  TOTAL_EPOCHS [1]  LOGGER ['["console","wandb"]']  PYTHON [python3, or .venv-ci/bin/python]
# Multi-node: start Ray on every node first (`ray start --head` / `ray start --address=<head>:6379`),
# then run this script on the head node with NNODES set; verl attaches to the running cluster.
set -euo pipefail

ALGO="${ALGO:-care}"
MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}"
DATA_DIR="${DATA_DIR:-data/care_mix}"
N_GPUS_PER_NODE="${N_GPUS_PER_NODE:-8}"
NNODES="${NNODES:-1}"
PROJECT_NAME="${PROJECT_NAME:-care-verl}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-${ALGO}_qwen2_5_vl_7b}"
TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-128}"
ROLLOUT_N="${ROLLOUT_N:-8}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-1}"
LOGGER="${LOGGER:-[\"console\",\"wandb\"]}"
PYTHON="${PYTHON:-}"

cd "$(dirname "${BASH_SOURCE[0]}")"

# Interpreter: $PYTHON, else python3 when it has the recipe installed, else the virtualenv that
# `bash .ci/run` builds (so the README's two commands work in that order on a fresh machine).
if [[ -z "$PYTHON" ]]; then
  PYTHON=python3
  if ! python3 -c "import recipe.care" >/dev/null 2>&1 && [[ -x .venv-ci/bin/python ]]; then
    PYTHON=.venv-ci/bin/python
    echo "run_care.sh: using $PYTHON (python3 has no care-verl installed)" >&2
  fi
fi

# Final evaluation (evaluation/run_eval.py): merge CHECKPOINT to Hugging Face if it is an FSDP one, run
# lmms-eval (own virtualenv) on the six benchmarks, write <out>/results.json and results.md.
if [[ "${1:-}" == "--stage" && "${2:-}" == "eval" ]]; then
  shift 2
  if ! "$PYTHON" -c "import data_prep.schema, evaluation.run_eval" >/dev/null 2>&1; then
    echo "run_care.sh --stage eval: $PYTHON lacks care-verl's dependencies (pip install -e .); set PYTHON=..." >&2
    exit 2
  fi
  exec "$PYTHON" -m evaluation.run_eval "$@"
fi

args=()
dry_run=0
smoke=0
for arg in "$@"; do
  if [[ "$arg" == "--smoke" ]]; then
    smoke=1
    continue
  fi
  [[ "$arg" == "--dry-run" ]] && dry_run=1
  args+=("$arg")
done

if ((smoke == 1)); then
  # The embedded default (recipe/care/smoke.py): builds the tiny model and data offline, then runs
  # $ALGO on CPU through python -m recipe.care.main_care (steps 1-2, checkpoint, resume, step 3).
  # Remaining key=value arguments are verl/CARE overrides for those runs.
  exec "$PYTHON" -m recipe.care.smoke --algo "$ALGO" "${args[@]}"
fi

# data_prep/build_mix.py writes train-00000.parquet, train-00001.parquet, ... and val.parquet;
# verl's RLHFDataset takes the list of shards.
shopt -s nullglob
train_shards=("$DATA_DIR"/train-*.parquet)
shopt -u nullglob
if ((${#train_shards[@]} == 0)); then
  if ((dry_run == 0)); then
    echo "run_care.sh: no training shards in $DATA_DIR (expected train-*.parquet)." >&2
    echo "Build them first: python data_prep/build_mix.py --out $DATA_DIR   (or set DATA_DIR)" >&2
    exit 2
  fi
  train_shards=("$DATA_DIR/train-00000.parquet")  # dry run: show where the shards would be read from
fi
TRAIN_FILES="[$(IFS=,; echo "${train_shards[*]}")]"

# BENCH_DIR (data_prep/build_bench.py's output): validate on the six benchmarks next to the mix's val
# split, one greedy pass each; verl logs val-core/<benchmark>/acc/mean@1, the trainer val-core/macro/acc.
VAL_FILES="$DATA_DIR/val.parquet"
bench_args=()
if [[ -n "${BENCH_DIR:-}" ]]; then
  bench_files=("$DATA_DIR/val.parquet")
  for bench in mathvista mathverse mathvision mmmu mmmu_pro_standard mmmu_pro_vision; do
    if [[ ! -f "$BENCH_DIR/$bench.parquet" && $dry_run == 0 ]]; then
      echo "run_care.sh: BENCH_DIR=$BENCH_DIR has no $bench.parquet; build it: python data_prep/build_bench.py --out $BENCH_DIR" >&2
      exit 2
    fi
    bench_files+=("$BENCH_DIR/$bench.parquet")
  done
  VAL_FILES="[$(IFS=,; echo "${bench_files[*]}")]"
  bench_args=(actor_rollout_ref.rollout.val_kwargs.n=1 actor_rollout_ref.rollout.val_kwargs.do_sample=False
              actor_rollout_ref.rollout.val_kwargs.temperature=0)
fi

exec "$PYTHON" -m recipe.care.main_care --algo "$ALGO" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.train_batch_size="$TRAIN_BATCH_SIZE" \
  actor_rollout_ref.rollout.n="$ROLLOUT_N" \
  trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
  trainer.nnodes="$NNODES" \
  trainer.project_name="$PROJECT_NAME" \
  trainer.experiment_name="$EXPERIMENT_NAME" \
  trainer.total_epochs="$TOTAL_EPOCHS" \
  trainer.logger="$LOGGER" \
  "${bench_args[@]}" \
  "${args[@]}"
