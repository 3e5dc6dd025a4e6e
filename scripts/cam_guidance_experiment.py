"""Explanation-guided vs plain training on the synthetic phantoms, same seed and budget.

    python scripts/cam_guidance_experiment.py --workdir runs/cam-guidance              # seeds 0 1, weight 1
    python scripts/cam_guidance_experiment.py --workdir runs/cg --seeds 0 1 2 --weight 0.5

For each seed, two quickstart runs (``configs/quickstart.py``: 256 phantoms at
96 px, 8 epochs, Grad-CAM on stage3), one with ``train.cam_loss_weight = 0``
and one with ``--weight`` (``train.cam_loss = --loss``); everything else,
the phantoms, the split and the initialisation included, is the same. Each
run is ``mammojax quickstart`` itself (:func:`mammojax.quickstart.run_quickstart`):
train, evaluate the best checkpoint on the held-out test women, then the
``explain --evaluate`` measures on their positive phantoms
(:func:`mammojax.explain.explain.evaluate_localization`): pointing game
against its chance level, heatmap mass inside the lesion against the
lesion's share of the breast, and deletion faithfulness (the probability
drop when the top 5 % heatmap pixels are deleted, minus that of a random
region of the same shape). Nothing is re-implemented here. A rerun resumes
finished runs from their workdirs. Prints one row per run, then the mean
over seeds, and writes ``WORKDIR/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean

COLUMNS = (("test_auc", "AUC"), ("pointing_game", "pointing"), ("pointing_chance", "chance"),
           ("mass_inside", "mass in"), ("lesion_area_share", "area share"), ("mass_lift", "mass lift"),
           ("drop_cam", "drop CAM"), ("drop_random", "drop rand"), ("faithfulness_gap", "faith gap"))


def run_one(workdir: Path, seed: int, weight: float, loss: str, extra: list[str]) -> dict:
    from mammojax.quickstart import run_quickstart
    from mammojax.workdir import QUICKSTART_EXPLAIN

    overrides = [f"seed={seed}", f"train.cam_loss_weight={weight}", f"train.cam_loss={loss}", *extra]
    start = time.perf_counter()
    summary = run_quickstart(workdir, overrides=overrides, echo=lambda line: print(f"    {line}", flush=True))
    localization = json.loads((workdir / QUICKSTART_EXPLAIN / "localization.json").read_text())
    return {"seed": seed, "weight": weight, "loss": loss, "seconds": round(time.perf_counter() - start, 1),
            "test_auc": summary["test_auc"], "val_auc": summary["val_auc"], "best_epoch": summary["best_epoch"],
            **{key: localization.get(key) for key, _ in COLUMNS if key != "test_auc"},
            "images": localization.get("images")}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(rows: list[dict]) -> str:
    header = "| seed | weight | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['weight']:g} | " + " | ".join(_fmt(row.get(k)) for k, _ in COLUMNS) + " |")
    for weight in sorted({r["weight"] for r in rows}):
        group = [r for r in rows if r["weight"] == weight]
        means = [mean([r[k] for r in group if r.get(k) is not None]) if any(r.get(k) is not None for r in group)
                 else None for k, _ in COLUMNS]
        lines.append(f"| mean of {len(group)} | {weight:g} | " + " | ".join(_fmt(v) for v in means) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--weight", type=float, default=1.0, help="train.cam_loss_weight of the guided runs")
    parser.add_argument("--loss", default="energy", help="train.cam_loss of the guided runs")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (e.g. train.epochs=4)")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        for weight in (0.0, args.weight):
            name = f"seed{seed}-{'plain' if weight == 0 else f'{args.loss}{weight:g}'}"
            print(f"[{name}]", flush=True)
            rows.append(run_one(args.workdir / name, seed, weight, args.loss, args.override))
            print(f"  {name}: {json.dumps(rows[-1])}", flush=True)
            (args.workdir / "summary.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
