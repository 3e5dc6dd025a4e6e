"""Grad-CAM cost against the forward pass alone.

    python scripts/bench_gradcam.py            # resnet18, 224 px, batch 1 and 16
    python scripts/bench_gradcam.py --quick    # 64 px, batch 1 and 2, few runs (smoke test)

Target: Grad-CAM (forward + gradient to stage4 + CAM + upsampling to the
input) at most 1.3x the forward pass. Both programs are jitted; compile time
is reported separately from steady-state medians. Run nothing else on the
machine while measuring (shared/docs/PERFORMANCE.md); mammojax.runtime.setup()
applies the measured XLA CPU flags first, so compare like with like.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, args, runs: int) -> tuple[float, list[float]]:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    jax.block_until_ready(fn(*args))  # a second warm-up: first-run allocations
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return compile_s, times


def bench(model_name: str, image_size: tuple[int, int], batch_sizes, runs: int, method: str) -> list[dict]:
    import jax

    from mammojax import models
    from mammojax.explain.cam import make_cam_fn

    model = models.create_model(model_name)
    variables = models.init_variables(model, jax.random.key(0), image_size)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
    cam = make_cam_fn(model, method=method, size=image_size)
    results = []
    for batch in batch_sizes:
        images = jax.random.normal(jax.random.key(1), (batch, *image_size, 1))
        rows = {}
        # Interleave two rounds so drifting machine load hits both programs alike.
        for _ in range(2):
            for name, fn in (("forward", forward), ("gradcam", cam)):
                compile_s, times = _time(fn, (variables, images), runs)
                rows.setdefault(name, {"compile_s": compile_s, "times": []})["times"] += times
        fwd = statistics.median(rows["forward"]["times"])
        gc = statistics.median(rows["gradcam"]["times"])
        results.append({"model": model_name, "image_size": list(image_size), "batch": batch, "method": method,
                        "forward_ms": 1e3 * fwd, "gradcam_ms": 1e3 * gc, "ratio": gc / fwd,
                        "forward_compile_s": rows["forward"]["compile_s"],
                        "gradcam_compile_s": rows["gradcam"]["compile_s"],
                        "images_per_s_gradcam": batch / gc, "runs": 2 * runs})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 px, batch 1 and 2, 3 runs")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", default="224", help="S or HxW (e.g. 1024x832)")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--target", type=float, default=1.3, help="maximum Grad-CAM / forward ratio")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.batch_sizes, args.runs = "64", "1,2", 3
    from mammojax.data.preprocess import input_shape
    from mammojax.errors import MammojaxError

    try:
        args.image_size = input_shape(args.image_size, name="--image-size")
    except MammojaxError as err:
        parser.error(str(err))

    from mammojax import runtime

    runtime.setup()
    import jax

    batches = [int(b) for b in args.batch_sizes.split(",")]
    results = bench(args.model, args.image_size, batches, args.runs, args.method)
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"{'batch':>5} {'forward ms':>11} {'Grad-CAM ms':>12} {'ratio':>6} {'compile s (fwd/cam)':>20}")
    for r in results:
        print(f"{r['batch']:>5} {r['forward_ms']:>11.1f} {r['gradcam_ms']:>12.1f} {r['ratio']:>6.2f} "
              f"{r['forward_compile_s']:>9.1f}/{r['gradcam_compile_s']:.1f}")
    print(json.dumps(results))
    within = all(r["ratio"] <= args.target for r in results)
    print(f"target ratio <= {args.target}: {'met' if within else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
