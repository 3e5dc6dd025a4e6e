#!/usr/bin/env bash
# The one prepared accelerator check (issue 25): under 8 minutes on a lent GPU.
#
#   bash scripts/gpu_check.sh           # on the GPU machine (the `device` tool's run)
#   bash scripts/gpu_check.sh --smoke   # anywhere, on CPU: what tests/cli/test_bench_scripts.py runs
#
# Full mode finds a JAX that computes on a GPU, runs the tests that matter on an
# accelerator (sharding over the devices, the scorer contract, exact resume),
# prints the benchmark table (scripts/bench_accelerator.py) and the input
# pipeline's rate against the training step (scripts/bench_pipeline.py at
# 512 px), and which detours mammojax.platform takes there (none until measured
# on a GPU). Which JAX:
#   * the lent machines' image already has one for CUDA in its python3, and no
#     network: mammojax runs from this checkout, and packages the image lacks
#     travel as wheels in $GPU_CHECK_WHEELS (default .whl; how to fetch them:
#     the device tool's README). TensorFlow (tf.data) is too big to carry, so
#     the tests that need the input pipeline fail there, and the missing list says so;
#   * elsewhere, the project's environment plus the CUDA jaxlib of its jax
#     version from the package registry.
# The exit status is the tests' (and the pipeline table's); the tables print either way.
#
# Smoke mode: the project's environment and whatever device JAX finds; collects
# (does not run) the same tests, so a renamed or broken selection fails here,
# and prints both tables at smoke sizes (the pipeline's without its training step).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) echo "gpu_check: unknown option $1 (use --smoke or nothing)" >&2; exit 2 ;;
esac
start=$SECONDS
tests=(tests/train/test_sharding.py tests/scoring/test_contract.py tests/train/test_resume.py)
status=0
on_gpu='import jax, sys; sys.exit(jax.default_backend() != "gpu")'

if [ "$smoke" = 1 ]; then
  source scripts/setup_env.sh
  py=python
elif python3 -c "$on_gpu" 2>/dev/null; then
  py=python3
  wheels="${GPU_CHECK_WHEELS:-.whl}"
  site=/tmp/gpu-check-site
  if compgen -G "$wheels/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  fi
  export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
elif ! command -v nvidia-smi >/dev/null; then
  echo "gpu_check: no NVIDIA GPU here (no nvidia-smi); use --smoke on a CPU" >&2
  exit 1
else
  source scripts/setup_env.sh
  py=python
  version="$("$py" -c 'import jax; print(jax.__version__)')"
  echo "gpu_check: installing the CUDA jaxlib for jax $version" >&2
  "$py" -m pip install -q "jax[cuda13]==$version" || "$py" -m pip install -q "jax[cuda12]==$version" || {
    echo "gpu_check: could not install jax[cuda13] or jax[cuda12]==$version from the package registry" >&2; exit 1; }
  if ! "$py" -c "$on_gpu"; then
    echo "gpu_check: JAX does not compute on a GPU here; nothing to check (use --smoke on CPU)" >&2
    exit 1
  fi
fi

if [ "$smoke" = 1 ]; then
  "$py" -m pytest -q --collect-only -p no:cacheprovider "${tests[@]}" | tail -n 1
  bench=(--quick)
  pipeline=(--quick --sizes 32 --count 8 --pipeline-images 8 --skip-train-step)  # the step is timed above
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$py" -c 'import importlib.util as u
need = ["flax", "optax", "orbax.checkpoint", "pydicom", "click", "sklearn", "tensorflow", "tensorflow_datasets"]
missing = [n for n in need if u.find_spec(n) is None]
print("gpu_check: missing here: " + (", ".join(missing) or "nothing"))' || true
  "$py" -m pytest -q -p no:cacheprovider "${tests[@]}" || status=$?
  bench=()
  pipeline=(--sizes 512)
fi
"$py" scripts/bench_accelerator.py "${bench[@]}"
"$py" scripts/bench_pipeline.py "${pipeline[@]}" || status=$?
"$py" -c 'import jax
from mammojax import platform
key = platform.platform_key(jax.default_backend())
taken = sorted(platform.choices_for(key).detours) or "none"
print(f"detours taken on {key}: {taken}")'
echo "gpu_check: done in $((SECONDS - start)) s (exit $status)" >&2
exit "$status"
