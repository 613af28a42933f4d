#!/usr/bin/env bash
# CARE (or a baseline) on a paper backbone with the data_prep/build_mix.py mix, through verl 0.9.1.
#
#   bash run_care.sh [--model PRESET] [--dry-run] [--skip-preflight] [--debug] [key=value ...]  # any verl/CARE hydra override
#   bash run_care.sh --preflight-only                     # the start-up checks only (GPU ones included), no Ray
#   ALGO=grpo bash run_care.sh ...                        # grpo | dapo | gspo | care (default), same data/reward/budget
#   bash run_care.sh --smoke [--model qwen3-vl] [key=value ...]  # CPU only, offline: tiny model + data, 3 steps + resume
#                                                         # (smoke/driver.py; ignores the GPU settings below)
#   bash run_care.sh --stage sft [key=value ...]          # cold-start SFT first (verl's SFT trainer, torchrun):
#                                                         # SFT_DATA_DIR [data/care_sft] from data_prep/build_sft.py,
#                                                         # MODEL_PATH, N_GPUS_PER_NODE, NNODES; writes a Hugging Face
#                                                         # checkpoint at checkpoints/care-verl/sft_*/global_step_N/huggingface:
#   MODEL_PATH=<that folder> bash run_care.sh ...         # then RL from it (--stage rl, the default)
#   bash run_care.sh --stage eval CHECKPOINT [--backend vllm|qwen2_5_vl|qwen3_vl] [--device auto|cpu|cuda] [--out DIR] [...]  # lmms-eval, six benchmarks
#   bash run_care.sh --help                               # this text (--smoke --help, --stage eval --help: theirs)
#
# --model: qwen2.5-vl-3b | qwen2.5-vl-7b (default) | qwen3-vl-8b (recipe/care/presets.py): model path,
# vLLM TP and memory, micro-batches, dynamic batch sizes and the authors' step shape (512 prompts per
# step, global batch 128, 2048/2048 tokens, n = 8), scaled to N_GPUS_PER_NODE x NNODES. Every
# key=value below and on the command line wins over the preset.
#
# Environment (defaults in brackets; unset = the preset's value):
#   MODEL_PATH [preset]  DATA_DIR [data/care_mix] (train-*.parquet shards and val.parquet from data_prep/build_mix.py)
#   N_GPUS_PER_NODE [8]  NNODES [1]  EXPERIMENT_NAME [${ALGO}_<preset>]  PROJECT_NAME [care-verl]
#   BENCH_DIR [unset] (data_prep/build_bench.py's six parquets: also validate on them, greedy, val-core/macro/acc)
#   TRAIN_BATCH_SIZE [preset]  ROLLOUT_N [preset]  TOTAL_EPOCHS [1]  LOGGER ['["console","file"]'; add "wandb" to log there]
#   PYTHON [python3, or .venv/bin/python, or .venv-ci/bin/python]  CARE_DEBUG [unset; 1 = same as --debug]
# A bad option, ALGO, preset or key=value stops before Ray with one line naming it and the fix (exit 2);
# --debug (or CARE_DEBUG=1) shows the Python traceback instead.
# Before Ray starts, recipe/care/preflight.py checks flash-attn/vllm, the GPU count, the data, wandb
# credentials and the model path, one line per problem (--dry-run: all but the GPU checks;
# --skip-preflight: none). Step metrics: <trainer.default_local_dir>/metrics.jsonl (verl's file logger).
# Multi-node: start Ray on every node first (`ray start --head` / `ray start --address=<head>:6379`),
# then run this script on the head node with NNODES set; verl attaches to the running cluster.
set -euo pipefail

ALGO="${ALGO:-care}"
DATA_DIR="${DATA_DIR:-data/care_mix}"
N_GPUS_PER_NODE="${N_GPUS_PER_NODE:-8}"
NNODES="${NNODES:-1}"
PROJECT_NAME="${PROJECT_NAME:-care-verl}"
TOTAL_EPOCHS="${TOTAL_EPOCHS:-1}"
LOGGER="${LOGGER:-[\"console\",\"file\"]}"
PYTHON="${PYTHON:-}"

cd "$(dirname "${BASH_SOURCE[0]}")"

# The header comment above is the usage text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
# One line naming the input and the fix, exit 2 (as recipe/care/main_care.py reports bad input).
usage_error() { echo "run_care.sh: $1 (bash run_care.sh --help)" >&2; exit 2; }

# Interpreter: $PYTHON, else python3 when it has the recipe's dependencies (verl; `import recipe.care`
# alone succeeds from this folder whatever is installed), else the virtualenv that
# scripts/install_cpu_stack.sh (.venv) or `bash .ci/run` (.venv-ci) builds, so the README's commands
# work in that order on a fresh machine.
if [[ -z "$PYTHON" ]]; then
  PYTHON=python3
  if ! python3 -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('verl') and u.find_spec('recipe.care')))" \
       >/dev/null 2>&1; then
    for venv in .venv .venv-ci; do
      if [[ -x "$venv/bin/python" ]]; then
        PYTHON="$venv/bin/python"
        echo "run_care.sh: using $PYTHON (python3 has no care-verl installed)" >&2
        break
      fi
    done
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
smoke=0
model=""
stage=rl
dry_run=0
help=0
presets="qwen2.5-vl-3b|qwen2.5-vl-7b|qwen3-vl-8b"
while (($# > 0)); do
  case "$1" in
    --smoke) smoke=1 ;;
    --model) (($# > 1)) || usage_error "--model needs a preset name: $presets"; model="$2"; shift ;;
    --model=*) model="${1#--model=}" ;;
    --stage) (($# > 1)) || usage_error "--stage needs sft, rl or eval"; stage="$2"; shift ;;
    --stage=*) stage="${1#--stage=}" ;;
    --dry-run) dry_run=1; args+=("$1") ;;
    --debug) export CARE_DEBUG=1 ;;
    -h|--help) help=1; args+=("$1") ;;  # kept for --smoke, whose own --help lists its options
    *) args+=("$1") ;;
  esac
  shift
done

if ((smoke == 1)); then
  # The embedded default (smoke/driver.py): builds the tiny model and data offline, then runs
  # $ALGO on CPU through python -m recipe.care.main_care (steps 1-2, checkpoint, resume, step 3).
  # Remaining key=value arguments are verl/CARE overrides for those runs.
  exec "$PYTHON" -m smoke --algo "$ALGO" ${model:+--model "$model"} "${args[@]}"
fi

if ((help == 1)); then
  usage
  exit 0
fi

if [[ "$stage" != rl && "$stage" != sft ]]; then
  usage_error "--stage must be sft, rl (the default) or eval (first: --stage eval CHECKPOINT), got '$stage'"
fi

if [[ "$stage" == sft ]]; then
  # Cold-start SFT (recipe/care/config/care_sft.yaml: verl's sft_trainer_engine + Vision-R1's values)
  # through verl's own SFT trainer, one torchrun process per GPU.
  SFT_DATA_DIR="${SFT_DATA_DIR:-data/care_sft}"
  sft_model="${model:-qwen2.5-vl-7b}"
  SFT_EXPERIMENT_NAME="${SFT_EXPERIMENT_NAME:-sft_$(echo "$sft_model" | tr '.-' '__')}"
  # The preset's model (recipe/care/presets.py) unless MODEL_PATH is set.
  MODEL_PATH="${MODEL_PATH:-$("$PYTHON" -m recipe.care.presets model-path "$sft_model")}"
  shopt -s nullglob
  sft_shards=("$SFT_DATA_DIR"/train-*.parquet)
  shopt -u nullglob
  if ((${#sft_shards[@]} == 0)); then
    if ((dry_run == 0)); then
      echo "run_care.sh: no cold-start shards in $SFT_DATA_DIR (expected train-*.parquet)." >&2
      echo "Build them first: python data_prep/build_sft.py --out $SFT_DATA_DIR   (or set SFT_DATA_DIR)" >&2
      exit 2
    fi
    sft_shards=("$SFT_DATA_DIR/train-00000.parquet")
  fi
  sft_args=(
    model.path="$MODEL_PATH"
    data.train_files="[$(IFS=,; echo "${sft_shards[*]}")]"
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
    trainer.nnodes="$NNODES"
    trainer.project_name="$PROJECT_NAME"
    trainer.experiment_name="$SFT_EXPERIMENT_NAME"
    trainer.logger="$LOGGER"
  )
  if ((dry_run == 1)); then
    exec "$PYTHON" -m recipe.care.main_sft "${sft_args[@]}" "${args[@]}"  # args hold --dry-run
  fi
  launcher=(--standalone --nnodes=1)
  if ((NNODES > 1)); then  # run this on every node with NODE_RANK set; MASTER_ADDR is node 0
    launcher=(--nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK on each node}"
              --master_addr="${MASTER_ADDR:?set MASTER_ADDR to node 0}" --master_port="${MASTER_PORT:-29500}")
  fi
  exec "$PYTHON" -m torch.distributed.run "${launcher[@]}" --nproc_per_node="$N_GPUS_PER_NODE" \
    -m recipe.care.main_sft "${sft_args[@]}" "${args[@]}"
fi

model="${model:-qwen2.5-vl-7b}"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-${ALGO}_$(echo "$model" | tr '.-' '__')}"
# Set only when given, so the preset's values apply otherwise (the command line wins over both).
env_overrides=()
[[ -n "${MODEL_PATH:-}" ]] && env_overrides+=(actor_rollout_ref.model.path="$MODEL_PATH")
[[ -n "${TRAIN_BATCH_SIZE:-}" ]] && env_overrides+=(data.train_batch_size="$TRAIN_BATCH_SIZE")
[[ -n "${ROLLOUT_N:-}" ]] && env_overrides+=(actor_rollout_ref.rollout.n="$ROLLOUT_N")

# data_prep/build_mix.py writes train-00000.parquet, train-00001.parquet, ... and val.parquet;
# verl's RLHFDataset takes the list of shards.
shopt -s nullglob
train_shards=("$DATA_DIR"/train-*.parquet)
shopt -u nullglob
if ((${#train_shards[@]} == 0)); then
  # recipe/care/preflight.py reports the missing shards (dry run included) with the build command
  train_shards=("$DATA_DIR/train-00000.parquet")
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

exec "$PYTHON" -m recipe.care.main_care --algo "$ALGO" --model "$model" \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  trainer.n_gpus_per_node="$N_GPUS_PER_NODE" \
  trainer.nnodes="$NNODES" \
  trainer.project_name="$PROJECT_NAME" \
  trainer.experiment_name="$EXPERIMENT_NAME" \
  trainer.total_epochs="$TOTAL_EPOCHS" \
  trainer.logger="$LOGGER" \
  ${env_overrides[@]+"${env_overrides[@]}"} \
  ${bench_args[@]+"${bench_args[@]}"} \
  ${args[@]+"${args[@]}"}
