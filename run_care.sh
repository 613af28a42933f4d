#!/usr/bin/env bash
# CARE (or a baseline) on a paper backbone with the data_prep/build_mix.py mix, through verl 0.9.1.
#
#   bash run_care.sh [--model PRESET] [--dry-run] [--skip-preflight] [--debug] [OPTION ...] [key=value ...]  # any verl/CARE hydra override
#   bash run_care.sh --preflight-only                     # the start-up checks only (GPU ones included), no Ray
#   ALGO=grpo bash run_care.sh ...                        # grpo | dapo | gspo | care (default), same data/reward/budget
#   bash run_care.sh --smoke [--model qwen3-vl] [key=value ...]  # CPU only, offline: tiny model + data, 3 steps + resume
#                                                         # (smoke/driver.py; ignores the GPU settings below but
#                                                         # NNODES; SMOKE_DIR [$TMPDIR/care-verl-smoke]: its files)
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
# variable below and every key=value on the command line wins over the preset.
#
# Everything but --smoke and --stage eval runs `python -m recipe.care.main_care` (its --help lists each
# OPTION). Environment: each variable that is set and not empty becomes that option (defaults in
# brackets); the command line wins over the environment.
#   ALGO [care]                         --algo                 care | grpo | dapo | gspo
#   DATA_DIR [data/care_mix]            --data-dir             train-*.parquet shards and val.parquet (data_prep/build_mix.py)
#   BENCH_DIR [unset]                   --bench-dir            data_prep/build_bench.py's six parquets: also validate
#                                                              on them, greedy (val-core/<benchmark>, val-core/macro/acc)
#   SFT_DATA_DIR [data/care_sft]        --sft-data-dir         --stage sft: train-*.parquet (data_prep/build_sft.py)
#   MODEL_PATH [preset]                 --model-path           hub id or local folder
#   TRAIN_BATCH_SIZE [preset]           --train-batch-size     prompts per step
#   ROLLOUT_N [preset]                  --rollout-n            rollouts per prompt
#   N_GPUS_PER_NODE [8]                 --n-gpus-per-node
#   NNODES [1]                          --nnodes
#   NODE_RANK, MASTER_ADDR,             --node-rank,           --stage sft on several nodes (run it on every node):
#     MASTER_PORT [29500]               --master-addr, --master-port   this node's rank, node 0's address and port
#   EXPERIMENT_NAME [${ALGO}_<preset>]  --experiment-name
#   SFT_EXPERIMENT_NAME [sft_<preset>]  --sft-experiment-name
#   PROJECT_NAME [care-verl]            --project-name
#   TOTAL_EPOCHS [1]                    --total-epochs
#   LOGGER ['["console","file"]']       --logger               add "wandb" to log there
#   CARE_DEBUG [unset]                  --debug                1: the traceback of a bad input
#   PYTHON [python3, or .venv/bin/python, or .venv-ci/bin/python]: the interpreter
# A bad option, ALGO, preset or key=value stops before Ray with one line naming it and the fix (exit 2);
# --debug (or CARE_DEBUG=1) shows the Python traceback instead.
# Before Ray starts, recipe/care/preflight.py checks flash-attn/vllm, the GPU count, the data, wandb
# credentials and the model path, one line per problem (--dry-run: all but the GPU checks;
# --skip-preflight: none). Step metrics: <trainer.default_local_dir>/metrics.jsonl (verl's file logger).
# Multi-node: start Ray on every node first (`ray start --head` / `ray start --address=<head>:6379`),
# then run this script on the head node with NNODES set, or submit it (README, "Several nodes");
# verl attaches to the running cluster. Data and checkpoint paths: absolute, on storage every node sees.
set -euo pipefail

PYTHON="${PYTHON:-}"

cd "$(dirname "${BASH_SOURCE[0]}")"

# The header comment above is the usage text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

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
    if [[ "$PYTHON" == python3 ]]; then
      # e.g. under `ray job submit`: the job runs from a copy of the repo without its virtualenvs, with
      # the PATH that `ray start` had on that node
      echo "run_care.sh: python3 ($(command -v python3 || echo 'not on PATH')) lacks verl or care-verl and no" \
           ".venv/.venv-ci here; set PYTHON=/abs/path/to/venv/bin/python (or start Ray from the activated venv)" >&2
    fi
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
help=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --debug) export CARE_DEBUG=1 ;;  # main_care and the smoke's runs read it
    -h|--help) help=1; args+=("$arg") ;;  # kept for --smoke, whose own --help lists its options
    *) args+=("$arg") ;;
  esac
done

if ((smoke == 1)); then
  # The embedded default (smoke/driver.py): builds the tiny model and data offline, then runs
  # $ALGO on CPU through python -m recipe.care.main_care (steps 1-2, checkpoint, resume, step 3).
  # Remaining key=value arguments are verl/CARE overrides for those runs.
  exec "$PYTHON" -m smoke --algo "${ALGO:-care}" "${args[@]}"
fi

if ((help == 1)); then
  usage
  exit 0
fi

# Each variable that is set and not empty becomes its main_care option (listed above); an unset one
# leaves main_care's default, which for MODEL_PATH, TRAIN_BATCH_SIZE and ROLLOUT_N is the preset's value.
options=()
for pair in ALGO:--algo DATA_DIR:--data-dir BENCH_DIR:--bench-dir SFT_DATA_DIR:--sft-data-dir \
            MODEL_PATH:--model-path N_GPUS_PER_NODE:--n-gpus-per-node NNODES:--nnodes NODE_RANK:--node-rank \
            MASTER_ADDR:--master-addr MASTER_PORT:--master-port EXPERIMENT_NAME:--experiment-name \
            SFT_EXPERIMENT_NAME:--sft-experiment-name PROJECT_NAME:--project-name TOTAL_EPOCHS:--total-epochs \
            LOGGER:--logger TRAIN_BATCH_SIZE:--train-batch-size ROLLOUT_N:--rollout-n; do
  var="${pair%%:*}"
  if [[ -n "${!var:-}" ]]; then
    options+=("${pair#*:}=${!var}")
  fi
done

# The command line after the environment: its options and key=value overrides win.
exec "$PYTHON" -m recipe.care.main_care ${options[@]+"${options[@]}"} ${args[@]+"${args[@]}"}
