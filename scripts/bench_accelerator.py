"""The accelerator table of issue 25: latency, bf16 throughput and full-size training on JAX's default device.

    python scripts/bench_accelerator.py           # on a GPU/TPU (scripts/gpu_check.sh runs it)
    python scripts/bench_accelerator.py --quick   # smoke sizes, on any device (the CPU test runs it)

Rows (1-channel ResNet-18, 2 classes):

* predict + Grad-CAM, batch 1, 224 px: ms per film (the scorer's program);
* inference, batch 256, 224 px, bfloat16 compute: films/s;
* training step, batch 8, 1024x832 (a mammogram's aspect), Adam: films/s.

The input pipeline's rate against the step is ``scripts/bench_pipeline.py``'s
table, which gpu_check.sh prints after this one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def rows(quick: bool) -> list[dict]:
    from mammojax import runtime

    runtime.setup()
    import jax

    import bench_train
    from mammojax.benchmark import benchmark_model

    latency_size, bulk, train_shape, train_batch = (64, 8, (64, 48), 2) if quick else (224, 256, (1024, 832), 8)
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    out = []
    latency = benchmark_model("resnet18", image_size=latency_size, batch_size=1, repeats=5 if quick else 30)
    out.append({"row": f"predict + Grad-CAM, batch 1, {latency_size} px", "value": latency.predict_cam.median_ms,
                "unit": "ms", "first_call_s": latency.predict_cam.compile_s})
    throughput = benchmark_model("resnet18", image_size=latency_size, batch_size=bulk, dtype="bfloat16",
                                 repeats=3 if quick else 10)
    out.append({"row": f"inference, batch {bulk}, {latency_size} px, bfloat16",
                "value": 1000 * bulk / throughput.predict.median_ms, "unit": "img/s",
                "first_call_s": throughput.predict.compile_s})
    steps = 1 if quick else 5
    args = argparse.Namespace(image_size=train_shape, batch_size=train_batch, warmup=1 if quick else 2)
    run, compile_s = bench_train.build_jax(args)
    seconds = min(run(steps) for _ in range(2 if quick else 3))
    out.append({"row": f"training step, batch {train_batch}, {train_shape[0]}x{train_shape[1]}, Adam",
                "value": steps * train_batch / seconds, "unit": "img/s", "first_call_s": compile_s})
    for row in out:
        row["device"] = device
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (64 px, small batches)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    table = rows(args.quick)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"device: {table[0]['device']}\n| | mammojax | first call |\n|---|---|---|")
    for row in table:
        print(f"| {row['row']} | {row['value']:.1f} {row['unit']} | {row['first_call_s']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
