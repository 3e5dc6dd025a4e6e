"""Each XLA:CPU detour and default flag against the plain program, on this machine.

    python scripts/bench_detours.py             # every detour and flag, 2 interleaved rounds
    python scripts/bench_detours.py --quick     # smoke run: 64 px, small batches (what the tests run)
    python scripts/bench_detours.py --only batchnorm_dot_sums,ynn_fusion_off

For each item of ``mammojax.platform`` (``DETOURS`` and ``XLA_FLAG_VALUES``),
the program it was written for is timed twice in fresh processes: with the
item and without it, everything else as this machine's measured row chooses
(``MAMMOJAX_DETOURS`` / ``MAMMOJAX_XLA_FLAG_SET`` set to ``+item`` / ``-item``).
Fresh processes because XLA reads its flags once, at start, and because a
traced program keeps the detours of its trace. Rounds alternate plain and
detour; an item is *taken* when it won every round (never a detour that is
slower where it runs). The last lines are the ``platform.MEASURED`` row for this
machine, to paste with its figures into docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# item -> (program, model, batch, side): the program each detour was written for.
PROBES = {
    "batchnorm_dot_sums": ("train", "resnet18", 16, 224),
    "maxpool_phase_grad": ("train", "resnet18", 16, 224),
    "small_map_im2col": ("train", "resnet18", 16, 64),  # stage4 is 2x2 at 64 px (window scoring, small tests)
    "depthwise_taps": ("predict", "mobilenet_v2", 8, 224),
    "ynn_fusion_off": ("predict_cam", "resnet18", 1, 224),
}
QUICK_PROBES = {item: (program, model, min(batch, 4), 64) for item, (program, model, batch, _) in PROBES.items()}


def probe(program: str, model_name: str, batch: int, side: int, repeats: int) -> float:
    """Median ms per call of one program (in this process, with this process's detours and flags)."""
    from mammojax import runtime

    runtime.setup(compilation_cache=False)  # every variant compiles afresh
    import jax
    import numpy as np

    from mammojax import benchmark, models

    model = models.create_model(model_name)
    if program == "train":
        sys.path.insert(0, str(REPO / "scripts"))
        import bench_train

        args = argparse.Namespace(image_size=(side, side), batch_size=batch, warmup=2, dtype="float32",
                                  model=model_name)
        run, _ = bench_train.build_jax(args)
        return statistics.median(run(1) * 1000 for _ in range(repeats))
    variables = jax.jit(lambda key: models.init_variables(model, key, side))(jax.random.key(0))
    scorer = benchmark.make_scorer(model, variables, batch_size=batch)
    predict, predict_cam = scorer.programs()
    fn = predict if program == "predict" else predict_cam
    images = scorer.put(np.random.default_rng(0).standard_normal((batch, side, side, 1)).astype(np.float32))
    return benchmark.time_fn(lambda: jax.block_until_ready(fn(scorer.variables, images)),
                             repeats=repeats).median_ms


def run_variant(item: str, taken: bool, spec, repeats: int) -> float:
    """One fresh process timing ``spec`` with ``item`` on or off."""
    from mammojax.platform import DETOURS

    env = dict(os.environ, MAMMOJAX_COMPILATION_CACHE="0")
    env.pop("XLA_FLAGS", None)  # the flags are what is measured: none of the caller's
    variable = "MAMMOJAX_DETOURS" if item in DETOURS else "MAMMOJAX_XLA_FLAG_SET"
    env[variable] = ("+" if taken else "-") + item
    command = [sys.executable, __file__, "--probe", json.dumps([*spec, repeats])]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode:
        raise SystemExit(f"bench_detours: {item} ({'detour' if taken else 'plain'}) failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated items (default: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8, help="calls (training: steps) per timing")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, batches of at most 4, 1 round")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: time one program, print ms
    args = parser.parse_args(argv)
    if args.probe:
        program, model_name, batch, side, repeats = json.loads(args.probe)
        print(probe(program, model_name, batch, side, repeats))
        return 0
    from mammojax import platform

    probes = QUICK_PROBES if args.quick else PROBES
    if args.quick:
        args.rounds, args.repeats = 1, 2
    items = [i for i in args.only.split(",") if i] or list(probes)
    unknown = sorted(set(items) - set(probes))
    if unknown:
        parser.error(f"unknown item(s) {', '.join(unknown)}; valid: {', '.join(probes)}")
    info = platform.cpu_info()
    key = platform.platform_key("cpu")
    print(f"{info.describe()}; platform key {key}; {args.rounds} rounds of {args.repeats} calls",
          file=sys.stderr)
    results = {}
    for item in items:
        spec = probes[item]
        rows = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            plain, detour = run_variant(item, False, spec, args.repeats), run_variant(item, True, spec, args.repeats)
            rows.append({"plain_ms": plain, "detour_ms": detour, "speedup": plain / detour})
            print(f"  {item}: plain {plain:.1f} ms, detour {detour:.1f} ms, speedup {plain / detour:.2f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        speedups = [r["speedup"] for r in rows]
        program, model_name, batch, side = spec
        results[item] = {"probe": f"{model_name} {program}, batch {batch}, {side} px",
                         "plain_ms": statistics.median(r["plain_ms"] for r in rows),
                         "detour_ms": statistics.median(r["detour_ms"] for r in rows),
                         "speedup": statistics.median(speedups), "speedup_range": (min(speedups), max(speedups)),
                         "taken": min(speedups) > 1.0}
    if args.json:
        print(json.dumps({"cpu": info.model_name, "family": info.family, "model": info.model, "key": key,
                          "items": results}, indent=2))
        return 0
    print(f"| item | program | plain ms | detour ms | speedup (range) | taken |\n|---|---|---|---|---|---|")
    for item, r in results.items():
        lo, hi = r["speedup_range"]
        print(f"| {item} | {r['probe']} | {r['plain_ms']:.1f} | {r['detour_ms']:.1f} | {r['speedup']:.2f} "
              f"({lo:.2f}-{hi:.2f}) | {'yes' if r['taken'] else 'no'} |")
    detours = sorted(i for i, r in results.items() if r["taken"] and i in platform.DETOURS)
    flags = sorted(i for i, r in results.items() if r["taken"] and i in platform.XLA_FLAG_VALUES)
    print(f'\nplatform.MEASURED row:\n    "{key}": Choices(detours=frozenset({detours}), xla_flags=frozenset({flags})),')
    return 0


if __name__ == "__main__":
    sys.exit(main())
