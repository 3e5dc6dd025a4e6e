"""Patient-wise k-fold cross-validation of configs/mias.py on mini-MIAS.

    python scripts/mias_cv.py [--data PATH] [--workdir DIR] [--quick] [--folds K] [--config.KEY=VALUE ...]

Prints per-fold and pooled AUC (95% CI over women), sensitivity and
specificity at the validation-chosen thresholds (image and patient level),
and writes WORKDIR/{table.md, roc.png, results.json, predictions.csv}.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mias" / "all-mias-dev.tar.gz"


def _load_config_module(path: Path):
    spec = importlib.util.spec_from_file_location("_mias_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MIAS .tar.gz or folder")
    parser.add_argument("--workdir", default="runs/mias_cv")
    parser.add_argument("--config", default=str(REPO / "configs" / "mias.py"))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny images, one epoch")
    parser.add_argument("--folds", type=int, default=None, help="override cv.num_folds")
    args, overrides = parser.parse_known_args(argv)

    from mammojax import runtime
    from mammojax.config import apply_override
    from mammojax.errors import MammojaxError

    runtime.setup()
    module = _load_config_module(Path(args.config))
    config = module.get_config()
    if args.quick:
        config = module.quick(config)
    if args.folds is not None:
        config.cv.num_folds = args.folds
    try:
        for item in overrides:
            apply_override(config, item)
        from mammojax.recipes.mias_cv import render_table, run_mias_cv

        result = run_mias_cv(config, args.data, args.workdir, log=lambda m: print(m, flush=True))
    except MammojaxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print()
    print(render_table(result))
    print(f"wrote {Path(args.workdir) / 'table.md'}, roc.png, results.json, predictions.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
