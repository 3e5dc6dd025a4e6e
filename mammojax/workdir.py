"""What a workdir holds, named once: every module that reads or writes one goes through here.

A training workdir (``mammojax train``)::

    checkpoints/          orbax CheckpointManager: the latest two for resume, the best by metric
    best/                 the inference checkpoint (mammojax.checkpoint format)
    config.json           the resolved config of the run
    metrics.jsonl         one JSON record per logged step and per epoch
    tensorboard/          the same scalars as TensorBoard events
    training_curves.png   loss and validation AUC per epoch

A cross-validation workdir (``mammojax cv``) holds one training
workdir per fold network under ``networks/fold<k>-member<m>/`` (resumable,
reused by a rerun), one inference checkpoint per fold ``fold<k>/`` and the
report (``results.json``, ``table.md``, ``predictions.csv``, ``roc.png``).
A quickstart workdir holds ``train/`` (a training workdir), ``eval/``,
``explain/`` and ``quickstart.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

CHECKPOINTS = "checkpoints"
BEST = "best"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CURVES = "training_curves.png"

NETWORKS = "networks"
CV_RESULTS = "results.json"
CV_TABLE = "table.md"
CV_PREDICTIONS = "predictions.csv"
CV_ROC = "roc.png"

QUICKSTART_TRAIN = "train"
QUICKSTART_EVAL = "eval"
QUICKSTART_EXPLAIN = "explain"
QUICKSTART_SUMMARY = "quickstart.json"


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The paths of one workdir (nothing is created until a writer needs it)."""

    root: Path  # a path, or a Workdir (taken as its root)

    def __post_init__(self):
        root = self.root.root if isinstance(self.root, Workdir) else self.root
        object.__setattr__(self, "root", Path(root).absolute())

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    def network(self, fold: int, member: int) -> Path:
        """The training workdir of cross-validation network ``member`` of ``fold``."""
        return self.root / NETWORKS / f"fold{fold}-member{member}"

    def fold_checkpoint(self, fold: int) -> Path:
        """The inference checkpoint of cross-validation fold ``fold``."""
        return self.root / f"fold{fold}"

    def write_config(self, config) -> None:
        """The run's resolved config as JSON (what the run was, for a reader or a rerun)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
