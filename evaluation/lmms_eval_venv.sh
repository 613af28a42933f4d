#!/usr/bin/env bash
# lmms-eval in its own virtualenv, created on first use (verl 0.9.1 needs transformers < 5.11; lmms-eval
# unconstrained pulls newer ones and hard-pins wandb). Prints the venv's python on stdout.
#
#   bash evaluation/lmms_eval_venv.sh            # CPU / Hugging Face backend
#   LMMS_EVAL_VLLM=1 bash evaluation/lmms_eval_venv.sh   # GPU node: also vLLM (brings its own torch)
#
# LMMS_EVAL_VENV [.cache/lmms-eval-venv]  PYTHON [python3]
# Pins (docs/evaluation.md, seen on a clean lmms-eval 0.7.3 install): filelock<4 (4.x lacks
# filelock._api), math-verify==0.9.0 (latex2sympy2 drags it to 0.1.0, which fails on import),
# Levenshtein (MathVista), decord (the qwen2_5_vl / qwen3_vl backends).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${LMMS_EVAL_VENV:-.cache/lmms-eval-venv}"
PYTHON="${PYTHON:-python3}"
LMMS_EVAL_VERSION="0.7.3"
PINS=("lmms-eval==$LMMS_EVAL_VERSION" "filelock<4" "math-verify==0.9.0" "Levenshtein" "decord"
      "transformers==5.9.0" "qwen-vl-utils")
STAMP="$VENV/.care-verl-lmms-eval-$LMMS_EVAL_VERSION${LMMS_EVAL_VLLM:+-vllm}"

# Ready: the stamp asked for, or for a Hugging Face backend either build (the vLLM one has torch too).
ready() {
  [[ -x "$VENV/bin/python" ]] || return 1
  [[ -f "$STAMP" ]] && return 0
  [[ -z "${LMMS_EVAL_VLLM:-}" && -f "$VENV/.care-verl-lmms-eval-$LMMS_EVAL_VERSION-vllm" ]]
}
if ready; then
  echo "$VENV/bin/python"
  exit 0
fi
# One builder at a time: a second caller (CI builds it in the background while the tests run, and the
# smoke's eval stage asks for it) waits here for the first, then finds the stamp.
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null; then  # util-linux; without it (macOS) concurrent first uses are the caller's care
  exec 9>"$VENV.lock"
  if ! flock -n 9; then
    echo "== waiting for another process building the lmms-eval virtualenv in $VENV" >&2
    flock 9
  fi
fi
if ready; then
  echo "$VENV/bin/python"
  exit 0
fi
{
  echo "== creating the lmms-eval virtualenv in $VENV (first use)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [[ -n "${LMMS_EVAL_VLLM:-}" ]]; then
    "$VENV/bin/python" -m pip install -q "vllm==0.24.0"  # its own torch build
  else
    "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
  "$VENV/bin/python" -m pip install -q "${PINS[@]}"
  "$VENV/bin/python" -c "import lmms_eval, math_verify, Levenshtein${LMMS_EVAL_VLLM:+, vllm}; print('   lmms-eval ready')"
} >&2
touch "$STAMP"
echo "$VENV/bin/python"
