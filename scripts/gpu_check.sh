#!/usr/bin/env bash
# The one prepared accelerator check (issue 25): under 8 minutes on a lent GPU.
#
#   bash scripts/gpu_check.sh           # on the GPU machine (the `device` tool's run)
#   bash scripts/gpu_check.sh --smoke   # anywhere, on CPU: what tests/cli/test_gpu_check.py runs
#
# Full mode: installs the CUDA jaxlib of the installed jax's version from the
# package registry into the project's environment, refuses to go on unless JAX
# then computes on a GPU, runs the tests that matter on an accelerator
# (sharding over the devices, the scorer contract, exact resume), prints the
# benchmark table (scripts/bench_accelerator.py) and the input pipeline's
# rate against the training step (scripts/bench_pipeline.py at 512 px), and
# which detours mammojax.platform takes there (none until measured on a GPU).
#
# Smoke mode: no install and whatever device JAX finds; collects (does not run)
# the same tests, so a renamed or broken selection fails here, and prints
# both tables at smoke sizes (the pipeline's without its training step).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) echo "gpu_check: unknown option $1 (use --smoke or nothing)" >&2; exit 2 ;;
esac
source scripts/setup_env.sh
start=$SECONDS
tests=(tests/train/test_sharding.py tests/scoring/test_contract.py tests/train/test_resume.py)

if [ "$smoke" = 0 ]; then
  version="$(python -c 'import jax; print(jax.__version__)')"
  echo "gpu_check: installing the CUDA jaxlib for jax $version" >&2
  python -m pip install -q "jax[cuda12]==$version" || {
    echo "gpu_check: could not install jax[cuda12]==$version from the package registry" >&2; exit 1; }
  backend="$(python -c 'import jax; print(jax.default_backend())')"
  if [ "$backend" != "gpu" ]; then
    echo "gpu_check: JAX computes on '$backend', not a GPU; nothing to check here (use --smoke on CPU)" >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python -m pytest -q -x -p no:cacheprovider "${tests[@]}"
  bench=()
  pipeline=(--sizes 512)
else
  python -m pytest -q --collect-only -p no:cacheprovider "${tests[@]}" | tail -n 1
  bench=(--quick)
  pipeline=(--quick --sizes 32 --count 8 --pipeline-images 8 --skip-train-step)  # the step is timed above
fi
python scripts/bench_accelerator.py "${bench[@]}"
python scripts/bench_pipeline.py "${pipeline[@]}"
python - <<'EOF'
import jax
from mammojax import platform
key = platform.platform_key(jax.default_backend())
print(f"detours taken on {key}: {sorted(platform.choices_for(key).detours) or 'none'}")
EOF
echo "gpu_check: done in $((SECONDS - start)) s" >&2
