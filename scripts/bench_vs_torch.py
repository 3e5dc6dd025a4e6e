"""The four speed ratios of issue 25: mammojax against PyTorch's best CPU mode, in one run.

    python scripts/bench_vs_torch.py              # the four cases, 5 interleaved rounds
    python scripts/bench_vs_torch.py --quick      # smoke run: 64 px, 2 rounds (what the tests run)
    python scripts/bench_vs_torch.py --dtype bfloat16 --json

Cases (1-channel ResNet-18, 2 classes, the same architecture on both sides):

* ``cam224``   predict + Grad-CAM, batch 1, 224 px (ms per call);
* ``infer16``  inference, batch 16, 224 px (images/s);
* ``cam512``   predict + Grad-CAM, batch 1, 512 px (ms per call);
* ``train16``  training step, batch 16, 224 px, cross-entropy + Adam 1e-4 (images/s).

PyTorch runs channels_last everywhere; for inference its backbone is
``torch.compile``d with ``torch._inductor.config.freezing`` (weights folded in
as constants), the head and the hook-free Grad-CAM (one ``autograd.grad`` of
the class-1 logit with respect to layer4's output) run eagerly on its output.
Training is channels_last eager (``torch.compile`` of a training step is not
the comparison the issue asks for). mammojax runs the programs its own
commands run: the :class:`~mammojax.scoring.Scorer`'s compiled predict and
predict + Grad-CAM, and ``train.state.jit_steps``' step.

Each ratio is PyTorch time / mammojax time (> 1: mammojax ahead), taken
within a round of back-to-back measurements, because this shared machine's
speed drifts by +-15 % over minutes; the median over rounds and the range are
printed. First-call times are reported apart: mammojax's from its persistent
compilation cache (warm after one run of this script), torch.compile's per shape.
PyTorch is a benchmark-only dependency; both sides get the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # bench_inference / bench_train: one home for each timing helper
sys.path.insert(0, str(REPO / "tests"))  # torch_reference.py: the PyTorch twin of the zoo

CASES = ("cam224", "infer16", "cam512", "train16")
CASE_TITLES = {"cam224": "predict + Grad-CAM, batch 1, {s} px",
               "infer16": "inference, batch 16, {s} px",
               "cam512": "predict + Grad-CAM, batch 1, {s} px",
               "train16": "training step, batch 16, {s} px, Adam"}


def case_shapes(quick: bool) -> dict[str, tuple[int, int]]:
    """``case -> (batch, image side)``; the quick smoke run shrinks every side to 64 px."""
    shapes = {"cam224": (1, 224), "infer16": (16, 224), "cam512": (1, 512), "train16": (16, 224)}
    if quick:
        shapes = {case: (min(batch, 4), 64) for case, (batch, _) in shapes.items()}
    return shapes


def torch_inference(side: int, batch: int, torch, *, seed: int = 0):
    """PyTorch's best inference mode: ``(predict(x), predict_cam(x), x, compile_s)`` for one shape."""
    import torch_reference

    torch.manual_seed(seed)
    model = torch_reference.resnet18(num_classes=2, in_channels=1)
    torch_reference.randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    backbone = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                                   model.layer1, model.layer2, model.layer3, model.layer4)
    torch._inductor.config.freezing = True
    compiled = torch.compile(backbone, dynamic=False)  # one static program per shape, as benchmarked
    x = torch.randn(batch, 1, side, side).contiguous(memory_format=torch.channels_last)

    def predict():
        with torch.no_grad():
            return model.fc(compiled(x).mean(dim=(2, 3)))

    def predict_cam():
        with torch.no_grad():
            features = compiled(x)
        features = features.detach().requires_grad_(True)
        logits = model.fc(features.mean(dim=(2, 3)))
        (grad,) = torch.autograd.grad(logits[:, 1].sum(), features)
        cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1))
        cam = cam / (cam.flatten(1).amax(dim=1)[:, None, None] + 1e-8)
        cam = torch.nn.functional.interpolate(cam[:, None], size=(side, side), mode="bilinear",
                                              align_corners=False)[:, 0]
        return torch.softmax(logits.detach(), dim=1)[:, 1], cam.detach()

    start = time.perf_counter()
    predict()
    return predict, predict_cam, time.perf_counter() - start


def jax_inference(side: int, batch: int, dtype: str, *, seed: int = 0):
    """mammojax's scorer programs: ``(predict(), predict_cam(), first_call_s)`` for one shape."""
    import jax
    import numpy as np

    from mammojax import benchmark, models

    model = models.create_model("resnet18", dtype=dtype)
    variables = jax.jit(lambda key: models.init_variables(model, key, side))(jax.random.key(seed))
    scorer = benchmark.make_scorer(model, variables, batch_size=batch)
    predict, predict_cam = scorer.programs()
    variables = scorer.variables
    images = scorer.put(np.random.default_rng(seed).standard_normal((batch, side, side, 1)).astype(np.float32))
    start = time.perf_counter()
    jax.block_until_ready(predict_cam(variables, images))
    jax.block_until_ready(predict(variables, images))
    first_call_s = time.perf_counter() - start
    return (lambda: jax.block_until_ready(predict(variables, images)),
            lambda: jax.block_until_ready(predict_cam(variables, images)), first_call_s)


def training_pair(side: int, batch: int, dtype: str, warmup: int):
    """``(jax run(n) -> s, torch run(n) -> s, jax compile_s)``: bench_train's two steps, torch channels_last."""
    import bench_train

    args = argparse.Namespace(image_size=(side, side), batch_size=batch, warmup=warmup, dtype=dtype)
    jax_run, compile_s = bench_train.build_jax(args)
    torch_run = bench_train.build_torch(args, channels_last=True)
    return jax_run, torch_run, compile_s


def measure(args) -> dict:
    from mammojax import runtime

    runtime.setup()
    import jax
    import torch

    from bench_inference import median_ms

    from mammojax import platform

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    shapes = case_shapes(args.quick)
    timers, first_calls = {}, {}
    for case in args.cases:
        batch, side = shapes[case]
        if case == "train16":
            jax_run, torch_run, compile_s = training_pair(side, batch, args.dtype, args.warmup)
            # Images/s over ``steps`` steps; the per-call time below is per step.
            timers[case] = (lambda r=jax_run: r(args.steps) / args.steps * 1000,
                            lambda r=torch_run: r(args.steps) / args.steps * 1000)
            first_calls[case] = {"mammojax_compile_s": compile_s}
            continue
        jax_predict, jax_cam, jax_first = jax_inference(side, batch, args.dtype)
        torch_predict, torch_cam, torch_first = torch_inference(side, batch, torch)
        pair = (jax_predict, torch_predict) if case == "infer16" else (jax_cam, torch_cam)
        timers[case] = (lambda f=pair[0]: median_ms(f, args.repeats), lambda f=pair[1]: median_ms(f, args.repeats))
        first_calls[case] = {"mammojax_first_call_s": jax_first, "torch_compile_s": torch_first}
    rounds = []
    for index in range(args.rounds):
        row = {}
        for case in args.cases:
            jax_ms, torch_ms = timers[case][0](), timers[case][1]()
            row[case] = {"mammojax_ms": jax_ms, "torch_ms": torch_ms, "ratio": torch_ms / jax_ms}
        rounds.append(row)
        print(f"  round {index + 1}: " + ", ".join(f"{case} {row[case]['ratio']:.2f}" for case in args.cases),
              file=sys.stderr, flush=True)
    summary = {}
    for case in args.cases:
        batch, side = shapes[case]
        column = lambda key: [r[case][key] for r in rounds]
        summary[case] = {"title": CASE_TITLES[case].format(s=side), "batch": batch, "side": side,
                         "mammojax_ms": statistics.median(column("mammojax_ms")),
                         "torch_ms": statistics.median(column("torch_ms")),
                         "ratio": statistics.median(column("ratio")),
                         "ratio_range": (min(column("ratio")), max(column("ratio"))), **first_calls[case]}
    return {"device": jax.devices()[0].device_kind, "cpu": platform.cpu_info().describe(), "threads": threads,
            "dtype": args.dtype, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jax": jax.__version__, "torch": torch.__version__, "rounds": args.rounds, "cases": summary}


def format_table(result: dict) -> str:
    lines = [f"{result['cpu']}; {result['threads']} threads; jax {result['jax']}, torch {result['torch']}; "
             f"mammojax {result['dtype']}; medians of {result['rounds']} interleaved rounds",
             "| | mammojax | PyTorch best | ratio (> 1: mammojax ahead), range |", "|---|---|---|---|"]
    for case, row in result["cases"].items():
        lo, hi = row["ratio_range"]
        if case in ("infer16", "train16"):
            jax_value = f"{row['batch'] * 1000 / row['mammojax_ms']:.1f} img/s"
            torch_value = f"{row['batch'] * 1000 / row['torch_ms']:.1f} img/s"
        else:
            jax_value, torch_value = f"{row['mammojax_ms']:.1f} ms", f"{row['torch_ms']:.1f} ms"
        mode = "channels_last eager" if case == "train16" else "channels_last + compile"
        lines.append(f"| {row['title']} | {jax_value} | {torch_value} ({mode}) | {row['ratio']:.2f} "
                     f"({lo:.2f}-{hi:.2f}) |")
    firsts = [f"{case}: mammojax {row.get('mammojax_first_call_s', row.get('mammojax_compile_s')):.2f} s"
              + (f", torch.compile {row['torch_compile_s']:.1f} s" if "torch_compile_s" in row else "")
              for case, row in result["cases"].items()]
    lines.append("first call: " + "; ".join(firsts) + " (train16: a cold jit, no cache)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15, help="calls per inference timing (median taken)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per timing")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="mammojax's compute dtype (model.dtype); PyTorch stays float32")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, batches of at most 4, 2 rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}")
    if args.quick:
        args.rounds, args.repeats, args.steps, args.warmup = 2, 2, 1, 1
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
