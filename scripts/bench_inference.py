"""Predict + Grad-CAM per image against the hardware floor and PyTorch eager.

    python scripts/bench_inference.py               # resnet18 (1-ch), 224 px, batch 1
    python scripts/bench_inference.py --image-size 512
    python scripts/bench_inference.py --quick       # smoke run, 64 px

Prints two ratios (issue 7's targets):

* floor ratio = mammojax time / (XLA's flop count of the jitted predict +
  Grad-CAM program / this machine's measured float32 matmul rate); target <= 1.5;
* torch ratio = mammojax time / PyTorch eager time for the same architecture,
  the same weights and the same hook-based Grad-CAM; target < 1.

PyTorch is a benchmark-only dependency (never imported by mammojax). Both run
with the same thread count; run nothing else on the machine meanwhile.
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
sys.path.insert(0, str(REPO / "tests"))  # torch_reference.py: the PyTorch twin of the zoo


def torch_gradcam_program(torch_model, torch):
    """Forward + hook-based Grad-CAM on layer4 for class 1, PyTorch's fastest eager form.

    Parameters are frozen and only layer4's output asks for a gradient, so the
    backward pass runs through the head alone (as in mammojax), not the
    whole network.
    """
    saved = {}
    torch_model.requires_grad_(False)

    def keep(module, inputs, output):
        if not torch.is_grad_enabled():  # the plain predict runs under no_grad
            return output
        output = output.detach().requires_grad_(True)
        saved["act"] = output
        output.register_hook(lambda grad: saved.__setitem__("grad", grad))
        return output  # replaces layer4's output for the rest of the forward

    torch_model.layer4.register_forward_hook(keep)

    def run(x):
        logits = torch_model(x)
        probs = torch.softmax(logits, dim=1)[:, 1]
        logits[:, 1].sum().backward()
        weights = saved["grad"].mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * saved["act"]).sum(dim=1))
        cam = cam / (cam.flatten(1).amax(dim=1)[:, None, None] + 1e-8)
        cam = torch.nn.functional.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear",
                                              align_corners=False)[:, 0]
        return probs.detach(), cam.detach()

    return run


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", default="224", help="S or HxW, e.g. 1024x832")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved mammojax/PyTorch/matmul rounds")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.repeats, args.rounds = "64", 3, 2

    from mammojax import runtime

    runtime.setup()
    import jax
    import numpy as np
    import torch

    from mammojax import benchmark as bench
    from mammojax import models
    from mammojax.weights import convert_state_dict
    from mammojax.data.preprocess import image_size_of, input_shape
    import torch_reference

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    reference = torch_reference.resnet18(num_classes=2)
    torch_reference.randomize_batchnorm(reference, torch.Generator().manual_seed(0))
    reference.eval()
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    # Same network in both: the 1-channel stem is the RGB stem summed over
    # channels, and torch sees the grey image replicated to RGB.
    variables = convert_state_dict(state, "resnet18", num_classes=2).variables
    model = models.create_model("resnet18")

    rng = np.random.default_rng(0)
    height, width = input_shape(args.image_size)
    images = rng.standard_normal((args.batch_size, height, width, 1)).astype(np.float32)
    x_torch = torch.from_numpy(np.repeat(images.transpose(0, 3, 1, 2), 3, axis=1).copy())

    scorer = bench.make_scorer(model, variables, batch_size=args.batch_size)
    predict, predict_cam = scorer.programs()
    variables = scorer.variables
    x_jax = scorer.put(images)
    compiled = predict_cam.lower(variables, x_jax).compile()
    flops = bench.xla_flops(compiled)
    start = time.perf_counter()
    jax.block_until_ready(predict_cam(variables, x_jax))
    first_call_s = time.perf_counter() - start
    run_torch = torch_gradcam_program(reference, torch)

    def torch_predict():
        with torch.no_grad():
            return reference(x_torch)

    # Interleaved rounds: this shared machine's speed drifts by +-15% over
    # minutes, so each round measures the matmul rate, mammojax and PyTorch
    # back to back and the ratios are taken within a round (median reported).
    rounds = []
    for _ in range(args.rounds):
        rate = bench.matmul_gflops()
        row = {"matmul_gflops": rate,
               "jax_predict": median_ms(lambda: jax.block_until_ready(predict(variables, x_jax)), args.repeats),
               "jax_cam": median_ms(lambda: jax.block_until_ready(predict_cam(variables, x_jax)), args.repeats),
               "torch_predict": median_ms(torch_predict, args.repeats),
               "torch_cam": median_ms(lambda: run_torch(x_torch), args.repeats)}
        row["floor_ratio"] = row["jax_cam"] / (flops / (rate * 1e9) * 1000)
        row["torch_ratio"] = row["jax_cam"] / row["torch_cam"]
        rounds.append(row)
    pick = lambda key: statistics.median(r[key] for r in rounds)
    spread = lambda key: (min(r[key] for r in rounds), max(r[key] for r in rounds))
    rate = pick("matmul_gflops")
    jax_predict_ms, jax_cam_ms = pick("jax_predict"), pick("jax_cam")
    torch_predict_ms, torch_cam_ms = pick("torch_predict"), pick("torch_cam")

    # Sanity: the two pipelines compute the same thing.
    from mammojax.scoring import probabilities

    cam_jax, logits_cam = predict_cam(variables, x_jax)
    p_jax = probabilities(np.asarray(logits_cam))
    p_torch, cam_torch = run_torch(x_torch)
    prob_diff = float(np.max(np.abs(np.asarray(p_jax) - p_torch.numpy())))
    cam_diff = float(np.max(np.abs(np.asarray(cam_jax) - cam_torch.numpy())))
    # Probabilities of random weights saturate and a CAM can be all zero, which
    # would make the two lines above agree vacuously: compare logits too, and
    # show how much of the CAM is non-zero.
    logits_jax = np.asarray(model.apply(variables, x_jax, train=False)[0])
    with torch.no_grad():
        logits_torch = reference(x_torch).numpy()
    logit_diff = float(np.max(np.abs(logits_jax - logits_torch)))
    logit_scale = float(np.max(np.abs(logits_torch)))
    cam_nonzero = float(np.mean(np.asarray(cam_jax) > 1e-6))

    floor_ms = flops / (rate * 1e9) * 1000
    result = {
        "image_size": image_size_of(input_shape(args.image_size)), "batch_size": args.batch_size, "threads": threads,
        "device": jax.devices()[0].device_kind, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "matmul_gflops": rate, "xla_gflops": flops / 1e9, "floor_ms": floor_ms,
        "first_call_s": first_call_s,
        "mammojax_predict_ms": jax_predict_ms, "mammojax_predict_cam_ms": jax_cam_ms,
        "torch_predict_ms": torch_predict_ms, "torch_predict_cam_ms": torch_cam_ms,
        "floor_ratio": pick("floor_ratio"), "torch_ratio": pick("torch_ratio"),
        "floor_ratio_range": spread("floor_ratio"), "torch_ratio_range": spread("torch_ratio"),
        "rounds": rounds,
        "max_prob_diff": prob_diff, "max_cam_diff": cam_diff, "max_logit_diff": logit_diff,
        "max_abs_logit": logit_scale, "cam_nonzero_fraction": cam_nonzero,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    b = args.batch_size
    height, width = input_shape(args.image_size)
    print(f"resnet18 (1-channel), {height}x{width}, batch {b}, {threads} threads, "
          f"{result['device']}")
    print(f"matmul rate {rate:.1f} GFLOP/s; XLA flops predict+Grad-CAM {flops / 1e9:.2f} GFLOP "
          f"-> floor {floor_ms:.1f} ms/batch")
    print(f"first call (compile or cache) {first_call_s:.2f} s")
    print(f"{'':24}{'predict ms/img':>16}{'+Grad-CAM ms/img':>18}")
    print(f"{'mammojax (XLA)':24}{jax_predict_ms / b:>16.1f}{jax_cam_ms / b:>18.1f}")
    print(f"{'PyTorch eager':24}{torch_predict_ms / b:>16.1f}{torch_cam_ms / b:>18.1f}")
    (f_lo, f_hi), (t_lo, t_hi) = result["floor_ratio_range"], result["torch_ratio_range"]
    print(f"floor ratio {result['floor_ratio']:.2f} (rounds {f_lo:.2f}-{f_hi:.2f}; target <= 1.5); "
          f"torch ratio {result['torch_ratio']:.2f} (rounds {t_lo:.2f}-{t_hi:.2f}; target < 1)")
    print(f"medians of {args.rounds} interleaved rounds, each the median of {args.repeats} calls")
    print(f"agreement: max |dp| {prob_diff:.1e}, max |dCAM| {cam_diff:.1e} (CAM non-zero on "
          f"{cam_nonzero:.0%} of pixels), max |dlogit| {logit_diff:.1e} (|logit| up to {logit_scale:.1f})")


if __name__ == "__main__":
    main()
